"""Store variants for "what if" runs of the eIM benchmark (``bench.eim_server --store-variant``). They exist to
measure the proposed fixes for the misses found by the benchmarks, not to be used by the eIM itself.

* ``normal-sync``: the shipped SQLite store with ``PRAGMA synchronous = NORMAL`` (WAL): no fsync per commit.
  NOT a fix - a power cut may lose the last commits and with them a counter value (house rule 5) - only the
  measure of what the fsyncs cost.
* ``group-commit``: the shipped SQLite store, still ``synchronous = FULL``, but write transactions that arrive
  while the store thread is busy are run together in ONE database transaction, each in its own SAVEPOINT (so a
  Retry or a constraint error undoes only that one), with one COMMIT (one fsync) for the group; every caller gets
  its answer only after that COMMIT, so nothing is acknowledged before it is durable.
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


VARIANTS = {"normal-sync": NormalSyncSqliteStore, "group-commit": GroupCommitSqliteStore}


def open_variant(url: str, variant: str) -> Any:
    if not url.startswith("sqlite:///"):
        raise SystemExit("store variants exist for SQLite only")
    return VARIANTS[variant](url[len("sqlite:///") :])
