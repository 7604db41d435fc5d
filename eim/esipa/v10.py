"""Serving IPAs that speak SGP.32 v1.0 (SGP.32 v1.0 §6.3.2.7 ProvideEimPackageResult, §2.11.2.2 IpaEuiccData,
§6.3.2.1 InitiateAuthentication), mapped onto the same processing as v1.2.

Recognition is by shape (the first member of ``BF50`` and what it holds), never by a version field (there is none):

==========================================================  ===========================================
received                                                    read as
==========================================================  ===========================================
``BF50 { 30 {...} }`` whose 30 does not begin as v1.2's    v1.0 ePRAndNotifications (a broken one is
``30 { BF51, A0, ... }`` (v1.0: ``30 { BF51, BF2B }``)        refused, as any broken v1.0 message)
``BF50`` whose first member is not ``5A`` and does not       either version's, broken: refused the v1.0 way
parse as TLVs                                               (a 400 is a failure for a v1.2 IPA too)
``BF50 { 02 ... }`` (a bare INTEGER)                        v1.0 eimPackageError
``BF50 { BF52 { A0 {...} } }`` with ``80`` or ``BF2B`` in    v1.0 IpaEuiccData
the A0, or with none of ``87 81 A0 A2`` in it (and no ``5A``)
``BF50 { BF52 { 81 ... } }``                                 v1.0 ipaEuiccDataError
``BF50 { BF54 { ... 30 {...} } }`` whose 30 is empty or      v1.0 profileDownloadError
holds one ``80`` of more than 4 bytes (errorResponse)
``BF50`` whose first member is none of ``5A A0 30 BF51``     neither version's: refused the v1.0 way (a 400 is a
``BF52 BF54``                                               failure for a v1.2 IPA too)
anything else                                               v1.2 (``eim.esipa.dispatcher``)
==========================================================  ===========================================

A ``BF50 { BF51 }`` and a ``BF39`` without ``82`` are the same bytes in both versions and stay on the v1.2 path;
``BF39`` without eimTransactionId is bound here (:func:`initiate_authentication`).

Processing: the ``BF51`` (and every ``BF51`` and notification inside ``BF2B``) is cut from the received bytes and
given unchanged to :class:`eim.esipa.results.ResultProcessor` (``euicc_package_result``, ``notifications``). A v1.0
IpaEuiccData is rewritten as the v1.2 ``IpaEuiccDataResponse`` of its operation (``80`` -> ``81``, ``BF2B``'s lists
-> ``A0`` / ``A2``, ``87`` = the operation's eimTransactionId; every other member, certificates included, copied byte
for byte; nothing in it is signed as a whole) and given to ``euicc_data``.

The EID of a v1.0 message: the operation the result's eimTransactionId names (verified by the eUICC's signature);
for IpaEuiccData, the EID of the eUICC certificate in it once that certificate chains to a trusted CI, else
``RequestContext.eid_hint`` (the EID the binding authenticated). A certificate EID that contradicts the hint is
refused.

Answers (v1.0 ``ProvideEimPackageResultResponse ::= [80] SEQUENCE { eimAcknowledgements [83] OPTIONAL }`` has no
error alternative): accepted -> ``BF50 { BF53 {...} }`` or ``BF50 00``; refused or malformed ->
:class:`eim.interfaces.EsipaRejected` (HTTP 400 with a text body, CoAP 4.00, MQTT error reply). A v1.0 IPA must not
read a refusal as success: onomondo-ipa (``esipa.c`` ``ipa_esipa_msg_to_ipa_dec``) treats an empty or undecodable
body as a failed call and then skips ES10b.RemoveNotificationFromList (``proc_euicc_pkg_dwnld_exec.c``), so the
result stays on the eUICC; its HTTP client does not look at the status code, so a ``BF50`` error body on a 4xx would
still be read as success. The v1.2 error ``BF50 03 02 01 7F`` is exactly that trap.
"""

from __future__ import annotations

import logging
from typing import Any

