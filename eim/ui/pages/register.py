"""``/ui/euiccs/new``: register an eUICC, the form of ``POST /v1/euiccs`` (called in-process).

=====================================================  ======================================================
form                                                   answer
=====================================================  ======================================================
EID missing                                            400 naming ``eid``, nothing stored
EID with a bad length / check digits                   the API's 400 naming ``eid``
association token / counter value not an integer or    the API's 422 naming the field (its own bounds)
out of range
trusted CI not hex, eIM id not printable               the API's 400 naming ``trusted_ci`` / ``eim_id``
a label line without ``=``, a key or value too long    400 naming ``labels`` (the API's bounds)
the EID is already registered                          200, the form again saying so (nothing changed)
=====================================================  ======================================================

The numbers go to the API as the text typed: its model parses them, so the bounds and messages are the API's.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from eim.ui import html as h
from eim.ui.pages.euiccs import parse_label_lines

FIELDS = ("eid", "eim_id", "association_token", "counter_value", "trusted_ci", "labels")


def form(ctx: Any, v: dict[str, str], error: str = "", field: str | None = None, note: str = "") -> str:
    def text(name: str, label: str, size: int = 34, hint: str = "") -> str:
        return (
            f'<label>{h.esc(label)} <input name="{name}" id="f-{name}" value="{h.esc(v.get(name, ""))}"'
            f' size="{size}"{hint}></label>'
        )

    return (
        h.notice(note)
        + h.error_box(error, field)
        + f'<form method="post" action="/ui/euiccs/new" class="stack">{h.csrf_field(ctx.session.csrf)}'
        + text("eid", "EID (32 digits)", hint=" required")
        + text("eim_id", "eIM id (empty: this eIM's)", 40)
        + text("association_token", "Association token (empty: none)", 12)
        + text("counter_value", "Counter value the eUICC has seen (empty: 0)", 12)
        + text("trusted_ci", "Trusted CI SubjectKeyIdentifier, hex (empty: any configured CI)", 44)
        + f'<label>Labels, one key=value a line <textarea name="labels" id="f-labels" rows="3">'
        f"{h.esc(v.get('labels', ''))}</textarea></label>"
        '<button type="submit" class="btn">Register</button></form>'
        '<p class="muted">Many at once: <code>eim register --file</code> or <code>POST /v1/euiccs</code> '
        "per EID (docs/eim.md). Registering an EID that is already there changes nothing.</p>"
    )


def body_of(v: dict[str, str]) -> dict[str, Any] | tuple[str, str]:
    """The API's JSON body, or ``(field, reason)`` for what only the form can get wrong."""
    eid = v.get("eid", "").strip()
    if not eid:
        return "eid", "required"
    labels = parse_label_lines(v.get("labels", ""))
    if isinstance(labels, str):
        return "labels", labels
    body: dict[str, Any] = {"eid": eid, "labels": labels}
    for name in ("eim_id", "association_token", "counter_value", "trusted_ci"):
        value = v.get(name, "").strip()
        if value:
            body[name] = value
    return body


async def new(ctx: Any) -> Response:
    return ctx.page("Register an eUICC", form(ctx, {}), active="/ui/euiccs")


async def create(ctx: Any) -> Response:
    v = {k: ctx.form.get(k) for k in FIELDS}
    body = body_of(v)
    if isinstance(body, tuple):
        return ctx.page("Register an eUICC", form(ctx, v, body[1], body[0]), status=400, active="/ui/euiccs")
    answer = await ctx.call("POST", "/v1/euiccs", json_body=body)
    if not answer.ok:
        err = answer.error
        field = err.get("field") or ("eid" if answer.status == 404 else None)
        page = form(ctx, v, err.get("message") or "refused", field)
        return ctx.page("Register an eUICC", page, status=answer.status, active="/ui/euiccs")
    eid = answer.body["euicc"]["eid"]
    if not answer.body.get("created"):
        note = f"eUICC {eid} was already registered: nothing changed."
        page = form(ctx, {}, note=note) + f"<p>{h.link(f'/ui/euiccs/{eid}', 'Open it')}</p>"
        return ctx.page("Register an eUICC", page, active="/ui/euiccs")
    return RedirectResponse(f"/ui/euiccs/{eid}", 303)


ROUTES = [("GET", "/ui/euiccs/new", new), ("POST", "/ui/euiccs/new", create)]
