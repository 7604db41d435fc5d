"""eIM test fixtures: a store on each backend (SQLite file, fresh PostgreSQL database per test)."""

from __future__ import annotations

import uuid

import pytest

from eim.store import open_store


async def fresh_pg_database(dsn: str) -> str:
    """Create an empty database on the session's PostgreSQL cluster and return its DSN."""
    import asyncpg

    name = "eim_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A store URL for each backend. The PostgreSQL one is a brand-new database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/eim.db"
    pg = request.getfixturevalue("postgres")
    import asyncio

    return asyncio.run(fresh_pg_database(pg.dsn))


@pytest.fixture
async def store(store_url):
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
