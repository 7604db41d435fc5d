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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eim.esipa import (
    codec,
    get_eim_package,
    handle_notification,
    indirect_download,
    provide_eim_package_result,
    transfer_eim_package,
    v10,
)
from eim.esipa.results import ResultProcessor
from eim.interfaces import EsipaRejected, RequestContext
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
        return codec.get_eim_package_error(codec.UNDEFINED)
    if tag == 0xBF50:
        return codec.provide_result_error(codec.UNDEFINED)
    if tag == 0xBF39:
        return codec.initiate_authentication_error(codec.IA_UNDEFINED)
    if tag == 0xBF3B:
        return codec.authenticate_client_error(codec.AC_UNDEFINED)
    if tag == 0xBF3A:
        return codec.get_bound_profile_package_error(codec.GBPP_UNDEFINED)
    if tag == 0xBF41:
        return codec.cancel_session_error(codec.CS_UNDEFINED)
    return None


class EsipaDispatcher:
    """Routes each ESipa message to its function module. Stateless: all state is in the store."""

    def __init__(self, results: ResultProcessor, *, metrics: Any = None) -> None:
        self.rp = results
        self.metrics = metrics if metrics is not None else results.metrics

    async def handle(self, message: bytes, ctx: RequestContext) -> bytes | None:
        start = time.perf_counter()
        function = "unknown"
        outcome = "ok"
        try:
            try:
                head = tlv.parse_exact(bytes(message), what="EsipaMessageFromIpaToEim")
            except RspError as exc:
                outcome = "rejected"
                raise EsipaRejected(400, f"not an ESipa message: {exc}") from None
            function = FUNCTIONS.get(head.tag, "unknown")
            if function == "unknown":
                outcome = "rejected"
                raise EsipaRejected(400, f"not an ESipa message: unknown tag {head.tag:X}")
            if v10.recognise(head.tag, head.raw):  # an SGP.32 v1.0 shape: see eim.esipa.v10
                try:
                    return await v10.handle(self.rp, head.raw, ctx)
                except EsipaRejected:
                    outcome = "rejected"
                    raise
            try:
                check_structure(head.raw)
                _alt, value = asn1.decode("EsipaMessageFromIpaToEim", head.raw)
            except RspError as exc:
                log.info(
                    "undecodable ESipa request", extra={"function": function, "binding": ctx.binding, "error": str(exc)}
                )
                answer = _fallback(head.tag, head.raw)
                outcome = "error"
                if answer is None:
                    outcome = "rejected"
                    raise EsipaRejected(400, f"{function}: {exc}") from None
                return answer
            try:
                answer = await self._route(head.tag, value, head.raw, ctx)
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
            if self.metrics is not None:
                self.metrics.esipa_request(function, ctx.binding, outcome, time.perf_counter() - start)

    async def _route(self, tag: int, value: Any, raw: bytes, ctx: RequestContext) -> bytes | None:
        rp = self.rp
        handler: Callable[..., Awaitable[bytes | None]]
        if tag == 0xBF4F:
            return await get_eim_package.get_eim_package(rp, value, ctx)
        if tag == 0xBF50:
            return await provide_eim_package_result.provide_eim_package_result(rp, value, raw, ctx)
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
