"""Store logic written once for both backends, as generators that yield SQL.

Each function here is a generator: it yields :class:`Q` (one SQL statement with ``?`` placeholders) and receives
the statement's result (a row dict, a list of row dicts, or an affected-row count); its return value is the
function's result. A backend runs the whole generator inside ONE database transaction (SQLite: ``BEGIN
IMMEDIATE`` on its dedicated thread; PostgreSQL: an asyncpg transaction) and reruns it from the start when it
raises :class:`Retry`. This is the sans-I/O style of the project: the logic owns no connection.

Concurrency rules (the reason for the order of the statements):
- Every change to one eUICC's operations first locks that eUICC's row (PostgreSQL ``FOR UPDATE``; SQLite's
  ``BEGIN IMMEDIATE`` is a single writer anyway). The claim takes the lock with ``SKIP LOCKED``: while one worker
  is handing out a package to an eUICC, another worker polled by the same eUICC answers "nothing for you now"
  instead of waiting or handing out the next operation out of order.
- The counter value is read and written under that lock, in the same transaction that records the signed
  package in the operation row: a crash before the commit loses both (the package was never sent, because the
  reply leaves only after the commit); a crash after it keeps both, and the next poll gets the SAME bytes.
- Status changes are guarded (``WHERE status = ...``) and a lost race raises :class:`Retry`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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
    build,  # a record from a full set of fields without the per-field __init__ (the row conversions)
    replace,  # dataclasses.replace without the per-field __init__ (the claim and result paths)
)
from eim.store import tallies
from eim.store.enabled_profile import enabled_from_profiles


class StoreError(Exception):
    """A store request that cannot be honoured (unknown EID for a new operation, bad URL, lost connection...)."""


class Retry(Exception):
    """Raised by logic when a guarded update lost a race: the backend rolls back and runs it again."""


class PackageBuildError(Exception):
    """Raised by a ``build`` callback when an operation can never produce a package (it is marked failed)."""


@dataclass(frozen=True)
class Q:
    sql: str
    args: tuple[Any, ...] | list[tuple[Any, ...]] = ()
    mode: str = "exec"  # "one" -> dict | None, "all" -> list[dict], "exec" -> affected row count,
    # "many" -> the statement once per tuple in ``args`` (executemany), affected row count


@dataclass(frozen=True)
class Built:
    """What a package builder returns for one operation."""

    package: bytes  # exact DER handed to the IPA (BF51 / BF52 / BF54)
    eim_transaction_id: bytes
    counter_value: int | None = None  # the counter value this package consumed (signed packages only)


class ClaimOutcome(StrEnum):
    PACKAGE = "package"
    NONE = "none"
    UNKNOWN_EID = "unknown_eid"
    BUSY = "busy"  # another worker is handing out to this eUICC right now


@dataclass(frozen=True)
class Seen:
    """What a no-work poll reads of its eUICC's row (:meth:`Logic.poll_peek`): the binding it was last reached over
    and its last contact, as stored."""

    binding: str | None
    last_contact: float | None


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    operation: Operation | None = None
    euicc: Euicc | None = None
    rehanded: bool = False
    closed: list[Operation] = field(default_factory=list)  # operations expired/failed while looking for work
    seen: Seen | None = None  # a claim answered from the poll's look alone (then ``euicc`` is None)

    def contact(self) -> Seen | None:
        """The binding and last contact of the claim's eUICC as stored, whichever way it was read; ``None`` when
        the claim names no registered eUICC."""
        if self.euicc is not None:
            return Seen(self.euicc.binding, self.euicc.last_contact)
        return self.seen


@dataclass(frozen=True)
class ResultContext:
    """What handling a result needs from the store, read in one transaction (:meth:`Logic.result_context`)."""

    eid_known: bool  # False: the EID the result came with is not registered (nothing else was read)
    euicc: Euicc | None = None  # the eUICC of that EID (None when no EID came with the result)
    operation: Operation | None = None  # the operation with the result's eimTransactionId
    operation_euicc: Euicc | None = None  # the eUICC that operation belongs to


@dataclass(frozen=True)
class ResultUpdate:
    """A verified outcome for one operation."""

    operation_id: str
    eid: str
    status: OpStatus  # DONE / FAILED, or IN_PROGRESS to only attach an intermediate result
    who: str
    now: float
    eim_transaction_id: bytes | None = None  # must match the operation's when given
    result: dict[str, Any] | None = None
    result_code: int | None = None
    error: str | None = None
    euicc_fields: dict[str, Any] = field(default_factory=dict)  # registry fields learned from the result
    action: str = "result"


EUICC_JSON = ("profiles", "ipa_capabilities", "info", "labels")
EUICC_UPDATABLE = (
    "sgp32_version",
    "eim_id",
    "association_token",
    "trusted_ci",
    "euicc_certificate",
    "eum_certificate",
    "last_contact",
    "binding",
    "profiles",
    "ipa_capabilities",
    "info",
    "labels",
    "last_seq_number",
)
OP_JSON = ("params", "result")
CONTACT_GRANULARITY_S = 5.0  # last_contact is recorded to within this many seconds
OPEN = ("queued", "in_progress")

Gen = Generator[Q, Any, Any]


# json.dumps with these arguments builds a new encoder on every call; one built once gives the same text
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _dumps(v: Any) -> str | None:
    return None if v is None else _ENCODER.encode(v)


def _loads(v: Any) -> Any:
    if v == "{}":  # the info and labels of most rows: no parse (a poll reads one row)
        return {}
    return None if v is None else json.loads(v)


def _bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def row_to_euicc(r: dict[str, Any]) -> Euicc:
    return build(
        Euicc,
        eid=r["eid"],
        eim_id=r["eim_id"],
        association_token=r["association_token"],
        counter_value=int(r["counter_value"]),
        trusted_ci=r["trusted_ci"],
        euicc_certificate=_bytes(r["euicc_certificate"]),
        eum_certificate=_bytes(r["eum_certificate"]),
        last_contact=r["last_contact"],
        binding=r["binding"],
        profiles=_loads(r["profiles"]),
        ipa_capabilities=_loads(r["ipa_capabilities"]),
        info=_loads(r["info"]) or {},
        note=r.get("note"),
        poll_interval_s=r.get("poll_interval_s"),
        labels=_loads(r["labels"]) or {},
        last_seq_number=r["last_seq_number"],
        created_at=r["created_at"],
        sgp32_version=r.get("sgp32_version"),
        enabled_iccid=r.get("enabled_iccid"),
        enabled_smdp=r.get("enabled_smdp"),
    )


_OP_KINDS: dict[str, OpKind] = {k.value: k for k in OpKind}  # the enum call costs ~0.5 µs, a dict look-up ~0.05
_OP_STATUSES: dict[str, OpStatus] = {s.value: s for s in OpStatus}


def row_to_op(r: dict[str, Any]) -> Operation:
    return build(
        Operation,
        id=r["id"],
        eid=r["eid"],
        kind=_OP_KINDS.get(r["kind"]) or OpKind(r["kind"]),  # the call raises its ValueError for an unknown one
        params=_loads(r["params"]) or {},
        status=_OP_STATUSES.get(r["status"]) or OpStatus(r["status"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        not_before=r["not_before"],
        expires_at=r["expires_at"],
        created_by=r["created_by"],
        batch_id=r["batch_id"],
        seq=int(r["seq"]),
        eim_transaction_id=_bytes(r["eim_transaction_id"]),
        counter_value=r["counter_value"],
        package=_bytes(r["package"]),
        attempts=int(r["attempts"]),
        handed_out_at=r["handed_out_at"],
        result=_loads(r["result"]),
        result_code=r["result_code"],
        error=r["error"],
        smdp_transaction_id=_bytes(r["smdp_transaction_id"]),
    )


def row_to_audit(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=int(r["id"]),
        at=r["at"],
        who=r["who"],
        action=r["action"],
        eid=r["eid"],
        operation_id=r["operation_id"],
        outcome=r["outcome"],
        detail=_loads(r["detail"]) or {},
    )


def row_to_notification(r: dict[str, Any]) -> OutboundNotification:
    return OutboundNotification(
        id=int(r["id"]),
        digest=r["digest"],
        eid=r["eid"],
        operation_id=r["operation_id"],
        kind=r["kind"],
        seq_number=r["seq_number"],
        address=r["address"],
        notification=bytes(r["notification"]),
        status=NotificationStatus(r["status"]),
        created_at=float(r["created_at"]),
        updated_at=float(r["updated_at"]),
        next_attempt_at=float(r["next_attempt_at"]),
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
        lease_until=None if r["lease_until"] is None else float(r["lease_until"]),
        leased_by=r["leased_by"],
    )


def notification_digest(notification: bytes) -> str:
    return hashlib.sha256(notification).hexdigest()


def new_id() -> str:
    return str(uuid.uuid4())


def quiet_claim(peek: tuple[Seen | None, bool], binding: str | None) -> Claim | None:
    """The claim a poll gets from :meth:`Logic.poll_peek` alone, or ``None`` when it needs :meth:`Logic.claim_next`
    (an open operation, or a new or changed binding to write)."""
    seen, has_open = peek
    if seen is None:
        return Claim(ClaimOutcome.UNKNOWN_EID)
    if has_open or (binding is not None and binding != seen.binding):
        return None
    return Claim(ClaimOutcome.NONE, seen=seen)


# The head of an eUICC's queue: the lowest seq among its queued and in-progress operations, found by two seeks on
# operations_eid_status (eid, status, seq), one per status. Written as `status IN ('queued', 'in_progress') ORDER
# BY seq LIMIT 1`, SQLite (3.40) walked operations_eid_seq (eid, seq) instead, through every operation the eUICC
# ever had, so each claim cost more the longer the eUICC's history (a signed PSMO round trip 1.2x dearer after 240
# done operations per eUICC; tests/eim/test_store_queue_head.py).
QUEUE_HEAD_SQL = (
    "SELECT * FROM (SELECT * FROM operations WHERE eid = ? AND status = 'queued' ORDER BY seq LIMIT 1) AS q"
    " UNION ALL"
    " SELECT * FROM (SELECT * FROM operations WHERE eid = ? AND status = 'in_progress' ORDER BY seq LIMIT 1) AS p"
    " ORDER BY seq LIMIT 1"
)


# One audit row (every audit row is written by this statement, so a backend may recognise it: the SQLite store
# collects a group's audit rows and writes them with multi-row INSERTs before its COMMIT, eim.store.group_commit).
AUDIT_COLUMNS = "(at, who, action, eid, operation_id, outcome, detail)"
AUDIT_INSERT = f"INSERT INTO audit {AUDIT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)"


class Logic:
    """The store's transactions. ``pg`` switches on PostgreSQL row locks."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.pg = dialect == "postgresql"

    def _lock(self, skip: bool = False) -> str:
        if not self.pg:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip else " FOR UPDATE"

    # ------------------------------------------------------------------ audit
    def _audit(
        self,
        *,
        at: float,
        who: str,
        action: str,
        outcome: str,
        eid: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Q:
        return Q(AUDIT_INSERT, (at, who, action, eid, operation_id, outcome, _dumps(detail or {})))

    def _tally(self, rows: list[tuple[str, str, int]]) -> Gen:
        """Delta rows of the fleet tallies (:mod:`eim.store.tallies`), in the caller's transaction."""
        if rows:
            yield Q(tallies.INSERT_SQL, rows, "many")

    def add_audit(self, **kw: Any) -> Gen:
        yield self._audit(**kw)

    def list_audit(
        self, operation_id: str | None, eid: str | None, limit: int, after_id: int | None = None, desc: bool = False
    ) -> Gen:
        """Oldest first, or newest first (``desc``: one eUICC's from the index (eid, id), migration 0008)."""
        where, args = [], []
        if operation_id is not None:
            where.append("operation_id = ?")
            args.append(operation_id)
        if eid is not None:
            where.append("eid = ?")
            args.append(eid)
        if after_id is not None:
            where.append("id < ?" if desc else "id > ?")
            args.append(after_id)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?" if desc else " ORDER BY id LIMIT ?"
        rows = yield Q(sql, (*args, limit), "all")
        return [row_to_audit(r) for r in rows]

    # ------------------------------------------------------------------ registry
    def add_euicc(self, e: Euicc, who: str) -> Gen:
        exists = yield Q("SELECT eid FROM euiccs WHERE eid = ?", (e.eid,), "one")
        if exists is not None:
            return False
        yield Q(
            "INSERT INTO euiccs (eid, eim_id, association_token, counter_value, trusted_ci, euicc_certificate,"
            " eum_certificate, last_contact, binding, profiles, ipa_capabilities, info, labels, last_seq_number,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.eid,
                e.eim_id,
                e.association_token,
                e.counter_value,
                e.trusted_ci,
                e.euicc_certificate,
                e.eum_certificate,
                e.last_contact,
                e.binding,
                _dumps(e.profiles),
                _dumps(e.ipa_capabilities),
                _dumps(e.info),
                _dumps(e.labels),
                e.last_seq_number,
                e.created_at,
            ),
        )
        yield from self._tally(tallies.added({"binding": e.binding}))  # no version nor enabled profile yet
        yield from self.write_labels(e.eid, e.labels, fresh=True)
        yield self._audit(
            at=e.created_at,
            who=who,
            action="register",
            outcome="ok",
            eid=e.eid,
            detail={"eim_id": e.eim_id, "counter_value": e.counter_value},
        )
        return True

    def write_labels(self, eid: str, labels: dict[str, str], *, fresh: bool = False) -> Gen:
        """Mirror an eUICC's labels into ``euicc_labels`` (migration 0007), in the caller's transaction."""
        if not fresh:
            yield Q("DELETE FROM euicc_labels WHERE eid = ?", (eid,))
        if labels:
            rows = [(eid, k, v) for k, v in labels.items()]
            yield Q("INSERT INTO euicc_labels (eid, key, value) VALUES (?, ?, ?)", rows, "many")

    def get_euicc(self, eid: str) -> Gen:
        r = yield Q("SELECT * FROM euiccs WHERE eid = ?", (eid,), "one")
        return None if r is None else row_to_euicc(r)

    def list_euiccs(self, limit: int, after: str | None) -> Gen:
        if after is None:
            rows = yield Q("SELECT * FROM euiccs ORDER BY eid LIMIT ?", (limit,), "all")
        else:
            rows = yield Q("SELECT * FROM euiccs WHERE eid > ? ORDER BY eid LIMIT ?", (after, limit), "all")
        return [row_to_euicc(r) for r in rows]

    def _update_euicc_fields(self, current: Euicc, fields: dict[str, Any]) -> Gen:
        sets, args = [], []
        for k, v in fields.items():
            if k == "info_merge":
                merged = dict(current.info)
                merged.update(v)
                sets.append("info = ?")
                args.append(_dumps(merged))
                continue
            if k not in EUICC_UPDATABLE:
                raise StoreError(f"cannot update eUICC field {k!r}")
            if k == "last_seq_number" and v is not None and current.last_seq_number is not None:
                v = max(v, current.last_seq_number)
            sets.append(f"{k} = ?")
            args.append(_dumps(v) if k in EUICC_JSON else v)
        counted = {k: v for k, v in fields.items() if k in tallies.COLUMNS}
        if "profiles" in fields:  # the enabled profile and its SM-DP+ (the fleet overview counts them)
            for k, v in enabled_from_profiles(current.enabled_iccid, current.enabled_smdp, fields["profiles"]).items():
                sets.append(f"{k} = ?")
                args.append(v)
                if k in tallies.COLUMNS:
                    counted[k] = v
        if not sets:
            return 0
        n = yield Q(f"UPDATE euiccs SET {', '.join(sets)} WHERE eid = ?", (*args, current.eid))
        before = {
            "binding": current.binding,
            "sgp32_version": current.sgp32_version,
            "enabled_smdp": current.enabled_smdp,
        }
        yield from self._tally(tallies.changed(before, counted))
        return n

    def update_euicc(self, eid: str, fields: dict[str, Any]) -> Gen:
        r = yield Q("SELECT * FROM euiccs WHERE eid = ?" + self._lock(), (eid,), "one")
        if r is None:
            return False
        yield from self._update_euicc_fields(row_to_euicc(r), fields)
        return True

    # ------------------------------------------------------------------ operations
    def _insert_op(self, op: Operation) -> Gen:
        r = yield Q(
            "INSERT INTO operations (id, eid, kind, params, status, created_at, updated_at, not_before, expires_at,"
            " created_by, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                op.id,
                op.eid,
                op.kind.value,
                _dumps(op.params),
                op.status.value,
                op.created_at,
                op.updated_at,
                op.not_before,
                op.expires_at,
                op.created_by,
                op.batch_id,
            ),
            "one",
        )
        return replace(op, seq=int(r["seq"]))

    def add_operations(self, ops: list[Operation], who: str) -> Gen:
        out = []
        known: set[str] = set()
        for op in ops:
            if op.eid not in known:
                r = yield Q("SELECT eid FROM euiccs WHERE eid = ?", (op.eid,), "one")
                if r is None:
                    raise StoreError(f"eUICC {op.eid} is not registered")
                known.add(op.eid)
            saved = yield from self._insert_op(op)
            yield self._audit(
                at=op.created_at,
                who=who,
                action="create",
                outcome="queued",
                eid=op.eid,
                operation_id=op.id,
                detail={"kind": op.kind.value, "params": op.params, "batch_id": op.batch_id},
            )
            out.append(saved)
        return out

    def get_operation(self, op_id: str) -> Gen:
        r = yield Q("SELECT * FROM operations WHERE id = ?", (op_id,), "one")
        return None if r is None else row_to_op(r)

    def result_context(self, eid: str | None, eim_transaction_id: bytes | None) -> Gen:
        euicc = None
        if eid is not None:
            r = yield Q("SELECT * FROM euiccs WHERE eid = ?", (eid,), "one")
            if r is None:
                return ResultContext(eid_known=False)
            euicc = row_to_euicc(r)
        op = op_euicc = None
        if eim_transaction_id is not None:
            r = yield Q("SELECT * FROM operations WHERE eim_transaction_id = ?", (eim_transaction_id,), "one")
            op = None if r is None else row_to_op(r)
        if op is not None:
            if euicc is not None and euicc.eid == op.eid:
                op_euicc = euicc
            else:
                r = yield Q("SELECT * FROM euiccs WHERE eid = ?", (op.eid,), "one")
                op_euicc = None if r is None else row_to_euicc(r)
        return ResultContext(eid_known=True, euicc=euicc, operation=op, operation_euicc=op_euicc)

    def record_contacts(self, contacts: list[tuple[str, float]]) -> Gen:
        """``last_contact`` of many eUICCs in one statement (``executemany``); never moves a contact backwards."""
        n = yield Q(
            "UPDATE euiccs SET last_contact = ? WHERE eid = ? AND (last_contact IS NULL OR last_contact < ?)",
            [(at, eid, at) for eid, at in contacts],
            "many",
        )
        return n

    def record_contact(self, eid: str, at: float) -> Gen:
        """``last_contact`` of one eUICC (one statement); never moves a contact backwards."""
        n = yield Q(
            "UPDATE euiccs SET last_contact = ? WHERE eid = ? AND (last_contact IS NULL OR last_contact < ?)",
            (at, eid, at),
        )
        return n

    def find_by_column(self, column: str, value: bytes) -> Gen:
        r = yield Q(f"SELECT * FROM operations WHERE {column} = ?", (value,), "one")
        return None if r is None else row_to_op(r)

    def list_operations(
        self,
        eid: str | None,
        status: str | None,
        kind: str | None,
        batch_id: str | None,
        limit: int,
        after_seq: int | None,
        desc: bool = False,
    ) -> Gen:
        """In ``seq`` order, or newest first (``desc``: one eUICC's from the index (eid, seq), migration 0008)."""
        where, args = [], []
        for col, val in (("eid", eid), ("status", status), ("kind", kind), ("batch_id", batch_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if after_seq is not None:
            where.append("seq < ?" if desc else "seq > ?")
            args.append(after_seq)
        sql = "SELECT * FROM operations" + (" WHERE " + " AND ".join(where) if where else "")
        rows = yield Q(sql + (" ORDER BY seq DESC LIMIT ?" if desc else " ORDER BY seq LIMIT ?"), (*args, limit), "all")
        return [row_to_op(r) for r in rows]

    def link_smdp_transaction(self, op_id: str, transaction_id: bytes) -> Gen:
        other = yield Q("SELECT id FROM operations WHERE smdp_transaction_id = ?", (transaction_id,), "one")
        if other is not None:
            return other["id"] == op_id
        n = yield Q("UPDATE operations SET smdp_transaction_id = ? WHERE id = ?", (transaction_id, op_id))
        return n == 1

    def _close_op(self, op: Operation, status: OpStatus, now: float, who: str, error: str | None) -> Gen:
        n = yield Q(
            "UPDATE operations SET status = ?, updated_at = ?, error = COALESCE(?, error) WHERE id = ? AND status = ?",
            (status.value, now, error, op.id, op.status.value),
        )
        if n != 1:
            raise Retry
        yield self._audit(
            at=now,
            who=who,
            action=status.value,
            outcome=status.value,
            eid=op.eid,
            operation_id=op.id,
            detail={"error": error} if error else {},
        )
        return replace(op, status=status, updated_at=now, error=error or op.error)

    def poll_peek(self, eid: str) -> Gen:
        """A poll's first look, one statement without locks or writes: ``(eUICC or None, has an open operation)``.

        When the eUICC has no queued or in-progress operation and its binding does not change, the answer can only
        be "no package" (:func:`quiet_claim`), so the backends answer it from this read alone - a no-work poll then
        never enters a write transaction (SQLite: never waits behind the writer's COMMITs; PostgreSQL: one round
        trip instead of BEGIN, a locking SELECT, the queue head and COMMIT). The read sees what was committed when
        it ran, exactly what a claim run at that moment would have seen; anything else goes to :meth:`claim_next`,
        which decides under the write lock. It reads only the binding and the last contact (:class:`Seen`): the
        whole row, with its certificates and JSON columns, made a no-work poll ~8 % dearer."""
        r = yield Q(
            "SELECT e.binding, e.last_contact, EXISTS (SELECT 1 FROM operations o WHERE o.eid = e.eid"
            " AND o.status IN ('queued', 'in_progress')) AS has_open FROM euiccs e WHERE e.eid = ?",
            (eid,),
            "one",
        )
        if r is None:
            return None, False
        return Seen(r["binding"], r["last_contact"]), bool(r["has_open"])

    def claim_next(
        self,
        eid: str,
        now: float,
        build: Callable[[Euicc, Operation, int], Built],
        binding: str | None,
        defer_contact: bool = False,
    ) -> Gen:
        """``defer_contact``: the caller records ``last_contact`` itself later (batched); only a new or changed
        binding is written here."""
        row = yield Q("SELECT * FROM euiccs WHERE eid = ?" + self._lock(skip=True), (eid,), "one")
        if row is None:
            if self.pg:
                exists = yield Q("SELECT eid FROM euiccs WHERE eid = ?", (eid,), "one")
                if exists is not None:
                    return Claim(ClaimOutcome.BUSY)
            return Claim(ClaimOutcome.UNKNOWN_EID)
        euicc = row_to_euicc(row)
        if binding is not None and (
            binding != euicc.binding
            or (not defer_contact and (euicc.last_contact is None or now - euicc.last_contact >= CONTACT_GRANULARITY_S))
        ):
            # Written at most every CONTACT_GRANULARITY_S per eUICC: an idle poll is then a read-only transaction.
            yield Q("UPDATE euiccs SET last_contact = ?, binding = ? WHERE eid = ?", (now, binding, eid))
            yield from self._tally(tallies.changed({"binding": euicc.binding}, {"binding": binding}))
            euicc = replace(euicc, last_contact=now, binding=binding)
        # deferred and not written: the claim's eUICC keeps the stored last_contact (the caller compares)
        closed: list[Operation] = []
        while True:
            head = yield Q(QUEUE_HEAD_SQL, (eid, eid), "one")
            if head is None:
                return Claim(ClaimOutcome.NONE, euicc=euicc, closed=closed)
            op = row_to_op(head)
            if op.expires_at is not None and op.expires_at <= now:
                closed.append((yield from self._close_op(op, OpStatus.EXPIRED, now, "eim", None)))
                continue
            if op.status is OpStatus.IN_PROGRESS and (op.result or {}).get("hold"):
                # the eUICC refused a re-handed copy as a replay: its first result is still on its way
                return Claim(ClaimOutcome.NONE, euicc=euicc, closed=closed)
            retry = (op.result or {}).get("retry") if op.status is OpStatus.IN_PROGRESS else None
            if isinstance(retry, dict) and float(retry.get("at", 0)) > now:
                # the SM-DP+ could not be reached for this package: not again before then (eim.store.retries)
                return Claim(ClaimOutcome.NONE, euicc=euicc, closed=closed)
            if op.status is OpStatus.IN_PROGRESS and op.package is not None:
                n = yield Q(
                    "UPDATE operations SET attempts = attempts + 1, handed_out_at = ?, updated_at = ?"
                    " WHERE id = ? AND status = 'in_progress'",
                    (now, now, op.id),
                )
                if n != 1:
                    raise Retry
                op = replace(op, attempts=op.attempts + 1, handed_out_at=now, updated_at=now)
                yield self._audit(
                    at=now,
                    who="eim",
                    action="hand_out",
                    outcome="in_progress",
                    eid=eid,
                    operation_id=op.id,
                    detail={"attempt": op.attempts, "again": True, "binding": binding},
                )
                return Claim(ClaimOutcome.PACKAGE, op, euicc, rehanded=True, closed=closed)
            if op.status is OpStatus.IN_PROGRESS:  # in progress without a package: not ours to hand out
                return Claim(ClaimOutcome.NONE, euicc=euicc, closed=closed)
            if op.not_before is not None and op.not_before > now:
                return Claim(ClaimOutcome.NONE, euicc=euicc, closed=closed)
            try:
                built = build(euicc, op, euicc.counter_value + 1)
            except PackageBuildError as exc:
                closed.append((yield from self._close_op(op, OpStatus.FAILED, now, "eim", f"build: {exc}")))
                continue
            if built.counter_value is not None:
                if built.counter_value <= euicc.counter_value:
                    raise StoreError(
                        f"counter value {built.counter_value} is not above the last used {euicc.counter_value}"
                    )
                n = yield Q(
                    "UPDATE euiccs SET counter_value = ? WHERE eid = ? AND counter_value = ?",
                    (built.counter_value, eid, euicc.counter_value),
                )
                if n != 1:
                    raise Retry
                euicc = replace(euicc, counter_value=built.counter_value)
            n = yield Q(
                "UPDATE operations SET status = 'in_progress', package = ?, eim_transaction_id = ?,"
                " counter_value = ?, attempts = attempts + 1, handed_out_at = ?, updated_at = ?"
                " WHERE id = ? AND status = 'queued'",
                (built.package, built.eim_transaction_id, built.counter_value, now, now, op.id),
            )
            if n != 1:
                raise Retry
            op = replace(
                op,
                status=OpStatus.IN_PROGRESS,
                package=built.package,
                eim_transaction_id=built.eim_transaction_id,
                counter_value=built.counter_value,
                attempts=op.attempts + 1,
                handed_out_at=now,
                updated_at=now,
            )
            yield self._audit(
                at=now,
                who="eim",
                action="hand_out",
                outcome="in_progress",
                eid=eid,
                operation_id=op.id,
                detail={
                    "attempt": op.attempts,
                    "counter_value": built.counter_value,
                    "eim_transaction_id": built.eim_transaction_id.hex().upper(),
                    "binding": binding,
                },
            )
            return Claim(ClaimOutcome.PACKAGE, op, euicc, closed=closed)

    def record_result(self, u: ResultUpdate) -> Gen:
        er = yield Q("SELECT * FROM euiccs WHERE eid = ?" + self._lock(), (u.eid,), "one")
        if er is None:
            return None
        r = yield Q("SELECT * FROM operations WHERE id = ?", (u.operation_id,), "one")
        if r is None:
            return None
        op = row_to_op(r)
        if op.eid != u.eid:
            return None
        if u.eim_transaction_id is not None and op.eim_transaction_id != u.eim_transaction_id:
            return None
        # A genuine result is recorded while the operation is in progress, and also when it arrives after the
        # operation expired or was cancelled (the eUICC did execute it). Done/failed: a replay, nothing changes.
        late = op.status in (OpStatus.EXPIRED, OpStatus.CANCELLED) and op.package is not None
        if not (op.status is OpStatus.IN_PROGRESS or late):
            return None
        if u.status is OpStatus.IN_PROGRESS and op.status is not OpStatus.IN_PROGRESS:
            return None
        n = yield Q(
            "UPDATE operations SET status = ?, updated_at = ?, result = ?, result_code = ?, error = ?"
            " WHERE id = ? AND status = ?",
            (u.status.value, u.now, _dumps(u.result), u.result_code, u.error, op.id, op.status.value),
        )
        if n != 1:
            raise Retry
        if u.euicc_fields:
            yield from self._update_euicc_fields(row_to_euicc(er), u.euicc_fields)
        detail: dict[str, Any] = {"result_code": u.result_code} if u.result_code is not None else {}
        if u.error:
            detail["error"] = u.error
        if late:
            detail["after"] = op.status.value
        yield self._audit(
            at=u.now,
            who=u.who,
            action=u.action,
            outcome=u.status.value,
            eid=op.eid,
            operation_id=op.id,
            detail=detail,
        )
        return replace(op, status=u.status, updated_at=u.now, result=u.result, result_code=u.result_code, error=u.error)

    def cancel_operation(self, op_id: str, who: str, now: float) -> Gen:
        r = yield Q("SELECT eid FROM operations WHERE id = ?", (op_id,), "one")
        if r is None:
            return None
        yield Q("SELECT eid FROM euiccs WHERE eid = ?" + self._lock(), (r["eid"],), "one")
        r = yield Q("SELECT * FROM operations WHERE id = ?", (op_id,), "one")
        op = row_to_op(r)
        if op.status.final:
            return op
        return (yield from self._close_op(op, OpStatus.CANCELLED, now, who, None))

    def expire_operations(self, now: float) -> Gen:
        pick = (
            "SELECT id FROM operations WHERE status IN ('queued', 'in_progress') AND expires_at IS NOT NULL"
            " AND expires_at <= ?" + self._lock(skip=True)
        )
        rows = yield Q(
            f"UPDATE operations SET status = 'expired', updated_at = ? WHERE id IN ({pick}) RETURNING id, eid",
            (now, now),
            "all",
        )
        for r in rows:
            yield self._audit(
                at=now, who="eim", action="expired", outcome="expired", eid=r["eid"], operation_id=r["id"]
            )
        return len(rows)

    def count_operations_by_status(self) -> Gen:
        rows = yield Q("SELECT kind, status, COUNT(*) AS n FROM operations GROUP BY kind, status", (), "all")
        return {(r["kind"], r["status"]): int(r["n"]) for r in rows}

    def eids_with_queued_work(self, binding: str, now: float, limit: int, stale_before: float | None) -> Gen:
        """eUICCs reached over ``binding`` with a queued operation due, or (``stale_before``) a package handed
        out before that time and still without a result."""
        stale = " OR (o.status = 'in_progress' AND o.handed_out_at <= ?)" if stale_before is not None else ""
        args: tuple = (binding, now) + ((stale_before,) if stale_before is not None else ()) + (limit,)
        rows = yield Q(
            "SELECT DISTINCT o.eid FROM operations o JOIN euiccs e ON e.eid = o.eid"
            " WHERE e.binding = ? AND ((o.status = 'queued' AND (o.not_before IS NULL OR o.not_before <= ?))"
            + stale
            + ") ORDER BY o.eid LIMIT ?",
            args,
            "all",
        )
        return [r["eid"] for r in rows]

    # ------------------------------------------------------------------ batches
    def add_batch(self, batch: Batch, ops: list[Operation], who: str) -> Gen:
        yield Q(
            "INSERT INTO batches (id, created_at, created_by, kind, params) VALUES (?, ?, ?, ?, ?)",
            (batch.id, batch.created_at, batch.created_by, batch.kind.value, _dumps(batch.params)),
        )
        refused: dict[str, str] = {}
        for op in ops:
            if op.eid in refused:
                continue
            exists = yield Q("SELECT eid FROM euiccs WHERE eid = ?", (op.eid,), "one")
            if exists is None:
                refused[op.eid] = f"eUICC {op.eid} is not registered"
                continue
            yield from self._insert_op(op)
            yield self._audit(
                at=op.created_at,
                who=who,
                action="create",
                outcome="queued",
                eid=op.eid,
                operation_id=op.id,
                detail={"kind": op.kind.value, "batch_id": batch.id},
            )
        items = []
        for item in batch.items:
            op_id, error = item.operation_id, item.error
            if op_id is not None and item.eid in refused:
                op_id, error = None, refused[item.eid]
            yield Q(
                "INSERT INTO batch_items (batch_id, idx, eid, operation_id, error) VALUES (?, ?, ?, ?, ?)",
                (batch.id, item.index, item.eid, op_id, error),
            )
            items.append(BatchItem(item.index, item.eid, op_id, error))
        yield self._audit(
            at=batch.created_at,
            who=who,
            action="batch",
            outcome="created",
            detail={"batch_id": batch.id, "items": len(items)},
        )
        return replace(batch, items=items)

    def get_batch(self, batch_id: str) -> Gen:
        b = yield Q("SELECT * FROM batches WHERE id = ?", (batch_id,), "one")
        if b is None:
            return None
        rows = yield Q("SELECT * FROM batch_items WHERE batch_id = ? ORDER BY idx", (batch_id,), "all")
        return Batch(
            id=b["id"],
            created_at=b["created_at"],
            created_by=b["created_by"],
            kind=OpKind(b["kind"]),
            params=_loads(b["params"]) or {},
            items=[BatchItem(int(r["idx"]), r["eid"], r["operation_id"], r["error"]) for r in rows],
        )

    # ------------------------------------------------------------------ relay sessions
    def put_download_session(self, key: str, data: dict[str, Any], now: float) -> Gen:
        yield Q(
            "INSERT INTO download_sessions (key, data, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (key, _dumps(data), now),
        )

    def get_download_session(self, key: str) -> Gen:
        r = yield Q("SELECT data FROM download_sessions WHERE key = ?", (key,), "one")
        return None if r is None else _loads(r["data"])

    def delete_download_session(self, key: str) -> Gen:
        yield Q("DELETE FROM download_sessions WHERE key = ?", (key,))

    # ------------------------------------------------------------------ notification outbox
    def enqueue_notifications(self, items: list[NotificationToSend], now: float, who: str) -> Gen:
        """Queue notifications for their SM-DP+ (one transaction). The same bytes are queued once: a notification
        the IPA sends again while its row exists (pending or failed) returns that row, ``created`` False."""
        out: list[tuple[OutboundNotification, bool]] = []
        for n in items:
            digest = notification_digest(n.notification)
            r = yield Q(
                "INSERT INTO notification_outbox (digest, eid, operation_id, kind, seq_number, address, notification,"
                " status, created_at, updated_at, next_attempt_at, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (digest) DO NOTHING RETURNING *",
                (
                    digest,
                    n.eid,
                    n.operation_id,
                    n.kind,
                    n.seq_number,
                    n.address,
                    bytes(n.notification),
                    NotificationStatus.PENDING.value,
                    float(now),
                    float(now),
                    float(now),
                ),
                "one",
            )
            if r is None:
                r = yield Q("SELECT * FROM notification_outbox WHERE digest = ?", (digest,), "one")
                if r is None:  # delivered and deleted between the two statements: queue it again
                    raise Retry
                out.append((row_to_notification(r), False))
                continue
            row = row_to_notification(r)
            yield self._audit(
                at=now,
                who=who,
                action="notification",
                outcome="queued",
                eid=n.eid,
                operation_id=n.operation_id,
                detail={"notification_id": row.id, "kind": n.kind, "address": n.address, "seq_number": n.seq_number},
            )
            out.append((row, True))
        return out

    def claim_notifications(self, now: float, lease_s: float, owner: str, limit: int) -> Gen:
        """Lease up to ``limit`` due notifications to ``owner`` (one attempt each). On PostgreSQL rows another
        worker is claiming are skipped (``SKIP LOCKED``); a leased row is not due again before its lease ends."""
        due = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        # two statements: PostgreSQL may run an ``IN (SELECT .. LIMIT n FOR UPDATE SKIP LOCKED)`` subquery more
        # than once inside an UPDATE and so lease more than n rows
        picked = yield Q(
            f"SELECT id FROM notification_outbox WHERE {due} ORDER BY next_attempt_at, id LIMIT ?"
            + self._lock(skip=True),
            (float(now), float(now), limit),
            "all",
        )
        if not picked:
            return []
        ids = [int(r["id"]) for r in picked]
        rows = yield Q(
            "UPDATE notification_outbox SET lease_until = ?, leased_by = ?, attempts = attempts + 1, updated_at = ?"
            f" WHERE id IN ({', '.join('?' * len(ids))}) AND {due} RETURNING *",
            (float(now + lease_s), owner, float(now), *ids, float(now), float(now)),
            "all",
        )
        return sorted((row_to_notification(r) for r in rows), key=lambda n: (n.next_attempt_at, n.id))

    def notification_delivered(self, notification_id: int, now: float, owner: str) -> Gen:
        """The SM-DP+ accepted it: the row goes, the audit trail keeps the fact. ``False`` when it was gone."""
        r = yield Q("DELETE FROM notification_outbox WHERE id = ? RETURNING *", (notification_id,), "one")
        if r is None:
            return False
        n = row_to_notification(r)
        yield self._audit(
            at=now,
            who="eim",
            action="notification",
            outcome="delivered",
            eid=n.eid,
            operation_id=n.operation_id,
            detail={"notification_id": n.id, "address": n.address, "attempts": n.attempts, "worker": owner},
        )
        return True

    def notification_retry(
        self, notification_id: int, next_attempt_at: float, error: str, now: float, owner: str
    ) -> Gen:
        """A failed attempt that may succeed later: release the lease and set the next attempt time."""
        n = yield Q(
            "UPDATE notification_outbox SET next_attempt_at = ?, last_error = ?, lease_until = NULL, leased_by = NULL,"
            " updated_at = ? WHERE id = ? AND status = 'pending' AND leased_by = ?",
            (float(next_attempt_at), error, float(now), notification_id, owner),
        )
        return n == 1

    def notification_failed(self, notification_id: int, reason: str, now: float, owner: str) -> Gen:
        """A permanent refusal (or the attempts ran out): the row stays, status failed, with the reason."""
        r = yield Q(
            "UPDATE notification_outbox SET status = 'failed', last_error = ?, lease_until = NULL, leased_by = NULL,"
            " updated_at = ? WHERE id = ? AND status = 'pending' AND leased_by = ? RETURNING *",
            (reason, float(now), notification_id, owner),
            "one",
        )
        if r is None:
            return None
        n = row_to_notification(r)
        yield self._audit(
            at=now,
            who="eim",
            action="notification",
            outcome="failed",
            eid=n.eid,
            operation_id=n.operation_id,
            detail={
                "notification_id": n.id,
                "kind": n.kind,
                "address": n.address,
                "seq_number": n.seq_number,
                "attempts": n.attempts,
                "reason": reason,
            },
        )
        return n

    def release_notifications(self, owner: str, now: float) -> Gen:
        """Give back the leases of ``owner`` (a worker stopping): its notifications are due again at once."""
        n = yield Q(
            "UPDATE notification_outbox SET lease_until = NULL, leased_by = NULL, updated_at = ?"
            " WHERE leased_by = ? AND status = 'pending'",
            (float(now), owner),
        )
        return n

    def list_notifications(self, status: str | None, limit: int, after_id: int | None) -> Gen:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        sql = "SELECT * FROM notification_outbox" + (" WHERE " + " AND ".join(where) if where else "")
        rows = yield Q(sql + " ORDER BY id LIMIT ?", (*args, limit), "all")
        return [row_to_notification(r) for r in rows]

    def count_notifications_by_status(self) -> Gen:
        rows = yield Q("SELECT status, COUNT(*) AS n FROM notification_outbox GROUP BY status", (), "all")
        return {r["status"]: int(r["n"]) for r in rows}

    def pending_notifications_of(self, eid: str, limit: int) -> Gen:
        """Up to ``limit`` pending notifications of one eUICC (the outbox's per-EID cap counts them)."""
        rows = yield Q(
            "SELECT * FROM notification_outbox WHERE status = 'pending' AND eid = ? ORDER BY id LIMIT ?",
            (eid, int(limit)),
            "all",
        )
        return [row_to_notification(r) for r in rows]

    def next_notification_due(self) -> Gen:
        """When the earliest pending notification becomes due (its next attempt, or the end of its lease)."""
        r = yield Q(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt_at THEN lease_until"
            " ELSE next_attempt_at END) AS t FROM notification_outbox WHERE status = 'pending'",
            (),
            "one",
        )
        return None if r is None or r["t"] is None else float(r["t"])
