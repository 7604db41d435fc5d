"""``/ui/login``: the operator types the token ``eim operator add`` printed; a session cookie comes back.

The login form is checked for its origin (a POST from another site is refused before this runs); a wrong token
answers 401 with the form again and is logged as a failed login (never the token). ``next`` only ever leads to a
path under ``/ui/`` (no open redirect)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from eim.ui import html as h
from eim.ui.forms import parse_form
from eim.ui.session import cookie_header

log = logging.getLogger("eim.ui")


def _next(value: str) -> str:
    if value.startswith("/ui/") and not value.startswith("/ui//") and "\\" not in value and value.isprintable():
        return value
    return "/ui/"


def form(next_path: str, error: str | None = None) -> str:
    return h.bare(
        "Log in",
        h.error_box(error, "token" if error else None) + '<form method="post" action="/ui/login" class="login">'
        f'<input type="hidden" name="next" value="{h.esc(next_path)}">'
        '<label for="f-token">Operator token</label>'
        '<input type="password" name="token" id="f-token" autocomplete="current-password" required autofocus>'
        '<button type="submit" class="btn">Log in</button></form>'
        '<p class="muted">The token <code>eim operator add NAME</code> printed on the eIM\'s host '
        "(or the legacy <code>[api] token</code>). The dashboard follows the operator's role.</p>",
    )


async def handle(dash: Any, request: Request, body: bytes, secure: bool) -> Response:
    if not dash.sessions.auth_enabled:
        return RedirectResponse("/ui/", 303)
    if request.method != "POST":
        return HTMLResponse(form(_next(request.query_params.get("next", "/ui/"))))
    f = parse_form(request.headers.get("content-type", ""), body)
    nxt = _next(f.get("next", "/ui/"))
    session = await dash.sessions.login(f.get("token"))
    if session is None:
        client = request.client
        log.warning("dashboard login refused", extra={"peer": f"{client.host}:{client.port}" if client else None})
        return HTMLResponse(form(nxt, "token not accepted"), status_code=401)
    log.info("dashboard login", extra={"operator": session.name, "role": session.role.value})
    r = RedirectResponse(nxt, 303)
    r.headers.append("set-cookie", cookie_header(session.id, secure=secure))
    return r
