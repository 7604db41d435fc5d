"""Indirect profile download over ESipa (SGP.32 v1.2 §3.2.3; ESipa.InitiateAuthentication,
ESipa.AuthenticateClient, ESipa.GetBoundProfilePackage, ESipa.CancelSession): the dispatcher's half.

The ES9+ work is the relay's (``eim.relay``, a :class:`eim.interfaces.DownloadRelay`). The dispatcher finds the
EID for it and keeps the operation up to date:

- InitiateAuthentication (BF39) carries no EID: the EID is the one of the download operation that handed out the
  request's ``eimTransactionId``; else the MQTT topic's EID (``RequestContext.eid_hint``); else the dispatcher
  answers ``invalidEimTransactionId`` (52) without calling the relay.
- From the relay's BF39 answer the dispatcher takes the ES9+ ``transactionId`` and records, in the store's
  download sessions under ``dispatch:tx:<HEX>``, ``{"eid", "operation_id"}``; it also links the operation to the
  transactionId (the PIR names it). Every worker sees the mapping.
- AuthenticateClient / GetBoundProfilePackage / CancelSession carry that transactionId: unknown -> the function's
  ``invalidTransactionId`` error without calling the relay.
- CancelSession ends the operation ``failed`` with the eUICC's cancel reason; the PIR (HandleNotification) ends it
  ``done`` or ``failed``.
- A relayed step that failed (the relay's answer is a :class:`eim.interfaces.FailedRelayAnswer`): when the SM-DP+
  refused, or cannot be used, the operation ends ``failed`` at once with the SM-DP+'s subjectCode, reasonCode and
  message (or the relay's reason) in its ``error``, ``result.relay`` and audit trail - the CancelSession the IPA
  sends next cannot overwrite it with ``undefinedReason``. When the SM-DP+ could not be reached (connection
  refused, timeout, HTTP 502/503/504) the operation stays in progress, its package is handed out again after a
  capped backoff (:mod:`eim.store.retries`), and the IPA is told to come back: no ESipa error code means "later"
  (the IPA reports every InitiateAuthentication error as a final profileDownloadError), so the answer is the
  binding's "service unavailable" (HTTP 503, CoAP 5.03, MQTT ``esipa-status`` 503), which the IPA treats as an eIM
  it could not reach: it reports nothing (and, holding an ES9+ session, cancels it with reason ``timeout``, which
  then leaves the deferred operation in progress).
"""

from __future__ import annotations

import logging
from typing import Any

from eim.esipa import codec
from eim.esipa.results import ResultProcessor, session_key
from eim.interfaces import EsipaRejected, RelayFailure, RequestContext
from eim.model import OpKind, OpStatus
from eim.store import ResultUpdate
from eim.store.retries import deferred_this_hand_out
from rsp import asn1, tlv
from rsp.errors import RspError

log = logging.getLogger("eim.esipa")

CANCEL_REASONS = {
    0: "endUserRejection",
    1: "postponed",
    2: "timeout",
    3: "pprNotAllowed",
    4: "metadataMismatch",
    5: "loadBppExecutionError",
    127: "undefinedReason",
}


