"""The eIM's durable state behind one interface: SQLite (default, zero setup) or PostgreSQL (several workers).

Both backends run the same logic (:mod:`eim.store.logic`, written once as generators that yield SQL) and the
same numbered migrations (:mod:`eim.store.migrations`). :func:`open_store` picks the backend from a URL:
``sqlite:///path/to/eim.db`` (``sqlite://:memory:`` for tests) or ``postgresql://user@host:port/db``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from eim.model import (
    AuditEntry,
    Batch,
    BatchItem,
    Euicc,
    NotificationStatus,
    NotificationToSend,
    Operation,
    OpKind,
    OpStatus,
    OutboundNotification,
)
from eim.store.logic import Built, Claim, ClaimOutcome, ResultContext, ResultUpdate, StoreError

__all__ = [
    "Built",
    "Claim",
    "ClaimOutcome",
    "ResultContext",
    "ResultUpdate",
    "Store",
    "StoreError",
    "open_store",
]


@runtime_checkable
class Store(Protocol):
    """Everything the eIM keeps. All methods are coroutines; each one is one database transaction."""

    dialect: str  # "sqlite" | "postgresql"

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    # ---- registry
    async def add_euicc(self, euicc: Euicc, *, who: str) -> bool:
        """Insert; ``False`` when the EID is already registered (nothing changed)."""
        ...

    async def get_euicc(self, eid: str) -> Euicc | None: ...

    async def list_euiccs(self, *, limit: int = 100, after: str | None = None) -> list[Euicc]: ...

    async def update_euicc(self, eid: str, **fields: Any) -> bool:
        """Set learned fields (profiles, ipa_capabilities, info, binding, last_contact, certificates...)."""
        ...

    async def set_euicc_certificates(self, eid: str, euicc_cert_der: bytes, eum_cert_der: bytes) -> None: ...

    # ---- operations
    async def add_operations(self, ops: list[Operation], *, who: str) -> list[Operation]:
        """Insert queued operations (one transaction); returns them with their ``seq``."""
        ...

    async def get_operation(self, op_id: str) -> Operation | None: ...

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
        """In ``seq`` order (newest first when ``descending``), from just past ``after_seq`` in that order."""
        ...

    async def find_operation_by_eim_transaction_id(self, eim_transaction_id: bytes) -> Operation | None: ...

    async def find_operation_by_smdp_transaction_id(self, transaction_id: bytes) -> Operation | None: ...

    async def result_context(self, eid: str | None, eim_transaction_id: bytes | None) -> ResultContext:
        """In one read transaction: the eUICC of ``eid`` (if given; stops there when it is not registered), the
        operation with ``eim_transaction_id`` (if given) and that operation's eUICC."""
        ...

    async def link_smdp_transaction(self, op_id: str, transaction_id: bytes) -> bool: ...

    async def claim_next(
        self, eid: str, now: float, build: Callable[[Euicc, Operation, int], Built], *, binding: str | None = None
    ) -> Claim:
        """Hand out the head of the eUICC's queue (see :func:`eim.store.logic.claim_next`)."""
        ...

    async def record_result(self, update: ResultUpdate) -> Operation | None:
        """Apply a verified result; ``None`` when it changed nothing (replay, unknown or closed operation)."""
        ...

    async def cancel_operation(self, op_id: str, *, who: str, now: float) -> Operation | None: ...

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
        """A result for ``op_id`` (or for ``eid``'s handed-out package) was refused with ESipa ``code``: counted
        once per hand-out; at ``max_handouts`` (0 = no limit) the operation ends failed with it
        (:mod:`eim.store.retries`). ``None`` when no handed-out operation is in progress."""
        ...

    async def defer_operation(
        self, op_id: str, *, function: str, reason: str, now: float, initial_s: float, max_s: float, who: str = "eim"
    ) -> Operation | None:
        """The SM-DP+ could not be reached for ``op_id``'s hand-out: not handed out again before a capped
        backoff (:mod:`eim.store.retries`). ``None`` when the operation is not in progress."""
        ...

    async def expire_operations(self, now: float) -> int: ...

    async def count_operations_by_status(self) -> dict[tuple[str, str], int]:
        """``{(kind, status): count}``."""
        ...

    async def eids_with_queued_work(
        self, *, binding: str, now: float, limit: int = 100, stale_before: float | None = None
    ) -> list[str]:
        """eUICCs last reached over ``binding`` with queued work due, or a package handed out before
        ``stale_before`` still without a result (to push again)."""
        ...

    # ---- batches
    async def add_batch(self, batch: Batch, ops: list[Operation], *, who: str) -> Batch: ...

    async def get_batch(self, batch_id: str) -> Batch | None: ...

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
    ) -> None: ...

    async def list_audit(
        self,
        *,
        operation_id: str | None = None,
        eid: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
        descending: bool = False,
    ) -> list[AuditEntry]:
        """In ``id`` order (newest first when ``descending``), from just past ``after_id`` in that order."""
        ...

    # ---- indirect-download relay state
    async def put_download_session(self, key: str, data: dict[str, Any]) -> None: ...

    async def get_download_session(self, key: str) -> dict[str, Any] | None: ...

    async def delete_download_session(self, key: str) -> None: ...

    # ---- notification outbox (ES9+ HandleNotification owed to SM-DP+s; eim.relay.outbox)
    async def enqueue_notifications(
        self, items: list[NotificationToSend], *, who: str, now: float | None = None
    ) -> list[tuple[OutboundNotification, bool]]:
        """Queue notifications (one transaction, an audit entry each); ``(row, created)`` per item. The same
        bytes are queued once: while a row with them exists it is returned with ``created`` False."""
        ...

    async def claim_notifications(
        self, *, now: float, lease_s: float, owner: str, limit: int = 16
    ) -> list[OutboundNotification]:
        """Lease due pending notifications to ``owner`` until ``now + lease_s``, counting one attempt each; no
        notification is leased to two owners at once (PostgreSQL: ``FOR UPDATE SKIP LOCKED``)."""
        ...

    async def notification_delivered(self, notification_id: int, *, now: float, owner: str) -> bool:
        """The SM-DP+ accepted it: delete the row, audit it. ``False`` when the row was already gone."""
        ...

    async def notification_retry(
        self, notification_id: int, *, next_attempt_at: float, error: str, now: float, owner: str
    ) -> bool:
        """Release ``owner``'s lease and schedule the next attempt; ``False`` when the lease was lost."""
        ...

    async def notification_failed(
        self, notification_id: int, *, reason: str, now: float, owner: str
    ) -> OutboundNotification | None:
        """End it as failed with ``reason`` (kept, audited); ``None`` when ``owner`` no longer holds it."""
        ...

    async def release_notifications(self, owner: str, *, now: float | None = None) -> int:
        """Drop every lease ``owner`` holds (a worker stopping)."""
        ...

    async def list_notifications(
        self, *, status: NotificationStatus | str | None = None, limit: int = 100, after_id: int | None = None
    ) -> list[OutboundNotification]: ...

    async def count_notifications_by_status(self) -> dict[str, int]:
        """``{status: count}`` of the outbox (pending / failed)."""
        ...

    async def pending_notifications_of(self, eid: str, *, limit: int) -> list[OutboundNotification]:
        """Up to ``limit`` pending notifications of one eUICC, oldest first (the outbox's per-EID cap)."""
        ...

    async def next_notification_due(self) -> float | None:
        """When the earliest pending notification is due (next attempt or end of lease); ``None`` when none."""
        ...


def open_store(url: str, **options: Any) -> Store:
    """A store for ``url`` (not yet opened: ``await store.open()``)."""
    if url.startswith("sqlite:"):
        from eim.store.sqlite import SqliteStore

        rest = url[len("sqlite:") :]
        # sqlite:///relative.db, sqlite:////absolute/path.db, sqlite://:memory:, sqlite:plain/path.db
        path = rest[3:] if rest.startswith("///") else rest[2:] if rest.startswith("//") else rest
        return SqliteStore(path or ":memory:", **options)
    if url.startswith(("postgresql:", "postgres:")):
        from eim.store.postgres import PostgresStore

        return PostgresStore(url, **options)
    raise StoreError(f"unsupported store URL {url!r}: use sqlite:///path or postgresql://...")


# Re-exported for annotations in callers.
_ = (AuditEntry, Batch, BatchItem, Euicc, Operation, OutboundNotification)
