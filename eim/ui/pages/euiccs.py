"""``/ui/euiccs``: the eUICC list (EID prefix, labels, state; paged) and one eUICC's page (profiles, eIM
association, last contact, binding, SGP.32 version, certificate, operations, audit trail; relabel, remove).

One eUICC's operations and audit trail are shown newest first, a page each, from ``GET /v1/operations?eid=&order=desc``
and ``GET /v1/euiccs/{eid}/audit?order=desc``; their cursors ride in the page's query (``ops``, ``audit``), so
*Older operations* keeps the audit trail's page and the reverse. A bad cursor is a 400 naming ``ops`` / ``audit``.

The list reads ``GET /v1/euiccs`` in-process: labels are its ``label`` filter and the state (never seen, seen
within 1 h / 24 h, stale) its ``state`` filter (same validation, same 400 naming the field; the store walks the
smallest of the filters' index ranges, see :meth:`eim.store.fleet.FleetLogic.list_euiccs`); an EID prefix starts
the EID-ordered walk at the prefix (an index range, ending at the first EID past it).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from eim.api.paging import encode_cursor
from eim.ui import html as h

PAGE = 50
OPS_PAGE = 50  # one eUICC's operations and audit trail: newest first, a page at a time ("Older" follows the cursor)
AUDIT_PAGE = 100
STATES = ("never_seen", "seen_1h", "seen_24h", "stale")
_PREFIX = re.compile(r"[0-9A-Fa-f]{1,32}")


def state_of(e: dict[str, Any], now: float, default_interval_s: float) -> list[str]:
    from datetime import datetime

    if not e.get("last_contact"):
        return ["never_seen"]
    t = datetime.fromisoformat(e["last_contact"].replace("Z", "+00:00")).timestamp()
    out = []
    if t >= now - 3600:
        out.append("seen_1h")
    if t >= now - 86400:
        out.append("seen_24h")
    if t + (e.get("poll_interval_s") or default_interval_s) < now:
        out.append("stale")
    return out


def _filters(ctx: Any, eid: str, labels: list[str], state: str, error: str = "", field: str | None = None) -> str:
    return (
        '<form method="get" action="/ui/euiccs" class="filters">'
        f'<label>EID prefix <input name="eid" id="f-eid" value="{h.esc(eid)}" maxlength="32" size="34"></label>'
        f'<label>Label <input name="label" id="f-label" value="{h.esc(labels[0] if labels else "")}"'
        ' placeholder="site=berlin"></label>'
        f"<label>State {h.select('state', STATES, state)}</label>"
        '<button type="submit" class="btn">Search</button></form>' + h.error_box(error, field)
    )


def row(e: dict[str, Any], states: list[str]) -> list[str]:
    labels = " ".join(f'<span class="tag">{h.esc(k)}={h.esc(v)}</span>' for k, v in (e.get("labels") or {}).items())
    return [
        h.link(f"/ui/euiccs/{e['eid']}", e["eid"]),
        labels,
        h.esc(e.get("binding") or "-"),
        h.when(e.get("last_contact")),
        " ".join(h.status(s) for s in states),
        "yes" if e.get("certificate_known") else "no",
    ]


async def list_page(ctx: Any) -> Response:
    q = ctx.request.query_params
    for key in q:
        if key not in ("eid", "label", "state", "cursor"):
            return _list_error(ctx, "", [], "", f"unknown query parameter {key[:40]!r}", key[:40])
    eid = q.get("eid", "").strip()
    labels = [v for v in q.getlist("label") if v.strip()]
    state = q.get("state", "")
    cursor = q.get("cursor") or None
    if state and state not in STATES:
        return _list_error(ctx, eid, labels, state, f"must be one of {', '.join(STATES)}", "state")
    if eid and not _PREFIX.fullmatch(eid):
        return _list_error(ctx, eid, labels, state, "an EID prefix is 1 to 32 digits", "eid")
    eid = eid.upper()
    if len(eid) == 32 and cursor is None:
        return RedirectResponse(f"/ui/euiccs/{eid}", 303)
    if cursor is None and eid:
        cursor = encode_cursor("euiccs", eid)  # EIDs after the prefix string: the prefix's range starts there
    now = time.time()
    params = _params(label=labels, state=state, limit=PAGE, cursor=cursor)
    answer = await ctx.call("GET", "/v1/euiccs", params=params)
    if not answer.ok:
        err = answer.error
        return _list_error(ctx, eid, labels, state, err.get("message"), err.get("field"), answer.status)
    rows: list[list[str]] = []
    nxt = answer.body.get("next")
    for e in answer.body["items"]:
        if eid and not e["eid"].startswith(eid):  # past the prefix's range: the list ends here
            nxt = None
            break
        rows.append(row(e, state_of(e, now, ctx.dash.default_poll_interval_s)))
    next_url = h.url("/ui/euiccs", eid=eid, label=labels, state=state, cursor=nxt) if nxt else None
    actions = '<p class="actions"><a class="btn" href="/ui/euiccs/new">Register an eUICC</a></p>' if ctx.can_act else ""
    body = (
        actions
        + _filters(ctx, eid, labels, state)
        + h.table(["EID", "labels", "binding", "last contact", "state", "certificate"], rows, cls="list")
        + h.pager(next_url)
    )
    return ctx.page("eUICCs", body, active="/ui/euiccs")


def _list_error(
    ctx: Any, eid: str, labels: list[str], state: str, msg: str | None, field: str | None, status: int = 400
) -> Response:
    return ctx.page(
        "eUICCs", _filters(ctx, eid, labels, state, msg or "invalid", field), status=status, active="/ui/euiccs"
    )


def certificate(der_b64: str | None) -> str:
    if not der_b64:
        return "not known yet (learned by an eUICC data request)"
    import base64

    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
    except ValueError as exc:
        return f"cannot be read: {h.esc(exc)}"
    now = time.time()
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    ok = "valid" if nb.timestamp() <= now <= na.timestamp() else "OUTSIDE ITS VALIDITY"
    return (
        f"{h.esc(cert.subject.rfc4514_string())}<br>issuer {h.esc(cert.issuer.rfc4514_string())}<br>"
        f"{h.esc(nb.date())} .. {h.esc(na.date())}: <strong>{ok}</strong>"
    )


async def show(ctx: Any, *, error: str = "", field: str | None = None, status: int = 200) -> Response:
    eid = ctx.params["eid"]
    answer = await ctx.call("GET", f"/v1/euiccs/{quote(eid, safe='')}")
    if not answer.ok:
        return ctx.error_page("eUICC", answer)
    e = answer.body
    q = ctx.request.query_params
    ops_at, audit_at = q.get("ops") or None, q.get("audit") or None  # cursors of the REST lists, newest first
    ops = await ctx.call(
        "GET", "/v1/operations", params=_params(eid=e["eid"], limit=OPS_PAGE, order="desc", cursor=ops_at)
    )
    audit_answer = await ctx.call(
        "GET", f"/v1/euiccs/{e['eid']}/audit", params=_params(limit=AUDIT_PAGE, order="desc", cursor=audit_at)
    )
    for name, a in (("ops", ops), ("audit", audit_answer)):
        if not a.ok and not error:  # an edited or foreign cursor: say so, show the page without that list
            error, field, status = a.error.get("message") or "invalid", name, a.status
    audit = audit_answer.body.get("items", []) if audit_answer.ok else []
    states = state_of(e, time.time(), ctx.dash.default_poll_interval_s)
    push = e.get("push")
    facts = [
        ("EID", h.esc(e["eid"])),
        ("state", " ".join(h.status(s) for s in states)),
        ("last contact", h.when(e.get("last_contact"))),
        ("binding", h.esc(e.get("binding") or "-")),
        ("reachable by push", h.esc(f"{push['binding']} since {push.get('since')}") if push else "no"),
        ("SGP.32 version", h.esc(e.get("sgp32_version") or "v1.2 (no v1.0 message seen)")),
        ("eIM (this one)", h.esc(e.get("eim_id"))),
        ("association token", h.esc(e.get("association_token"))),
        ("counter value", h.esc(e.get("counter_value"))),
        ("trusted CI", h.esc(e.get("trusted_ci") or "any configured CI")),
        ("eUICC certificate", certificate(e.get("euicc_certificate"))),
        ("labels", " ".join(f'<span class="tag">{h.esc(k)}={h.esc(v)}</span>' for k, v in e["labels"].items())),
        ("note", h.esc(e.get("note") or "")),
        (
            "expected poll interval",
            h.esc(e.get("poll_interval_s") or f"{ctx.dash.default_poll_interval_s:.0f} s (default)"),
        ),
        ("registered", h.when(e.get("created_at"))),
    ]
    profiles = e.get("profiles") or []
    prof_cols = sorted({k for p in profiles for k in p}) if profiles else ["profiles"]
    prof = h.table(prof_cols, [[h.esc(p.get(c, "")) for c in prof_cols] for p in profiles], empty="none reported")
    eims = (e.get("info") or {}).get("eims") or (e.get("info") or {}).get("eimConfigurationData")
    op_rows = [
        [
            h.link(f"/ui/operations/{o['id']}", o["id"][:8]),
            h.esc(o["kind"]),
            h.status(o["status"]),
            h.when(o["created_at"]),
            h.esc(o["created_by"]),
            h.esc(o.get("error") or o.get("result_code") or ""),
        ]
        for o in (ops.body.get("items", []) if ops.ok else [])
    ]
    audit_rows = [
        [
            h.when(a["at"]),
            h.esc(a["who"]),
            h.esc(a["action"]),
            h.esc(a["outcome"]),
            h.link(f"/ui/operations/{a['operation_id']}", a["operation_id"][:8]) if a["operation_id"] else "",
            f"<code>{h.esc(_short(a['detail']))}</code>",
        ]
        for a in audit
    ]
    here = f"/ui/euiccs/{e['eid']}"
    older_ops = (ops.body.get("next") if ops.ok else None) and h.url(here, ops=ops.body["next"], audit=audit_at)
    older_audit = (audit_answer.body.get("next") if audit_answer.ok else None) and h.url(
        here, ops=ops_at, audit=audit_answer.body["next"]
    )
    body = [
        h.error_box(error, field),
        h.kv(facts),
        "<h2>Profiles</h2>",
        prof,
        "<h2>eIMs</h2>",
        h.pretty(eims)
        if eims
        else f"<p>associated with <strong>{h.esc(e.get('eim_id'))}</strong> "
        "(other eIMs on the card show after an eCO <code>listEim</code>)</p>",
        "<h2>Learned data</h2>",
        h.pretty({"ipa_capabilities": e.get("ipa_capabilities"), "info": e.get("info")}),
        f"<h2>Operations</h2><p>{h.link(h.url('/ui/operations', eid=e['eid']), 'all operations of this eUICC')}</p>",
        h.table(["id", "kind", "status", "created", "by", "error / code"], op_rows),
        _older(older_ops, h.url(here, audit=audit_at) if ops_at else None, "ops", "operations"),
        '<h2 id="audit">Audit trail</h2>',
        h.table(["at", "who", "action", "outcome", "operation", "detail"], audit_rows, cls="audit"),
        _older(older_audit, h.url(here, ops=ops_at) + "#audit" if audit_at else None, "audit", "audit"),
    ]
    if ctx.can_act:
        body.insert(2, _edit_forms(ctx, e))
    return ctx.page(f"eUICC {e['eid']}", "".join(body), status=status, active="/ui/euiccs")


def _older(older: str | None, newest: str | None, key: str, what: str) -> str:
    """Paging of a newest-first list on the eUICC page: "Older" follows the REST cursor, "Newest" starts over."""
    links = []
    if newest:
        links.append(f'<a class="btn" id="{key}-newest" href="{h.esc(newest)}">&larr; Newest {what}</a>')
    if older:
        anchor = "#audit" if key == "audit" else ""
        href = h.esc(older + anchor)
        links.append(f'<a class="btn" id="{key}-older" rel="next" href="{href}">Older {what} &rarr;</a>')
    return f'<p class="pager">{" ".join(links)}</p>' if links else ""


def _edit_forms(ctx: Any, e: dict[str, Any]) -> str:
    labels = "\n".join(f"{k}={v}" for k, v in e["labels"].items())
    eid = e["eid"]
    return (
        f'<p class="actions"><a class="btn" href="{h.esc(h.url("/ui/operations/new", eid=eid))}">'
        "Queue an operation</a></p>"
        f'<details class="edit"><summary>Relabel / note / remove</summary>'
        f'<form method="post" action="/ui/euiccs/{eid}/edit">{h.csrf_field(ctx.session.csrf)}'
        f'<label>Labels, one key=value a line (the whole set)<textarea name="labels" id="f-labels" rows="4">'
        f"{h.esc(labels)}</textarea></label>"
        f'<label>Note <input name="note" id="f-note" value="{h.esc(e.get("note") or "")}"></label>'
        f'<label>Expected poll interval (s, empty: default) <input name="poll_interval_s" id="f-poll_interval_s"'
        f' value="{h.esc(e.get("poll_interval_s") or "")}"></label>'
        '<button type="submit" class="btn">Save</button></form>'
        f'<form method="post" action="/ui/euiccs/{eid}/delete" data-confirm="Remove this eUICC?">'
        f'{h.csrf_field(ctx.session.csrf)}<label><input type="checkbox" name="force" value="true"> cancel its open '
        'operations</label> <button type="submit" class="btn danger">Remove</button></form></details>'
    )


def parse_label_lines(text: str) -> dict[str, str] | str:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        k, eq, v = line.partition("=")
        if not eq:
            return f"line {n}: must be key=value"
        out[k.strip()] = v.strip()
    return out


async def edit(ctx: Any) -> Response:
    eid = ctx.params["eid"]
    current = await ctx.call("GET", f"/v1/euiccs/{quote(eid, safe='')}")
    if not current.ok:
        return ctx.error_page("eUICC", current)
    labels = parse_label_lines(ctx.form.get("labels"))
    if isinstance(labels, str):
        return await show(ctx, error=labels, field="labels", status=400)
    patch: dict[str, Any] = {"labels": {**{k: None for k in current.body["labels"] if k not in labels}, **labels}}
    patch["note"] = ctx.form.get("note") or None
    p = ctx.form.get("poll_interval_s").strip()
    patch["poll_interval_s"] = p or None  # the API validates the number (422 / 400 naming poll_interval_s)
    answer = await ctx.call("PATCH", f"/v1/euiccs/{quote(eid, safe='')}", json_body=patch)
    if not answer.ok:
        err = answer.error
        return await show(ctx, error=err.get("message", ""), field=err.get("field") or "labels", status=answer.status)
    return RedirectResponse(f"/ui/euiccs/{eid}", 303)


async def delete(ctx: Any) -> Response:
    eid = ctx.params["eid"]
    force = ctx.form.get("force") == "true"
    answer = await ctx.call(
        "DELETE", f"/v1/euiccs/{quote(eid, safe='')}", params={"force": "true" if force else "false"}
    )
    if not answer.ok:
        err = answer.error
        if answer.status == 404:
            return ctx.error_page("eUICC", answer)
        return await show(ctx, error=err.get("message", ""), field=err.get("field") or "force", status=answer.status)
    return RedirectResponse("/ui/euiccs", 303)


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v not in (None, "", [])}


def _short(detail: Any) -> str:
    import json

    text = json.dumps(detail, sort_keys=True, default=str) if detail else ""
    return text if len(text) <= 160 else text[:157] + "..."


ROUTES = [
    ("GET", "/ui/euiccs", list_page),
    ("GET", r"/ui/euiccs/(?P<eid>[0-9A-Za-z]{1,64})", show),
    ("POST", r"/ui/euiccs/(?P<eid>[0-9A-Za-z]{1,64})/edit", edit),
    ("POST", r"/ui/euiccs/(?P<eid>[0-9A-Za-z]{1,64})/delete", delete),
]
