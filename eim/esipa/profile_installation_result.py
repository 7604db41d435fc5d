"""The eIM's side of a ProfileInstallationResult and of the other pending notifications an IPA hands back
(SGP.32 v1.2 §3.2 profile download, the PIR that ends it; §6.3.2 ESipa functions, "HandleNotification" and the
``notificationsList`` of ProvideEimPackageResult / IpaEuiccData; SGP.22 v2.5 §3.5 Notifications).

A PIR is verified with the eUICC's stored certificate (``eim.esipa.notification_intake``), closes its download
operation, then goes to the eIM's outbox for the SM-DP+. A PIR to forward that cannot be verified changes nothing
and is not acknowledged; a PIR that is not forwarded (direct download: the IPA sends it) is verified when the
certificate is known. Other signed notifications are verified and taken by the intake. Entry points are the
:class:`eim.esipa.results.ResultProcessor` methods ``notifications``, ``pending_notification`` and ``pir``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eim.esipa.notification_intake import Taken
from eim.model import Operation, OpKind, OpStatus
from eim.packages import download
from eim.packages.notification import NotificationParts, NotificationRejected, VerifiedNotification
from eim.packages.notification import parse as notification_parse
from eim.store import ResultUpdate
from rsp import tlv
from rsp.errors import RspError

if TYPE_CHECKING:
    from eim.esipa.results import Handled, ResultProcessor


async def notifications(rp: ResultProcessor, items: list[bytes], eid: str | None) -> list[int]:
    """Verify and take each pending notification (PIR BF37 / other signed 30) attributed to ``eid`` (the eUICC
    the carrying message was verified for); return the seq numbers the IPA may delete."""
    acks = []
    for raw in items:
        seq = notification_seq(raw)
        if raw[:2] == b"\xbf\x37":
            handled = await rp.pir(raw, eid, None)
            if handled.refused is None and seq is not None:
                acks.append(seq)
            continue
        taken = await rp.intake.take_other(raw, eid)
        if taken.acknowledged and seq is not None:
            acks.append(seq)
    return acks


async def pending_notification(rp: ResultProcessor, raw: bytes, binding_eid: str | None) -> Taken:
    """One notification from HandleNotification: a PIR closes its download operation and is forwarded; any
    other is verified for the eUICC of its certificate (which must be ``binding_eid`` when the binding
    authenticated one) and forwarded."""
    if raw[:2] == b"\xbf\x37":
        handled = await rp.pir(raw, binding_eid, None, binding_eid=binding_eid)
        if handled.refused is None:
            return Taken(acknowledged=True)
        return handled.taken or Taken(acknowledged=False, cause="malformed", reason=handled.refused)
    return await rp.intake.take_other(raw, None, binding_eid)


async def pir(
    rp: ResultProcessor,
    pir: bytes,
    eid_hint: str | None,
    op: Operation | None,
    *,
    forward: bool = True,
    binding_eid: str | None = None,
) -> Handled:
    """A ProfileInstallationResult: verified with the eUICC's stored certificate, closes its download
    operation, then goes to the SM-DP+. A PIR to forward that cannot be verified changes nothing and is not
    acknowledged; a PIR that is not forwarded (direct download: the IPA sends it) is verified when the
    certificate is known."""
    from eim.esipa.results import Handled

    intake = rp.intake
    try:
        summary = download.pir_summary(pir)
        parts = notification_parts(pir)
    except (RspError, NotificationRejected) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        taken = await intake.refuse("malformed", f"undecodable ProfileInstallationResult: {reason}", eid=eid_hint)
        return Handled(refused=taken.reason, taken=taken)
    if op is None:
        op = await rp.store.find_operation_by_smdp_transaction_id(bytes.fromhex(summary["transactionId"]))
    if op is None:
        op = await rp._open_op_of(eid_hint, OpKind.DOWNLOAD)
    eid = op.eid if op is not None else eid_hint
    op_id = op.id if op is not None else None
    mismatch = [e for e in (eid_hint, binding_eid) if e is not None and eid is not None and e.upper() != eid.upper()]
    if mismatch:
        taken = await intake.refuse(
            "eid_mismatch",
            f"PIR of eUICC {eid} arrived for {mismatch[0]}",
            eid=mismatch[0],
            kind="pir",
            operation_id=op_id,
        )
        return Handled(refused=taken.reason, operation=op, taken=taken)
    if eid is None:
        taken = await intake.refuse(
            "unattributed", "no download operation and no EID for this PIR", eid=None, kind="pir"
        )
        return Handled(refused=taken.reason, taken=taken)
    euicc = await rp.store.get_euicc(eid)
    note: VerifiedNotification | None = None
    if forward or (euicc is not None and euicc.euicc_certificate is not None):
        try:
            note = await intake.verify_pir(parts, eid)
        except NotificationRejected as exc:
            taken = await intake.refuse(exc.cause, exc.reason, eid=eid, kind="pir", operation_id=op_id)
            return Handled(refused=taken.reason, operation=op, taken=taken)
    summary["verified"] = note is not None
    changed = None
    if op is not None and op.kind is OpKind.DOWNLOAD:
        ok = summary["ok"]
        update = ResultUpdate(
            operation_id=op.id,
            eid=op.eid,
            who="ipa",
            now=rp.clock(),
            status=OpStatus.DONE if ok else OpStatus.FAILED,
            result={"profileInstallationResult": summary},
            result_code=None if ok else summary.get("errorReason"),
            error=None if ok else f"profile installation failed: {summary.get('name')}",
            action="pir",
        )
        changed = await rp._record(op, update)
        await rp.store.delete_download_session(session_key(bytes.fromhex(summary["transactionId"])))
    if forward and note is not None:
        taken = await intake.admit(note, operation_id=op_id)
        if not taken.acknowledged:
            return Handled(refused=taken.reason, operation=changed or op, taken=taken)
    return Handled(acks=[summary["seqNumber"]], operation=changed or op)


def session_key(transaction_id: bytes) -> str:
    """Download-session key under which the dispatcher maps an ES9+ transactionId to its EID and operation."""
    return "dispatch:tx:" + transaction_id.hex().upper()


def notification_seq(raw: bytes) -> int | None:
    """seqNumber of a pending notification (PIR BF37 or otherSignedNotification 30), from its metadata."""
    try:
        if raw[:2] == b"\xbf\x37":
            meta = tlv.require(raw, 0xBF27, 0xBF2F)
        elif raw[:1] == b"\x30":
            meta = tlv.require(raw, 0xBF2F)
        else:
            return None
        seq = tlv.find(meta, 0x80)
        return None if seq is None else int.from_bytes(seq.value, "big", signed=True)
    except RspError:
        return None


def notification_parts(raw: bytes) -> NotificationParts:
    """A pending notification cut into its signed parts (``eim.packages.notification.parse``)."""
    return notification_parse(raw)
