"""ESipa.TransferEimPackage (SGP.32 v1.2 §6.3.2 ESipa functions, "TransferEimPackage"; protocol brief §2.3):
the IPA's answer to a package the eIM pushed (MQTT binding).

``BF4E { BF51 EPR | 30 ePRAndNotifications | BF52 ipaEuiccDataResponse | eimPackageReceived NULL |
eimPackageError INTEGER }``. Results are processed as in ProvideEimPackageResult; the answer is a
TransferEimPackageRequest carrying ``eimAcknowledgements`` (``BF4E BF53 {...}``) when there is something to delete,
else no body. ``eimPackageReceived`` leaves the operation in progress (the result follows); ``eimPackageError``
(which has no eimTransactionId) answers the package pushed to that eUICC: it fails the one operation in progress
of the EID the binding authenticated (the MQTT topic), and nothing when there is no authenticated EID or not
exactly one such operation (audited as an unverified error). An ``euiccPackageErrorUnsigned`` ends its operation
under the same condition (docs/eim.md, "How results are verified"). A refused result counts against the
hand-out cap of its operation (``[operations] max_handouts``) as in ProvideEimPackageResult.
"""

from __future__ import annotations

from typing import Any

from eim.esipa import codec, provide_eim_package_result
from eim.esipa.results import Handled, ResultProcessor
from eim.interfaces import EsipaRejected, RequestContext
from rsp import tlv


async def transfer_eim_package_response(
    rp: ResultProcessor, value: tuple[str, Any], raw: bytes, ctx: RequestContext
) -> bytes | None:
    alt, body = value
    if alt is None:
        raise EsipaRejected(400, "transferEimPackage: unknown alternative")
    eid = ctx.eid_hint
    part = tlv.children(raw, what="TransferEimPackageResponse")[0]
    if alt == "euiccPackageResult":
        handled = await rp.euicc_package_result(part.raw, eid, authenticated_eid=ctx.eid_hint)
    elif alt == "ePRAndNotifications":
        epr = tlv.require(part, 0xBF51, what="ePRAndNotifications")
        notes = tlv.require(part, 0xA0, what="ePRAndNotifications")
        handled = await rp.euicc_package_result(epr.raw, eid, authenticated_eid=ctx.eid_hint)
        if handled.refused is None:
            owner = handled.operation.eid if handled.operation else eid
            handled.acks += await rp.notifications([n.raw for n in tlv.children(notes)], owner)
    elif alt == "ipaEuiccDataResponse":
        handled = await rp.euicc_data(body, part.raw, eid, authenticated_eid=ctx.eid_hint)
    elif alt == "eimPackageError":
        handled = await rp.package_error(None, body, eid, authenticated_eid=ctx.eid_hint, pushed=True)
    else:  # eimPackageReceived: the result comes later
        handled = Handled()
    if handled.refused is not None:  # no error answer here, but it counts against the hand-out cap all the same
        await provide_eim_package_result.note_refusal(rp, handled, eid, codec.UNDEFINED)
    if handled.acks:
        return codec.transfer_acknowledgements(handled.acks)
    return None
