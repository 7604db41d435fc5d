"""The eIM's side of a ProfileDownloadTriggerResult (SGP.32 v1.2 §3.2 profile download initiated by the eIM, the
result of a ProfileDownloadTriggerRequest; protocol brief §2.4, §6), whatever ESipa function carried it.

Matched by its eimTransactionId only (OPTIONAL in the ASN.1, but the eIM sends one in every trigger and the IPA
echoes it; a result without it is refused). A ``profileInstallationResult`` (direct download finished) is the PIR
of :mod:`eim.esipa.profile_installation_result`, not forwarded: the IPA delivers it to the SM-DP+ itself. A
``profileDownloadError`` fails the operation. Entry point: :meth:`eim.esipa.results.ResultProcessor.trigger_result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eim.model import OpKind, OpStatus
from eim.packages import download
from eim.store import ResultUpdate
from rsp import tlv

if TYPE_CHECKING:
    from eim.esipa.results import Handled, ResultProcessor


async def handle(
    rp: ResultProcessor, value: dict[str, Any], raw: bytes, eid: str | None, *, why: str | None = None
) -> Handled:
    """Record one ProfileDownloadTriggerResult (``value``: decoded, ``raw``: as received)."""
    from eim.esipa.results import Handled

    op, refused = await rp._named(value.get("eimTransactionId"), OpKind.DOWNLOAD, eid, "download operation")
    if op is None:
        return refused or Handled(refused="no download operation matches this result")
    alt, _ = value["profileDownloadTriggerResultData"]
    if alt is None:
        return await rp.refuse("undecodable", "unknown ProfileDownloadTriggerResult alternative", op=op)
    if alt == "profileInstallationResult":
        pir = tlv.require(raw, 0xBF37, what="ProfileDownloadTriggerResult").raw
        # direct download: the IPA delivers the PIR to the SM-DP+ itself
        handled = await rp.pir(pir, op.eid, op, forward=False)
        return Handled(refused=handled.refused, operation=handled.operation)
    summary = download.trigger_result_summary(value)
    update = ResultUpdate(
        operation_id=op.id,
        eid=op.eid,
        who="ipa",
        now=rp.clock(),
        eim_transaction_id=op.eim_transaction_id,
        status=OpStatus.FAILED,
        result={"profileDownloadError": summary},
        result_code=summary["profileDownloadErrorReason"],
        error=download.trigger_error(summary, why),
    )
    return Handled(operation=await rp._record(op, update) or op)
