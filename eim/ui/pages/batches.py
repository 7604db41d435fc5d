"""``/ui/batches``: the batch list, a new batch (pasted EIDs, an uploaded CSV, or a label selector) with a preview
of what will be queued before anything is stored, and the batch page (live progress bar, per-item results,
Cancel).

**Preview** runs the checks ``POST /v1/batches`` runs, with the same functions and nothing stored: the kind and
parameters (:func:`eim.packages.validate_params` and the SM-DP+ address policy, per row for a CSV through
:meth:`OperationService._item_params`), the CSV (:func:`eim.api.batches.parse_csv`), the label selector
(:func:`eim.api.fleet.parse_labels`, :meth:`Store.eids_by_labels`), and each EID (well formed, not twice,
registered). **Confirm** then sends the batch to the API in-process, which checks everything again (the fleet may
have changed in between): a CSV goes as ``rows`` (per-EID parameters over the shared ones), the same call a CSV
body makes, so its errors name the same ``rows[i].field``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from eim.api.batches import _window, parse_csv
from eim.api.fleet import check_label_map, parse_labels
from eim.model import OpKind
from eim.operations import MAX_BATCH
from eim.packages import ParamError, validate_params
from eim.packages.common import normalise_eid
from eim.ui import charts
from eim.ui import html as h
from eim.ui.pages.euiccs import parse_label_lines

SOURCES = ("eids", "csv", "labels")
SHOWN = 100  # items listed on a page, paged (the counts cover all)


# ------------------------------------------------------------------------------------------------ list
async def list_page(ctx: Any) -> Response:
    cursor = ctx.request.query_params.get("cursor")
    answer = await ctx.call("GET", "/v1/batches", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
    head = '<p class="actions"><a class="btn" href="/ui/batches/new">New batch</a></p>' if ctx.can_act else ""
    if not answer.ok:
        err = answer.error
        return ctx.page("Batches", head + h.error_box(err.get("message"), err.get("field")), status=answer.status)
    rows = [
        [
            h.link(f"/ui/batches/{b['id']}", b["id"][:8]),
            h.esc(b["kind"]),
            h.when(b["created_at"]),
            h.esc(b["created_by"]),
            h.esc(b["items"]),
            h.esc(b["refused"]),
        ]
        for b in answer.body["items"]
    ]
    nxt = answer.body.get("next")
    table = h.table(["id", "kind", "created", "by", "items", "refused"], rows, cls="list")
    return ctx.page(
        "Batches", head + table + h.pager(h.url("/ui/batches", cursor=nxt) if nxt else None), active="/ui/batches"
    )


# ------------------------------------------------------------------------------------------------ new batch
def form(ctx: Any, v: dict[str, str], error: str = "", field: str | None = None) -> str:
    source = v.get("source") or "eids"
    radios = "".join(
        f'<label class="radio"><input type="radio" name="source" value="{s}" id="f-source-{s}"'
        f"{' checked' if s == source else ''}> {label}</label>"
        for s, label in (("eids", "pasted EIDs"), ("csv", "CSV (eid, activation_code, mode)"), ("labels", "labels"))
    )
    return (
        h.error_box(error, field)
        + '<form method="post" action="/ui/batches/preview" enctype="multipart/form-data" class="stack">'
        + h.csrf_field(ctx.session.csrf)
        + f"<label>Kind {h.select('kind', [k.value for k in OpKind], v.get('kind') or 'psmo', blank=None)}</label>"
        + f'<label>Parameters for every item (JSON object) <textarea name="params" id="f-params" rows="3" cols="70">'
        f"{h.esc(v.get('params', ''))}</textarea></label>"
        f'<label>Validity (seconds, empty: default) <input name="validity_s" id="f-validity_s"'
        f' value="{h.esc(v.get("validity_s", ""))}"></label>'
        f"<fieldset><legend>eUICCs</legend>{radios}"
        f'<label>EIDs, one a line (or separated by commas / spaces) <textarea name="eids" id="f-eids" rows="5"'
        f' cols="40">{h.esc(v.get("eids", ""))}</textarea></label>'
        '<label>CSV file <input type="file" name="csv_file" id="f-csv_file" accept=".csv,text/csv"></label>'
        f'<label>or CSV text <textarea name="csv" id="f-csv" rows="4" cols="70">{h.esc(v.get("csv", ""))}</textarea>'
        "</label>"
        f'<label>Labels, one key=value a line (all must match) <textarea name="labels" id="f-labels" rows="2">'
        f"{h.esc(v.get('labels', ''))}</textarea></label></fieldset>"
        '<button type="submit" class="btn">Preview</button></form>'
        '<p class="muted">CSV: header <code>eid,activation_code[,mode]</code>, one row per eUICC; each row\'s values '
        "are merged over the parameters above. At most 10,000 eUICCs.</p>"
    )


def values_of(ctx: Any) -> dict[str, str]:
    v = {k: ctx.form.get(k) for k in ("kind", "params", "validity_s", "source", "eids", "csv", "labels")}
    upload = ctx.form.files.get("csv_file")
    if upload is not None and upload[1]:
        try:
            v["csv"] = upload[1].decode("utf-8")
        except UnicodeDecodeError:
            raise ParamError("csv_file", "CSV must be UTF-8") from None
    return v


async def new(ctx: Any) -> Response:
    return ctx.page("New batch", form(ctx, {}), active="/ui/batches")


async def plan(ctx: Any, v: dict[str, str]) -> tuple[dict[str, Any], list[str], list[dict[str, Any]] | None]:
    """``(API body, EIDs, per-row params)`` of the form, checked as ``POST /v1/batches`` checks it; ParamError."""
    try:
        kind = OpKind(v["kind"])
    except ValueError:
        raise ParamError("kind", f"must be one of {', '.join(k.value for k in OpKind)}") from None
    params: Any = {}
    if v["params"].strip():
        try:
            params = json.loads(v["params"])
        except ValueError as exc:
            raise ParamError("params", f"not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ParamError("params", "must be a JSON object")
    body: dict[str, Any] = {"kind": kind.value, "params": params}
    if v["validity_s"].strip():
        try:
            validity = float(v["validity_s"])
        except ValueError:
            raise ParamError("validity_s", "must be a number of seconds") from None
        _window(validity, None)
        body["validity_s"] = validity
    source = v["source"]
    rows: list[dict[str, Any]] | None = None
    if source == "eids":
        eids = [e for e in v["eids"].replace(",", " ").split() if e]
        if not eids:
            raise ParamError("eids", "paste at least one EID")
        if len(eids) > MAX_BATCH:
            raise ParamError("eids", f"at most {MAX_BATCH} EIDs per batch")
        ctx.dash.service._check_smdp_address(kind, validate_params(kind, params))
        body["eids"] = eids
    elif source == "csv":
        if not v["csv"].strip():
            raise ParamError("csv", "upload a CSV file or paste CSV text")
        eids, rows = parse_csv(v["csv"])
        ctx.dash.service._item_params(kind, params, rows, len(eids))
        body["rows"] = [{"eid": e, "params": r} for e, r in zip(eids, rows, strict=True)]
    elif source == "labels":
        labels = parse_label_lines(v["labels"])
        if isinstance(labels, str):
            raise ParamError("labels", labels)
        if not labels:
            raise ParamError("labels", "name at least one label")
        check_label_map(labels, "labels", allow_null=False)
        pairs = parse_labels([f"{k}={x}" for k, x in labels.items()], "labels")
        ctx.dash.service._check_smdp_address(kind, validate_params(kind, params))
        eids = await ctx.dash.store.eids_by_labels(pairs, limit=MAX_BATCH + 1)
        if not eids:
            raise ParamError("labels", "no registered eUICC has all these labels")
        if len(eids) > MAX_BATCH:
            raise ParamError("labels", f"more than {MAX_BATCH} eUICCs match: narrow the selector")
        body["labels"] = labels
    else:
        raise ParamError("source", "choose pasted EIDs, a CSV or labels")
    return body, eids, rows


async def preview(ctx: Any) -> Response:
    try:
        v = values_of(ctx)
        body, eids, rows = await plan(ctx, v)
    except ParamError as exc:
        v = {k: ctx.form.get(k) for k in ("kind", "params", "validity_s", "source", "eids", "csv", "labels")}
        return ctx.page("New batch", form(ctx, v, exc.reason, exc.field), status=400, active="/ui/batches")
    seen: set[str] = set()
    lines, queued = [], 0
    for i, raw in enumerate(eids):
        try:
            eid = normalise_eid(raw)
            if eid in seen:
                outcome = "refused: duplicate EID in this batch"
            elif await ctx.dash.store.get_euicc(eid) is None:
                outcome = f"refused: eUICC {eid} is not registered"
            else:
                outcome = "queued"
            seen.add(eid)
        except ParamError as exc:
            eid, outcome = str(raw)[:64], f"refused: {exc.reason}"
        queued += outcome == "queued"
        if i < SHOWN:
            p = rows[i] if rows is not None else {}
            lines.append(
                [
                    h.esc(i),
                    h.esc(eid),
                    h.status(outcome.split(":")[0]) + h.esc(outcome[7:] if ":" in outcome else ""),
                    f"<code>{h.esc(json.dumps(p, sort_keys=True))}</code>" if p else "",
                ]
            )
    hidden = "".join(
        f'<textarea hidden name="{k}">\n{h.esc(v[k])}</textarea>' for k in ("params", "eids", "csv", "labels")
    )
    hidden += "".join(
        f'<input type="hidden" name="{k}" value="{h.esc(v[k])}">' for k in ("kind", "validity_s", "source")
    )
    summary = (
        f'<p class="summary" id="preview-summary"><strong>{queued}</strong> operation(s) of kind '
        f"<code>{h.esc(body['kind'])}</code> will be queued, <strong>{len(eids) - queued}</strong> item(s) refused"
        f" (of {len(eids)}).</p>"
    )
    more = f'<p class="muted">first {SHOWN} of {len(eids)} shown</p>' if len(eids) > SHOWN else ""
    confirm = (
        f'<form method="post" action="/ui/batches/new" class="inline">{h.csrf_field(ctx.session.csrf)}{hidden}'
        '<button type="submit" class="btn" id="confirm">Confirm: queue the batch</button></form> '
        '<a class="btn ghost" href="/ui/batches/new">Start again</a>'
    )
    shared = "<h2>Parameters for every item</h2>" + h.pretty(body["params"])
    table = h.table(["#", "EID", "outcome", "row parameters"], lines, cls="list")
    return ctx.page("Preview of the batch", summary + confirm + shared + table + more, active="/ui/batches")


async def create(ctx: Any) -> Response:
    try:
        v = values_of(ctx)
        body, _, _ = await plan(ctx, v)
    except ParamError as exc:
        return ctx.page("New batch", form(ctx, {}, exc.reason, exc.field), status=400, active="/ui/batches")
    answer = await ctx.call("POST", "/v1/batches", json_body=body)
    if not answer.ok:
        err = answer.error
        return ctx.page(
            "New batch",
            form(ctx, v, err.get("message", ""), err.get("field")),
            status=answer.status,
            active="/ui/batches",
        )
    return RedirectResponse(f"/ui/batches/{answer.body['id']}", 303)


# ------------------------------------------------------------------------------------------------ one batch
def progress_block(ctx: Any, b: dict[str, Any]) -> str:
    summary = b["summary"]
    open_n = summary.get("queued", 0) + summary.get("in_progress", 0)
    counts = " ".join(f"{h.status(s)} {n}" for s, n in sorted(summary.items()))
    cancel = ""
    if ctx.can_act and open_n:
        cancel = h.button_form(
            f"/ui/batches/{b['id']}/cancel",
            "Cancel the batch",
            ctx.session.csrf,
            danger=True,
            confirm=f"Cancel the {open_n} open operation(s) of this batch?",
        )
    rows = [
        [
            h.esc(it["index"]),
            h.link(f"/ui/euiccs/{it['eid']}", it["eid"]),
            h.status(it["status"]),
            h.link(f"/ui/operations/{it['operation_id']}", it["operation_id"][:8]) if it.get("operation_id") else "",
            h.esc(it.get("result_code") if it.get("result_code") is not None else ""),
            h.esc(it.get("error") or ""),
        ]
        for it in b["items"]
    ]
    state = "running" if open_n else "ended"
    return (
        f'<div class="batch-state" data-state="{state}" data-open="{open_n}">'
        f'{charts.progress(summary)}<p class="counts">{counts}</p>{cancel}'
        + h.table(["#", "EID", "status", "operation", "result code", "error"], rows, cls="list items")
        + _items_pager(b)
        + "</div>"
    )


def _items_pager(b: dict[str, Any]) -> str:
    """Where this page of items stands, and the link to the next one (``GET /v1/batches/{id}?limit=``)."""
    first = b["items"][0]["index"] + 1 if b["items"] else 0
    last = b["items"][-1]["index"] + 1 if b["items"] else 0
    shown = f'<p class="muted">items {first}-{last} of {b["item_count"]}</p>' if b["items"] else ""
    nxt = h.url(f"/ui/batches/{b['id']}", cursor=b["next"]) if b.get("next") else None
    return shown + h.pager(nxt)


async def _get(ctx: Any) -> Any:
    cursor = ctx.request.query_params.get("cursor")
    params = {"limit": SHOWN, **({"cursor": cursor} if cursor else {})}
    return await ctx.call("GET", f"/v1/batches/{quote(ctx.params['batch_id'], safe='')}", params=params)


async def show(ctx: Any, notice: str = "") -> Response:
    answer = await _get(ctx)
    if not answer.ok:
        return ctx.error_page("Batch", answer)
    b = answer.body
    n = ctx.request.query_params.get("cancelled")
    if n is not None and n.isdigit():
        notice = f"{int(n)} operation(s) cancelled"
    facts = h.kv(
        [
            ("id", h.esc(b["id"])),
            ("kind", h.esc(b["kind"])),
            ("created", h.when(b["created_at"])),
            ("by", h.esc(b["created_by"])),
            ("items", h.esc(b["item_count"])),
            ("operations", h.link(h.url("/ui/operations", batch_id=b["id"]), "list")),
        ]
    )
    poll = h.url(f"/ui/batches/{b['id']}/live", cursor=ctx.request.query_params.get("cursor"))
    live = f'<div id="batch" data-poll="{h.esc(poll)}" data-every="2000">{progress_block(ctx, b)}</div>'
    body = h.notice(notice) + facts + "<h2>Parameters</h2>" + h.pretty(b["params"]) + "<h2>Progress</h2>" + live
    return ctx.page(f"Batch {b['id'][:8]}", body, active="/ui/batches")


async def live(ctx: Any) -> Response:
    answer = await _get(ctx)
    if not answer.ok:
        return ctx.fragment(h.error_box(answer.error.get("message")))
    return ctx.fragment(progress_block(ctx, answer.body))


async def cancel(ctx: Any) -> Response:
    batch_id = ctx.params["batch_id"]
    answer = await ctx.call("POST", f"/v1/batches/{quote(batch_id, safe='')}/cancel")
    if not answer.ok:
        return ctx.error_page("Batch", answer)
    return RedirectResponse(h.url(f"/ui/batches/{batch_id}", cancelled=answer.body["cancelled"]), 303)


ROUTES = [
    ("GET", "/ui/batches", list_page),
    ("GET", "/ui/batches/new", new),
    ("POST", "/ui/batches/preview", preview),
    ("POST", "/ui/batches/new", create),
    ("GET", r"/ui/batches/(?P<batch_id>[0-9a-fA-F-]{1,64})", show),
    ("GET", r"/ui/batches/(?P<batch_id>[0-9a-fA-F-]{1,64})/live", live),
    ("POST", r"/ui/batches/(?P<batch_id>[0-9a-fA-F-]{1,64})/cancel", cancel),
]
