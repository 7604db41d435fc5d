"""SQLite: a poll of an eUICC whose last claim handed out a package skips the look on the read connection and goes
straight to the claim transaction (``SqliteStore._working``). The hint only says where to look first: with it and
without it (``working_hints = 0``: every poll looks first), any sequence of polls, results, cancellations, new
work and binding changes gives the same claims and leaves the same rows, including when the hint is stale (the
work it saw was cancelled or finished meanwhile)."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.model import Euicc, Operation, OpStatus
from eim.store import Built, ClaimOutcome
from eim.store.logic import ResultUpdate
from eim.store.sqlite import SqliteStore
from tests.eim.helpers import plain_euicc, queued_psmo

EIDS = ("89049032123451234512345678901237", "89049032123451234512345678901245")


def build(e: Euicc, o: Operation, next_counter: int) -> Built:
    txid = next_counter.to_bytes(8, "big") + bytes.fromhex(e.eid)[-8:]
    return Built(b"\xbf\x51" + txid, txid, next_counter)


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["poll", "poll", "poll", "enqueue", "result", "cancel"]),
        st.integers(0, len(EIDS) - 1),
        st.sampled_from(["http", "http", "mqtt", None]),
    ),
    min_size=1,
    max_size=25,
)


def _claim_view(c) -> tuple:
    op = c.operation
    return (
        c.outcome,
        c.rehanded,
        None if op is None else (op.id, op.status, op.counter_value, op.package),
        # the eUICC as the claim saw it: a claim answered from the poll's look carries only its binding and last
        # contact (Claim.seen), one from the claim transaction the whole record (Claim.euicc)
        None if c.contact() is None else c.contact().binding,
    )


async def _play(path: Path, hints: int, actions: list[tuple[str, int, str | None]]) -> tuple[list, list, list]:
    store = SqliteStore(str(path))
    store.working_hints = hints
    await store.open()
    seen: list = []
    try:
        for eid in EIDS:
            await store.add_euicc(plain_euicc(eid), who="t")
        now = 2000.0
        n = 0
        handed: dict[str, Operation] = {}
        for what, i, binding in actions:
            eid = EIDS[i]
            now += 1.0
            if what == "poll":
                claim = await store.claim_next(eid, now, build, binding=binding)
                if claim.operation is not None:
                    handed[eid] = claim.operation
                seen.append(_claim_view(claim))
            elif what == "enqueue":
                n += 1
                await store.add_operations([queued_psmo(eid, f"op-{n:03d}", now)], who="t")
            elif what == "result" and eid in handed:
                op = handed.pop(eid)
                changed = await store.record_result(
                    ResultUpdate(op.id, eid, OpStatus.DONE, "ipa", now, eim_transaction_id=op.eim_transaction_id)
                )
                seen.append(None if changed is None else (changed.id, changed.status))
            elif what == "cancel":  # the work a hint saw goes away behind its back
                ops = await store.list_operations(eid=eid, limit=1)
                if ops and not ops[0].status.final:
                    cancelled = await store.cancel_operation(ops[0].id, who="operator", now=now)
                    seen.append(None if cancelled is None else (cancelled.id, cancelled.status))
        await store.flush_contacts()
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        ops = db.execute("SELECT id, status, counter_value, package, eim_transaction_id FROM operations ORDER BY id")
        euiccs = db.execute("SELECT eid, binding, counter_value, last_contact FROM euiccs ORDER BY eid")
        return seen, ops.fetchall(), euiccs.fetchall()
    finally:
        db.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_hint_gives_the_same_claims_and_rows_as_looking_first(actions):
    with tempfile.TemporaryDirectory() as tmp:
        with_hint = asyncio.run(_play(Path(tmp) / "a.db", 10_000, actions))
        without = asyncio.run(_play(Path(tmp) / "b.db", 0, actions))
    assert with_hint == without


async def test_stale_hint_finds_nothing_and_writes_nothing(tmp_path):
    store = SqliteStore(str(tmp_path / "eim.db"))
    await store.open()
    try:
        eid = EIDS[0]
        await store.add_euicc(plain_euicc(eid), who="t")
        await store.add_operations([queued_psmo(eid, "op-1")], who="t")
        claim = await store.claim_next(eid, 2000.0, build, binding="http")
        assert claim.outcome is ClaimOutcome.PACKAGE and eid in store._working
        await store.cancel_operation("op-1", who="operator", now=2001.0)
        again = await store.claim_next(eid, 2002.0, build, binding="http")  # through the claim transaction
        assert again.outcome is ClaimOutcome.NONE and again.operation is None
        assert eid not in store._working  # the next poll looks first again
        e = await store.get_euicc(eid)
        assert e.counter_value == 11  # no counter value consumed by the poll that found nothing
        assert (await store.get_operation("op-1")).status is OpStatus.CANCELLED
    finally:
        await store.close()


async def test_hints_are_bounded(tmp_path):
    store = SqliteStore(str(tmp_path / "eim.db"))
    store.working_hints = 1
    await store.open()
    try:
        for n, eid in enumerate(EIDS):
            await store.add_euicc(plain_euicc(eid), who="t")
            await store.add_operations([queued_psmo(eid, f"op-{n}")], who="t")
            assert (await store.claim_next(eid, 2000.0, build, binding="http")).outcome is ClaimOutcome.PACKAGE
        assert list(store._working) == [EIDS[1]]
    finally:
        await store.close()
