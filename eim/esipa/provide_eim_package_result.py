"""ESipa.ProvideEimPackageResult (SGP.32 v1.2 §6.3.2 ESipa functions, "ProvideEimPackageResult"; protocol brief §2.3).

``BF50 { [5A eidValue], eimPackageResult }`` with every alternative: ``euiccPackageResult`` (BF51),
``ePRAndNotifications`` (30 { BF51, A0 notifications }), ``ipaEuiccDataResponse`` (BF52),
``profileDownloadTriggerResult`` (BF54) and ``eimPackageResultResponseError`` (A0).

Answer: ``eimAcknowledgements`` (BF53, the EPR's seqNumber and the seqNumbers of the notifications handled) when
there is something for the IPA to delete, else ``emptyResponse`` (``BF50 02 30 00``). ``provideEimPackageResultError``:
``invalidEid`` (3) for a malformed eidValue, ``eidNotFound`` (2) for an unknown one, ``missingEid`` (4) when no EID
is given and nothing in the result names the operation, ``undefinedError`` (127) when the result is refused
(signature, echo, certificate, no matching operation, an unsigned error that may not end anything): the
operation stays open and nothing is acknowledged, but each refusal is recorded on it (once per hand-out): after
``[operations] max_handouts`` hand-outs whose results were refused or could not be decoded, it ends ``failed``
with the last refusal's code and reason (:mod:`eim.store.retries`).

Unsigned errors - ``euiccPackageErrorUnsigned`` inside the BF51 and ``eimPackageResultResponseError`` - end
their operation only when the binding authenticated the operation's EID (``RequestContext.eid_hint``) and their
eimTransactionId names it (docs/eim.md, "How results are verified"). From anyone else they are audited as
unverified and answered ``undefinedError``: of the four codes of ``provideEimPackageResultError`` it is the only
one that fits (the EID is valid and known), and an answer that is not ``emptyResponse`` tells the IPA the eIM
did not take the result, so a genuine IPA behind an unauthenticated binding retries, and the operation stays in
progress (its package is handed out again on the next poll, within its validity, up to the hand-out cap).

Fast path (:func:`plain_result`): nearly every result arrives as ``BF50 L { 5A 10 <16 bytes>, BF51 ... }`` (an
eidValue and a euiccPackageResult, nothing else). When the whole message is exactly that, in DER, and its BF51
parses with :func:`eim.packages.euicc_package.decode_euicc_package_result` (the decoder plus the DER check the
result needs anyway), the dispatcher takes that value - the same value ``rsp.asn1`` gives for the whole message -
and the parsed result is handed on, so the EuiccPackageResult is decoded once instead of twice (the dispatcher's
decode of the whole message, then the result's own). Anything else, or a BF51 that does not parse, declines and
goes through ``check_structure`` and the full decoder as before, with the same answers and the same records.
"""

from __future__ import annotations

from typing import Any

from eim.esipa import codec
from eim.esipa.results import Handled, ResultProcessor
from eim.interfaces import RequestContext
from eim.packages.common import eid_from_bytes
from eim.packages.euicc_package import EuiccPackageOutcome, decode_euicc_package_result
from rsp import tlv
from rsp.errors import RspError

_EID_HEAD = b"\x5a\x10"


def plain_result(message: bytes) -> tuple[dict[str, Any], EuiccPackageOutcome] | None:
    """A plain ProvideEimPackageResult (``BF50 { 5A 10 <16 bytes>, BF51 ... }`` in DER and nothing else, whose
    BF51 parses): ``(value, parsed result)``, the value exactly as ``rsp.asn1.decode("EsipaMessageFromIpaToEim",
    message)`` gives it; ``None`` for any other input (the caller takes the full decoder)."""
    if message[:2] != b"\xbf\x50":
        return None
    try:
        top = tlv.parse_exact(message)
    except RspError:
        return None
    body = top.value
    if len(body) < 21 or body[:2] != _EID_HEAD or body[18:20] != b"\xbf\x51":
        return None
    try:
        if tlv.encode(0xBF50, body) != message:  # the outer length in its DER form
            return None
        value, outcome = decode_euicc_package_result(body[18:])
    except RspError:
        return None
    return {"eidValue": bytes(body[2:18]), "eimPackageResult": ("euiccPackageResult", value)}, outcome


