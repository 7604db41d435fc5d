"""``/ui/notifications``: the notification outbox (``GET /v1/notifications``, called in-process): what the eIM
still owes SM-DP+s (pending, with the next attempt) and what it gave up on (failed, with the last error). A
delivered notification leaves the outbox; the eUICC's audit trail keeps it.

A ``status`` other than pending / failed, an unknown query parameter or a cursor of another list gets the API's
4xx naming the field.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from eim.ui import html as h

STATUSES = ("pending", "failed")
ACTIVE = "/ui/notifications"


async def list_page(ctx: Any) -> Response:
    q = {k: v.strip() for k, v in ctx.request.query_params.items()}
    params: dict[str, Any] = {"limit": 100, **{k: v for k, v in q.items() if v}}
    answer = await ctx.call("GET", "/v1/notifications", params=params)
    filters = (
        f'<form method="get" action="{ACTIVE}" class="filters">'
        f"<label>Status {h.select('status', STATUSES, q.get('status'))}</label>"
        '<button type="submit" class="btn">Filter</button></form>'
    )
    if not answer.ok:
        err = answer.error
        return ctx.page(
            "Notification outbox", filters + h.error_box(err.get("message"), err.get("field")), status=answer.status
        )
    rows = [
        [
            h.esc(n["id"]),
            h.status(n["status"]),
            h.esc(n["kind"]),
            h.link(f"/ui/euiccs/{n['eid']}", n["eid"]) if n.get("eid") else "-",
            h.link(f"/ui/operations/{n['operation_id']}", n["operation_id"][:8]) if n.get("operation_id") else "",
            h.esc(n["seq_number"]),
            h.esc(n["address"]),
            h.esc(n["attempts"]),
            h.when(n["updated_at"]),
            h.when(n.get("next_attempt_at")),
            h.esc(n.get("last_error") or ""),
        ]
        for n in answer.body["items"]
    ]
    nxt = answer.body.get("next")
    table = h.table(
        ["id", "status", "kind", "EID", "operation", "seq", "SM-DP+", "attempts", "updated", "next attempt", "error"],
        rows,
        cls="list",
        empty="the outbox is empty: every notification was delivered",
    )
    intro = (
        '<p class="muted">ES9+ HandleNotification deliveries the eIM owes SM-DP+s. Delivered ones leave the '
        "outbox (the eUICC's audit trail keeps them).</p>"
    )
    next_url = h.url(ACTIVE, status=q.get("status"), cursor=nxt) if nxt else None
    return ctx.page("Notification outbox", filters + intro + table + h.pager(next_url), active=ACTIVE)


ROUTES = [("GET", ACTIVE, list_page)]
