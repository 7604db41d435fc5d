"""SQLite group commit: write transactions share one COMMIT, each in its own savepoint, and nobody is answered
before that COMMIT - so a counter value handed to a caller is never handed out again, even after SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from eim.model import Euicc, Operation
from eim.store import Built, ClaimOutcome, StoreError
from eim.store.logic import Q
from eim.store.sqlite import SqliteStore
from tests.eim.helpers import plain_euicc, queued_psmo

EIDS = [f"8904903212345123451234567890{n:04d}" for n in range(12)]
REPO = Path(__file__).resolve().parents[2]


def euicc(eid: str, counter: int = 10) -> Euicc:
    return plain_euicc(eid, counter)


def op(eid: str, op_id: str | None = None) -> Operation:
    return queued_psmo(eid, op_id)


def build(e: Euicc, o: Operation, next_counter: int) -> Built:
    txid = os.urandom(16)
    return Built(b"\xbf\x51" + next_counter.to_bytes(4, "big") + txid, txid, next_counter)


async def test_concurrent_writes_share_commits_and_a_failure_stays_its_own(tmp_path):
    s = SqliteStore(str(tmp_path / "eim.db"))
    await s.open()
    try:
        assert all(await asyncio.gather(*(s.add_euicc(euicc(eid), who="t") for eid in EIDS)))
        assert s.grouped == len(EIDS) and s.groups < len(EIDS)  # queued together: fewer COMMITs than writes
        dup = op(EIDS[0])
        await s.add_operations([dup], who="t")
        # the same batch again in the middle of a group: its savepoint is rolled back, the others are kept
        calls = [s.add_operations([op(eid)], who="t") for eid in EIDS[1:4]]
        calls.insert(1, s.add_operations([dup, op(EIDS[0])], who="t"))
        out = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(out[1], StoreError) and "constraint" in str(out[1])
        assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(out) if i != 1)
        assert len(await s.list_operations(eid=EIDS[0])) == 1  # the second op of the failed call is not there
        for eid in EIDS[1:4]:
            assert len(await s.list_operations(eid=eid)) == 1

        # claims in one group: a builder failing for one eUICC leaves its counter alone, the others advance
        def bad_build(e: Euicc, o: Operation, n: int) -> Built:
            if e.eid == EIDS[2]:
                raise ValueError("HSM unavailable")
            return build(e, o, n)

        claims = await asyncio.gather(
            *(s.claim_next(eid, 2000.0, bad_build, binding="http") for eid in EIDS[:4]), return_exceptions=True
        )
        assert isinstance(claims[2], ValueError)
        for i in (0, 1, 3):
            assert claims[i].outcome is ClaimOutcome.PACKAGE and claims[i].operation.counter_value == 11
        assert (await s.get_euicc(EIDS[2])).counter_value == 10
        assert (await s.get_euicc(EIDS[2])).last_contact is None  # its whole transaction was undone
        assert (await s.get_euicc(EIDS[1])).counter_value == 11
        # two claims of one eUICC in the same group see each other: the second re-hands the same package
        a, b = await asyncio.gather(*(s.claim_next(EIDS[1], 2001.0, build) for _ in range(2)))
        assert a.operation.counter_value == b.operation.counter_value == 11 and a.rehanded and b.rehanded
    finally:
        await s.close()


async def test_writes_after_close_are_refused(tmp_path):
    s = SqliteStore(str(tmp_path / "eim.db"))
    await s.open()
    await s.close()
    with pytest.raises(StoreError):
        await s.add_euicc(euicc(EIDS[0]), who="t")


# A process that allocates counter values as fast as it can with 12 concurrent callers (one per eUICC): claim
# (allocates the counter and records the signed package), print the value once the call returned, then close the
# operation and queue the next one. Every printed value was handed to a caller.
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, sys.argv[2])
    from tests.eim.test_store_group_commit import EIDS, build, euicc, op
    from eim.model import OpStatus
    from eim.store import ClaimOutcome, ResultUpdate
    from eim.store.sqlite import SqliteStore

    async def worker(s, eid):
        while True:
            c = await s.claim_next(eid, 2000.0, build)
            if c.outcome is not ClaimOutcome.PACKAGE:
                await s.add_operations([op(eid)], who="t")
                continue
            if not c.rehanded:
                sys.stdout.write(f"{eid} {c.operation.counter_value}\\n")
                sys.stdout.flush()
            await s.record_result(ResultUpdate(operation_id=c.operation.id, eid=eid, status=OpStatus.DONE,
                                               who="t", now=2000.0))

    async def main():
        s = SqliteStore(sys.argv[1])
        await s.open()
        for eid in EIDS:
            await s.add_euicc(euicc(eid), who="t")
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        await asyncio.gather(*(worker(s, eid) for eid in EIDS))

    asyncio.run(main())
    """
)