from eim.esipa import codec, indirect_download
from eim.esipa.results import Handled, ResultProcessor
from eim.interfaces import EsipaRejected, RequestContext
from eim.model import OpKind, OpStatus
from eim.packages.common import integer_tlv
from rsp import asn1, tlv
from rsp.errors import RspError

log = logging.getLogger("eim.esipa")

VERSION = "1.0"
MAX_DEPTH = 24  # as eim.esipa.dispatcher.MAX_DEPTH

#: v1.0 ProvideEimPackageResultResponse without acknowledgements: ``BF50 00``.
EMPTY_RESPONSE = b"\xbf\x50\x00"

# v1.2 IpaEuiccData member order (DER SEQUENCE order) for the rewritten response
_V12_ORDER = (0xA0, 0x81, 0xA2, 0xBF20, 0xBF22, 0x83, 0x84, 0xA5, 0xA6, 0x87, 0xA8, 0xA9)


def recognise(tag: int, raw: bytes) -> bool:
    """True when ``raw`` (one whole ESipa message with top-level ``tag``) has a shape only SGP.32 v1.0 gives it."""
    if tag != 0xBF50:
        return False
    try:
        value = tlv.parse_one(raw, what="ProvideEimPackageResult").value
    except RspError:
        return False
    if not value:
        return False
    if value[0] == 0x02:
        return True
    try:
        part = tlv.parse_one(value, what="eimPackageResult")
        tlv.check_structure(part.raw, what="eimPackageResult", max_depth=MAX_DEPTH)
    except RspError:
        # a first member that does not parse, no eidValue: could be either version; a 400 is a failure for both
        return value[0] != 0x5A
    if part.tag not in (0x5A, 0xA0, 0x30, 0xBF51, 0xBF52, 0xBF54):
        return True  # no alternative of either version, no eidValue: answered so that a v1.0 IPA keeps it
    if part.tag == 0x30:
        # SGP.32 v1.2 §6.3.2.7: ePRAndNotifications is 30 { BF51, A0 } and may carry extensions after them (the
        # module's EXTENSIBILITY IMPLIED); v1.0's is 30 { BF51, BF2B }. A 30 that does not begin as v1.2's is read
        # as v1.0's, and refused if broken: never given the v1.2 error a v1.0 IPA reads as success
        return [c.tag for c in tlv.children(part)[:2]] != [0xBF51, 0xA0]
    if part.tag == 0xBF52:
        data = tlv.find(part, 0xA0)
        if data is None:
            return tlv.find(part, 0x81) is not None  # v1.0 ipaEuiccDataError is a bare 81 INTEGER
        tags = {c.tag for c in tlv.children(data)}
        return bool(tags & {0x80, 0xBF2B}) or not tags & {0x87, 0x81, 0xA0, 0xA2}
    if part.tag == 0xBF54:
        error = tlv.find(part, 0x30)
        return error is not None and _v10_download_error(error)
    return False


def _v10_download_error(error: tlv.Tlv) -> bool:
    """A v1.0 profileDownloadError is ``30 { [80 errorResponse] }`` (automatic tags, no reason code); v1.2's is
    ``30 { 80 reason, [04 errorResponse] }``. An ``80`` that is the only member and holds more than 4 bytes is an
    errorResponse (the eIM's or SM-DP+'s answer, a whole TLV): no reason a v1.2 IPA sends is that long."""
    try:
        members = tlv.children(error)
    except RspError:
        return False
    if not members:
        return True
    return len(members) == 1 and members[0].tag == 0x80 and len(members[0].value) > 4


