"""ESipa.GetEimPackage (SGP.32 v1.2 §6.3.2 ESipa functions, "GetEimPackage"; protocol brief §2.3):
the IPA polls for work.

Answer: the next package of the eUICC's queue as ``BF4F <BF51 | BF52 | BF54>`` (the same bytes again while its
result has not come), or ``eimPackageError``: ``noEimPackageAvailable`` (1) = ``BF4F 03 02 01 01``, ``eidNotFound``
(2) for an EID that is not registered, ``invalidEid`` (3) for an eidValue that is not 16 BCD bytes of 32 digits.
``missingEid`` (4) is answered by the dispatcher when the request cannot be decoded for lack of its EID.
A ``notifyStateChange`` (with its ``stateChangeCause``) and the ``rPLMN`` are recorded in the registry.

Fast path (:func:`plain_request`): the request of nearly every poll is exactly ``BF4F 12 5A 10 <16 bytes>`` (an
eidValue and nothing else). Those 21 bytes are recognised by comparing 4 bytes and the length, and give the same
value as the full decoder (``{"eidValue": <16 bytes>}``); anything else - other lengths, optional fields, long-form
lengths, trailing bytes - goes through :func:`eim.esipa.dispatcher.check_structure` and :mod:`rsp.asn1` as before.
"""

from __future__ import annotations

from typing import Any

from eim import failpoints
from eim.esipa import codec
from eim.esipa.results import ResultProcessor
from eim.interfaces import RequestContext
from eim.packages.common import eid_from_bytes
from eim.store import ClaimOutcome

STATE_CHANGE_CAUSES = {
    0: "otherEim",
    1: "fallback",
    2: "emergencyProfile",
    3: "local",
    4: "reset",
    5: "immediateEnableProfile",
    6: "deviceChange",
    127: "undefined",
}


_PLAIN_HEAD = bytes.fromhex("BF4F125A10")


def plain_request(message: bytes) -> dict[str, Any] | None:
    """The decoded value of a plain GetEimPackageRequest (``BF4F 12 5A 10`` + 16 bytes, nothing else), exactly as
    ``rsp.asn1.decode("EsipaMessageFromIpaToEim", message)`` gives it; ``None`` for any other input."""
    if len(message) == 21 and message[:5] == _PLAIN_HEAD:
        return {"eidValue": bytes(message[5:])}
    return None


async def get_eim_package(rp: ResultProcessor, value: dict[str, Any], ctx: RequestContext) -> bytes:
    eid = eid_from_bytes(value["eidValue"])
    if eid is None:
        return codec.get_eim_package_error(codec.INVALID_EID)
    if ctx.eid_hint is not None and ctx.eid_hint != eid:
        return codec.get_eim_package_error(codec.INVALID_EID)
    if "notifyStateChange" in value or "rPLMN" in value:
        info: dict[str, Any] = {}
        if "notifyStateChange" in value:
            cause = value.get("stateChangeCause")
            info["lastStateChange"] = {"at": rp.clock(), "cause": STATE_CHANGE_CAUSES.get(cause, cause)}
        if "rPLMN" in value:
            info["rPLMN"] = value["rPLMN"].hex().upper()
        if not await rp.store.update_euicc(eid, info_merge=info):
            return codec.get_eim_package_error(codec.EID_NOT_FOUND)
        if "lastStateChange" in info:  # the audit row is what the event feed sends (euicc.notification)
            detail = {"cause": info["lastStateChange"]["cause"], "rPLMN": info.get("rPLMN")}
            await rp.store.add_audit(who="ipa", action="state_change", outcome="reported", eid=eid, detail=detail)
    claim = await rp.service.claim(eid, ctx.binding)
    if claim.outcome is ClaimOutcome.UNKNOWN_EID:
        return codec.get_eim_package_error(codec.EID_NOT_FOUND)
    if claim.outcome is ClaimOutcome.PACKAGE and claim.operation is not None and claim.operation.package:
        await failpoints.pause("after_claim")
        if rp.metrics:
            rp.metrics.package_handed_out(claim.operation.kind.value, claim.rehanded)
        return codec.get_eim_package_response(claim.operation.package)
    return codec.NO_PACKAGE_ANSWER
