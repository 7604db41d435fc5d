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
"""

from __future__ import annotations

import logging
from typing import Any

from eim.esipa import codec
from eim.esipa.results import ResultProcessor, session_key
from eim.interfaces import RequestContext
from eim.model import OpKind, OpStatus
from eim.store import ResultUpdate
from rsp import asn1
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
        if op is None or op.kind is not OpKind.DOWNLOAD:
            return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
        if op.status is not OpStatus.IN_PROGRESS:
            return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
        if ctx.eid_hint is not None and ctx.eid_hint != op.eid:
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
        return await rp.relay.authenticate_client(s["eid"], raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "authenticateClient", "eid": s["eid"], "error": str(exc)})
        return codec.authenticate_client_error(codec.AC_UNDEFINED)


async def get_bound_profile_package(
    rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext
) -> bytes:
    s = await _session(rp, value["transactionId"], ctx)
    if s is None:
        return codec.get_bound_profile_package_error(codec.GBPP_INVALID_TRANSACTION_ID)
    if rp.relay is None:
        return codec.get_bound_profile_package_error(codec.GBPP_UNDEFINED)
    try:
        return await rp.relay.get_bound_profile_package(s["eid"], raw)
    except Exception as exc:
        log.warning("relay failed", extra={"function": "getBoundProfilePackage", "eid": s["eid"], "error": str(exc)})
        return codec.get_bound_profile_package_error(codec.GBPP_UNDEFINED)


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
        if op is not None:
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
