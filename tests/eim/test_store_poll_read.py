"""A poll with nothing to hand out is answered from a read (``Logic.poll_peek``), without the write lock: on SQLite
it is not held behind another writer, on PostgreSQL it takes no row lock. A poll that finds work still claims it
under the lock, and what a poll records (binding, last_contact) is unchanged."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from eim.model import Euicc, Operation
from eim.store import Built, ClaimOutcome, open_store
from eim.store.sqlite import SqliteStore
from tests.eim.helpers import plain_euicc, queued_psmo

EID = "89049032123451234512345678901237"
UNKNOWN = "89049032123451234512345678909999"


def euicc(eid: str = EID) -> Euicc:
    return plain_euicc(eid)


def psmo(eid: str = EID) -> Operation:
    return queued_psmo(eid)


def build(e: Euicc, o: Operation, next_counter: int) -> Built:
    txid = next_counter.to_bytes(16, "big")
    return Built(b"\xbf\x51" + txid, txid, next_counter)


async def test_sqlite_no_work_poll_is_answered_while_another_writer_holds_the_lock(tmp_path):
    path = tmp_path / "eim.db"
    store = SqliteStore(str(path), busy_timeout_ms=60_000)
    await store.open()
    try:
        await store.add_euicc(euicc(), who="t")
        await store.claim_next(EID, 2000.0, build, binding="http")  # first contact: the binding is written
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
        try:
            claim = await asyncio.wait_for(store.claim_next(EID, 2010.0, build, binding="http"), 30)
            assert claim.outcome is ClaimOutcome.NONE
            assert (await store.claim_next(UNKNOWN, 2010.0, build, binding="http")).outcome is ClaimOutcome.UNKNOWN_EID
            assert (await store.get_euicc(EID)).last_contact == 2010.0  # pending contact, seen through the store
            # a poll that finds work needs the write lock: it waits for the other writer, then hands out
            other.execute("COMMIT")
            await store.add_operations([psmo()], who="t")
            other.execute("BEGIN IMMEDIATE")
            pending = asyncio.ensure_future(store.claim_next(EID, 2020.0, build, binding="http"))
            await asyncio.sleep(0.3)
            assert not pending.done()
        finally:
            if other.in_transaction:
                other.execute("COMMIT")
            other.close()
        claim = await asyncio.wait_for(pending, 30)
        assert claim.outcome is ClaimOutcome.PACKAGE and claim.operation.counter_value == 11
    finally:
        await store.close()


async def test_sqlite_without_read_connection_answers_the_same(tmp_path):
    store = SqliteStore(str(tmp_path / "eim.db"), read_connection=False)
    await store.open()
    try:
        await store.add_euicc(euicc(), who="t")
        assert (await store.claim_next(EID, 2000.0, build, binding="http")).outcome is ClaimOutcome.NONE
        await store.add_operations([psmo()], who="t")
        assert (await store.claim_next(EID, 2001.0, build, binding="http")).outcome is ClaimOutcome.PACKAGE
    finally:
        await store.close()


async def test_poll_records_binding_and_contact_and_hands_out_work(store_url):
    store = open_store(store_url)
    await store.open()
    try:
        await store.add_euicc(euicc(), who="t")
        assert (await store.claim_next(UNKNOWN, 2000.0, build, binding="http")).outcome is ClaimOutcome.UNKNOWN_EID
        claim = await store.claim_next(EID, 2000.0, build, binding="http")
        assert claim.outcome is ClaimOutcome.NONE
        e = await store.get_euicc(EID)
        assert (e.binding, e.last_contact) == ("http", 2000.0)
        await store.claim_next(EID, 2003.0, build, binding="http")  # within 5 s: not recorded again
        assert (await store.get_euicc(EID)).last_contact == 2000.0
        await store.claim_next(EID, 2006.0, build, binding="http")
        assert (await store.get_euicc(EID)).last_contact == 2006.0
        await store.claim_next(EID, 2007.0, build, binding="mqtt")  # a new binding is written at once
        assert (await store.get_euicc(EID)).binding == "mqtt"
        queued = (await store.add_operations([psmo()], who="t"))[0]
        claim = await store.claim_next(EID, 2008.0, build, binding="mqtt")
        assert claim.outcome is ClaimOutcome.PACKAGE and claim.operation.id == queued.id
        assert claim.operation.counter_value == 11
        # in progress without a result: the same bytes again, through the claim transaction
        again = await store.claim_next(EID, 2009.0, build, binding="mqtt")
        assert again.rehanded and again.operation.package == claim.operation.package
    finally:
        await store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_postgresql_no_work_poll_takes_no_row_lock(store_url):
    import asyncpg

    store = open_store(store_url)
    await store.open()
    try:
        await store.add_euicc(euicc(), who="t")
        await store.claim_next(EID, 2000.0, build, binding="http")
        other = await asyncpg.connect(store_url)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute("SELECT eid FROM euiccs WHERE eid = $1 FOR UPDATE", EID)  # another worker's lock
            claim = await asyncio.wait_for(store.claim_next(EID, 2001.0, build, binding="http"), 30)
            assert claim.outcome is ClaimOutcome.NONE  # not BUSY: the poll read without locking
            await tx.rollback()
        finally:
            await other.close()
    finally:
        await store.close()


async def test_sqlite_concurrent_reads_each_get_their_own_answer(tmp_path):
    from eim.store.logic import Q, StoreError

    store = SqliteStore(str(tmp_path / "eim.db"))
    await store.open()
    try:
        eids = [f"8904903212345123451234567890{i:04d}" for i in range(40)]
        for e in eids[::2]:
            await store.add_euicc(euicc(e), who="t")

        def bad():  # a "read" that would write: refused, for its caller only
            yield Q("DELETE FROM euiccs", ())

        got = await asyncio.gather(
            *(store.get_euicc(e) for e in eids), store._run(bad, write=False), return_exceptions=True
        )
        assert [g.eid if g is not None else None for g in got[:-1]] == [
            e if i % 2 == 0 else None for i, e in enumerate(eids)
        ]
        assert isinstance(got[-1], StoreError)
        assert len(await store.list_euiccs(limit=100)) == 20
    finally:
        await store.close()


async def test_sqlite_contact_batch_in_one_statement(tmp_path):
    """The once-a-second batch (one UPDATE over a JSON array) writes every known eUICC's contact, skips unknown
    EIDs and never moves a contact backwards."""
    path = tmp_path / "eim.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        eids = [f"8904903212345123451234567{i:07d}" for i in range(3000)]
        for e in eids[:2000]:
            await store.add_euicc(euicc(e), who="t")
        await store.update_euicc(eids[0], last_contact=9999.0)
        store._contacts.update({e: 5000.0 + i / 7 for i, e in enumerate(eids)})
        await store.flush_contacts()
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        got = dict(conn.execute("SELECT eid, last_contact FROM euiccs"))
    finally:
        conn.close()
    assert len(got) == 2000
    assert got[eids[0]] == 9999.0
    assert all(got[e] == pytest.approx(5000.0 + i / 7, abs=1e-6) for i, e in enumerate(eids[1:2000], start=1))
