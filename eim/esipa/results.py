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

This module holds what every result kind shares (:class:`ResultProcessor`: matching by eimTransactionId,
recording, refusing); each kind is handled in its own module: :mod:`eim.esipa.euicc_package_result`,
:mod:`eim.esipa.profile_installation_result` (PIRs and other notifications),
:mod:`eim.esipa.ipa_euicc_data_result`, :mod:`eim.esipa.profile_download_trigger_result`,
:mod:`eim.esipa.eim_package_error`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eim.esipa import (
    eim_package_error,
    euicc_package_result,
    ipa_euicc_data_result,
    profile_download_trigger_result,
    profile_installation_result,
)
from eim.esipa.notification_intake import NotificationIntake, Taken
from eim.interfaces import DownloadRelay, NotificationQueue
from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.operations import OperationService
from eim.packages.euicc_package import (
    EuiccKeys,
    EuiccPackageOutcome,
    ResultRejected,
    parse_euicc_package_result,
)
from eim.store import ResultContext, ResultUpdate, Store
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
        """Verify and take each pending notification (PIR BF37 / other signed 30) attributed to ``eid``; return
        the seq numbers the IPA may delete (:mod:`eim.esipa.profile_installation_result`)."""
        return await profile_installation_result.notifications(self, items, eid)

    async def pending_notification(self, raw: bytes, binding_eid: str | None) -> Taken:
        """One notification from HandleNotification (:mod:`eim.esipa.profile_installation_result`)."""
        return await profile_installation_result.pending_notification(self, raw, binding_eid)

    async def pir(
        self,
        pir: bytes,
        eid_hint: str | None,
        op: Operation | None,
        *,
        forward: bool = True,
        binding_eid: str | None = None,
    ) -> Handled:
        """A ProfileInstallationResult: verified, closes its download operation, then goes to the SM-DP+ when
        ``forward`` (:mod:`eim.esipa.profile_installation_result`)."""
        return await profile_installation_result.pir(self, pir, eid_hint, op, forward=forward, binding_eid=binding_eid)

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
        """ProfileDownloadTriggerResult (:mod:`eim.esipa.profile_download_trigger_result`)."""
        return await profile_download_trigger_result.handle(self, value, raw, eid, why=why)

    async def euicc_data(
        self, value: tuple[str, Any], raw: bytes, eid: str | None, *, authenticated_eid: str | None = None
    ) -> Handled:
        """IpaEuiccDataResponse (:mod:`eim.esipa.ipa_euicc_data_result`)."""
        return await ipa_euicc_data_result.handle(self, value, raw, eid, authenticated_eid=authenticated_eid)

    async def package_error(
        self, txid: bytes | None, code: int, eid: str | None, *, authenticated_eid: str | None, pushed: bool = False
    ) -> Handled:
        """The IPA could not use a package: unsigned, fails its operation only from the authenticated eUICC
        (:mod:`eim.esipa.eim_package_error`)."""
        return await eim_package_error.handle(self, txid, code, eid, authenticated_eid=authenticated_eid, pushed=pushed)


entries_error = euicc_package_result.entries_error
# re-exported: imported from here by eim.esipa.indirect_download and others
session_key = profile_installation_result.session_key
notification_seq = profile_installation_result.notification_seq
notification_parts = profile_installation_result.notification_parts