async def initiate_authentication(rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext) -> bytes:
    txid = value.get("eimTransactionId")
    op = None
    eid = None
    if txid is not None:
        op = await rp.store.find_operation_by_eim_transaction_id(txid)
        if op is None:
            return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
        why = None
        if op.kind is not OpKind.DOWNLOAD:
            why = f"the eimTransactionId belongs to a {op.kind.value} operation"
        elif op.status is not OpStatus.IN_PROGRESS:
            why = f"the download operation is {op.status.value}"
        elif ctx.eid_hint is not None and ctx.eid_hint != op.eid:
            why = f"the request came from eUICC {ctx.eid_hint}"
        if why is not None:  # audited on the operation it names (a late or misdirected request)
            await rp.store.add_audit(
                who="ipa",
                action="initiate_authentication",
                outcome="rejected",
                eid=op.eid,
                operation_id=op.id,
                detail={"code": codec.IA_INVALID_EIM_TRANSACTION_ID, "reason": why, "binding": ctx.binding},
            )
            return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
        eid = op.eid
    elif ctx.eid_hint is not None and await rp.store.get_euicc(ctx.eid_hint) is not None:
        eid = ctx.eid_hint
        ops = await rp.store.list_operations(eid=eid, status=OpStatus.IN_PROGRESS, kind=OpKind.DOWNLOAD, limit=1)
        op = ops[0] if ops else None
    else:
        return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
    if rp.relay is None:
        return codec.initiate_authentication_error(codec.IA_UNDEFINED)
    try:
        answer = await rp.relay.initiate_authentication(eid, raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "initiateAuthentication", "eid": eid, "error": str(exc)})
        return codec.initiate_authentication_error(codec.IA_UNDEFINED)
    answer = await relay_outcome(rp, answer, op.id if op is not None else None)
    transaction_id = _transaction_id_of_answer(answer)
    if transaction_id is not None:
        await rp.store.put_download_session(
            session_key(transaction_id), {"eid": eid, "operation_id": op.id if op else None}
        )
        if op is not None:
            await rp.store.link_smdp_transaction(op.id, transaction_id)
    return answer


def _transaction_id_of_answer(answer: bytes) -> bytes | None:
    """The ES9+ transactionId of an InitiateAuthenticationOkEsipa: ``[0]`` if present, else serverSigned1's."""
    try:
        value = asn1.decode("InitiateAuthenticationResponseEsipa", answer)
    except RspError:
        return None
    alt, body = value
    if alt != "initiateAuthenticationOkEsipa":
        return None
    return body.get("transactionId") or body["serverSigned1"]["transactionId"]


async def _session(rp: ResultProcessor, transaction_id: bytes, ctx: RequestContext) -> dict[str, Any] | None:
    data = await rp.store.get_download_session(session_key(transaction_id))
    if data is None:
        return None
    if ctx.eid_hint is not None and data.get("eid") != ctx.eid_hint:
        return None
    return data


async def authenticate_client(rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext) -> bytes:
    s = await _session(rp, value["transactionId"], ctx)
    if s is None:
        return codec.authenticate_client_error(codec.AC_INVALID_TRANSACTION_ID)
    if rp.relay is None:
        return codec.authenticate_client_error(codec.AC_UNDEFINED)
    try:
        answer = await rp.relay.authenticate_client(s["eid"], raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "authenticateClient", "eid": s["eid"], "error": str(exc)})
        return codec.authenticate_client_error(codec.AC_UNDEFINED)
    return await relay_outcome(rp, answer, s.get("operation_id"))


async def get_bound_profile_package(
    rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext
) -> bytes:
    s = await _session(rp, value["transactionId"], ctx)
    if s is None:
        return codec.get_bound_profile_package_error(codec.GBPP_INVALID_TRANSACTION_ID)
    if rp.relay is None:
        return codec.get_bound_profile_package_error(codec.GBPP_UNDEFINED)
    try:
        answer = await rp.relay.get_bound_profile_package(s["eid"], raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "getBoundProfilePackage", "eid": s["eid"], "error": str(exc)})
        return codec.get_bound_profile_package_error(codec.GBPP_UNDEFINED)
    return await relay_outcome(rp, answer, s.get("operation_id"))