async def process(
    rp: ResultProcessor,
    value: dict[str, Any],
    raw: bytes,
    ctx: RequestContext,
    parsed: EuiccPackageOutcome | None = None,
) -> tuple[int | None, Handled]:
    """Shared by ProvideEimPackageResult and HandleNotification(provideEimPackageResult).

    ``parsed``: the EuiccPackageResult as :func:`plain_result` parsed it (not parsed again).
    Returns ``(error code or None, handled)``."""
    eid = ctx.eid_hint
    prefetched = None
    # the eimPackageResult alternative as received: the first member that is not the eidValue (walked once for
    # the prefetch and the handling below)
    try:
        part: tlv.Tlv | None = next(c for c in tlv.children(raw, what="ProvideEimPackageResult") if c.tag != 0x5A)
    except (RspError, StopIteration):
        part = None
    if "eidValue" in value:
        eid = eid_from_bytes(value["eidValue"])
        if eid is None or (ctx.eid_hint is not None and eid != ctx.eid_hint):
            return codec.INVALID_EID, Handled()
        epr_raw = _epr_of(value, part)
        if epr_raw is not None:
            # one store call: the EID's registration, the result's operation and its eUICC
            prefetched = await rp.prefetch(epr_raw, eid, parsed=parsed)
            if not prefetched[1].eid_known:
                return codec.EID_NOT_FOUND, Handled()
        elif await rp.store.get_euicc(eid) is None:
            return codec.EID_NOT_FOUND, Handled()
    alt, body = value["eimPackageResult"]
    if part is None:  # not reached for a decoded message; raises as the walk did before
        part = next(c for c in tlv.children(raw, what="ProvideEimPackageResult") if c.tag != 0x5A)
    who = ctx.eid_hint  # the EID the binding authenticated (None: anonymous)
    if alt == "euiccPackageResult":
        handled = await rp.euicc_package_result(part.raw, eid, authenticated_eid=who, prefetched=prefetched)
    elif alt == "ePRAndNotifications":
        epr = tlv.require(part, 0xBF51, what="ePRAndNotifications")
        notes = tlv.require(part, 0xA0, what="ePRAndNotifications")
        handled = await rp.euicc_package_result(epr.raw, eid, authenticated_eid=who, prefetched=prefetched)
        if handled.refused is None:
            owner = handled.operation.eid if handled.operation else eid
            handled.acks += await rp.notifications([n.raw for n in tlv.children(notes)], owner)
    elif alt == "ipaEuiccDataResponse":
        handled = await rp.euicc_data(body, part.raw, eid, authenticated_eid=who)
    elif alt == "profileDownloadTriggerResult":
        handled = await rp.trigger_result(body, part.raw, eid)
    elif alt == "eimPackageResultResponseError":
        handled = await rp.package_error(
            body.get("eimTransactionId"), body["eimPackageResultErrorCode"], eid, authenticated_eid=who
        )
    else:
        handled = Handled(refused="unknown eimPackageResult alternative")
    if handled.refused is not None:
        code = codec.MISSING_EID if eid is None and handled.operation is None else codec.UNDEFINED
        await note_refusal(rp, handled, eid, code)
        return code, handled
    return None, handled


async def note_refusal(rp: ResultProcessor, handled: Handled, eid: str | None, code: int) -> None:
    """The hand-out cap (``[operations] max_handouts``): a refused result counts against its operation, or, when
    none was matched, against the package its eUICC was handed (:meth:`OperationService.note_refusal`)."""
    op = handled.operation
    if op is None and eid is None:
        return
    reason = handled.refused or "refused"
    await rp.service.note_refusal(op.id if op is not None else None, code, reason, eid=None if op else eid)


async def undecodable(rp: ResultProcessor, raw: bytes, ctx: RequestContext, reason: str) -> None:
    """A ProvideEimPackageResult that does not decode counts against the package of the eUICC it names (the
    transport's EID, else its ``5A``); the dispatcher answers it ``undefinedError``."""
    eid = ctx.eid_hint
    if eid is None:
        try:
            found = tlv.find(raw, 0x5A)
        except RspError:
            found = None
        eid = eid_from_bytes(found.value) if found is not None else None
    if eid is not None:
        await rp.service.note_refusal(None, codec.UNDEFINED, f"undecodable ProvideEimPackageResult: {reason}", eid=eid)


def _epr_of(value: dict[str, Any], part: tlv.Tlv | None) -> bytes | None:
    """The EuiccPackageResult (BF51) as received (``part``: the eimPackageResult member as received), for the two
    alternatives that carry one; ``None`` otherwise (or when the bytes do not have the expected shape: the caller
    then takes the generic path)."""
    alt = value["eimPackageResult"][0]
    if alt not in ("euiccPackageResult", "ePRAndNotifications") or part is None:
        return None
    try:
        return part.raw if alt == "euiccPackageResult" else tlv.require(part, 0xBF51, what="ePRAndNotifications").raw
    except RspError:
        return None


async def provide_eim_package_result(
    rp: ResultProcessor,
    value: dict[str, Any],
    raw: bytes,
    ctx: RequestContext,
    parsed: EuiccPackageOutcome | None = None,
) -> bytes:
    error, handled = await process(rp, value, raw, ctx, parsed)
    if error is not None:
        return codec.provide_result_error(error)
    return codec.provide_result_response(handled.acks)
