"""SQLite backend: one connection on one dedicated thread, WAL journal, ``BEGIN IMMEDIATE`` for writes.

The event loop never blocks on the database: each transaction (a whole :mod:`eim.store.logic` generator) runs on
the store's own thread and the caller awaits its future. One writer at a time, which is what makes the claim
and the counter allocation atomic on SQLite (several processes on one file are serialised by SQLite's lock).

Group commit (:mod:`eim.store.group_commit`): write transactions that queue up while the store thread is busy run
together in ONE database transaction and share one ``COMMIT`` - one fsync with ``synchronous = FULL``; no caller
gets its answer before that COMMIT has returned.

Batched contacts: a poll does not write ``last_contact`` in its own transaction (a new or changed binding still
is). Contacts are kept in memory and written once a second with one ``executemany``, so a poll that finds no work
writes nothing; reads through this store object see the pending values. A crash loses at most the last second
of ``last_contact`` values (informational only: nothing the eIM decides depends on them).

Reads on their own connection (``read_connection``, default on for a database file): reads run on a second
connection on a second thread, so they never queue behind the writer's transactions, COMMITs (fsync) and
checkpoints - in WAL mode a reader sees the last committed state and is not blocked by the writer. Reads that
queue up while the read thread is busy run together in one read transaction (one hop to the thread for all of
them, like the writer's group commit: a hop per read costs more CPU than the read itself). A poll first
looks there (:meth:`eim.store.logic.Logic.poll_peek`): with no open operation and no binding to change it is
answered from that read and never enters a write transaction; with 1,000,000 registered eUICCs the once-a-second
``last_contact`` batch dirties thousands of pages and held every poll behind it for 50-250 ms. A poll of an eUICC
whose last claim handed out a package (working through its queue) skips that look and goes straight to the claim,
which reads everything again under the write lock: the look would only have said "there is work" (a hint kept in
memory for at most ``WORKING_HINTS`` eUICCs; a wrong hint costs one claim transaction that finds nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from eim.model import Euicc, Operation
from eim.store.base import Factory, SqlStore, migrations, split_statements
from eim.store.group_commit import GroupCommit
from eim.store.logic import (
    CONTACT_GRANULARITY_S,
    Built,
    Claim,
    ClaimOutcome,
    Q,
    StoreError,
    quiet_claim,
)
from eim.store.store_thread import StoreThread
from rsp.files import private_file

log = logging.getLogger("eim.store")

MAX_GROUP = 256  # write transactions sharing one COMMIT at most
CONTACT_FLUSH_S = 1.0  # pending last_contact values are written this often
WORKING_HINTS = 10_000  # eUICCs remembered as "last claim handed out a package" (the poll skips its first look)


class SqliteStore(GroupCommit, SqlStore):
    dialect = "sqlite"

    def __init__(self, path: str = ":memory:", *, busy_timeout_ms: int = 10000, read_connection: bool = True) -> None:
        super().__init__()
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.read_connection = read_connection and path != ":memory:"  # a second :memory: would be another db
        self._conn: sqlite3.Connection | None = None
        self._pool: StoreThread | None = None  # the write connection's thread
        self._rconn: sqlite3.Connection | None = None  # the read connection, used on its own thread
        self._rpool: StoreThread | None = None
        self._rpending: list[tuple[Factory, asyncio.Future[Any]]] = []
        self._rdrainer: asyncio.Task[None] | None = None
        self._pending: list[tuple[Factory, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._contacts: dict[str, float] = {}  # eid -> last_contact not yet written
        self._flushing: dict[str, float] = {}  # being written right now
        self._flusher: asyncio.Task[None] | None = None
        # eUICCs whose last claim handed out a package: their next poll goes straight to the claim transaction
        # (a hint for where to look first, never an answer: the claim reads everything again under the write lock)
        self._working: dict[str, None] = {}
        self.working_hints = WORKING_HINTS  # 0: every poll looks first (tests hold the hint to that path)
        # column names of each single-row query's result, by its SQL (the schema only changes in _migrate, which
        # empties this)
        self._columns: dict[str, list[str]] = {}
        self.groups = 0  # COMMITs of grouped write transactions (for benchmarks and tests)
        self.grouped = 0  # write transactions committed in those groups
        # a group first runs as one pass without a savepoint per write (two statements fewer per write); only when
        # one of its writes fails is it rolled back and run again with a savepoint per write (False: always that)
        self.optimistic_groups = True
        self.regrouped = 0  # groups run again with savepoints

    # ------------------------------------------------------------------ thread side
    def _connect(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            # 0600 in a 0700 directory, whatever the umask: the store holds activation codes and operation
            # parameters. SQLite gives the -wal and -shm files the mode of the database file.
            if private_file(self.path):
                log.warning("store file was readable by other users: made it 0600", extra={"path": self.path})
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # A group's first pass runs in one SAVEPOINT, and the second pass (after a failure) each write in its own;
        # a savepoint keeps the original of every page it changes in a sub-journal. With the default temp_store
        # that journal spills to a deleted file in /var/tmp (62 % of the store thread's pwrite calls in a PSMO run,
        # when every write had its own savepoint). It only serves ROLLBACK TO within the open transaction;
        # durability is the WAL's, which this does not touch.
        conn.execute("PRAGMA temp_store = MEMORY")
        # 32 MiB of page cache (default 2 MiB): this connection's own commits keep its cache valid, and with
        # the default the queue's operations, their indexes and the audit pages did not fit: 30 pread calls per
        # PSMO round trip instead of 7. The read connection keeps the default: WAL readers drop their cache
        # whenever another connection has committed, so a larger one buys nothing. (Both measured in
        # docs/performance.md, "the SQLite store's system calls".)
        conn.execute("PRAGMA cache_size = -32768")
        self._conn = conn

    def _connect_reader(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")
        self._rconn = conn

    def _migrate(self) -> int:
        conn = self._require()
        self._columns.clear()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                sql = sql.replace("{BYTES}", "BLOB").replace("{AUTO_ID}", "INTEGER PRIMARY KEY AUTOINCREMENT")
                sql = sql.replace("{LABEL_PAIRS}", "json_each(e.labels) AS j")
                for stmt in split_statements(sql):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                log.info("store migrated", extra={"version": version, "migration": name})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return max(r[0] for r in conn.execute("SELECT version FROM schema_version"))

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is not open")
        return self._conn

    def _execute(self, conn: sqlite3.Connection, q: Q) -> Any:
        if q.mode == "many":
            return conn.executemany(q.sql, q.args).rowcount
        cur = conn.execute(q.sql, q.args)
        # Rows come as plain tuples and are zipped with the column names: dict(sqlite3.Row) looked every name up
        # by a scan of the columns, 5.7 % of the eIM's instructions in a PSMO run (docs/performance.md 1c).
        if q.mode == "one":
            r = cur.fetchone()
            cur.fetchall()
            if r is None:
                return None
            names = self._columns.get(q.sql)
            if names is None or len(names) != len(r):
                names = self._columns[q.sql] = _names(cur.description)
            return dict(zip(names, r, strict=True))
        if q.mode == "all":
            rows = cur.fetchall()
            if not rows:
                return []
            names = _names(cur.description)
            return [dict(zip(names, r, strict=True)) for r in rows]
        return cur.rowcount

    def _read_group(self, factories: list[Factory]) -> list[Any]:
        """Reads on the read connection (else on the one connection, between write groups), in one read
        transaction (one snapshot of what was committed); one entry per factory: its result or the exception it
        ended with."""
        conn = self._rconn or self._conn
        if conn is None:
            raise StoreError("the SQLite store is not open")
        out: list[Any] = []
        conn.execute("BEGIN")
        try:
            for factory in factories:
                try:
                    gen = factory()
                    q = next(gen)
                    while True:
                        if q.mode not in ("one", "all"):
                            raise StoreError("a read may not change anything")
                        q = gen.send(self._execute(conn, q))
                except StopIteration as stop:
                    out.append(stop.value)
                except Exception as exc:
                    out.append(exc)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")
        return out

    # ------------------------------------------------------------------ async side
    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            raise StoreError("the SQLite store is not open")
        return await self._pool.call(fn, *args)

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = StoreThread("eim-sqlite")
        await self._call(self._connect)
        await self._call(self._migrate)
        if self.read_connection:  # after the migrations: WAL is set and the schema is there
            self._rpool = StoreThread("eim-sqlite-read")
            await self._rpool.call(self._connect_reader)

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_contacts()
        await self.stop_poll_tally()
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        while self._rdrainer is not None and not self._rdrainer.done():
            await asyncio.shield(self._rdrainer)
        if self._rpool is not None:
            if self._rconn is not None:
                await self._rpool.call(self._rconn.close)
                self._rconn = None
            self._rpool.shutdown(wait=True)
            self._rpool = None
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)
        self._pool = None

    async def schema_version(self) -> int:
        return await self._run(_schema_version, write=False)

    async def _run(self, factory: Factory, *, write: bool = True) -> Any:
        if not write:
            if self._pool is None:
                raise StoreError("the SQLite store is not open")
            loop = asyncio.get_running_loop()
            rfut: asyncio.Future[Any] = loop.create_future()
            self._rpending.append((factory, rfut))
            if self._rdrainer is None or self._rdrainer.done():
                self._rdrainer = loop.create_task(self._read_drain(), name="eim-sqlite-reads")
            return await rfut
        if self._pool is None:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((factory, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="eim-sqlite-group-commit")
        return await fut

    async def _drain(self) -> None:
        """Hand the queued write transactions to the store thread in groups until none is left."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                results = await self._call(self._group, [f for f, _ in batch])
            except asyncio.CancelledError:  # the loop is going away: the group may or may not commit
                for _f, fut in batch + self._pending:
                    if not fut.done():
                        fut.set_exception(StoreError("store commit interrupted (its outcome is unknown)"))
                self._pending = []
                raise
            except Exception as exc:  # the group (or its COMMIT) failed: nothing of it is durable
                err = exc if isinstance(exc, StoreError) else StoreError(f"store commit failed: {exc}")
                for _f, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.groups += 1
            self.grouped += len(batch)
            for (_f, fut), r in zip(batch, results, strict=True):
                if fut.done():  # the caller went away; its change is committed all the same
                    continue
                if isinstance(r, BaseException):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)

    async def _read_drain(self) -> None:
        """Hand the queued reads to the read thread (else the store thread) in groups until none is left."""
        while self._rpending:
            batch, self._rpending = self._rpending[:MAX_GROUP], self._rpending[MAX_GROUP:]
            try:
                pool = self._rpool or self._pool
                if pool is None:
                    raise StoreError("the SQLite store is not open")
                results = await pool.call(self._read_group, [f for f, _ in batch])
            except asyncio.CancelledError:
                for _f, fut in batch + self._rpending:
                    if not fut.done():
                        fut.set_exception(StoreError("store read interrupted"))
                self._rpending = []
                raise
            except Exception as exc:
                err = exc if isinstance(exc, StoreError) else StoreError(f"store read failed: {exc}")
                for _f, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_f, fut), r in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(r, BaseException):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)

    # ------------------------------------------------------------------ batched contacts
    async def claim_next(
        self, eid: str, now: float, build: Callable[[Euicc, Operation, int], Built], *, binding: str | None = None
    ) -> Claim:
        claim = None
        if eid not in self._working:  # the last claim found nothing: look on the read connection first
            claim = quiet_claim(await self._run(lambda: self.logic.poll_peek(eid), write=False), binding)
        if claim is None:  # work to hand out, or a binding to write: under the write lock
            claim = await self._run(lambda: self.logic.claim_next(eid, now, build, binding, defer_contact=True))
        if claim.outcome is ClaimOutcome.PACKAGE and self.working_hints > 0:
            if eid not in self._working and len(self._working) >= self.working_hints:
                del self._working[next(iter(self._working))]  # the oldest hint goes
            self._working[eid] = None
        else:
            self._working.pop(eid, None)
        e = claim.contact()
        if binding is not None and e is not None:
            self.count_poll(now)
            # the same granularity as when written in the claim (CONTACT_GRANULARITY_S): the values seen are too
            known = max(
                e.last_contact if e.last_contact is not None else float("-inf"),
                self._contacts.get(eid, float("-inf")),
                self._flushing.get(eid, float("-inf")),
            )
            if now - known < CONTACT_GRANULARITY_S:
                return claim
            self._contacts[eid] = now
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="eim-sqlite-contacts")
        return claim

    async def _flush_loop(self) -> None:
        while self._contacts:
            await asyncio.sleep(CONTACT_FLUSH_S)
            await self.flush_contacts()

    async def flush_contacts(self) -> None:
        """Write the pending ``last_contact`` values now (one transaction, one statement)."""
        if not self._contacts or self._pool is None:
            return
        rows, self._contacts = self._contacts, {}
        self._flushing = rows
        try:
            if sqlite3.sqlite_version_info >= (3, 33):  # UPDATE ... FROM
                await self._run(lambda: _record_contacts_json(sorted(rows.items())))
            else:
                await self._run(lambda: self.logic.record_contacts(sorted(rows.items())))
        except StoreError as exc:
            log.warning("last_contact batch not written", extra={"count": len(rows), "error": str(exc)})
            for eid, at in rows.items():  # kept for the next attempt
                if at > self._contacts.get(eid, float("-inf")):
                    self._contacts[eid] = at
        finally:
            self._flushing = {}

    def _with_contact(self, e: Euicc | None) -> Euicc | None:
        if e is None:
            return None
        pending = max(self._contacts.get(e.eid, float("-inf")), self._flushing.get(e.eid, float("-inf")))
        if e.last_contact is None or pending > e.last_contact:
            return replace(e, last_contact=pending) if pending != float("-inf") else e
        return e

    async def get_euicc(self, eid: str) -> Euicc | None:
        return self._with_contact(await super().get_euicc(eid))

    async def list_euiccs(self, *, limit: int = 100, after: str | None = None) -> list[Euicc]:
        out = await super().list_euiccs(limit=limit, after=after)
        if not (self._contacts or self._flushing):
            return out
        return [e for e in (self._with_contact(e) for e in out) if e is not None]


def _names(description: tuple[tuple[Any, ...], ...]) -> list[str]:
    """The column names of a result (``cursor.description``)."""
    return [d[0] for d in description]


def _record_contacts_json(contacts: list[tuple[str, float]]):
    """:meth:`eim.store.logic.Logic.record_contacts` as ONE statement over a JSON array: the whole batch runs in one
    ``sqlite3_step`` without the GIL. ``executemany`` takes and drops the GIL around every row, and with thousands of
    rows a second (a large active fleet) those hand-offs slowed the event loop's polls while the batch ran."""
    n = yield Q(
        "UPDATE euiccs SET last_contact = json_extract(c.value, '$[1]') FROM json_each(?) AS c"
        " WHERE euiccs.eid = json_extract(c.value, '$[0]')"
        " AND (euiccs.last_contact IS NULL OR euiccs.last_contact < json_extract(c.value, '$[1]'))",
        (json.dumps(contacts),),
    )
    return n


def _schema_version():
    r = yield Q("SELECT MAX(version) AS v FROM schema_version", (), "one")
    return int(r["v"] or 0)
