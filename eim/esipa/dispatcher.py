"""The binding-agnostic ESipa dispatcher (implements :class:`eim.interfaces.EsipaHandler`).

One DER ``EsipaMessageFromIpaToEim`` in, one DER ``EsipaMessageFromEimToIpa`` (or no body) out. The top-level tag
picks the function module; the message is decoded with :mod:`rsp.asn1` and every signed or relayed part is cut
from the received bytes with :mod:`rsp.tlv`.

Bad input never raises past :meth:`EsipaDispatcher.handle` except as :class:`EsipaRejected`:

================================  ==========================================================================
input                             answer
================================  ==========================================================================
BF4F that does not decode         ``eimPackageError``: ``missingEid`` (4) when no 5A is present, ``invalidEid``
                                  (3) when the 5A is not 16 bytes, else ``undefinedError`` (127)
BF50 that does not decode         ``provideEimPackageResultError undefinedError`` (127)
BF39 / BF3B / BF3A / BF41         the function's ``undefinedError`` (127)
BF3D / BF4E that do not decode    :class:`EsipaRejected` (400): these functions have no error answer
anything else (unknown tag,       :class:`EsipaRejected` (400)
empty, not a TLV)
BF50 of an SGP.32 v1.0 shape, or  answered by :mod:`eim.esipa.v10`: its v1.0 answer, or :class:`EsipaRejected`
broken and without 5A             (400) when refused or malformed (v1.0 has no error answer)
================================  ==========================================================================

An unexpected exception inside a function (a bug, a store outage) is logged and answered like undecodable
input of that function (``undefinedError``), so the IPA sees an ESipa error, never a dropped connection.

Before any decoding, the device policy (:mod:`eim.esipa.device_auth`, ``[devices]``) decides whether a request
that no binding authenticated is served; a refused one gets that module's answer and touches nothing.

Every error answer (``noEimPackageAvailable`` excepted) is logged at warning with the function, the EID and the
code, and counted as outcome ``rejected`` plus ``eim_esipa_error_answers_total{function,binding,code}``
(:func:`error_answer_code` reads it from the answer bytes). Undecodable requests are logged at warning too, at
most one line per cause a minute (:class:`eim.logs.RateLimitedLog`), with the count of the lines held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eim.esipa import (
    codec,
    device_auth,
    get_eim_package,
    handle_notification,
    indirect_download,
    provide_eim_package_result,
    transfer_eim_package,
    v10,
)
from eim.esipa.results import ResultProcessor
from eim.interfaces import EsipaRejected, RequestContext
from eim.logs import RateLimitedLog
from eim.packages.euicc_package import EuiccPackageOutcome
from rsp import asn1, tlv
from rsp.errors import DecodeError, RspError

log = logging.getLogger("eim.esipa")

FUNCTIONS: dict[int, str] = {
    0xBF39: "initiateAuthentication",
    0xBF3B: "authenticateClient",
    0xBF3A: "getBoundProfilePackage",
    0xBF41: "cancelSession",
    0xBF3D: "handleNotification",
    0xBF4E: "transferEimPackage",
    0xBF4F: "getEimPackage",
    0xBF50: "provideEimPackageResult",
}


MAX_DEPTH = 24


def check_structure(data: bytes) -> None:
    """Every constructed TLV must hold exactly a sequence of TLVs that ends where it ends (DER), at most
    ``MAX_DEPTH`` levels deep (:func:`rsp.tlv.check_structure`), and nothing may follow the message. Raises
    :class:`rsp.errors.DecodeError`."""
    top = tlv.check_structure(data, what="EsipaMessageFromIpaToEim", max_depth=MAX_DEPTH)
    if len(top.raw) != len(data):
        raise DecodeError("EsipaMessageFromIpaToEim", f"{len(data) - len(top.raw)} trailing bytes", len(top.raw))


def _fallback(tag: int, raw: bytes) -> bytes | None:
    """The ESipa error answer for an undecodable (or failed) request of function ``tag``; ``None`` = reject."""
    if tag == 0xBF4F:
        try:
            eid = tlv.find(raw, 0x5A)
        except RspError:
            eid = None
        if eid is None:
            return codec.get_eim_package_error(codec.MISSING_EID)
        if len(eid.value) != 16:
            return codec.get_eim_package_error(codec.INVALID_EID)
    return codec.undefined_error(tag)


UNDECODABLE = RateLimitedLog(log, interval_s=60.0)

#: the tag of the error alternative (an INTEGER code) in each function's answer
ERROR_TAGS = {0xBF4F: 0x02, 0xBF50: 0x02, 0xBF39: 0x81, 0xBF3B: 0x82, 0xBF3A: 0x81, 0xBF41: 0x81}
_TAG_BYTES = {t: tlv.tag_bytes(t) for t in ERROR_TAGS}
_ERROR_TAG_BYTES = {t: bytes([e]) for t, e in ERROR_TAGS.items()}


def error_answer_code(tag: int, answer: bytes | None) -> int | None:
    """The code when ``answer`` is the error alternative of function ``tag``'s answer, else ``None``
    (``noEimPackageAvailable`` is not an error: it is the idle poll's answer)."""
    if not answer or len(answer) > 10 or tag not in ERROR_TAGS:  # an error answer is BF4F 03 02 01 7F and the like
        return None
    if answer == codec.NO_PACKAGE_ANSWER:
        return None
    if len(answer) > 3 and answer[:2] == _TAG_BYTES[tag] and answer[2] < 0x80 and answer[3:4] != _ERROR_TAG_BYTES[tag]:
        return None  # the first member's tag is not the error alternative's (an acknowledgement): no parse
    try:
        kids = tlv.children(tlv.parse_exact(answer))
    except RspError:
        return None
    if len(kids) != 1 or kids[0].tag != ERROR_TAGS[tag] or not 1 <= kids[0].length <= 4:
        return None
    code = int.from_bytes(kids[0].value, "big", signed=True)
    return None if tag == 0xBF4F and code == codec.NO_PACKAGE else code


def _eid_of(request: bytes, ctx: RequestContext) -> str | None:
    """For logs: the EID the transport vouches for, else the one the request names (GetEimPackage and
    ProvideEimPackageResult carry one)."""
    if ctx.eid_hint is not None or not request:
        return ctx.eid_hint
    try:
        t = tlv.find(request, 0x5A)
    except RspError:
        return None
    return t.value.hex().upper()[:32] if t is not None else None


class EsipaDispatcher:
    """Routes each ESipa message to its function module. Stateless: all state is in the store."""

    def __init__(
        self, results: ResultProcessor, *, metrics: Any = None, device_policy: device_auth.DevicePolicy | None = None
    ) -> None:
        self.rp = results
        self.metrics = metrics if metrics is not None else results.metrics
        # default: unauthenticated devices only from loopback (the [devices] defaults)
        self.device_policy = device_policy if device_policy is not None else device_auth.DevicePolicy()

    async def handle(self, message: bytes, ctx: RequestContext) -> bytes | None:
        start = time.perf_counter()
        function = "unknown"
        outcome = "ok"
        tag, request, answer = 0, b"", None
        try:
            data = bytes(message)
            # fast path: a plain GetEimPackageRequest (nearly every poll) is recognised without the decoders and
            # gives the value they would give; everything else is parsed, checked and decoded below
            plain = get_eim_package.plain_request(data)
            parsed = None  # a plain ProvideEimPackageResult's EuiccPackageResult, parsed by its fast path
            if plain is not None:
                head = tlv.Tlv(0xBF4F, 0, 3, 18, data)  # what tlv.parse_exact gives for these 21 bytes
            else:
                try:
                    head = tlv.parse_exact(data, what="EsipaMessageFromIpaToEim")
                except RspError as exc:
                    outcome = "rejected"
                    raise EsipaRejected(400, f"not an ESipa message: {exc}") from None
            function = FUNCTIONS.get(head.tag, "unknown")
            tag, request = head.tag, head.raw
            if function == "unknown":
                outcome = "rejected"
                raise EsipaRejected(400, f"not an ESipa message: unknown tag {head.tag:X}")
            if not self.device_policy.admits(ctx):
                outcome = "unauthenticated"
                log.info(
                    "unauthenticated device refused",
                    extra={"function": function, "binding": ctx.binding, "peer": ctx.peer},
                )
                # a v1.0 IPA reads any BF50 as success (and deletes its result): it gets the 403 without a body
                return device_auth.refusal(head.tag, esipa_answer=not v10.recognise(head.tag, head.raw))
            if v10.recognise(head.tag, head.raw):  # an SGP.32 v1.0 shape: see eim.esipa.v10
                try:
                    return await v10.handle(self.rp, head.raw, ctx)
                except EsipaRejected:
                    outcome = "rejected"
                    raise
            try:
                if plain is not None:
                    value = plain
                elif head.tag == 0xBF50 and (fast := provide_eim_package_result.plain_result(head.raw)) is not None:
                    value, parsed = fast  # the same value; its EuiccPackageResult is parsed once, here
                else:
                    check_structure(head.raw)
                    _alt, value = asn1.decode("EsipaMessageFromIpaToEim", head.raw)
            except RspError as exc:
                UNDECODABLE.warning(
                    f"{function}:{getattr(exc, 'type_name', type(exc).__name__)}",
                    "undecodable ESipa request",
                    {"function": function, "binding": ctx.binding, "eid": ctx.eid_hint, "error": str(exc)[:200]},
                )
                answer = _fallback(head.tag, head.raw)
                if head.tag == 0xBF50:  # counts against the hand-out cap of the eUICC's package
                    await provide_eim_package_result.undecodable(self.rp, head.raw, ctx, str(exc))
                outcome = "error"
                if answer is None:
                    outcome = "rejected"
                    raise EsipaRejected(400, f"{function}: {exc}") from None
                return answer
            try:
                answer = await self._route(head.tag, value, head.raw, ctx, parsed)
            except EsipaRejected:
                outcome = "rejected"
                raise
            except Exception as exc:  # a bug or an outage: the IPA still gets an ESipa error
                log.exception("ESipa function failed", extra={"function": function, "binding": ctx.binding})
                outcome = "error"
                answer = _fallback(head.tag, head.raw)
                if answer is None:
                    outcome = "rejected"
                    raise EsipaRejected(400, f"{function}: {exc}") from None
                return answer
            return answer
        finally:
            code = error_answer_code(tag, answer)
            if code is not None:
                outcome = "rejected"
                log.warning(
                    "ESipa error answer",
                    extra={"function": function, "binding": ctx.binding, "eid": _eid_of(request, ctx), "code": code},
                )
            if self.metrics is not None:
                self.metrics.esipa_request(function, ctx.binding, outcome, time.perf_counter() - start)
                if code is not None:
                    self.metrics.esipa_error_answer(function, ctx.binding, code)

    async def _route(
        self, tag: int, value: Any, raw: bytes, ctx: RequestContext, parsed: EuiccPackageOutcome | None = None
    ) -> bytes | None:
        rp = self.rp
        handler: Callable[..., Awaitable[bytes | None]]
        if tag == 0xBF4F:
            return await get_eim_package.get_eim_package(rp, value, ctx)
        if tag == 0xBF50:
            return await provide_eim_package_result.provide_eim_package_result(rp, value, raw, ctx, parsed)
        if tag == 0xBF3D:
            return await handle_notification.handle_notification(rp, value, raw, ctx)
        if tag == 0xBF4E:
            return await transfer_eim_package.transfer_eim_package_response(rp, value, raw, ctx)
        if tag == 0xBF39 and (answer := await v10.initiate_authentication(rp, value, raw, ctx)) is not None:
            return answer  # no eimTransactionId (the v1.0 form)
        handler = {
            0xBF39: indirect_download.initiate_authentication,
            0xBF3B: indirect_download.authenticate_client,
            0xBF3A: indirect_download.get_bound_profile_package,
            0xBF41: indirect_download.cancel_session,
        }[tag]
        return await handler(rp, value, raw, ctx)
