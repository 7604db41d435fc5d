"""The OpenAPI document says how to authenticate: an HTTP bearer scheme, required by every operation except
``/healthz``, and the role each operation needs (``x-eim-role``, see ``eim.api.auth``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from eim.api.auth import OPEN_PATHS, ROLES, needed_role

SCHEME = "operatorToken"


def declare_bearer_auth(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An operator token (`eim operator add NAME --role ROLE` prints it once) or the "
                "legacy `[api] token`. Roles: " + ", ".join(ROLES) + "; each operation names the role it needs "
                "in `x-eim-role`. 401 without a valid token, 403 when the role is too low.",
            }
        }
        schema["security"] = [{SCHEME: []}]
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if not isinstance(op, dict):
                    continue
                if path in OPEN_PATHS:
                    op["security"] = []
                else:
                    op["x-eim-role"] = needed_role(method.upper(), path).value
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