async def handle(rp: ResultProcessor, raw: bytes, ctx: RequestContext) -> bytes:
    """One v1.0 ProvideEimPackageResult (``recognise`` said so): the v1.0 answer, or :class:`EsipaRejected`."""
    try:
        tlv.check_structure(raw, what="ProvideEimPackageResult (SGP.32 v1.0)", max_depth=MAX_DEPTH)
        alt, body = asn1.decode("V10-ProvideEimPackageResult", raw)
        if alt is None:
            raise RspError("unknown eimPackageResult alternative")
        members = tlv.children(tlv.parse_exact(raw), what="ProvideEimPackageResult")
        if len(members) != 1:
            raise RspError(f"{len(members)} members in a CHOICE (v1.0 ProvideEimPackageResult has no eidValue)")
        part = members[0]
        if alt == "eimPackageError" and not 0 <= body <= 127:
            raise RspError(f"eimPackageError {body} is not a v1.0 code")
    except RspError as exc:
        raise EsipaRejected(400, f"malformed SGP.32 v1.0 ProvideEimPackageResult: {exc}") from None
    try:
        handled, eid = await _process(rp, alt, body, part, ctx)
        owner = handled.operation.eid if handled.operation is not None else eid
        if handled.refused is None and owner is not None:
            await record_version(rp, owner)
    except Exception as exc:  # a bug or an outage: never an answer a v1.0 IPA reads as success
        log.exception("v1.0 ProvideEimPackageResult failed", extra={"binding": ctx.binding})
        raise EsipaRejected(400, f"provideEimPackageResult (SGP.32 v1.0) not processed: {exc}") from None
    if handled.refused is not None:
        log.warning("v1.0 result refused", extra={"binding": ctx.binding, "reason": handled.refused})
        raise EsipaRejected(400, f"provideEimPackageResult (SGP.32 v1.0) refused, keep it: {handled.refused}")
    return response(handled.acks)


def response(acks: list[int]) -> bytes:
    """v1.0 ProvideEimPackageResultResponse: ``BF50 { BF53 { 80 seq ... } }`` or ``BF50 00``."""
    seen: list[int] = []
    for s in acks:
        if s not in seen:
            seen.append(s)
    if not seen:
        return EMPTY_RESPONSE
    return tlv.encode(0xBF50, tlv.encode(0xBF53, b"".join(integer_tlv(0x80, s) for s in seen)))


async def record_version(rp: ResultProcessor, eid: str) -> None:
    """Remember that ``eid``'s IPA speaks v1.0 (store field ``sgp32_version``); written only when it changes."""
    euicc = await rp.store.get_euicc(eid)
    if euicc is not None and euicc.sgp32_version != VERSION:
        await rp.store.update_euicc(eid, sgp32_version=VERSION)


async def _process(
    rp: ResultProcessor, alt: str, body: Any, part: tlv.Tlv, ctx: RequestContext
) -> tuple[Handled, str | None]:
    eid = ctx.eid_hint
    if alt == "ePRAndNotifications":
        epr = tlv.require(part, 0xBF51, what="ePRAndNotifications")
        notes = tlv.require(part, 0xBF2B, what="ePRAndNotifications")
        handled = await rp.euicc_package_result(epr.raw, eid)
        if handled.refused is None:
            owner = handled.operation.eid if handled.operation is not None else eid
            handled.acks += await _notifications_list(rp, notes, owner, skip=epr.raw)
        return handled, eid
    if alt == "euiccPackageResult":
        return await rp.euicc_package_result(part.raw, eid), eid
    if alt == "eimPackageError":
        return await rp.package_error(None, body, eid), eid
    if alt == "ipaEuiccDataResponse":
        return await _euicc_data(rp, body, part, ctx)
    if alt == "profileDownloadTriggerResult":
        return await _trigger_result(rp, body, part, ctx), eid
    return Handled(refused=f"unknown eimPackageResult alternative {alt}"), eid


async def _notifications_list(rp: ResultProcessor, notes: tlv.Tlv, eid: str | None, *, skip: bytes) -> list[int]:
    """What a v1.0 ``BF2B`` holds: notifications (A0), eUICC package results (A2), or both (A3 { A0, A1 }).
    A BF51 identical to the one already handled (the eUICC lists the result itself) is not handled twice."""
    acks: list[int] = []
    for alt in tlv.children(notes, what="notificationList"):
        if alt.tag == 0xA3:
            for inner in tlv.children(alt):
                acks += await _list_items(rp, 0xA0 if inner.tag == 0xA0 else 0xA2, inner, eid, skip)
        else:
            acks += await _list_items(rp, alt.tag, alt, eid, skip)
    return acks


