"""``/ui/operations``: the operations list (filters by EID, status, kind, batch; paged), one operation with its
audit trail and Cancel, and the form that queues an operation.

Filters and the form go to the REST API in-process (``GET /v1/operations``, ``POST
/v1/euiccs/{eid}/operations``): a bad value is the API's 4xx, naming the field, shown above the form.
The form's ``params`` is the API's JSON object; for a download the activation code field alone is enough.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from eim.model import OpKind, OpStatus
from eim.ui import html as h

FILTERS = ("eid", "status", "kind", "batch_id", "cursor")
EXAMPLES = {
    "psmo": '{"psmos": [{"listProfileInfo": {}}]}',
    "eco": '{"ecos": [{"listEim": {}}]}',
    "download": '{"activationCode": "1$smdp.example.com$MATCHING-ID"}',
    "euicc_data": '{"tags": ["euiccInfo2", "ipaCapabilities"]}',
}


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v not in (None, "")}


def op_row(o: dict[str, Any]) -> list[str]:
    return [
        h.link(f"/ui/operations/{o['id']}", o["id"][:8]),
        h.link(f"/ui/euiccs/{o['eid']}", o["eid"]),
        h.esc(o["kind"]),
        h.status(o["status"]),
        h.when(o["created_at"]),
        h.when(o["updated_at"]),
        h.esc(o["created_by"]),
        h.link(f"/ui/batches/{o['batch_id']}", o["batch_id"][:8]) if o.get("batch_id") else "",
        h.esc(o.get("error") or (o.get("result_code") if o.get("result_code") is not None else "")),
    ]


def _filters(q: dict[str, str]) -> str:
    return (
        '<form method="get" action="/ui/operations" class="filters">'
        f'<label>EID <input name="eid" id="f-eid" value="{h.esc(q.get("eid", ""))}" size="34"></label>'
        f"<label>Status {h.select('status', [s.value for s in OpStatus], q.get('status'))}</label>"
        f"<label>Kind {h.select('kind', [k.value for k in OpKind], q.get('kind'))}</label>"
        f'<label>Batch <input name="batch_id" id="f-batch_id" value="{h.esc(q.get("batch_id", ""))}" size="38">'
        '</label><button type="submit" class="btn">Filter</button></form>'
    )


async def list_page(ctx: Any) -> Response:
    q = {k: v.strip() for k, v in ctx.request.query_params.items()}
    unknown = [k for k in q if k not in FILTERS]
    params = _params(**{k: q.get(k) for k in FILTERS}, limit=100)
    answer = await ctx.call("GET", "/v1/operations", params={**params, **{k: q[k] for k in unknown}})
    actions = '<p class="actions"><a class="btn" href="/ui/operations/new">Queue an operation</a></p>'
    head = (actions if ctx.can_act else "") + _filters(q)
    if not answer.ok:
        err = answer.error
        if answer.status == 404 and not err.get("field"):  # the API's 404 for a malformed EID / batch id
            err = {**err, "field": "eid" if "eUICC" in err.get("message", "") else "batch_id"}
            status = 400
        else:
            status = answer.status
        return ctx.page(
            "Operations",
            head + h.error_box(err.get("message"), err.get("field")),
            status=status,
            active="/ui/operations",
        )
    rows = [op_row(o) for o in answer.body["items"]]
    nxt = answer.body.get("next")
    next_url = h.url("/ui/operations", **{k: q.get(k) for k in FILTERS if k != "cursor"}, cursor=nxt) if nxt else None
    table = h.table(
        ["id", "EID", "kind", "status", "created", "updated", "by", "batch", "error / code"], rows, cls="list"
    )
    return ctx.page("Operations", head + table + h.pager(next_url), active="/ui/operations")


async def show(ctx: Any) -> Response:
    op_id = ctx.params["op_id"]
    answer = await ctx.call("GET", f"/v1/operations/{quote(op_id, safe='')}")
    if not answer.ok:
        return ctx.error_page("Operation", answer)
    return ctx.page(f"Operation {op_id[:8]}", detail(ctx, answer.body), active="/ui/operations")


def detail(ctx: Any, o: dict[str, Any], notice: str = "") -> str:
    facts = [
        ("id", h.esc(o["id"])),
        ("eUICC", h.link(f"/ui/euiccs/{o['eid']}", o["eid"])),
        ("kind", h.esc(o["kind"])),
        ("status", h.status(o["status"])),
        ("created", f"{h.when(o['created_at'])} by {h.esc(o['created_by'])}"),
        ("updated", h.when(o["updated_at"])),
        ("not before", h.when(o.get("not_before"))),
        ("expires", h.when(o.get("expires_at"))),
        ("attempts", h.esc(o["attempts"])),
        ("counter value", h.esc(o.get("counter_value"))),
        ("eimTransactionId", h.esc(o.get("eim_transaction_id"))),
        ("batch", h.link(f"/ui/batches/{o['batch_id']}", o["batch_id"]) if o.get("batch_id") else "-"),
        ("result code", h.esc(o.get("result_code"))),
        ("error", h.esc(o.get("error") or "")),
    ]
    cancel = ""
    if ctx.can_act and o["status"] in ("queued", "in_progress"):
        cancel = h.button_form(
            f"/ui/operations/{o['id']}/cancel",
            "Cancel",
            ctx.session.csrf,
            danger=True,
            confirm="Cancel this operation?",
        )
    audit = [
        [
            h.when(a["at"]),
            h.esc(a["who"]),
            h.esc(a["action"]),
            h.esc(a["outcome"]),
            f"<code>{h.esc(json.dumps(a.get('detail') or {}, sort_keys=True)[:200])}</code>",
        ]
        for a in o.get("audit", [])
    ]
    return (
        h.notice(notice)
        + cancel
        + h.kv(facts)
        + "<h2>Parameters</h2>"
        + h.pretty(o["params"])
        + "<h2>Result</h2>"
        + h.pretty(o.get("result"))
        + "<h2>Audit trail</h2>"
        + h.table(["at", "who", "action", "outcome", "detail"], audit, cls="audit")
    )


async def cancel(ctx: Any) -> Response:
    op_id = ctx.params["op_id"]
    answer = await ctx.call("POST", f"/v1/operations/{quote(op_id, safe='')}/cancel")
    if answer.status == 404:
        return ctx.error_page("Operation", answer)
    if not answer.ok:  # 409: it ended meanwhile
        again = await ctx.call("GET", f"/v1/operations/{quote(op_id, safe='')}")
        body = h.error_box(answer.error.get("message"), "status") + (detail(ctx, again.body) if again.ok else "")
        return ctx.page(f"Operation {op_id[:8]}", body, status=answer.status, active="/ui/operations")
    return RedirectResponse(f"/ui/operations/{op_id}", 303)


def form(ctx: Any, values: dict[str, str], error: str = "", field: str | None = None) -> str:
    kind = values.get("kind") or "psmo"
    examples = "".join(f"<li><code>{h.esc(k)}</code>: <code>{h.esc(v)}</code></li>" for k, v in EXAMPLES.items())
    return (
        h.error_box(error, field)
        + f'<form method="post" action="/ui/operations/new" class="stack">{h.csrf_field(ctx.session.csrf)}'
        f'<label>EID <input name="eid" id="f-eid" value="{h.esc(values.get("eid", ""))}" size="34" required></label>'
        f"<label>Kind {h.select('kind', [k.value for k in OpKind], kind, blank=None)}</label>"
        f'<label>Activation code (download only) <input name="activation_code" id="f-activation_code" size="60"'
        f' value="{h.esc(values.get("activation_code", ""))}"></label>'
        f'<label>Parameters (JSON object) <textarea name="params" id="f-params" rows="5" cols="70">'
        f"{h.esc(values.get('params', ''))}</textarea></label>"
        f'<label>Validity (seconds, empty: default) <input name="validity_s" id="f-validity_s"'
        f' value="{h.esc(values.get("validity_s", ""))}"></label>'
        f'<label>Not before (ISO 8601, empty: now) <input name="not_before" id="f-not_before"'
        f' value="{h.esc(values.get("not_before", ""))}"></label>'
        '<button type="submit" class="btn">Queue</button></form>'
        f'<p class="muted">Parameters by kind (docs/eim.md, section 2):</p><ul class="muted">{examples}</ul>'
    )


def build_body(values: dict[str, str]) -> dict[str, Any] | tuple[str, str]:
    """The API's JSON body from the form, or ``(field, reason)`` for what only the form can get wrong."""
    text = values.get("params", "").strip()
    params: Any = {}
    if text:
        try:
            params = json.loads(text)
        except ValueError as exc:
            return "params", f"not JSON: {exc}"
    ac = values.get("activation_code", "").strip()
    if ac:
        if values.get("kind") != "download":
            return "activation_code", "for a download only"
        if not isinstance(params, dict) or "activationCode" in params:
            return "activation_code", "give it here or in the parameters, not both"
        params = {**params, "activationCode": ac}
    body: dict[str, Any] = {"kind": values.get("kind", ""), "params": params}
    for name in ("validity_s", "not_before"):
        if values.get(name, "").strip():
            body[name] = values[name].strip()  # the API parses (a 422 naming the field)
    return body


