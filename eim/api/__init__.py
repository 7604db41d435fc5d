"""The operator REST API (FastAPI, OpenAPI at ``/openapi.json``, docs at ``/docs``).

Every error answer has the same body, ``{"error": {"code": ..., "message": ...}}``: 400 for values the eIM cannot
use or a query parameter the endpoint does not know (``field`` names it, ``eim.api.paging``), 401 without a
valid operator token, 403 when the operator's role does not allow the call, 413 for a body over the limit
(``eim.api.front``), 404 for unknown eUICCs / operations / batches, 409 for a state conflict (cancelling a finished
operation), 422 for a body or query that is not the expected JSON / values (``GET /v1/notifications?status=bogus``).

Routes live here (registry, operations, notifications, plumbing) and in ``eim.api.fleet`` (PATCH / DELETE of an
eUICC, ``/v1/fleet``), ``eim.api.batches``, ``eim.api.subscriptions`` (webhooks) and ``eim.api.docs`` (Swagger UI
from the package). Lists page with opaque cursors (``eim.api.paging``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import uuid
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from eim.api.auth import OperatorRegistry
from eim.api.openapi import declare_bearer_auth
from eim.api.paging import decode_cursor, page, reject_unknown_query
from eim.metrics import CONTENT_TYPE, Metrics
from eim.model import Batch, Euicc, NotificationStatus, Operation, OpKind, OpStatus, OutboundNotification
from eim.operations import Conflict, NotFound, OperationService
from eim.packages.common import ParamError, normalise_eid
from eim.store import Store, StoreError

log = logging.getLogger("eim.api")

INT32 = 2**31
_HEX = re.compile(r"^[0-9A-Fa-f]{2,64}$")


# ----------------------------------------------------------------------------------------------- models
class EuiccIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eid: str = Field(description="32 decimal digits with valid check digits")
    eim_id: str | None = Field(None, min_length=1, max_length=128, description="default: this eIM's eimId")
    association_token: int | None = Field(None, ge=-INT32, lt=INT32)
    counter_value: int = Field(0, ge=0, lt=INT32, description="last counter value the eUICC has seen")
    trusted_ci: str | None = Field(None, description="CI SubjectKeyIdentifier (hex) the eUICC chains to")
    labels: dict[str, str] = Field(default_factory=dict)


class OperationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: OpKind
    params: dict[str, Any] = Field(default_factory=dict)
    validity_s: float | None = Field(None, gt=0, description="seconds from not_before (or now) until expiry")
    not_before: dt.datetime | None = None


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def euicc_view(e: Euicc) -> dict[str, Any]:
    import base64

    return {
        "eid": e.eid,
        "eim_id": e.eim_id,
        "association_token": e.association_token,
        "counter_value": e.counter_value,
        "trusted_ci": e.trusted_ci,
        "certificate_known": e.euicc_certificate is not None,
        "euicc_certificate": base64.b64encode(e.euicc_certificate).decode() if e.euicc_certificate else None,
        "eum_certificate": base64.b64encode(e.eum_certificate).decode() if e.eum_certificate else None,
        "last_contact": _iso(e.last_contact),
        "binding": e.binding,
        "profiles": e.profiles,
        "ipa_capabilities": e.ipa_capabilities,
        "info": e.info,
        "labels": e.labels,
        "note": e.note,
        "poll_interval_s": e.poll_interval_s,
        "last_seq_number": e.last_seq_number,
        "sgp32_version": e.sgp32_version,
        "created_at": _iso(e.created_at),
        "enabled_iccid": e.enabled_iccid,
        "enabled_smdp": e.enabled_smdp,
    }


def operation_view(o: Operation) -> dict[str, Any]:
    return {
        "id": o.id,
        "eid": o.eid,
        "kind": o.kind.value,
        "params": o.params,
        "status": o.status.value,
        "created_at": _iso(o.created_at),
        "updated_at": _iso(o.updated_at),
        "not_before": _iso(o.not_before),
        "expires_at": _iso(o.expires_at),
        "created_by": o.created_by,
        "batch_id": o.batch_id,
        "attempts": o.attempts,
        "counter_value": o.counter_value,
        "eim_transaction_id": o.eim_transaction_id.hex().upper() if o.eim_transaction_id else None,
        "result": o.result,
        "result_code": o.result_code,
        "error": o.error,
    }


def batch_view(b: Batch, ops: dict[str, Operation]) -> dict[str, Any]:
    items = []
    summary: dict[str, int] = {}
    for it in b.items:
        op = ops.get(it.operation_id) if it.operation_id else None
        status = op.status.value if op else "refused"
        summary[status] = summary.get(status, 0) + 1
        items.append(
            {
                "index": it.index,
                "eid": it.eid,
                "operation_id": it.operation_id,
                "status": status,
                "result_code": op.result_code if op else None,
                "error": (op.error if op else it.error),
            }
        )
    return {
        "id": b.id,
        "kind": b.kind.value,
        "params": b.params,
        "created_at": _iso(b.created_at),
        "created_by": b.created_by,
        "summary": summary,
        "items": items,
    }


def notification_view(n: OutboundNotification) -> dict[str, Any]:
    import base64

    return {
        "id": n.id,
        "status": n.status.value,
        "kind": n.kind,
        "eid": n.eid,
        "operation_id": n.operation_id,
        "seq_number": n.seq_number,
        "address": n.address,
        "attempts": n.attempts,
        "created_at": _iso(n.created_at),
        "updated_at": _iso(n.updated_at),
        "next_attempt_at": _iso(n.next_attempt_at) if n.status is NotificationStatus.PENDING else None,
        "leased": n.lease_until is not None,
        "last_error": n.last_error,
        "digest": n.digest,
        "notification": base64.b64encode(n.notification).decode(),
    }


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status)


def _check_uuid(value: str, what: str) -> None:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError):
        raise NotFound(f"{what} {value[:80]!r} not found") from None


def _eid(value: str) -> str:
    try:
        return normalise_eid(value)
    except ParamError as exc:
        raise NotFound(f"eUICC {value[:80]!r} not found ({exc.reason})") from None


def _window(body: OperationIn) -> tuple[float | None, float | None]:
    nb = None
    if body.not_before is not None:
        t = body.not_before
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        nb = t.timestamp()
        if not math.isfinite(nb):
            raise ParamError("not_before", "not a usable time")
    if body.validity_s is not None and not math.isfinite(body.validity_s):
        raise ParamError("validity_s", "must be a finite number of seconds")
    return nb, body.validity_s


# ----------------------------------------------------------------------------------------------- app
def create_api(
    service: OperationService,
    store: Store,
    *,
    metrics: Metrics | None = None,
    registry: OperatorRegistry | None = None,
    title: str = "eIM operator API",
    settings: Any = None,
) -> FastAPI:
    """The REST API over ``service``. Authentication, roles and body limits are checked in front of it
    (``eim.api.front.ApiFront``, wired by ``eim.app.create_app``); ``registry`` lists the operators for
    ``GET /v1/operators``. ``settings``: :class:`eim.api.fleet.FleetApiSettings` (fleet, events, batches)."""
    from eim.api import batches, docs, fleet, subscriptions

    app = FastAPI(
        title=title,
        version="1.0",
        # an API answers the path it was given: /v1/notifications/%2F is a 404 naming it, not a 307 to another path
        redirect_slashes=False,
        description="SGP.32 v1.2 eIM: register eUICCs, queue operations (PSMO, eCO, profile download, eUICC data), "
        'follow them, run batches. Errors: {"error": {"code", "message"}}.',
        docs_url=None,  # served from the package (eim.api.docs): no CDN
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.service = service
    app.state.store = store
    app.state.metrics = metrics
    declare_bearer_auth(app)

    @app.exception_handler(StoreError)
    @app.exception_handler(OSError)
    async def store_unavailable(request: Request, exc: Exception):
        log.error("store unavailable", extra={"path": request.url.path, "error": str(exc)})
        return _error(503, "store_unavailable", f"the store is not available: {exc}")

    def who(request: Request) -> str:
        """The audit trail's name of the caller: the authenticated operator (``X-Operator`` is not trusted)."""
        operator = getattr(request.state, "operator", None)
        return f"operator:{operator.name}" if operator is not None else "operator"

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        details = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            details.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(details)[:2000] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(ParamError)
    async def bad_param(_request: Request, exc: ParamError):
        return _error(400, "invalid_parameter", str(exc), field=exc.field)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound):
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict):
        return _error(409, "conflict", str(exc))

    # -------------------------------------------------------------------------------- registry
    @app.post("/v1/euiccs", status_code=201, tags=["eUICCs"], summary="Register an eUICC")
    async def register(body: EuiccIn, request: Request, response: Response):
        if body.eim_id is not None and not body.eim_id.isprintable():
            raise ParamError("eim_id", "must be printable text")
        if body.trusted_ci is not None and not _HEX.match(body.trusted_ci):
            raise ParamError("trusted_ci", "must be a CI SubjectKeyIdentifier in hex")
        for k, v in body.labels.items():
            if not (0 < len(k) <= 64 and len(v) <= 256 and k.isprintable() and v.isprintable()):
                raise ParamError("labels", "keys 1..64 and values up to 256 printable characters")
        e, created = await service.register_euicc(
            body.eid,
            eim_id=body.eim_id,
            association_token=body.association_token,
            counter_value=body.counter_value,
            trusted_ci=body.trusted_ci,
            labels=body.labels,
            who=who(request),
        )
        if not created:
            response.status_code = 200
        response.headers["Location"] = f"/v1/euiccs/{e.eid}"
        return {"created": created, "euicc": euicc_view(e)}

    @app.get("/v1/euiccs", tags=["eUICCs"], summary="List eUICCs (by EID, paged, filtered by labels)")
    async def list_euiccs(
        request: Request,
        label: list[str] = Query([], description="key=value; repeat for more (all must match)"),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
        state: str | None = Query(None, description="never_seen, seen_1h, seen_24h or stale (see GET /v1/fleet)"),
    ):
        after = decode_cursor("euiccs", cursor)
        if after is not None and not isinstance(after, str):
            raise ParamError("cursor", "not a cursor of this list")
        in_state = fleet.state_filter(state, settings)
        items = await store.find_euiccs(labels=fleet.parse_labels(label), limit=limit, after=after, state=in_state)
        return page(request, [euicc_view(e) for e in items], limit, "euiccs", items[-1].eid if items else None)

    @app.get("/v1/euiccs/{eid}", tags=["eUICCs"], summary="One eUICC with what the eIM learned about it")
    async def show_euicc(eid: str):
        euicc = await service.get_euicc(_eid(eid))
        push = service.push_status(euicc)  # reachable by push now: {"binding": "coap", "since": ...} or None
        if push is not None:
            push = {**push, "since": _iso(push.get("since"))}
        return {**euicc_view(euicc), "push": push}

    # -------------------------------------------------------------------------------- operations
    @app.post("/v1/euiccs/{eid}/operations", status_code=202, tags=["operations"], summary="Queue an operation")
    async def create_operation(eid: str, body: OperationIn, request: Request, response: Response):
        nb, validity = _window(body)
        op = await service.create(
            _eid(eid), body.kind, body.params, validity_s=validity, not_before=nb, who=who(request)
        )
        response.headers["Location"] = f"/v1/operations/{op.id}"
        return {"id": op.id, "status": op.status.value, "operation": operation_view(op)}

    @app.get("/v1/operations/{op_id}", tags=["operations"], summary="One operation with its audit trail")
    async def show_operation(op_id: str):
        _check_uuid(op_id, "operation")
        op = await service.get(op_id)
        audit = await store.list_audit(operation_id=op_id, limit=1000)
        view = operation_view(op)
        view["audit"] = [
            {"at": _iso(a.at), "who": a.who, "action": a.action, "outcome": a.outcome, "detail": a.detail}
            for a in audit
        ]
        return view

    @app.get("/v1/operations", tags=["operations"], summary="List operations (filters combine)")
    async def list_operations(
        request: Request,
        eid: str | None = None,
        status: OpStatus | None = None,
        kind: OpKind | None = None,
        batch_id: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
        order: Literal["asc", "desc"] = Query("asc", description="asc: oldest first; desc: newest first"),
    ):
        name = "operations" if order == "asc" else "operations.desc"  # a cursor pages in the order it was made in
        after = _int_cursor(name, cursor)
        if eid is not None:
            eid = _eid(eid)
        if batch_id is not None:
            _check_uuid(batch_id, "batch")
        desc = order == "desc"
        ops = await store.list_operations(
            eid=eid, status=status, kind=kind, batch_id=batch_id, limit=limit, after_seq=after, descending=desc
        )
        return page(request, [operation_view(o) for o in ops], limit, name, ops[-1].seq if ops else None)

    @app.get(
        "/v1/euiccs/{eid}/audit",
        tags=["eUICCs"],
        summary="One eUICC's audit trail (kept after the eUICC is removed)",
        description="Every audited step about this EID: registration, changes, its operations' steps. Paged like "
        "every list; `order=desc` gives the newest first.",
    )
    async def list_euicc_audit(
        eid: str,
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
        order: Literal["asc", "desc"] = Query("asc", description="asc: oldest first; desc: newest first"),
    ):
        name = "audit" if order == "asc" else "audit.desc"
        after = _int_cursor(name, cursor)
        rows = await store.list_audit(eid=_eid(eid), limit=limit, after_id=after, descending=order == "desc")
        items = [
            {
                "id": a.id,
                "at": _iso(a.at),
                "who": a.who,
                "action": a.action,
                "outcome": a.outcome,
                "operation_id": a.operation_id,
                "detail": a.detail,
            }
            for a in rows
        ]
        return page(request, items, limit, name, rows[-1].id if rows else None)

    @app.post("/v1/operations/{op_id}/cancel", tags=["operations"], summary="Cancel a queued or running operation")
    async def cancel(op_id: str, request: Request):
        _check_uuid(op_id, "operation")
        return operation_view(await service.cancel(op_id, who=who(request)))

    # -------------------------------------------------------------------------------- notification outbox
    @app.get(
        "/v1/notifications",
        tags=["notifications"],
        summary="Notifications the eIM owes SM-DP+s: pending (waiting for delivery) or failed (with the reason)",
        description="The outbox of ES9+ HandleNotification deliveries. A delivered notification leaves it (the "
        "audit trail keeps 'notification delivered'); one the SM-DP+ refused for good, or whose attempts ran out, "
        "stays with status failed and last_error. `notification` is the PIR / otherSignedNotification as the IPA "
        "sent it (base64 DER).",
    )
    async def list_notifications(
        request: Request,
        status: NotificationStatus | None = Query(None, description="pending | failed (default: both)"),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="the 'next' value of the previous page"),
    ):
        after = _int_cursor("notifications", cursor)
        items = await store.list_notifications(status=status, limit=limit, after_id=after)
        return page(
            request, [notification_view(n) for n in items], limit, "notifications", items[-1].id if items else None
        )

    # -------------------------------------------------------------------------------- plumbing
    @app.get("/metrics", tags=["plumbing"], summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint():
        if metrics is None:
            return Response(b"", media_type=CONTENT_TYPE)
        await metrics.refresh(store)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/v1/operators",
        tags=["operators"],
        summary="Who may use the API (admin role): names and roles, never tokens",
        description="Operators are added, rotated and removed on the eIM's host with `eim operator`.",
    )
    async def list_operators():
        ops = registry.operators() if registry is not None else []
        return {"items": [{"name": o.name, "role": o.role.value} for o in ops]}

    @app.get("/healthz", tags=["plumbing"], summary="Liveness and store reachability")
    async def health():
        try:
            await store.schema_version()
        except Exception as exc:
            return _error(503, "store_unavailable", str(exc))
        return {"status": "ok", "store": store.dialect}

    s = settings or fleet.FleetApiSettings()
    fleet.register(app, service, store, s, who)
    batches.register(app, service, store, s, who)
    subscriptions.register(app, store, s, who)
    docs.register(app)
    return app


def _int_cursor(name: str, cursor: str | None) -> int | None:
    after = decode_cursor(name, cursor)
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**62):
        raise ParamError("cursor", "not a cursor of this list")
    return after