async def _list_items(rp: ResultProcessor, kind: int, lst: tlv.Tlv, eid: str | None, skip: bytes) -> list[int]:
    items = [c.raw for c in tlv.children(lst)]
    if kind == 0xA0 and items:
        return await rp.notifications(items, eid)
    acks: list[int] = []
    if kind == 0xA2:
        for epr in items:
            if epr != skip:
                acks += (await rp.euicc_package_result(epr, eid)).acks
    return acks


async def _one_open(rp: ResultProcessor, eid: str, kind: OpKind):
    """The eUICC's one open operation of ``kind``; ``None`` when there is none or more than one."""
    ops = await rp.store.list_operations(eid=eid, status=OpStatus.IN_PROGRESS, kind=kind, limit=2)
    return ops[0] if len(ops) == 1 else None


async def _euicc_data(rp: ResultProcessor, body: Any, part: tlv.Tlv, ctx: RequestContext) -> tuple[Handled, str | None]:
    kind, _ = body
    data = tlv.find(part, 0xA0) if kind == "ipaEuiccData" else None
    eid = ctx.eid_hint
    if data is not None:
        euicc_cert = tlv.find(data, 0xA6)
        if euicc_cert is not None:
            try:
                eid = _certified_eid(rp, data, euicc_cert)
            except ValueError as exc:
                return Handled(refused=f"eUICC certificate in IpaEuiccData: {exc}"), None
            if ctx.eid_hint is not None and ctx.eid_hint != eid:
                return Handled(refused=f"certificate of eUICC {eid} arrived from {ctx.eid_hint}"), None
    if eid is None:
        return Handled(refused="no EID: no verified eUICC certificate and no authenticated EID"), None
    op = await _one_open(rp, eid, OpKind.EUICC_DATA)
    if op is None or op.eim_transaction_id is None:
        return Handled(refused=f"eUICC {eid} has not exactly one open eUICC data request"), eid
    if data is None:  # ipaEuiccDataError: v1.0 81 INTEGER -> v1.2 A1 { 80 txid, 02 code }
        code = tlv.require(part, 0x81, what="ipaEuiccDataError").value
        member = tlv.encode(0xA1, tlv.encode(0x80, op.eim_transaction_id) + tlv.encode(0x02, code))
    else:
        member = tlv.encode(0xA0, _v12_members(data, op.eim_transaction_id))
    v12 = tlv.encode(0xBF52, member)
    try:
        value = asn1.decode("IpaEuiccDataResponse", v12)
    except RspError as exc:
        return Handled(refused=f"IpaEuiccData does not map to v1.2: {exc}"), eid
    return await rp.euicc_data(value, v12, eid), eid


def _certified_eid(rp: ResultProcessor, data: tlv.Tlv, euicc_cert: tlv.Tlv) -> str:
    """The EID of the eUICC certificate (A6), once it chains to a trusted CI; ``ValueError`` otherwise."""
    from eim.packages.euicc_package import ResultRejected
    from rsp.pki.certs import eid_of

    euicc_der = b"\x30" + euicc_cert.raw[1:]
    eum = tlv.find(data, 0xA5)
    eum_der = b"\x30" + eum.raw[1:] if eum is not None else None
    eid = eid_of(euicc_der)
    try:
        rp.keys.public_key(eid, euicc_der, eum_der, None)
    except ResultRejected as exc:
        raise ValueError(exc.reason) from None
    return eid