async def new(ctx: Any) -> Response:
    values = {k: ctx.request.query_params.get(k, "") for k in ("eid", "kind")}
    if values["kind"] in EXAMPLES:
        values["params"] = EXAMPLES[values["kind"]]
    return ctx.page("Queue an operation", form(ctx, values), active="/ui/operations")


async def create(ctx: Any) -> Response:
    names = ("eid", "kind", "activation_code", "params", "validity_s", "not_before")
    values = {k: ctx.form.get(k) for k in names}
    eid = values["eid"].strip()
    body = build_body(values)
    if not eid:
        body = ("eid", "required")
    if isinstance(body, tuple):
        return ctx.page("Queue an operation", form(ctx, values, body[1], body[0]), status=400, active="/ui/operations")
    answer = await ctx.call("POST", f"/v1/euiccs/{quote(eid, safe='')}/operations", json_body=body)
    if not answer.ok:
        err = answer.error
        field = err.get("field")
        status = answer.status
        if status in (404, 405) and not field:  # unknown or malformed EID in the path
            field = "eid"
        msg = err.get("message") or "refused"
        return ctx.page("Queue an operation", form(ctx, values, msg, field), status=status, active="/ui/operations")
    return RedirectResponse(f"/ui/operations/{answer.body['id']}", 303)


ROUTES = [
    ("GET", "/ui/operations", list_page),
    ("GET", "/ui/operations/new", new),
    ("POST", "/ui/operations/new", create),
    ("GET", r"/ui/operations/(?P<op_id>[0-9a-fA-F-]{1,64})", show),
    ("POST", r"/ui/operations/(?P<op_id>[0-9a-fA-F-]{1,64})/cancel", cancel),
]
