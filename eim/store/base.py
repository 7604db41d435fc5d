"""The Store methods shared by both backends: each one runs one :mod:`eim.store.logic` generator as a transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from eim.model import (
    AuditEntry,
    Batch,
    Euicc,
    NotificationStatus,
    NotificationToSend,
    Operation,
    OpKind,
    OpStatus,
    OutboundNotification,
)
from eim.store.fleet_store import FleetEventsStore
from eim.store.logic import Built, Claim, Gen, Logic, ResultContext, ResultUpdate
from eim.store.ui_sessions import UiSessionStore

Factory = Callable[[], Gen]


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every numbered file in ``eim/store/migrations``, in order."""
    out = []
    for entry in resources.files("eim.store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text()))
    return sorted(out)


def split_statements(sql: str) -> list[str]:
    """Split a migration file on ``;`` at line ends (the files contain no procedural code)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class SqlStore(FleetEventsStore, UiSessionStore):
    dialect = "sql"

    def __init__(self) -> None:
        self.logic = Logic(self.dialect)

    async def _run(self, factory: Factory, *, write: bool = True) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- registry
    async def add_euicc(self, euicc: Euicc, *, who: str) -> bool:
        return await self._run(lambda: self.logic.add_euicc(euicc, who))

    async def get_euicc(self, eid: str) -> Euicc | None:
        return await self._run(lambda: self.logic.get_euicc(eid), write=False)

    async def list_euiccs(self, *, limit: int = 100, after: str | None = None) -> list[Euicc]:
        return await self._run(lambda: self.logic.list_euiccs(limit, after), write=False)

    async def update_euicc(self, eid: str, **fields: Any) -> bool:
        return await self._run(lambda: self.logic.update_euicc(eid, fields))

    async def set_euicc_certificates(self, eid: str, euicc_cert_der: bytes, eum_cert_der: bytes) -> None:
        await self.update_euicc(eid, euicc_certificate=bytes(euicc_cert_der), eum_certificate=bytes(eum_cert_der))

    # ---- operations
    async def add_operations(self, ops: list[Operation], *, who: str) -> list[Operation]:
        return await self._run(lambda: self.logic.add_operations(ops, who))

    async def get_operation(self, op_id: str) -> Operation | None:
        return await self._run(lambda: self.logic.get_operation(op_id), write=False)

    async def list_operations(
        self,
        *,
        eid: str | None = None,
        status: OpStatus | None = None,
        kind: OpKind | None = None,
        batch_id: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        descending: bool = False,
    ) -> list[Operation]:
        s = None if status is None else OpStatus(status).value
        k = None if kind is None else OpKind(kind).value
        return await self._run(
            lambda: self.logic.list_operations(eid, s, k, batch_id, limit, after_seq, descending), write=False
        )

    async def find_operation_by_eim_transaction_id(self, eim_transaction_id: bytes) -> Operation | None:
        value = bytes(eim_transaction_id)
        return await self._run(lambda: self.logic.find_by_column("eim_transaction_id", value), write=False)

    async def find_operation_by_smdp_transaction_id(self, transaction_id: bytes) -> Operation | None:
        value = bytes(transaction_id)
        return await self._run(lambda: self.logic.find_by_column("smdp_transaction_id", value), write=False)

    async def result_context(self, eid: str | None, eim_transaction_id: bytes | None) -> ResultContext:
        value = None if eim_transaction_id is None else bytes(eim_transaction_id)
        return await self._run(lambda: self.logic.result_context(eid, value), write=False)

    async def link_smdp_transaction(self, op_id: str, transaction_id: bytes) -> bool:
        value = bytes(transaction_id)
        return await self._run(lambda: self.logic.link_smdp_transaction(op_id, value))

    async def claim_next(
        self, eid: str, now: float, build: Callable[[Euicc, Operation, int], Built], *, binding: str | None = None
    ) -> Claim:
        return await self._run(lambda: self.logic.claim_next(eid, now, build, binding))

    async def record_result(self, update: ResultUpdate) -> Operation | None:
        return await self._run(lambda: self.logic.record_result(update))

    async def cancel_operation(self, op_id: str, *, who: str, now: float) -> Operation | None:
        return await self._run(lambda: self.logic.cancel_operation(op_id, who, now))

    async def note_refusal(
        self,
        op_id: str | None,
        *,
        eid: str | None = None,
        code: int,
        reason: str,
        now: float,
        max_handouts: int,
        who: str = "ipa",
    ) -> Operation | None:
        from eim.store import retries

        return await self._run(
            lambda: retries.note_refusal(self.logic, op_id, eid, code, reason, now, max_handouts, who)
        )

    async def defer_operation(
        self, op_id: str, *, function: str, reason: str, now: float, initial_s: float, max_s: float, who: str = "eim"
    ) -> Operation | None:
        from eim.store import retries

        return await self._run(lambda: retries.defer(self.logic, op_id, function, reason, now, initial_s, max_s, who))

    async def expire_operations(self, now: float) -> int:
        return await self._run(lambda: self.logic.expire_operations(now))

    async def count_operations_by_status(self) -> dict[tuple[str, str], int]:
        return await self._run(self.logic.count_operations_by_status, write=False)

    async def eids_with_queued_work(
        self, *, binding: str, now: float, limit: int = 100, stale_before: float | None = None
    ) -> list[str]:
        return await self._run(lambda: self.logic.eids_with_queued_work(binding, now, limit, stale_before), write=False)

    # ---- batches
    async def add_batch(self, batch: Batch, ops: list[Operation], *, who: str) -> Batch:
        return await self._run(lambda: self.logic.add_batch(batch, ops, who))

    async def get_batch(self, batch_id: str) -> Batch | None:
        return await self._run(lambda: self.logic.get_batch(batch_id), write=False)

    # ---- audit
    async def add_audit(
        self,
        *,
        who: str,
        action: str,
        outcome: str,
        eid: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        kw = dict(
            at=time.time() if at is None else at,
            who=who,
            action=action,
            outcome=outcome,
            eid=eid,
            operation_id=operation_id,
            detail=detail,
        )
        await self._run(lambda: self.logic.add_audit(**kw))

    async def list_audit(
        self,
        *,
        operation_id: str | None = None,
        eid: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
        descending: bool = False,
    ) -> list[AuditEntry]:
        return await self._run(
            lambda: self.logic.list_audit(operation_id, eid, limit, after_id, descending), write=False
        )

    # ---- relay
    async def put_download_session(self, key: str, data: dict[str, Any]) -> None:
        now = time.time()
        await self._run(lambda: self.logic.put_download_session(key, data, now))

    async def get_download_session(self, key: str) -> dict[str, Any] | None:
        return await self._run(lambda: self.logic.get_download_session(key), write=False)

    async def delete_download_session(self, key: str) -> None:
        await self._run(lambda: self.logic.delete_download_session(key))

    # ---- notification outbox
    async def enqueue_notifications(
        self, items: list[NotificationToSend], *, who: str, now: float | None = None
    ) -> list[tuple[OutboundNotification, bool]]:
        at = time.time() if now is None else now
        items = list(items)
        return await self._run(lambda: self.logic.enqueue_notifications(items, at, who))

    async def claim_notifications(
        self, *, now: float, lease_s: float, owner: str, limit: int = 16
    ) -> list[OutboundNotification]:
        return await self._run(lambda: self.logic.claim_notifications(now, lease_s, owner, limit))

    async def notification_delivered(self, notification_id: int, *, now: float, owner: str) -> bool:
        return await self._run(lambda: self.logic.notification_delivered(notification_id, now, owner))

    async def notification_retry(
        self, notification_id: int, *, next_attempt_at: float, error: str, now: float, owner: str
    ) -> bool:
        return await self._run(
            lambda: self.logic.notification_retry(notification_id, next_attempt_at, error, now, owner)
        )

    async def notification_failed(
        self, notification_id: int, *, reason: str, now: float, owner: str
    ) -> OutboundNotification | None:
        return await self._run(lambda: self.logic.notification_failed(notification_id, reason, now, owner))

    async def release_notifications(self, owner: str, *, now: float | None = None) -> int:
        at = time.time() if now is None else now
        return await self._run(lambda: self.logic.release_notifications(owner, at))

    async def list_notifications(
        self, *, status: NotificationStatus | str | None = None, limit: int = 100, after_id: int | None = None
    ) -> list[OutboundNotification]:
        s = None if status is None else NotificationStatus(status).value
        return await self._run(lambda: self.logic.list_notifications(s, limit, after_id), write=False)

    async def count_notifications_by_status(self) -> dict[str, int]:
        return await self._run(self.logic.count_notifications_by_status, write=False)

    async def pending_notifications_of(self, eid: str, *, limit: int) -> list[OutboundNotification]:
        return await self._run(lambda: self.logic.pending_notifications_of(eid, limit), write=False)

    async def next_notification_due(self) -> float | None:
        return await self._run(self.logic.next_notification_due, write=False)