def run_and_kill(path: Path, rng: random.Random) -> list[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        # kill after a random number of handed-out values (0-400): a random point in the group cycle
        want, got = rng.randrange(0, 400), []
        deadline = time.monotonic() + 30
        while len(got) < want and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            got.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        got += proc.stdout.readlines()  # written before the kill: handed out too
    finally:
        proc.kill()
        proc.wait()
    out = []
    for line in got:
        eid, value = line.split()
        out.append((eid, int(value)))
    return out


async def test_counter_values_handed_out_are_never_reused_after_sigkill(tmp_path):
    path = tmp_path / "eim.db"
    rng = random.Random(os.urandom(8))
    handed: list[tuple[str, int]] = []
    for _round in range(8):
        handed += await asyncio.to_thread(run_and_kill, path, rng)
        s = SqliteStore(str(path))
        await s.open()
        try:
            # everything handed out is durable: the stored counter is at least the highest value handed out
            for eid in EIDS:
                seen = [v for e, v in handed if e == eid]
                if seen:
                    assert (await s.get_euicc(eid)).counter_value >= max(seen)
        finally:
            await s.close()
    assert len(handed) > 100
    assert len(set(handed)) == len(handed), "a counter value was handed out twice"


async def test_contacts_are_batched_and_visible_at_once(tmp_path):
    """A poll that finds no work writes nothing (not even last_contact); the contact is visible through the store
    at once and in the database after the next flush (at most a second later, and at close)."""
    import sqlite3

    path = tmp_path / "eim.db"
    s = SqliteStore(str(path))
    await s.open()
    other = sqlite3.connect(path)
    try:
        await s.add_euicc(euicc(EIDS[0]), who="t")
        first = await s.claim_next(EIDS[0], 2000.0, build, binding="http")  # first contact, binding: written at once
        assert first.outcome is ClaimOutcome.NONE
        row = other.execute("SELECT last_contact, binding FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone()
        assert row == (2000.0, "http")
        version = other.execute("PRAGMA data_version").fetchone()[0]
        await s.claim_next(EIDS[0], 2010.0, build, binding="http")
        assert other.execute("PRAGMA data_version").fetchone()[0] == version  # nothing committed
        assert (await s.get_euicc(EIDS[0])).last_contact == 2010.0
        assert [e.last_contact for e in await s.list_euiccs()] == [2010.0]
        await s.claim_next(EIDS[0], 2012.0, build, binding="http")  # within 5 s of the last: not recorded
        assert (await s.get_euicc(EIDS[0])).last_contact == 2010.0
        await s.flush_contacts()
        assert other.execute("SELECT last_contact FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (2010.0,)
        # a contact older than the stored one never moves it back
        s._contacts[EIDS[0]] = 1990.0
        await s.flush_contacts()
        assert other.execute("SELECT last_contact FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (2010.0,)
        # the batch is written by itself within about a second, and by close
        await s.claim_next(EIDS[0], 2020.0, build, binding="http")
        for _ in range(100):
            if other.execute("SELECT last_contact FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (2020.0,):
                break
            await asyncio.sleep(0.05)
        assert other.execute("SELECT last_contact FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (2020.0,)
        await s.claim_next(EIDS[0], 2030.0, build, binding="coap")  # a binding change is written at once
        assert other.execute("SELECT last_contact, binding FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (
            2030.0,
            "coap",
        )
        await s.claim_next(EIDS[0], 2040.0, build, binding="coap")
    finally:
        await s.close()
    assert other.execute("SELECT last_contact FROM euiccs WHERE eid = ?", (EIDS[0],)).fetchone() == (2040.0,)
    other.close()


def _temp_files_open() -> list[str]:
    """SQLite's temporary files held open by this process (it unlinks them at once: ``/var/tmp/etilqs_* (deleted)``)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            out.append(target)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir() and os.environ.get("CI") != "true", reason="needs /proc (Linux)")
async def test_savepoint_journals_of_a_group_stay_in_memory(tmp_path):
    """Each write of a group runs in a savepoint, whose sub-journal keeps the original of every page it changes.
    Past 64 KiB (one write changing more than 16 pages, such as the ``last_contact`` batch) SQLite spills it to
    a temporary file, unless ``temp_store = MEMORY``, and every later savepoint of that transaction then writes
    each page it changes to that file (62 % of the store thread's writes in a PSMO run; docs/performance.md,
    "the SQLite store's system calls"). After such a batch, its transaction must not have a temporary file open."""
    eids = [f"8904903212345123451234567891{n:04d}" for n in range(300)]
    s = SqliteStore(str(tmp_path / "eim.db"))
    s.optimistic_groups = False  # the savepoint path (a group whose first pass failed runs this way)
    await s.open()
    try:
        await asyncio.gather(
            *(s.add_euicc(replace(euicc(eid), euicc_certificate=os.urandom(900)), who="t") for eid in eids)
        )
        seen: list[list[str]] = []

        def contacts():  # the shape of the last_contact batch: one statement over every row
            return (yield Q("UPDATE euiccs SET last_contact = ?", (3000.0,)))

        def look():  # queued last: runs in the same open transaction, after the others' savepoints
            yield Q("SELECT 1", (), "one")
            seen.append(_temp_files_open())

        before = s.groups
        touched, _ = await asyncio.gather(s._run(contacts), s._run(look))
        assert touched == len(eids)
        assert s.groups - before == 1  # one transaction: the batch's savepoint, then the look's
        assert seen == [[]]
    finally:
        await s.close()


async def test_a_group_runs_without_savepoints_until_one_of_its_writes_fails(tmp_path):
    """A group first runs its writes without savepoints (two statements fewer per write: a PSMO round trip is four
    statements shorter, docs/performance.md 1c). When one of them fails, that pass is rolled back as a whole and the
    group runs again with a savepoint around each write: the failure stays its own and every other write is
    committed once (not once per pass)."""
    s = SqliteStore(str(tmp_path / "eim.db"))
    await s.open()
    seen: list[str] = []
    try:
        assert all(await asyncio.gather(*(s.add_euicc(euicc(eid), who="t") for eid in EIDS[:4])))
        await s.add_operations([op(eid) for eid in EIDS[:4]], who="t")
        s._require().set_trace_callback(seen.append)  # every statement the store thread runs, as SQLite sees it
        groups, regrouped = s.groups, s.regrouped
        claims = await asyncio.gather(*(s.claim_next(eid, 2000.0, build) for eid in EIDS[:4]))
        assert [c.outcome for c in claims] == [ClaimOutcome.PACKAGE] * 4
        assert s.groups - groups == 1 and s.regrouped == regrouped  # one group, one pass
        writes = [q for q in seen if q.startswith(("UPDATE", "INSERT"))]
        assert len(writes) == 4 * 2 + 1  # counter and operation of each claim, then the group's audit rows at once
        assert writes[-1].startswith("INSERT INTO audit") and writes[-1].count("'hand_out'") == 4
        audit = await s.list_audit(eid=None, operation_id=None, limit=100)
        assert [(a.action, a.operation_id) for a in audit if a.action == "hand_out"] == [
            ("hand_out", c.operation.id) for c in claims
        ]
        assert [q for q in seen if "SAVEPOINT" in q or q.startswith("RELEASE")] == [
            "SAVEPOINT first_pass",  # the pass as a whole, none per write
            "RELEASE first_pass",
        ]
        assert seen.count("COMMIT") == 1

        dup = op(EIDS[0])
        await s.add_operations([dup], who="t")
        seen.clear()
        calls = [s.add_operations([op(eid)], who="t") for eid in EIDS[1:4]]
        calls.insert(1, s.add_operations([dup], who="t"))  # fails with a constraint error, in the middle
        out = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(out[1], StoreError) and "constraint" in str(out[1])
        assert s.regrouped == regrouped + 1
        assert seen.count("ROLLBACK TO first_pass") == 1 and "ROLLBACK" not in seen  # the write lock is kept
        assert seen.count("BEGIN IMMEDIATE") == 1 and seen.count("SAVEPOINT one") == 4  # second pass: one per write
        for eid in EIDS[1:4]:
            assert len(await s.list_operations(eid=eid)) == 2  # the claimed one and the one just queued, once
        assert len(await s.list_operations(eid=EIDS[0])) == 2  # the claimed one and dup, not twice
    finally:
        await s.close()


async def test_the_audit_rows_of_a_group_are_written_in_order_by_multi_row_inserts(tmp_path):
    """The rows of every write of a group, in the order they were made, by INSERTs of 256, 128, ... rows; a group
    whose first pass
    failed writes them row by row inside each write's savepoint (the failing write's rows are rolled back)."""
    s = SqliteStore(str(tmp_path / "eim.db"))
    await s.open()
    seen: list[str] = []
    try:

        def many(tag: str, n: int, fail: bool = False):
            for i in range(n):
                yield from s.logic.add_audit(at=1000.0 + i / 7, who=tag, action="a", outcome="ok", detail={"i": i})
            if fail:
                raise ValueError("this write fails")
            return n

        s._require().set_trace_callback(seen.append)
        out = await asyncio.gather(s._run(lambda: many("x", 1001)), s._run(lambda: many("y", 3)))
        assert out == [1001, 3]
        inserts = [q for q in seen if q.startswith("INSERT INTO audit")]
        sizes = [q.count("), (") + 1 for q in inserts]
        assert sizes == [256, 256, 256, 128, 64, 32, 8, 4] and seen.count("COMMIT") == 1  # 1,004 rows
        rows = await s.list_audit(eid=None, operation_id=None, limit=2000)
        got = sorted(rows, key=lambda a: a.id)
        assert [(a.who, a.detail["i"]) for a in got] == [("x", i) for i in range(1001)] + [("y", i) for i in range(3)]
        assert [a.at for a in got[:8]] == [1000.0 + i / 7 for i in range(8)]  # the floats exactly as given

        seen.clear()
        out = await asyncio.gather(
            s._run(lambda: many("p", 2)), s._run(lambda: many("q", 2, fail=True)), return_exceptions=True
        )
        assert out[0] == 2 and isinstance(out[1], ValueError)
        # the first pass ended in q before its audit rows were written; the second wrote each row in its savepoint
        assert len([q for q in seen if q.startswith("INSERT INTO audit")]) == 4 and "ROLLBACK TO one" in seen
        rows = await s.list_audit(eid=None, operation_id=None, limit=2000)
        assert sorted(a.who for a in rows if a.who in ("p", "q")) == ["p", "p"]

        # an audit row the table refuses (NOT NULL) fails the first pass only when the rows are written at its end;
        # the second pass finds which write it was, and the others commit
        def bad_row():
            yield from s.logic.add_audit(at=1.0, who=None, action="a", outcome="ok")
            return "bad"

        seen.clear()
        out = await asyncio.gather(
            s._run(lambda: many("r", 1)), s._run(bad_row), s._run(lambda: many("s", 1)), return_exceptions=True
        )
        assert out[0] == 1 and out[2] == 1
        assert isinstance(out[1], StoreError) and "NOT NULL" in str(out[1])
        assert "ROLLBACK TO first_pass" in seen and seen.count("COMMIT") == 1
        rows = await s.list_audit(eid=None, operation_id=None, limit=2000)
        assert sorted(a.who for a in rows if a.who in ("r", "s")) == ["r", "s"]
    finally:
        await s.close()
