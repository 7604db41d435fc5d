"""``/ui/operators`` (admin role only): who may use the API and this dashboard, names and roles (``GET
/v1/operators``; never a token or hash); ``/ui/system``: the eIM's health (``GET /healthz``), its Prometheus
metrics as text (``GET /metrics``) and links to the API's own documentation.

The in-process call skips the API's front, so the admin check is made here: another role gets 403 naming the
operator and the role, as the API's 403 does. Operators are added, rotated and removed on the eIM's host with
``eim operator``, never from a browser.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from eim.api.auth import Role
from eim.ui import html as h

METRICS_SHOWN = 200_000  # characters of the metrics text on the page
TOKEN_NOTE = (
    ' <span class="muted">(with an operator token, unless <code>[api] public_docs</code> / '
    "<code>public_metrics</code>)</span>"
)


async def operators(ctx: Any) -> Response:
    if not ctx.session.role.may(Role.ADMIN):
        msg = f"operator {ctx.session.name} has role {ctx.session.role.value}: the operators list is for admins"
        return ctx.page("Forbidden", h.error_box(msg, "role"), status=403)
    answer = await ctx.call("GET", "/v1/operators")
    if not answer.ok:
        return ctx.error_page("Operators", answer)
    rows = [[h.esc(o["name"]), h.esc(o["role"])] for o in answer.body["items"]]
    note = (
        '<p class="muted">Added, rotated and removed on the eIM\'s host: <code>eim operator add|rotate|remove '
        "NAME</code> (the eIM reloads the operators file within a second; a removed or rotated operator's dashboard "
        "session ends at its next request).</p>"
    )
    if not ctx.dash.sessions.auth_enabled:
        note = h.notice("Authentication is off: every caller is let in, no operator is named.") + note
    table = h.table(["name", "role"], rows, cls="list", empty="no operators")
    return ctx.page("Operators", note + table, active="/ui/operators")


async def system(ctx: Any) -> Response:
    health = await ctx.call("GET", "/healthz")
    metrics = await ctx.call("GET", "/metrics")
    version = await ctx.dash.store.schema_version()
    if health.ok:
        state = f"{h.status('done')} ok, store {h.esc(health.body.get('store'))}"
    else:
        state = f"{h.status('failed')} {h.esc(health.error.get('message'))}"
    facts = [
        ("health (GET /healthz)", state),
        ("store schema version", h.esc(version)),
        ("API documentation", "<code>/docs</code> (Swagger UI), <code>/openapi.json</code>" + TOKEN_NOTE),
        ("Prometheus metrics", "<code>/metrics</code>, below as text" + TOKEN_NOTE),
    ]
    text = metrics.body if isinstance(metrics.body, str) else ""
    shown = text[:METRICS_SHOWN] + ("\n..." if len(text) > METRICS_SHOWN else "")
    shown_html = f'<pre class="metrics">{h.esc(shown)}</pre>' if text else '<p class="muted">none collected</p>'
    body = h.kv(facts) + "<h2>Metrics</h2>" + shown_html
    return ctx.page("System", body, status=200 if health.ok else 503, active="/ui/system")


ROUTES = [("GET", "/ui/operators", operators), ("GET", "/ui/system", system)]
