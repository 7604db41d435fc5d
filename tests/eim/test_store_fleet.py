"""Migration 0004 and the fleet / event-feed store logic on both backends: the indexes the fleet summary counts
from exist, the counts are right, deliveries are leased to one worker at a time, the fan-out queues an event once
per subscription and survives a reopened store."""

from __future__ import annotations

import asyncio
import json
import time

from eim.events.catalog import from_audit
from eim.model import Euicc
from eim.store import open_store
from eim.store.events import Subscription
from rsp.pki import lab_eid

EIDS = [lab_eid(80 + i) for i in range(4)]
INDEXES = {"euiccs_contact", "euiccs_poll_override", "euiccs_binding", "operations_kind_status", "batches_created"}


async def add(store, eid: str, **kw) -> None:
    await store.add_euicc(
        Euicc(eid=eid, eim_id="eim.test", association_token=None, counter_value=0, created_at=time.time(), **kw),
        who="test",
    )


async def index_names(store) -> set[str]:
    if store.dialect == "postgresql":
        sql = "SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    from eim.store.logic import Q

    def gen():
        rows = yield Q(sql, (), "all")
        return {r["name"] for r in rows}

    return await store._run(gen, write=False)


async def test_migration_adds_the_fleet_indexes_and_counts_are_right(store):
    assert INDEXES <= await index_names(store)
    assert await store.schema_version() >= 4
    now = 1_000_000.0
    await add(store, EIDS[0], last_contact=now - 10, binding="http")
    await add(store, EIDS[1], last_contact=now - 5000, binding="http")
    await add(store, EIDS[2], last_contact=now - 5000)
    await add(store, EIDS[3])
    await store.patch_euicc(EIDS[2], {"poll_interval_s": 10_000.0}, who="t")
    c = await store.fleet_counts(now=now, default_interval_s=3600.0)
    assert (c.registered, c.never_seen, c.seen_1h, c.seen_24h, c.stale) == (4, 1, 1, 3, 1)
    assert c.by_binding == {"http": 2, "none": 2}


async def test_deliveries_are_leased_to_one_worker_at_a_time(store):
    sub = Subscription("00000000-0000-4000-8000-000000000001", "https://h.example/x", ("euicc.stale",), "s", "", 0, "t")
    await store.add_subscription(sub)
    await add(store, EIDS[0], last_contact=100.0)
    from eim.events.catalog import stale_event

    await store.scan_stale(stale_event, now=1000.0, default_interval_s=50.0)  # sets the cursor
    await store.update_euicc(EIDS[0], last_contact=960.0)
    assert await store.scan_stale(stale_event, now=1020.0, default_interval_s=50.0) == 1
    assert await store.scan_stale(stale_event, now=1030.0, default_interval_s=50.0) == 0  # once
    claims = await asyncio.gather(
        *(store.claim_deliveries(now=2000.0, lease_s=30, owner=f"w{i}", limit=5) for i in range(4))
    )
    assert sum(len(c) for c in claims) == 1  # exactly one worker holds it
    [d] = [c for cs in claims for c in cs]
    assert d.url == sub.url and d.secret == "s" and d.attempts == 1
    assert await store.claim_deliveries(now=2010.0, lease_s=30, owner="w9") == []  # leased
    again = await store.claim_deliveries(now=2031.0, lease_s=30, owner="w9")  # the lease ran out
    assert [x.id for x in again] == [d.id] and again[0].attempts == 2
    assert not await store.delivery_outcome(d.id, owner=d.leased_by, now=2032.0, status="delivered")  # lost it
    assert await store.delivery_outcome(d.id, owner="w9", now=2032.0, status="delivered", http_status=204)


async def test_fan_out_queues_each_event_once_per_subscription_across_a_reopen(store_url):
    s = open_store(store_url)
    await s.open()
    try:
        for n, events in enumerate((("operation.cancelled",), ("operation.cancelled", "operation.done"))):
            sid = f"00000000-0000-4000-8000-00000000000{n}"
            await s.add_subscription(Subscription(sid, "https://h.example/x", events, "s", "", 0, "t"))
        await add(s, EIDS[0])
        await s.add_audit(who="t", action="cancelled", outcome="cancelled", eid=EIDS[0], operation_id="op-1")
        await s.add_audit(who="t", action="hand_out", outcome="in_progress", eid=EIDS[0], operation_id="op-1")
        _read, queued = await s.fan_out_events(from_audit, now=time.time() + 10, settle_s=0.0)
        assert queued == 2
    finally:
        await s.close()
    s = open_store(store_url)
    await s.open()
    try:
        assert (await s.fan_out_events(from_audit, now=time.time() + 10, settle_s=0.0))[1] == 0  # nothing twice
        due = await s.claim_deliveries(now=time.time() + 10, lease_s=30, owner="w")
        assert sorted(d.subscription_id[-1] for d in due) == ["0", "1"]
        assert {d.event_type for d in due} == {"operation.cancelled"}
    finally:
        await s.close()


async def test_fan_out_without_subscriber_moves_the_cursor_and_queues_nothing(store_url):
    """With no subscription the rows are passed over (read count and cursor as with one), and a subscription made
    afterwards gets the events of later rows only."""
    s = open_store(store_url)
    await s.open()
    try:
        await add(s, EIDS[0])
        await s.add_audit(who="t", action="cancelled", outcome="cancelled", eid=EIDS[0], operation_id="op-1")
        await s.add_audit(who="t", action="hand_out", outcome="in_progress", eid=EIDS[0], operation_id="op-2")
        first = await s.fan_out_events(from_audit, now=time.time() + 10, settle_s=0.0)
        await s.add_audit(who="t", action="cancelled", outcome="cancelled", eid=EIDS[0], operation_id="op-3")
        assert (await s.fan_out_events(from_audit, now=time.time() + 10, settle_s=0.0)) == (1, 0)
        sid = "00000000-0000-4000-8000-000000000009"
        await s.add_subscription(Subscription(sid, "https://h.example/x", ("operation.cancelled",), "s", "", 0, "t"))
        await s.add_audit(who="t", action="cancelled", outcome="cancelled", eid=EIDS[0], operation_id="op-4")
        assert (await s.fan_out_events(from_audit, now=time.time() + 10, settle_s=0.0))[1] == 1
        due = await s.claim_deliveries(now=time.time() + 10, lease_s=30, owner="w")
        assert [json.loads(d.body)["operation_id"] for d in due] == ["op-4"]
    finally:
        await s.close()
    assert first[1] == 0