def _v12_members(data: tlv.Tlv, eim_transaction_id: bytes) -> bytes:
    """A v1.0 IpaEuiccData's members in their v1.2 form and order; signed members copied byte for byte."""
    out: dict[int, bytes] = {0x87: tlv.encode(0x87, eim_transaction_id)}
    notes: list[bytes] = []
    eprs: list[bytes] = []
    for child in tlv.children(data, what="IpaEuiccData"):
        if child.tag == 0x80:
            out[0x81] = tlv.encode(0x81, child.value)
        elif child.tag == 0xBF2B:
            for alt in tlv.children(child, what="notificationsList"):
                lists = tlv.children(alt) if alt.tag == 0xA3 else [alt]
                for i, lst in enumerate(lists):
                    target = notes if (alt.tag == 0xA0 or (alt.tag == 0xA3 and i == 0)) else eprs
                    if lst.tag in (0xA0, 0xA1, 0xA2):
                        target += [c.raw for c in tlv.children(lst)]
        elif child.tag in _V12_ORDER and child.tag not in (0xA0, 0x81, 0xA2, 0x87):
            out[child.tag] = child.raw
    if notes:
        out[0xA0] = tlv.encode(0xA0, b"".join(notes))
    if eprs:
        out[0xA2] = tlv.encode(0xA2, b"".join(eprs))
    return b"".join(out[t] for t in _V12_ORDER if t in out)


async def _trigger_result(rp: ResultProcessor, body: dict[str, Any], part: tlv.Tlv, ctx: RequestContext) -> Handled:
    """v1.0 ProfileDownloadTriggerResult: its profileDownloadError has no reason code (undefinedError, 127) and
    carries the errorResponse as ``80`` (v1.2: ``04``).

    When the errorResponse is the eIM's own ``invalidEimTransactionId`` (52) to an InitiateAuthentication and the
    device is not authenticated, the operation's error says why: a v1.0 InitiateAuthentication carries no
    eimTransactionId, so only the device's authenticated identity can bind it to its download (docs/eim.md)."""
    members = b""
    if "eimTransactionId" in body:
        members += tlv.encode(0x82, body["eimTransactionId"])
    error = tlv.require(part, 0x30, what="profileDownloadError")
    response = tlv.find(error, 0x80)
    members += tlv.encode(
        0x30, integer_tlv(0x80, 127) + (tlv.encode(0x04, response.value) if response is not None else b"")
    )
    v12 = tlv.encode(0xBF54, members)
    try:
        value = asn1.decode("ProfileDownloadTriggerResult", v12)
    except RspError as exc:
        return Handled(refused=f"ProfileDownloadTriggerResult does not map to v1.2: {exc}")
    why = None
    if (
        response is not None
        and response.value == codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
        and ctx.eid_hint is None
    ):
        why = UNBOUND_V10_DOWNLOAD
    return await rp.trigger_result(value, v12, ctx.eid_hint, why=why)


#: why a v1.0 indirect download over an unauthenticated binding cannot start (the operation's error)
UNBOUND_V10_DOWNLOAD = (
    "the IPA speaks SGP.32 v1.0, whose InitiateAuthentication carries no eimTransactionId, and the device is not"
    " authenticated, so the eIM could not bind it to this download (invalidEimTransactionId 52); authenticate the"
    " device: HTTPS client certificate, device secret, CoAPS PSK or MQTT"
)


async def initiate_authentication(
    rp: ResultProcessor, value: dict[str, Any], raw: bytes, ctx: RequestContext
) -> bytes | None:
    """InitiateAuthenticationRequestEsipa without eimTransactionId (the v1.0 form): bound to the eUICC's one open
    download, for the EID the binding authenticated (``ctx.eid_hint``). Returns ``None`` when the request carries
    an eimTransactionId (the v1.2 path handles it); answers ``invalidEimTransactionId`` (52) when there is no
    authenticated EID, or not exactly one open download for it (the relay is not called)."""
    if value.get("eimTransactionId") is not None:
        return None
    if ctx.eid_hint is None or await rp.store.get_euicc(ctx.eid_hint) is None:
        return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
    if await _one_open(rp, ctx.eid_hint, OpKind.DOWNLOAD) is None:
        return codec.initiate_authentication_error(codec.IA_INVALID_EIM_TRANSACTION_ID)
    return await indirect_download.initiate_authentication(rp, value, raw, ctx)
