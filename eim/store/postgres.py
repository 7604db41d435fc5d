"""PostgreSQL backend (asyncpg pool) for several eIM workers on one database.

Runs the same :mod:`eim.store.logic` generators as SQLite, with ``?`` placeholders rewritten to ``$n`` and row
locks switched on (``FOR UPDATE`` / ``FOR UPDATE SKIP LOCKED``). Migrations take a transaction-scoped advisory
lock so workers starting together apply each migration once.

A poll with nothing to hand out costs one round trip: :meth:`eim.store.logic.Logic.poll_peek` in autocommit (no
BEGIN/COMMIT, no row lock), plus, at most every ``CONTACT_GRANULARITY_S`` per eUICC, one autocommit UPDATE of
``last_contact``. Only a poll that finds an open operation (or a new binding) runs the locking claim transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from eim.model import Euicc, Operation
from eim.store.base import Factory, SqlStore, migrations, split_statements
from eim.store.logic import CONTACT_GRANULARITY_S, Built, Claim, Gen, Q, Retry, Seen, StoreError, quiet_claim

log = logging.getLogger("eim.store")

MAX_RETRIES = 20
MIGRATION_LOCK = 0x65494D  # "eIM"
_PLACEHOLDER = re.compile(r"\?")


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release, without asyncpg's default reset query (``SELECT pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL``): one more round trip and four statements for PostgreSQL after every store call,
    ~14 % of a worker's CPU on no-work polls. This store leaves no session state behind (no SET, LISTEN, cursor or
    session advisory lock; migrations take a transaction-scoped lock); an open transaction is still rolled back
    by the pool before this is called."""


def to_dollar(sql: str) -> str:
    n = 0

    def sub(_m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return _PLACEHOLDER.sub(sub, sql)


class PostgresStore(SqlStore):
    dialect = "postgresql"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        super().__init__()
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        self._sql_cache: dict[str, str] = {}

    async def open(self) -> None:
        if self._pool is not None:
            return
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size, reset=_keep_session
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        await self._migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self.stop_poll_tally()
            await self._pool.close()
            self._pool = None

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_version")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                sql = sql.replace("{BYTES}", "BYTEA").replace("{AUTO_ID}", "BIGSERIAL PRIMARY KEY")
                sql = sql.replace("{LABEL_PAIRS}", "jsonb_each_text(e.labels::jsonb) AS j")
                for stmt in split_statements(sql):
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    time.time(),
                )
                log.info("store migrated", extra={"version": version, "migration": name})

    async def schema_version(self) -> int:
        def gen():
            r = yield Q("SELECT MAX(version) AS v FROM schema_version", (), "one")
            return int(r["v"] or 0)

        return await self._run(gen, write=False)

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = to_dollar(sql)
        return out

    async def _execute(self, conn: Any, q: Q) -> Any:
        sql = self._sql(q.sql)
        if q.mode == "one":
            r = await conn.fetchrow(sql, *q.args)
            return None if r is None else dict(r)
        if q.mode == "all":
            return [dict(r) for r in await conn.fetch(sql, *q.args)]
        if q.mode == "many":
            await conn.executemany(sql, q.args)
            return len(q.args)
        status = await conn.execute(sql, *q.args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def _run(self, factory: Factory, *, write: bool = True) -> Any:
        import asyncpg

        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        if not write:
            return await self._read(factory)
        for _attempt in range(MAX_RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction(readonly=not write):
                    gen = factory()
                    try:
                        q = next(gen)
                        while True:
                            q = gen.send(await self._execute(conn, q))
                    except StopIteration as stop:
                        result = stop.value
                return result
            except Retry:
                continue
            except (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError):
                continue
            except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
                raise StoreError(f"store constraint: {exc}") from exc
            except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError) as exc:
                raise StoreError(f"PostgreSQL connection failed: {exc}") from exc
        raise StoreError("transaction kept losing races; giving up")

    async def claim_next(
        self, eid: str, now: float, build: Callable[[Euicc, Operation, int], Built], *, binding: str | None = None
    ) -> Claim:
        claim = await self._read(lambda: self._quiet_poll(eid, now, binding), autocommit_writes=True)
        if claim is None:  # work to hand out, or a binding to write: the locking claim transaction
            claim = await super().claim_next(eid, now, build, binding=binding)
        if binding is not None and claim.contact() is not None:
            self.count_poll(now)
        return claim

    def _quiet_poll(self, eid: str, now: float, binding: str | None) -> Gen:
        """A poll's look and, at most every ``CONTACT_GRANULARITY_S``, its ``last_contact``: one statement each, on
        one connection, without a transaction (the UPDATE's row lock lasts only that statement). ``None`` when the
        poll needs the claim transaction."""
        claim = quiet_claim((yield from self.logic.poll_peek(eid)), binding)
        e = None if claim is None else claim.seen
        if (
            claim is not None
            and e is not None
            and binding is not None
            and (e.last_contact is None or now - e.last_contact >= CONTACT_GRANULARITY_S)
        ):
            yield from self.logic.record_contact(eid, now)
            claim = replace(claim, seen=Seen(e.binding, now))
        return claim

    async def _read(self, factory: Factory, *, autocommit_writes: bool = False) -> Any:
        """A read without ``BEGIN``/``COMMIT``: each statement runs on its own (autocommit). Under READ COMMITTED,
        the isolation the transactions of this store use, every statement of a transaction takes its own snapshot
        anyway, so a read sees exactly what it would inside one - for two round trips less. Reads must not write:
        a statement that is not a query is refused (as the read-only transaction did), unless
        ``autocommit_writes``: then each statement commits on its own (for statements complete in themselves)."""
        import asyncpg

        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        try:
            async with self._pool.acquire() as conn:
                gen = factory()
                try:
                    q = next(gen)
                    while True:
                        if q.mode not in ("one", "all") and not autocommit_writes:
                            raise StoreError("a read may not change anything")
                        q = gen.send(await self._execute(conn, q))
                except StopIteration as stop:
                    return stop.value
        except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL connection failed: {exc}") from exc
