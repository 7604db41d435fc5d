"""The operator dashboard: server-rendered pages under ``/ui/`` served by the eIM itself (``/`` leads there).

It sits in front of the operator API's front (:class:`eim.api.front.ApiFront`) and takes only ``/``, ``/ui`` and
``/ui/...``; everything else goes on unchanged. Why this stack (plain HTML from Python, one small hand-written
script, SVG charts drawn on the server, no asset from elsewhere) is told in docs/internals.md, *The dashboard*.

================================================  ================================================================
request                                           answer
================================================  ================================================================
``/ui/static/dash.css`` / ``dash.js``             the file from the package (no session needed)
any page without a live session (auth on)         303 to ``/ui/login?next=<path>``
POST over the body limit                          413, nothing read further or done
POST from another origin / without the CSRF token 403, nothing done (:mod:`eim.ui.session`)
POST by a read-only operator                      403 naming the operator and role, nothing done
a form with a bad value                           the page again, 4xx, the API's message naming the field
unknown path under ``/ui/``                       404 page
the store does not answer (sessions live there)   503 naming ``store``
================================================  ================================================================

Every form goes through the REST API in-process (:mod:`eim.ui.inproc`): the same validation, the same errors,
the same audit entries naming the operator. One access log line per request (logger ``eim.ui``): method, path,
status, operator, duration.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from eim.api.auth import OperatorRegistry, Role
from eim.api.limits import DISCONNECTED, read_body
from eim.store import StoreError
from eim.ui import html as h
from eim.ui.forms import Form, FormError, parse_form
from eim.ui.inproc import Answer, InProcessApi
from eim.ui.session import COOKIE, Session, Sessions, cookie_header, csrf_ok, same_origin

log = logging.getLogger("eim.ui")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
STATIC = {"dash.css": "text/css; charset=utf-8", "dash.js": "application/javascript; charset=utf-8"}

Handler = Callable[["Ctx"], Awaitable[Response]]


@dataclass
class Ctx:
    """One dashboard request: the session, the parsed form (POST), the path parameters."""

    request: Request
    session: Session
    dash: Dashboard
    params: dict[str, str] = field(default_factory=dict)
    form: Form = field(default_factory=Form)

    @property
    def can_act(self) -> bool:
        return self.session.may_act()

    async def call(self, method: str, path: str, **kw: Any) -> Answer:
        return await self.dash.api.call(self.session.operator, method, path, **kw)

    def page(self, title: str, body: str, *, status: int = 200, active: str = "") -> Response:
        text = h.layout(
            title,
            body,
            who=self.session.name,
            auth=self.dash.sessions.auth_enabled,
            csrf=self.session.csrf,
            active=active,
            can_act=self.can_act,
            admin=self.session.role.may(Role.ADMIN),
        )
        return HTMLResponse(text, status_code=status)

    def fragment(self, body: str) -> Response:
        return HTMLResponse(body)

    def error_page(self, title: str, answer: Answer | None = None, *, status: int = 404, message: str = "") -> Response:
        err = answer.error if answer is not None else {"message": message}
        code = answer.status if answer is not None else status
        return self.page(title, h.error_box(err.get("message"), err.get("field")), status=code)


class Dashboard:
    """The ASGI app of the dashboard, in front of ``fallback`` (the API front)."""

    def __init__(
        self,
        fallback: Any,
        api_app: Any,
        registry: OperatorRegistry,
        *,
        max_body_bytes: int = 4 * 1024 * 1024,
        default_poll_interval_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from eim.ui.pages import batches, euiccs, fleet, operations, outbox, register, subscriptions, system

        self.fallback = fallback
        self.api = InProcessApi(api_app)
        self.store = api_app.state.store
        self.service = api_app.state.service
        self.sessions = Sessions(registry, self.store, clock)
        self.max_body_bytes = max_body_bytes
        self.default_poll_interval_s = default_poll_interval_s
        self.clock = clock
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        # register before euiccs: /ui/euiccs/new is not an EID
        for module in (fleet, register, euiccs, operations, batches, subscriptions, outbox, system):
            for method, pattern, handler in module.ROUTES:
                self._routes.append((method, re.compile(f"^{pattern}$"), handler))
        self._static: dict[str, bytes] = {}

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path in ("/", "/ui") or path.startswith("/ui/")):
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        session: Session | None = None
        try:
            response, session = await self._handle(request, receive)
        except FormError as exc:
            response = HTMLResponse(h.bare("Bad request", h.error_box(exc.reason, exc.field)), exc.status)
        except (StoreError, OSError) as exc:  # the sessions live in the store: as the API, a 503 naming it
            log.error("store unavailable", extra={"path": path[:200], "error": str(exc)[:300]})
            response = HTMLResponse(
                h.bare("Unavailable", h.error_box(f"the store is not available: {exc}"[:300], "store")), 503
            )
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        await response(scope, receive, send)
        ms = round((time.perf_counter() - started) * 1000, 1)
        name = session.name if session is not None else None
        log.info(
            "%s %s %s %s",
            scope["method"],
            path,
            response.status_code,
            name or "-",
            extra={
                "method": scope["method"],
                "path": path[:200],
                "status": response.status_code,
                "operator": name,
                "duration_ms": ms,
            },
        )

    async def _handle(self, request: Request, receive: Any) -> tuple[Response, Session | None]:
        path, method = request.url.path, request.method
        if path in ("/", "/ui"):
            return RedirectResponse("/ui/", 303), None
        if path.startswith("/ui/static/"):
            return self._static_file(path.removeprefix("/ui/static/")), None
        if method not in ("GET", "HEAD", "POST"):
            return Response("method not allowed", 405, headers={"allow": "GET, POST"}), None
        secure = request.url.scheme == "https"
        body = b""
        if method == "POST":
            raw = await read_body(receive, self.max_body_bytes)
            if raw is DISCONNECTED:
                return Response(b"", 400), None
            if raw is None:
                return HTMLResponse(
                    h.bare("Too large", h.error_box(f"over {self.max_body_bytes} bytes", "body")), 413
                ), None
            body = raw  # type: ignore[assignment]
            if not same_origin(dict(request.headers), request.url.scheme, request.headers.get("host")):
                return HTMLResponse(
                    h.bare("Forbidden", h.error_box("request from another origin", "origin")), 403
                ), None
        if path == "/ui/login":
            from eim.ui.pages import login

            return await login.handle(self, request, body, secure), None
        session = await self.sessions.get(request.cookies.get(COOKIE))
        new_cookie = None
        if session is None:
            if self.sessions.auth_enabled or method == "POST":
                target = path if method == "GET" else "/ui/"
                return RedirectResponse(h.url("/ui/login", next=target), 303), None
            session = await self.sessions.anonymous()
            new_cookie = session.id
        ctx = Ctx(request, session, self)
        if method == "POST":
            ctx.form = parse_form(request.headers.get("content-type", ""), body)
            if not csrf_ok(session, ctx.form.get("csrf")):
                return ctx.page(
                    "Forbidden", h.error_box("missing or wrong CSRF token: reload the page", "csrf"), status=403
                ), session
            if path == "/ui/logout":
                await self.sessions.logout(session.id)
                r = RedirectResponse("/ui/login", 303)
                r.headers.append("set-cookie", cookie_header("", secure=secure, clear=True))
                return r, session
            if not ctx.can_act:
                msg = f"operator {session.name} has role {session.role.value}: the dashboard is read-only for it"
                return ctx.page("Forbidden", h.error_box(msg, "role"), status=403), session
        response = await self._dispatch(ctx, method, path)
        if new_cookie is not None:
            response.headers.append("set-cookie", cookie_header(new_cookie, secure=secure))
        return response, session

    async def _dispatch(self, ctx: Ctx, method: str, path: str) -> Response:
        want = "GET" if method == "HEAD" else method
        for m, pattern, handler in self._routes:
            if m != want:
                continue
            match = pattern.match(path)
            if match:
                ctx.params = match.groupdict()
                return await handler(ctx)
        return ctx.page("Not found", h.error_box(f"no page {path[:100]}"), status=404)

    def _static_file(self, name: str) -> Response:
        if name not in STATIC:
            return Response("not found", 404)
        if name not in self._static:
            self._static[name] = resources.files("eim.ui").joinpath("static", name).read_bytes()
        return Response(self._static[name], media_type=STATIC[name], headers={"cache-control": "max-age=3600"})


def dashboard(fallback: Any, api_app: Any, registry: OperatorRegistry, config: Any = None) -> Dashboard:
    """The dashboard in front of ``fallback``, wired from the eIM's config (``eim.app.create_app``)."""
    kw: dict[str, Any] = {}
    if config is not None:
        kw["max_body_bytes"] = config.api.max_batch_body_bytes
        kw["default_poll_interval_s"] = config.fleet.poll_interval_s
    return Dashboard(fallback, api_app, registry, **kw)
