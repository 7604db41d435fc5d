"""``/ui/subscriptions``: webhook subscriptions (``/v1/subscriptions``, called in-process): the list, a new one
(its signing secret shown once, on the page that answers the form), one subscription with its deliveries (failed
ones first in the filter, each with its attempts, last HTTP status and error) and a Re-send button, and removal.

=====================================================  ======================================================
form / query                                           answer
=====================================================  ======================================================
URL not https (or loopback http when allowed), a       the API's 400 naming ``url``, nothing stored
private address, too long
no event ticked, an unknown event type                 the API's 400 / 422 naming ``events``
description not printable or too long                  the API's 400 / 422 naming ``description``
unknown subscription / delivery                        404 page
``status`` of the deliveries not pending / delivered   the API's 422 naming ``status``
/ failed
=====================================================  ======================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from eim.events.catalog import EVENT_TYPES
from eim.ui import html as h

DELIVERY_STATUSES = ("failed", "pending", "delivered")
ACTIVE = "/ui/subscriptions"


def _form(ctx: Any, v: dict[str, Any], error: str = "", field: str | None = None) -> str:
    ticked = set(v.get("events") or ())
    boxes = "".join(
        f'<label class="radio"><input type="checkbox" name="events" value="{h.esc(e)}"'
        f' id="f-events-{h.esc(e)}"{" checked" if e in ticked else ""}> {h.esc(e)}</label>'
        for e in EVENT_TYPES
    )
    return (
        h.error_box(error, field) + '<details class="edit" open><summary>New subscription</summary>'
        f'<form method="post" action="/ui/subscriptions/new" class="stack">{h.csrf_field(ctx.session.csrf)}'
        f'<label>URL <input name="url" id="f-url" value="{h.esc(v.get("url", ""))}" size="70"'
        ' placeholder="https://hooks.example.com/eim" required></label>'
        f"<fieldset><legend>Events</legend>{boxes}</fieldset>"
        f'<label>Description <input name="description" id="f-description" size="50"'
        f' value="{h.esc(v.get("description", ""))}"></label>'
        '<button type="submit" class="btn">Subscribe</button></form></details>'
    )


def _sub_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            h.link(f"/ui/subscriptions/{s['id']}", s["id"][:8]),
            h.esc(s["url"]),
            " ".join(f'<span class="tag">{h.esc(e)}</span>' for e in s["events"]),
            h.esc(s["description"]),
            h.when(s["created_at"]),
            h.esc(s["created_by"]),
        ]
        for s in items
    ]


async def list_page(ctx: Any, *, error: str = "", field: str | None = None, values: Any = None, status: int = 200):
    cursor = ctx.request.query_params.get("cursor") if ctx.request.method == "GET" else None
    answer = await ctx.call("GET", "/v1/subscriptions", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
    if not answer.ok:
        err = answer.error
        return ctx.page("Subscriptions", h.error_box(err.get("message"), err.get("field")), status=answer.status)
    nxt = answer.body.get("next")
    table = h.table(
        ["id", "URL", "events", "description", "created", "by"], _sub_rows(answer.body["items"]), cls="list"
    )
    head = _form(ctx, values or {}, error, field) if ctx.can_act else ""
    intro = (
        '<p class="muted">Events are POSTed as JSON, signed with the subscription\'s secret '
        "(<code>X-Eim-Signature: sha256=&lt;HMAC-SHA256 of the body&gt;</code>); failed deliveries stay visible "
        "and can be sent again.</p>"
    )
    body = head + intro + table + h.pager(h.url(ACTIVE, cursor=nxt) if nxt else None)
    return ctx.page("Subscriptions", body, status=status, active=ACTIVE)


async def create(ctx: Any) -> Response:
    v = {
        "url": ctx.form.get("url").strip(),
        "events": ctx.form.all("events"),
        "description": ctx.form.get("description"),
    }
    answer = await ctx.call("POST", "/v1/subscriptions", json_body=v)
    if not answer.ok:
        err = answer.error
        field = err.get("field")
        if field and field.startswith("events"):
            field = "events"  # "events.0: ..." from the model
        return await list_page(ctx, error=err.get("message") or "refused", field=field, values=v, status=answer.status)
    s = answer.body
    body = (
        h.notice("Subscribed. Copy the secret now: it is shown only this once.")
        + h.kv(
            [
                ("id", h.link(f"/ui/subscriptions/{s['id']}", s["id"])),
                ("URL", h.esc(s["url"])),
                ("events", h.esc(", ".join(s["events"]))),
                ("secret", f'<code class="secret">{h.esc(s["secret"])}</code>'),
            ]
        )
        + f"<p>{h.link(ACTIVE, 'Back to the subscriptions')}</p>"
    )
    return ctx.page("Subscription created", body, status=201, active=ACTIVE)


def _delivery_rows(ctx: Any, sub_id: str, items: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for d in items:
        resend = ""
        if ctx.can_act and d["status"] in ("failed", "delivered"):
            resend = h.button_form(
                f"/ui/subscriptions/{sub_id}/deliveries/{d['id']}/retry", "Re-send", ctx.session.csrf
            )
        rows.append(
            [
                h.esc(d["id"]),
                h.esc(d["event_type"]),
                h.status(d["status"]),
                h.esc(d["attempts"]),
                h.esc(d["last_status"] if d["last_status"] is not None else "-"),
                h.esc(d["last_error"] or ""),
                h.when(d["updated_at"]),
                h.when(d.get("next_attempt_at")),
                resend,
            ]
        )
    return rows


async def show(ctx: Any, *, notice: str = "", error: str = "", field: str | None = None, status: int = 200):
    sub_id = ctx.params["sub_id"]
    path = f"/v1/subscriptions/{quote(sub_id, safe='')}"
    answer = await ctx.call("GET", path)
    if not answer.ok:
        return ctx.error_page("Subscription", answer)
    s = answer.body
    q = ctx.request.query_params if ctx.request.method == "GET" else {}
    want = q.get("status", "")
    params: dict[str, Any] = {"limit": 100}
    if want:
        params["status"] = want
    if q.get("cursor"):
        params["cursor"] = q["cursor"]
    deliveries = await ctx.call("GET", path + "/deliveries", params=params)
    filters = (
        f'<form method="get" action="/ui/subscriptions/{h.esc(s["id"])}" class="filters">'
        f"<label>Status {h.select('status', DELIVERY_STATUSES, want)}</label>"
        '<button type="submit" class="btn">Filter</button></form>'
    )
    if deliveries.ok:
        rows = _delivery_rows(ctx, s["id"], deliveries.body["items"])
        nxt = deliveries.body.get("next")
        listing = h.table(
            ["id", "event", "status", "attempts", "last HTTP status", "last error", "updated", "next attempt", ""],
            rows,
            cls="list",
        ) + h.pager(h.url(f"/ui/subscriptions/{s['id']}", status=want, cursor=nxt) if nxt else None)
    else:
        err = deliveries.error
        listing = h.error_box(err.get("message"), err.get("field"))
        status = deliveries.status
    remove = ""
    if ctx.can_act:
        remove = h.button_form(
            f"/ui/subscriptions/{s['id']}/delete",
            "Remove the subscription",
            ctx.session.csrf,
            danger=True,
            confirm="Remove this subscription and its deliveries?",
        )
    facts = [
        ("id", h.esc(s["id"])),
        ("URL", h.esc(s["url"])),
        ("events", " ".join(f'<span class="tag">{h.esc(e)}</span>' for e in s["events"])),
        ("description", h.esc(s["description"])),
        ("created", f"{h.when(s['created_at'])} by {h.esc(s['created_by'])}"),
    ]
    body = (
        h.notice(notice) + h.error_box(error, field) + remove + h.kv(facts) + "<h2>Deliveries</h2>" + filters + listing
    )
    return ctx.page(f"Subscription {s['id'][:8]}", body, status=status, active=ACTIVE)


async def delete(ctx: Any) -> Response:
    sub_id = ctx.params["sub_id"]
    answer = await ctx.call("DELETE", f"/v1/subscriptions/{quote(sub_id, safe='')}")
    if not answer.ok:
        return ctx.error_page("Subscription", answer)
    return RedirectResponse(ACTIVE, 303)


async def retry(ctx: Any) -> Response:
    sub_id, delivery_id = ctx.params["sub_id"], ctx.params["delivery_id"]
    answer = await ctx.call(
        "POST", f"/v1/subscriptions/{quote(sub_id, safe='')}/deliveries/{quote(delivery_id, safe='')}/retry"
    )
    if not answer.ok:
        return ctx.error_page("Delivery", answer)
    return RedirectResponse(h.url(f"/ui/subscriptions/{sub_id}", status="pending"), 303)


_ID = r"(?P<sub_id>[0-9a-fA-F-]{1,64})"
ROUTES = [
    ("GET", "/ui/subscriptions", list_page),
    ("POST", "/ui/subscriptions/new", create),
    ("GET", rf"/ui/subscriptions/{_ID}", show),
    ("POST", rf"/ui/subscriptions/{_ID}/delete", delete),
    ("POST", rf"/ui/subscriptions/{_ID}/deliveries/(?P<delivery_id>[0-9]{{1,18}})/retry", retry),
]
