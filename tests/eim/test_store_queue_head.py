"""A claim's cost does not grow with the eUICC's history (``eim.store.logic.QUEUE_HEAD_SQL``).

A fleet's eUICCs keep their done operations (the per-eUICC history of the dashboard and the API). The queue head
was read with ``status IN ('queued', 'in_progress') ORDER BY seq LIMIT 1``, and SQLite answered it by walking the
eUICC's operations in ``seq`` order (index ``operations_eid_seq``) through every done one. The work is counted
here in SQLite virtual-machine instructions (a progress handler on the store's connections), not in time: a claim
for an eUICC with 3,000 done operations must cost about what it costs for an eUICC with none.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from eim.model import OpStatus
from eim.store import ClaimOutcome, open_store
from tests.eim.test_store import EID, EID2, euicc, op, signing_builder

HISTORY = 3000


class VmSteps:
    """Counts the SQLite VM instructions run on some connections, in blocks of 100."""

    def __init__(self, *conns: sqlite3.Connection) -> None:
        self.conns = conns
        self.blocks = 0

    def _tick(self) -> int:
        self.blocks += 1
        return 0  # go on

    def __enter__(self) -> VmSteps:
        for c in self.conns:
            c.set_progress_handler(self._tick, 100)
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.conns:
            c.set_progress_handler(None, 100)


async def test_a_claim_and_a_poll_cost_the_same_after_thousands_of_done_operations(tmp_path: Path) -> None:
    path = tmp_path / "eim.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await store.add_euicc(euicc(EID), who="t")
        await store.add_euicc(euicc(EID2), who="t")
        await store.add_operations([op(EID) for _ in range(HISTORY)], who="t")
        # EID's long history: what years of operations leave behind (done rows stay, for the history views)
        with sqlite3.connect(path) as c:
            assert c.execute("UPDATE operations SET status = 'done' WHERE eid = ?", (EID,)).rowcount == HISTORY

        # two no-work polls for each: the first writes the binding (a write transaction that looks at the queue
        # head), the second is answered from the read connection alone
        polls: dict[str, list[int]] = {EID: [], EID2: []}
        for now in (2000.0, 2000.1):
            for eid in (EID, EID2):
                with VmSteps(store._conn, store._rconn) as steps:
                    claim = await store.claim_next(eid, now, signing_builder(), binding="http")
                assert claim.outcome is ClaimOutcome.NONE
                polls[eid].append(steps.blocks)

        new = {o.eid: o for o in await store.add_operations([op(EID), op(EID2)], who="t")}
        claims = {}
        for eid in (EID, EID2):
            with VmSteps(store._conn, store._rconn) as steps:
                claim = await store.claim_next(eid, 2001.0, signing_builder(), binding="http")
            assert claim.outcome is ClaimOutcome.PACKAGE and claim.operation.id == new[eid].id
            assert claim.operation.status is OpStatus.IN_PROGRESS
            claims[eid] = steps.blocks

        # the re-handed head (no result yet) is found the same way
        with VmSteps(store._conn, store._rconn) as steps:
            again = await store.claim_next(EID, 2002.0, signing_builder(), binding="http")
        assert again.rehanded and again.operation.id == new[EID].id
        rehand = steps.blocks
    finally:
        await store.close()

    for first_or_idle in (0, 1):
        assert polls[EID][first_or_idle] <= 2 * polls[EID2][first_or_idle] + 5, f"no-work polls: {polls}"
    assert claims[EID] <= 2 * claims[EID2] + 5, f"claim: {claims} (blocks of 100 VM instructions)"
    assert rehand <= 2 * claims[EID2] + 5, f"re-hand: {rehand} vs {claims[EID2]}"


async def test_the_queue_head_is_the_lowest_seq_of_queued_and_in_progress(store) -> None:
    """Both backends: the head is the oldest open operation, whichever of the two statuses it has; done, failed
    and cancelled ones before it are passed over."""
    await store.add_euicc(euicc(EID, counter=10), who="t")
    o1, o2, o3 = await store.add_operations([op(), op(), op()], who="t")
    build = signing_builder()
    c1 = await store.claim_next(EID, 2000.0, build, binding="http")
    assert c1.operation.id == o1.id
    assert (await store.cancel_operation(o1.id, who="t", now=2000.5)).status is OpStatus.CANCELLED
    c2 = await store.claim_next(EID, 2001.0, build, binding="http")
    assert c2.operation.id == o2.id and not c2.rehanded  # o1 cancelled: o2 (queued) is the head
    c3 = await store.claim_next(EID, 2002.0, build, binding="http")
    assert c3.operation.id == o2.id and c3.rehanded  # o2 in progress, lower seq than the queued o3
    assert c3.operation.package == c2.operation.package
    assert (await store.get_operation(o3.id)).status is OpStatus.QUEUED
