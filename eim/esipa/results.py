"""What the eIM does with results coming back from the IPA, whatever the ESipa function that carried them
(ProvideEimPackageResult, TransferEimPackageResponse, HandleNotification).

Rules (SGP.32 v1.2 §3.3 / §3.4 and protocol brief §3.3-§3.5, §10):
- An EuiccPackageResult is handled by :mod:`eim.esipa.euicc_package_result`: matched by its eimTransactionId
  (a signed one without it: by EID + exact counterValue), verified over the RECEIVED bytes with the key of the
  certificate known for the operation's EID, checked for that EID on every use, and its eimId / counterValue /
  eimTransactionId echo checked. An unsigned error ends its operation only from a device the binding
  authenticated as that eUICC. A result that fails any check changes nothing (the operation stays open), is not
  acknowledged, is counted by cause and audited. A replay of an accepted result changes nothing and is
  acknowledged again (the IPA may not have received the first acknowledgement).
- IpaEuiccDataResponse and ProfileDownloadTriggerResult are matched by their eimTransactionId only (the eIM
  sends one in every request; an answer without it names nothing). eUICC certificates are learned only once
  verified for the operation's EID; a certificate of another EID refuses the response and is audited.
- eimPackageResultResponseError / TransferEimPackageResponse eimPackageError are unsigned: they fail their
  operation only from a device the binding authenticated as that eUICC (docs/eim.md, "How results are
  verified").
- A signed ``replayError`` for a package that was handed out more than once means the eUICC already ran the
  first copy: the operation stays in progress, on hold, until that first result arrives (or the window ends).
- Notifications (PIR, other signed notifications) for an SM-DP+ are verified first - the eUICC's signature over
  the received bytes, its certificate chained to a trusted CI and naming the eUICC they are attributed to
  (``eim.esipa.notification_intake``) - then written to the eIM's outbox (a
  :class:`eim.interfaces.NotificationQueue`, ``eim.relay.outbox``) before they are acknowledged; its forwarder
  delivers them with retries. A store failure there propagates: the IPA gets no success and sends them again.
  Verified PIRs also close indirect-download operations; a PIR that cannot be verified changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eim.esipa import euicc_package_result
from eim.esipa.notification_intake import NotificationIntake, Taken
from eim.interfaces import DownloadRelay, NotificationQueue
from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.operations import OperationService
from eim.packages import download, euicc_data
from eim.packages.euicc_package import (
    EuiccKeys,
    EuiccPackageOutcome,
    ResultRejected,
    parse_euicc_package_result,
)
from eim.packages.notification import NotificationParts, NotificationRejected, VerifiedNotification
from eim.packages.notification import parse as notification_parse
from eim.store import ResultContext, ResultUpdate, Store
from rsp import tlv
from rsp.errors import RspError

log = logging.getLogger("eim.esipa")


@dataclass
class Handled:
    """Outcome of processing one result: sequence numbers to acknowledge, and why it was refused (if so)."""

    acks: list[int] = field(default_factory=list)
    refused: str | None = None
    operation: Operation | None = None
    taken: Taken | None = None  # a notification's refusal (cause, HTTP status)


class ResultProcessor:
    def __init__(
        self,
        store: Store,
        service: OperationService,
        keys: EuiccKeys,
        relay: DownloadRelay | None = None,
        *,
        outbox: NotificationQueue | None = None,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.service = service
        self.keys = keys
        self.relay = relay
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock

    # ------------------------------------------------------------------ helpers
    def euicc_public_key(self, euicc: Euicc):
        if euicc.euicc_certificate is None:
            raise ResultRejected(
                f"the certificate of eUICC {euicc.eid} is not known yet (run an eUICC data request)", "certificate"
            )
        ci = bytes.fromhex(euicc.trusted_ci) if euicc.trusted_ci else None
        return self.keys.public_key(euicc.eid, euicc.euicc_certificate, euicc.eum_certificate, ci)

    async def _record(self, op: Operation, update: ResultUpdate) -> Operation | None:
        changed = await self.store.record_result(update)
        if changed is not None:
            if self.metrics and changed.status.final:
                self.metrics.operation_finished(changed.kind.value, changed.status.value)
            failed = changed.status is OpStatus.FAILED
            log.log(
                logging.WARNING if failed else logging.INFO,
                "operation failed" if failed else "operation result",
                extra={
                    "operation": op.id,
                    "eid": op.eid,
                    "kind": op.kind.value,
                    "status": changed.status.value,
                    "result_code": changed.result_code,
                    "reason": changed.error,
                },
            )
            if changed.status.final and self.service.pusher is not None:  # kick pushes over MQTT only
                euicc = await self.store.get_euicc(op.eid)
                if euicc is not None:
                    self.service.kick(euicc)
        return changed

    async def _open_op_of(self, eid: str | None, kind: OpKind) -> Operation | None:
        if eid is None:
            return None
        ops = await self.store.list_operations(eid=eid, status=OpStatus.IN_PROGRESS, kind=kind, limit=1)
        return ops[0] if ops else None

    # ------------------------------------------------------------------ EuiccPackageResult
    async def prefetch(
        self, raw: bytes, eid: str, *, parsed: EuiccPackageOutcome | None = None
    ) -> tuple[EuiccPackageOutcome | RspError, ResultContext]:
        """Decode an EuiccPackageResult that came with ``eid`` (unless ``parsed`` is what the fast path of
        :mod:`eim.esipa.provide_eim_package_result` parsed of these bytes) and read, in one store call, the eUICC
        of ``eid`` (``context.eid_known`` is False when it is not registered), the result's operation and its
        eUICC."""
        outcome: EuiccPackageOutcome | RspError
        if parsed is not None:
            outcome = parsed
        else:
            try:
                outcome = parse_euicc_package_result(raw)
            except RspError as exc:
                outcome = exc
        txid = outcome.eim_transaction_id if isinstance(outcome, EuiccPackageOutcome) else None
        return outcome, await self.store.result_context(eid, txid)

    async def euicc_package_result(
        self,
        raw: bytes,
        eid_hint: str | None,
        who: str = "ipa",
        *,
        authenticated_eid: str | None = None,
        prefetched: tuple[EuiccPackageOutcome | RspError, ResultContext] | None = None,
    ) -> Handled:
        """Match, verify and record one EuiccPackageResult (:mod:`eim.esipa.euicc_package_result`).

        ``eid_hint``: the EID it came with; ``authenticated_eid``: the EID the binding authenticated (only this
        lets an unsigned error end an operation); ``prefetched``: :meth:`prefetch` of the same bytes."""
        return await euicc_package_result.handle(
            self, raw, eid_hint, who, authenticated_eid=authenticated_eid, prefetched=prefetched
        )

    async def refuse(
        self,
        cause: str,
        reason: str,
        *,
        op: Operation | None = None,
        eid: str | None = None,
        who: str = "ipa",
        action: str = "result",
        outcome: str = "refused",
        detail: dict[str, Any] | None = None,
        audit: bool = True,
    ) -> Handled:
        """A result that changes nothing: logged, counted by ``cause`` (one of
        :data:`eim.packages.euicc_package.REFUSAL_CAUSES`) and, when it names an operation or an eUICC, audited.
        A certificate for another EID is audited as ``euicc_certificate`` / ``eid_mismatch``."""
        if cause == "certificate_eid":
            action, outcome = "euicc_certificate", "eid_mismatch"
        who_eid = op.eid if op is not None else eid
        log.warning(
            "result refused",
            extra={"cause": cause, "reason": reason, "operation": op.id if op is not None else None, "eid": who_eid},
        )
        if audit and (op is not None or eid is not None):
            await self.store.add_audit(
                who=who,
                action=action,
                outcome=outcome,
                eid=who_eid,
                operation_id=op.id if op is not None else None,
                detail={"cause": cause, "reason": reason, **(detail or {})},
            )
        if self.metrics:
            self.metrics.result_refused(cause)
        return Handled(refused=reason, operation=op)

    # ------------------------------------------------------------------ notifications
    @property
    def intake(self) -> NotificationIntake:
        """Verification and admission of notifications (``eim.esipa.notification_intake``)."""
        intake = self.__dict__.get("_intake")
        if intake is None:
            intake = NotificationIntake(self.store, self.keys, public_key_of=self.euicc_public_key)
            self.__dict__["_intake"] = intake
        intake.outbox, intake.metrics = self.outbox, self.metrics  # wiring may set them after construction
        return intake

    async def notifications(self, items: list[bytes], eid: str | None) -> list[int]:
        """Verify and take each pending notification (PIR BF37 / other signed 30) attributed to ``eid`` (the eUICC
        the carrying message was verified for); return the seq numbers the IPA may delete."""
        acks = []
        for raw in items:
            seq = notification_seq(raw)
            if raw[:2] == b"\xbf\x37":
                handled = await self.pir(raw, eid, None)
                if handled.refused is None and seq is not None:
                    acks.append(seq)
                continue
            taken = await self.intake.take_other(raw, eid)
            if taken.acknowledged and seq is not None:
                acks.append(seq)
        return acks

    async def pending_notification(self, raw: bytes, binding_eid: str | None) -> Taken:
        """One notification from HandleNotification: a PIR closes its download operation and is forwarded; any
        other is verified for the eUICC of its certificate (which must be ``binding_eid`` when the binding
        authenticated one) and forwarded."""
        if raw[:2] == b"\xbf\x37":
            handled = await self.pir(raw, binding_eid, None, binding_eid=binding_eid)
            if handled.refused is None:
                return Taken(acknowledged=True)
            return handled.taken or Taken(acknowledged=False, cause="malformed", reason=handled.refused)
        return await self.intake.take_other(raw, None, binding_eid)

    async def pir(
        self,
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
        intake = self.intake
        try:
            summary = download.pir_summary(pir)
            parts = notification_parts(pir)
        except (RspError, NotificationRejected) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            taken = await intake.refuse("malformed", f"undecodable ProfileInstallationResult: {reason}", eid=eid_hint)
            return Handled(refused=taken.reason, taken=taken)
        if op is None:
            op = await self.store.find_operation_by_smdp_transaction_id(bytes.fromhex(summary["transactionId"]))
        if op is None:
            op = await self._open_op_of(eid_hint, OpKind.DOWNLOAD)
        eid = op.eid if op is not None else eid_hint
        op_id = op.id if op is not None else None
        mismatch = [
            e for e in (eid_hint, binding_eid) if e is not None and eid is not None and e.upper() != eid.upper()
        ]
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
        euicc = await self.store.get_euicc(eid)
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
                now=self.clock(),
                status=OpStatus.DONE if ok else OpStatus.FAILED,
                result={"profileInstallationResult": summary},
                result_code=None if ok else summary.get("errorReason"),
                error=None if ok else f"profile installation failed: {summary.get('name')}",
                action="pir",
            )
            changed = await self._record(op, update)
            await self.store.delete_download_session(session_key(bytes.fromhex(summary["transactionId"])))
        if forward and note is not None:
            taken = await intake.admit(note, operation_id=op_id)
            if not taken.acknowledged:
                return Handled(refused=taken.reason, operation=changed or op, taken=taken)
        return Handled(acks=[summary["seqNumber"]], operation=changed or op)

    # ------------------------------------------------------------------ other results
    async def _named(
        self, txid: bytes | None, kind: OpKind, eid: str | None, what: str
    ) -> tuple[Operation | None, Handled | None]:
        """The operation ``txid`` names, of ``kind`` and of the EID the message came with; else the refusal.
        No eimTransactionId, no operation: the eIM puts one in every package it sends."""
        op = await self.store.find_operation_by_eim_transaction_id(txid) if txid else None
        if op is None or op.kind is not kind:
            cause_eid = eid if eid is not None and await self.store.get_euicc(eid) is not None else None
            return None, await self.refuse("no_operation", f"no {what} matches this eimTransactionId", eid=cause_eid)
        if eid is not None and op.eid != eid:
            return None, await self.refuse("eid", f"{what} for eUICC {op.eid} arrived with EID {eid}", op=op)
        return op, None

    async def trigger_result(
        self, value: dict[str, Any], raw: bytes, eid: str | None, *, why: str | None = None
    ) -> Handled:
        """ProfileDownloadTriggerResult (direct download finished, or could not start): matched by its
        eimTransactionId only (OPTIONAL in the ASN.1, but the eIM sends one in every trigger and the IPA echoes
        it; a result without it is refused)."""
        op, refused = await self._named(value.get("eimTransactionId"), OpKind.DOWNLOAD, eid, "download operation")
        if op is None:
            return refused or Handled(refused="no download operation matches this result")
        alt, _ = value["profileDownloadTriggerResultData"]
        if alt is None:
            return await self.refuse("undecodable", "unknown ProfileDownloadTriggerResult alternative", op=op)
        if alt == "profileInstallationResult":
            pir = tlv.require(raw, 0xBF37, what="ProfileDownloadTriggerResult").raw
            # direct download: the IPA delivers the PIR to the SM-DP+ itself
            handled = await self.pir(pir, op.eid, op, forward=False)
            return Handled(refused=handled.refused, operation=handled.operation)
        summary = download.trigger_result_summary(value)
        update = ResultUpdate(
            operation_id=op.id,
            eid=op.eid,
            who="ipa",
            now=self.clock(),
            eim_transaction_id=op.eim_transaction_id,
            status=OpStatus.FAILED,
            result={"profileDownloadError": summary},
            result_code=summary["profileDownloadErrorReason"],
            error=download.trigger_error(summary, why),
        )
        return Handled(operation=await self._record(op, update) or op)

    async def euicc_data(
        self, value: tuple[str, Any], raw: bytes, eid: str | None, *, authenticated_eid: str | None = None
    ) -> Handled:
        """IpaEuiccDataResponse: learn what the eUICC/IPA reported; results and notifications inside are handled.

        Matched by its eimTransactionId only (OPTIONAL in the ASN.1; the eIM sends one in every
        IpaEuiccDataRequest and the IPA echoes it; a response without it is refused). The certificates are
        verified for the operation's EID before anything is learned: a certificate of another EID (or one that
        does not chain to a trusted CI) refuses the whole response - nothing is stored, the operation stays in
        progress, the IPA gets ``undefinedError`` - and is audited (``euicc_certificate`` / ``eid_mismatch``)."""
        alt, body = value
        if alt is None:
            return await self.refuse("undecodable", "unknown IpaEuiccDataResponse alternative", audit=False)
        op, refused = await self._named(body.get("eimTransactionId"), OpKind.EUICC_DATA, eid, "eUICC data request")
        if op is None:
            return refused or Handled(refused="no eUICC data request matches this response")
        now = self.clock()
        common = dict(operation_id=op.id, eid=op.eid, who="ipa", now=now, eim_transaction_id=op.eim_transaction_id)
        if alt == "ipaEuiccDataResponseError":
            code = body["ipaEuiccDataErrorCode"]
            name = euicc_data.ERROR_NAMES.get(code, str(code))
            update = ResultUpdate(
                status=OpStatus.FAILED,
                result={"ipaEuiccDataError": code, "name": name},
                result_code=code,
                error=f"eUICC data request refused: {name}",
                **common,
            )
            return Handled(operation=await self._record(op, update) or op)
        fields, summary = euicc_data.learned(body)
        acks: list[int] = []
        inner = tlv.find(raw, 0xA0)  # ipaEuiccData as received
        certs = _certificates(inner)
        if certs is not None:
            euicc_der, eum_der = certs
            try:
                self.keys.public_key(op.eid, euicc_der, eum_der, None)  # verified for op.eid, on this use
            except ResultRejected as exc:
                return await self.refuse(exc.cause, f"eUICC data response refused: {exc.reason}", op=op)
            fields["euicc_certificate"], fields["eum_certificate"] = euicc_der, eum_der
            summary["certificates"] = "verified"
        euicc = await self.store.get_euicc(op.eid)
        if "associationToken" in body and euicc is not None and euicc.association_token is None:
            fields["association_token"] = body["associationToken"]
        update = ResultUpdate(status=OpStatus.DONE, result=summary, euicc_fields=fields, **common)
        changed = await self._record(op, update)
        if inner is not None:
            for child in tlv.children(inner):
                if child.tag == 0xA2:  # euiccPackageResultList: recover results that were never delivered
                    for epr in tlv.children(child):
                        handled = await self.euicc_package_result(epr.raw, op.eid, authenticated_eid=authenticated_eid)
                        acks += handled.acks
                elif child.tag == 0xA0:  # notificationsList
                    acks += await self.notifications([n.raw for n in tlv.children(child)], op.eid)
        return Handled(acks=acks, operation=changed or op)

    async def package_error(
        self, txid: bytes | None, code: int, eid: str | None, *, authenticated_eid: str | None, pushed: bool = False
    ) -> Handled:
        """The IPA could not use a package (eimPackageResultResponseError / TransferEimPackageResponse error).

        Unsigned: it fails its operation only when the binding authenticated the operation's EID
        (``authenticated_eid``) and its eimTransactionId names the operation. ``pushed``: the
        TransferEimPackageResponse ``eimPackageError``, whose ASN.1 has no eimTransactionId; it answers the package
        pushed to that eUICC, i.e. the one operation of the authenticated EID in progress (none or several: it
        names nothing). Otherwise it is audited as an unverified error and nothing changes."""
        name = {1: "invalidPackageFormat", 2: "unknownPackage", 127: "undefinedError"}.get(code, str(code))
        op = None
        if pushed:
            if authenticated_eid is not None:
                ops = await self.store.list_operations(eid=authenticated_eid, status=OpStatus.IN_PROGRESS, limit=2)
                op = ops[0] if len(ops) == 1 else None
        elif txid is not None:
            op = await self.store.find_operation_by_eim_transaction_id(txid)
        detail = {"eimPackageError": code, "name": name}
        if op is None:
            known = eid if eid is not None and await self.store.get_euicc(eid) is not None else None
            return await self.refuse(
                "unverified_error",
                "no operation matches this error",
                eid=known,
                outcome="unverified_error",
                detail=detail,
            )
        if eid is not None and op.eid != eid:
            return await self.refuse("eid", f"error for eUICC {op.eid} arrived with EID {eid}", op=op)
        if authenticated_eid != op.eid:
            return await self.refuse(
                "unverified_error",
                "unsigned error from a device not authenticated as the operation's eUICC",
                op=op,
                outcome="unverified_error",
                detail=detail,
            )
        update = ResultUpdate(
            operation_id=op.id,
            eid=op.eid,
            who="ipa",
            now=self.clock(),
            eim_transaction_id=op.eim_transaction_id,
            status=OpStatus.FAILED,
            result={"eimPackageError": code, "name": name},
            result_code=code,
            error=f"the IPA could not use the package: {name}",
        )
        return Handled(operation=await self._record(op, update) or op)


entries_error = euicc_package_result.entries_error


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


def _certificates(ipa_euicc_data: tlv.Tlv | None) -> tuple[bytes, bytes | None] | None:
    """``(euiccCertificate DER, eumCertificate DER)`` cut from IpaEuiccData (A6 / A5 carry the certificate
    SEQUENCE with an implicit tag: the DER is ``30`` + the same length and content)."""
    if ipa_euicc_data is None:
        return None
    euicc = tlv.find(ipa_euicc_data, 0xA6)
    if euicc is None:
        return None
    eum = tlv.find(ipa_euicc_data, 0xA5)

    def der(t: tlv.Tlv) -> bytes:
        return b"\x30" + t.raw[1:]

    return der(euicc), der(eum) if eum is not None else None
