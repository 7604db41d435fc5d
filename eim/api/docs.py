"""API documentation served from the package: Swagger UI at ``/docs`` with its assets at ``/docs/static/...``
(no CDN, so it works air-gapped), and ``/openapi.json``.

The assets are swagger-ui-dist 5.36.0 from the npm registry (``swagger-ui-bundle.js``, ``swagger-ui.css``),
Apache License 2.0: ``eim/api/static/swagger-ui/LICENSE`` and ``NOTICE`` are its licence and notice files,
``swagger-ui-bundle.js.LICENSE.txt`` the licences of what the bundle contains. To update: ``npm pack
swagger-ui-dist``, copy those five files, change the version here and in docs/eim.md.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

SWAGGER_UI_VERSION = "5.36.0"
STATIC = "/docs/static"
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
ASSET_PATHS = frozenset(f"{STATIC}/{name}" for name in ASSETS)


def _asset(name: str) -> bytes:
    return resources.files("eim.api").joinpath("static", "swagger-ui", name).read_bytes()


def register(app: FastAPI) -> None:
    cache: dict[str, bytes] = {}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url="data:,",  # no favicon fetched from elsewhere
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    # a plain route: an OAuth2 redirect carries query parameters of its own (code, state)
    app.add_route("/docs/oauth2-redirect", oauth2_redirect, include_in_schema=False)

    def handler(name: str, media_type: str):
        async def serve() -> Response:
            if name not in cache:
                cache[name] = _asset(name)
            return Response(cache[name], media_type=media_type, headers={"Cache-Control": "max-age=86400"})

        return serve

    for name, media_type in ASSETS.items():
        app.add_api_route(f"{STATIC}/{name}", handler(name, media_type), methods=["GET"], include_in_schema=False)
