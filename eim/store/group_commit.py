"""Group commit of the SQLite store (:mod:`eim.store.sqlite`).

Write transactions that queue up while the store thread is busy run together in ONE database transaction and share
one ``COMMIT`` - one fsync with ``synchronous = FULL``. A group first runs as a whole inside one savepoint, its
writes without savepoints of their own; when one of them fails (a :class:`Retry`, a constraint error, its own
exception), that pass is rolled back to its savepoint (the write lock is kept) and the group runs again with each
write inside its own ``SAVEPOINT``, so the failure rolls back that one only (a savepoint per write costs two
statements, four per PSMO round trip, and writes almost never fail). In the first pass the audit rows of all the
group's writes are written together just before the COMMIT, by multi-row ``INSERT``s (two statements fewer per PSMO
round trip). No caller gets its answer before that COMMIT has returned, so nothing is acknowledged (no counter value
handed out, no result acknowledged) before it is durable; if the COMMIT fails, every caller of the group gets the
error. Reads run on the read connection beside the groups (without one, alone between groups).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from eim import failpoints
from eim.store.base import Factory
from eim.store.logic import AUDIT_COLUMNS, AUDIT_INSERT, Q, Retry, StoreError

MAX_RETRIES = 20  # a write that keeps losing races (second pass) gives up after this many runs


class GroupCommit:
    """The group-commit half of :class:`eim.store.sqlite.SqliteStore`, which provides the connection
    (``_require``) and runs one statement (``_execute``)."""

    optimistic_groups: bool
    regrouped: int

    def _require(self) -> sqlite3.Connection:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _execute(self, conn: sqlite3.Connection, q: Q) -> Any:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _group(self, factories: list[Factory]) -> list[Any]:
        """Run write transactions in one ``BEGIN IMMEDIATE`` ... ``COMMIT``: first all together; if one of them
        fails, rolled back and run again, each in a savepoint.

        Returns one entry per factory: its result, or the exception it ended with (raised to its caller only).
        Raises when the group as a whole failed (then nothing of it is durable)."""
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = self._first_pass(conn, factories) if self.optimistic_groups else None
            if out is None:
                out = [self._savepoint(conn, factory) for factory in factories]
        except BaseException:
            _rollback(conn)
            raise
        self._commit(conn)
        return out

    def _first_pass(self, conn: sqlite3.Connection, factories: list[Factory]) -> list[Any] | None:
        """All the writes of a group inside one savepoint, their audit rows written at the end. ``None`` when one of
        them failed (a lost race, a constraint, its own error): then nothing of the pass stays, and the write lock
        is kept for the second pass (another process on the file could take it in between and hold it past
        ``busy_timeout``)."""
        conn.execute("SAVEPOINT first_pass")
        try:
            audits: list[tuple[Any, ...]] = []
            out = [self._plain(conn, factory, audits) for factory in factories]
            _insert_audits(conn, audits)
            conn.execute("RELEASE first_pass")
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO first_pass")
                conn.execute("RELEASE first_pass")
            else:  # SQLite ended the transaction itself (an I/O error): the second pass needs a new one
                conn.execute("BEGIN IMMEDIATE")
            self.regrouped += 1
            return None
        return out

    @staticmethod
    def _commit(conn: sqlite3.Connection) -> None:
        """COMMIT the open group; if it fails, roll back and raise (then nothing of the group is durable)."""
        try:
            if failpoints.fails("sqlite_commit"):  # tests: a COMMIT that fails (disk full, I/O error)
                raise sqlite3.OperationalError("failpoint sqlite_commit: COMMIT failed")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _plain(self, conn: sqlite3.Connection, factory: Factory, audits: list[tuple[Any, ...]] | None) -> Any:
        """One write transaction, its statements run in turn; its exception (if any) is the caller's. In a first
        pass (no savepoint of its own; any exception ends the whole pass) its audit rows go to ``audits`` (written
        for the whole group before its COMMIT, :func:`_insert_audits`); with ``audits`` None they run as they come:
        nothing in a write transaction reads the audit rows it has just written. The event fan-out
        (:meth:`eim.store.events.EventLogic.fan_out`) reads audit rows in a write transaction; in a first pass it
        does not see the rows of the writes before it in the same group, which get higher ids than its cursor
        (AUTOINCREMENT) and are picked up by its next run, none lost or repeated."""
        gen = factory()
        try:
            q = next(gen)
            while True:
                if audits is not None and q.sql is AUDIT_INSERT:
                    audits.append(q.args)  # type: ignore[arg-type]
                    q = gen.send(1)
                else:
                    q = gen.send(self._execute(conn, q))
        except StopIteration as stop:
            return stop.value

    def _savepoint(self, conn: sqlite3.Connection, factory: Factory) -> Any:
        for _attempt in range(MAX_RETRIES):
            conn.execute("SAVEPOINT one")
            try:
                value = self._plain(conn, factory, None)
                conn.execute("RELEASE one")
            except Retry:
                self._undo(conn)
                continue
            except sqlite3.IntegrityError as exc:
                self._undo(conn)
                return StoreError(f"store constraint: {exc}")
            except sqlite3.Error as exc:
                # an I/O or locking error may have ended the whole transaction: the group fails as a whole
                if not conn.in_transaction:
                    raise StoreError(f"store transaction aborted: {exc}") from exc
                self._undo(conn)
                return exc
            except Exception as exc:
                self._undo(conn)
                return exc
            return value
        return StoreError("transaction kept losing races; giving up")

    @staticmethod
    def _undo(conn: sqlite3.Connection) -> None:
        """Roll back to the current savepoint only (the rest of the group stays)."""
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")


# Rows per multi-row audit INSERT: powers of two, so that the statements stay few (9 texts in the connection's
# statement cache, each statement prepared once) and a group's rows take at most one statement per size
AUDIT_ROWS_PER_INSERT = 256
_AUDIT_INSERTS: dict[int, str] = {}


def _insert_audits(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """A group's audit rows, in their order, by multi-row ``INSERT``s of 256, 128, ... 1 rows (60 rows: 32 + 16 + 8
    + 4, four statements instead of sixty; each ``execute`` releases and takes back the GIL, and the event loop
    holds it much of the time). Never more parameters per statement than this SQLite allows."""
    most = min(AUDIT_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 7)
    i, n = 0, len(rows)
    while i < n:
        size = 1 << min(n - i, most).bit_length() - 1  # the largest power of two that fits
        chunk = rows[i : i + size]
        sql = _AUDIT_INSERTS.get(size)
        if sql is None:
            sql = _AUDIT_INSERTS[size] = f"INSERT INTO audit {AUDIT_COLUMNS} VALUES " + ", ".join(
                ["(?, ?, ?, ?, ?, ?, ?)"] * size
            )
        conn.execute(sql, [v for row in chunk for v in row])
        i += size


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not ended it already (its own error is not the one to raise)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
