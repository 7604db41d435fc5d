"""Store variants for "what if" runs of the eIM benchmark (``bench.eim_server --store-variant``). They exist to
measure the proposed fixes for the misses found by the benchmarks, not to be used by the eIM itself.

* ``normal-sync``: the shipped SQLite store with ``PRAGMA synchronous = NORMAL`` (WAL): no fsync per commit.
  NOT a fix - a power cut may lose the last commits and with them a counter value (house rule 5) - only the
  measure of what the fsyncs cost.
* ``group-commit``: the shipped SQLite store, still ``synchronous = FULL``, but write transactions that arrive
  while the store thread is busy are run together in ONE database transaction, each in its own SAVEPOINT (so a
  Retry or a constraint error undoes only that one), with one COMMIT (one fsync) for the group; every caller gets
  its answer only after that COMMIT, so nothing is acknowledged before it is durable.
* ``contact-batch``: the shipped store, but a poll does not write ``last_contact``/``binding`` in its own
  transaction: contacts are batched in memory and written once a second (see :class:`ContactBatchMixin`).
* ``group-commit+contact-batch``: both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from eim.store.logic import Retry, StoreError
from eim.store.sqlite import MAX_RETRIES, SqliteStore


class NormalSyncSqliteStore(SqliteStore):
    def _connect(self) -> None:
        super()._connect()
        self._require().execute("PRAGMA synchronous = NORMAL")


class GroupCommitSqliteStore(SqliteStore):
    MAX_GROUP = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._running = False
        self.groups = 0
        self.grouped = 0

    async def _run(self, factory: Any, *, write: bool = True) -> Any:
        if not write:
            return await super()._run(factory, write=False)
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((factory, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.MAX_GROUP], self._pending[self.MAX_GROUP :]
                try:
                    results = await self._call(self._group, [f for f, _ in batch])
                except BaseException as exc:  # the COMMIT itself failed: nobody's change is durable
                    results = [exc] * len(batch)
                self.groups += 1
                self.grouped += len(batch)
                for (_f, fut), r in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(r, BaseException):
                        fut.set_exception(r)
                    else:
                        fut.set_result(r)
        finally:
            self._running = False

    def _group(self, factories: list[Any]) -> list[Any]:
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        out: list[Any] = []
        try:
            for factory in factories:
                out.append(self._one(conn, factory))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out

    def _one(self, conn: sqlite3.Connection, factory: Any) -> Any:
        for _attempt in range(MAX_RETRIES):
            gen = factory()
            conn.execute("SAVEPOINT one")
            try:
                q = next(gen)
                while True:
                    q = gen.send(self._execute(conn, q))
            except StopIteration as stop:
                conn.execute("RELEASE one")
                return stop.value
            except Retry:
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                continue
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                return StoreError(f"store constraint: {exc}")
            except Exception as exc:
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                return exc
        return StoreError("transaction kept losing races; giving up")


class ContactBatchMixin:
    """``claim_next`` without the per-poll ``UPDATE euiccs SET last_contact, binding``: contacts are kept in memory
    and written once a second in one transaction (``executemany``). A no-work poll becomes a transaction that
    writes nothing (no WAL frame, no fsync, no dirty page in a large registry)."""

    FLUSH_S = 1.0

    async def open(self) -> None:
        await super().open()  # type: ignore[misc]
        self._contacts: dict[str, tuple[float, str]] = {}
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        self._flusher.cancel()
        await self._flush()
        await super().close()  # type: ignore[misc]

    async def claim_next(self, eid: str, now: float, build: Any, *, binding: str | None = None) -> Any:
        if binding is not None:
            self._contacts[eid] = (now, binding)
        return await super().claim_next(eid, now, build, binding=None)  # type: ignore[misc]

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        if not self._contacts:
            return
        rows, self._contacts = self._contacts, {}
        args = [(at, binding, eid) for eid, (at, binding) in rows.items()]

        def write() -> None:
            conn = self._require()  # type: ignore[attr-defined]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE euiccs SET last_contact = ?, binding = ? WHERE eid = ?", args)
            conn.execute("COMMIT")

        await self._call(write)  # type: ignore[attr-defined]


class ContactBatchSqliteStore(ContactBatchMixin, SqliteStore):
    pass


class GroupCommitContactBatchSqliteStore(ContactBatchMixin, GroupCommitSqliteStore):
    pass


VARIANTS = {
    "normal-sync": NormalSyncSqliteStore,
    "group-commit": GroupCommitSqliteStore,
    "contact-batch": ContactBatchSqliteStore,
    "group-commit+contact-batch": GroupCommitContactBatchSqliteStore,
}


def open_variant(url: str, variant: str) -> Any:
    if not url.startswith("sqlite:///"):
        raise SystemExit("store variants exist for SQLite only")
    return VARIANTS[variant](url[len("sqlite:///") :])