async def cancel_session(rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext) -> bytes:
    transaction_id = value["transactionId"]
    s = await _session(rp, transaction_id, ctx)
    if s is None:
        return codec.cancel_session_error(codec.CS_INVALID_TRANSACTION_ID)
    if rp.relay is None:
        return codec.cancel_session_error(codec.CS_UNDEFINED)
    try:
        answer = await rp.relay.cancel_session(s["eid"], raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "cancelSession", "eid": s["eid"], "error": str(exc)})
        return codec.cancel_session_error(codec.CS_UNDEFINED)
    reason = _cancel_reason(value)
    op_id = s.get("operation_id")
    if op_id:
        op = await rp.store.get_operation(op_id)
        if op is not None and reason == TIMEOUT and deferred_this_hand_out(op):
            # the eIM told the IPA to come back (SM-DP+ unreachable): the download is tried again, not over
            await rp.store.add_audit(
                who="ipa",
                action="cancel_session",
                outcome="in_progress",
                eid=op.eid,
                operation_id=op.id,
                detail={"reason": reason, "name": "timeout", "retry": (op.result or {}).get("retry")},
            )
        elif op is not None:
            name = CANCEL_REASONS.get(reason, str(reason)) if reason is not None else "unknown"
            await rp._record(
                op,
                ResultUpdate(
                    operation_id=op.id,
                    eid=op.eid,
                    who="ipa",
                    now=rp.clock(),
                    status=OpStatus.FAILED,
                    result={"cancelSession": {"reason": reason, "name": name, "answer": answer.hex().upper()}},
                    result_code=reason,
                    error=f"download cancelled by the eUICC/IPA: {name}",
                    action="cancel_session",
                ),
            )
    await rp.store.delete_download_session(session_key(transaction_id))
    return answer


TIMEOUT = 2  # CancelSessionReason timeout


async def relay_outcome(rp: ResultProcessor, answer: bytes, op_id: str | None) -> bytes:
    """Keep why a relayed step failed (see the module docstring). Returns the answer for the IPA; raises
    :class:`EsipaRejected` (503) when the SM-DP+ could not be reached and the operation will be tried again."""
    failure: RelayFailure | None = getattr(answer, "failure", None)
    if failure is None or op_id is None:
        return answer
    op = await rp.store.get_operation(op_id)
    if op is None or op.status is not OpStatus.IN_PROGRESS:
        return answer
    if failure.transient:
        if await rp.service.defer(op.id, failure.function, failure.reason) is not None:
            raise EsipaRejected(503, f"{failure.function}: the SM-DP+ cannot be reached now; try again later")
        return answer
    code = _error_code(answer)
    detail: dict[str, Any] = {"function": failure.function, "esipaCode": code, "reason": failure.reason}
    if failure.subject_code is not None:
        detail.update(subjectCode=failure.subject_code, reasonCode=failure.reason_code, message=failure.message)
        error = f"SM-DP+ refused {failure.function}: subjectCode {failure.subject_code}"
        error += f", reasonCode {failure.reason_code}"
        error += f": {failure.message}" if failure.message else ""
    else:
        error = f"relayed {failure.function} failed: {failure.reason}"
    await rp._record(
        op,
        ResultUpdate(
            operation_id=op.id,
            eid=op.eid,
            who="eim",
            now=rp.clock(),
            status=OpStatus.FAILED,
            result={"relay": detail},
            result_code=code,
            error=error[:500],
            action="relay_failed",
        ),
    )
    return answer


def _error_code(answer: bytes) -> int | None:
    """The INTEGER of a relayed function's error answer (``BF39 { 81 code }``...)."""
    try:
        kids = tlv.children(tlv.parse_exact(answer))
    except RspError:
        return None
    if len(kids) != 1 or not 1 <= kids[0].length <= 4:
        return None
    return int.from_bytes(kids[0].value, "big", signed=True)


def _cancel_reason(value: dict[str, Any]) -> int | None:
    alt, body = value["cancelSessionResponse"]
    if not isinstance(body, dict):
        return None
    if alt == "cancelSessionResponseOk":
        signed = body.get("euiccCancelSessionSigned") or {}
        return signed.get("reason")
    if alt == "compactCancelSessionResponseOk":
        return (body.get("compactEuiccCancelSessionSigned") or {}).get("reason")
    return None
