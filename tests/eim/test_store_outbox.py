"""The notification outbox of the Store on both backends: queued once, leased to one worker at a time, retried,
failed with the reason (audited), deleted when delivered, kept across a reopen; concurrent claimers (separate
connections, on PostgreSQL ``FOR UPDATE SKIP LOCKED``) never get the same row."""

from __future__ import annotations

import asyncio
import hashlib

from eim.model import NotificationStatus, NotificationToSend
from eim.store import open_store

EID = "89049032123451234512345678901235"


def note(i: int, address: str = "smdp.example.com") -> NotificationToSend:
    # shaped like an otherSignedNotification: 30 { BF2F { 80 seq, 0C address } ... }; the store keeps any bytes
    raw = bytes.fromhex("30") + bytes([9 + len(address)]) + bytes.fromhex("BF2F") + bytes([5 + len(address)])
    raw += bytes([0x80, 1, i % 128, 0x0C, len(address)]) + address.encode()
    return NotificationToSend(raw + i.to_bytes(4, "big"), address, "other", eid=EID, seq_number=i)


async def test_queued_once_with_an_audit_entry(store):
    n = note(1)
    [(row, created)] = await store.enqueue_notifications([n], who="ipa", now=100.0)
    assert created and row.status is NotificationStatus.PENDING and row.attempts == 0
    assert row.notification == n.notification and row.digest == hashlib.sha256(n.notification).hexdigest()
    assert (row.eid, row.kind, row.address, row.seq_number, row.next_attempt_at) == (EID, "other", n.address, 1, 100)
    [(again, created)] = await store.enqueue_notifications([n], who="ipa", now=101.0)  # the IPA sent it again
    assert not created and again.id == row.id
    assert [r.id for r in await store.list_notifications()] == [row.id]
    audit = [a for a in await store.list_audit(eid=EID) if a.action == "notification"]
    assert [(a.who, a.outcome, a.detail["notification_id"]) for a in audit] == [("ipa", "queued", row.id)]


async def test_lease_retry_fail_deliver(store):
    rows = [r for r, _ in await store.enqueue_notifications([note(1), note(2), note(3)], who="ipa", now=100.0)]
    a, b, c = (r.id for r in rows)
    claimed = await store.claim_notifications(now=100.0, lease_s=30, owner="w1", limit=2)
    assert [n.id for n in claimed] == [a, b] and all(n.leased_by == "w1" and n.attempts == 1 for n in claimed)
    # leased rows are not due for anyone else until the lease ends
    assert [n.id for n in await store.claim_notifications(now=110.0, lease_s=30, owner="w2", limit=10)] == [c]
    assert await store.claim_notifications(now=111.0, lease_s=30, owner="w2", limit=10) == []
    assert await store.next_notification_due() == 130.0  # the first lease to end
    # only the holder of the lease records an outcome
    assert await store.notification_retry(a, next_attempt_at=200.0, error="x", now=112.0, owner="w2") is False
    assert await store.notification_retry(a, next_attempt_at=200.0, error="down", now=112.0, owner="w1") is True
    assert await store.notification_failed(b, reason="r", now=112.0, owner="w2") is None
    failed = await store.notification_failed(b, reason="Failed 1.2/2.1: invalid", now=113.0, owner="w1")
    assert failed is not None and failed.status is NotificationStatus.FAILED and failed.leased_by is None
    assert await store.notification_delivered(c, now=114.0, owner="w2") is True
    assert await store.notification_delivered(c, now=115.0, owner="w2") is False  # already gone
    assert await store.count_notifications_by_status() == {"pending": 1, "failed": 1}
    [pending] = await store.list_notifications(status="pending")
    assert (pending.id, pending.last_error, pending.next_attempt_at, pending.leased_by) == (a, "down", 200.0, None)
    assert [n.id for n in await store.list_notifications(status=NotificationStatus.FAILED)] == [b]
    assert [n.id for n in await store.list_notifications(limit=1)] == [a]
    assert [n.id for n in await store.list_notifications(after_id=a)] == [b]
    assert await store.next_notification_due() == 200.0
    assert await store.claim_notifications(now=199.0, lease_s=30, owner="w1") == []  # not due yet
    [again] = await store.claim_notifications(now=200.0, lease_s=30, owner="w2")
    assert (again.id, again.attempts) == (a, 2)
    audit = [(x.outcome, x.detail) for x in await store.list_audit(eid=EID) if x.action == "notification"]
    assert [o for o, _ in audit] == ["queued", "queued", "queued", "failed", "delivered"]
    assert audit[3][1]["reason"] == "Failed 1.2/2.1: invalid" and audit[3][1]["attempts"] == 1
    assert audit[4][1]["notification_id"] == c


async def test_release_and_reopen(store_url):
    s = open_store(store_url)
    await s.open()
    try:
        [(row, _)] = await s.enqueue_notifications([note(7)], who="ipa", now=100.0)
        await s.claim_notifications(now=100.0, lease_s=1000, owner="stopping", limit=5)
        assert await s.release_notifications("stopping", now=101.0) == 1
    finally:
        await s.close()
    s2 = open_store(store_url)
    await s2.open()
    try:
        [kept] = await s2.list_notifications()
        assert (kept.id, kept.notification, kept.leased_by) == (row.id, row.notification, None)
        assert [n.id for n in await s2.claim_notifications(now=102.0, lease_s=10, owner="new")] == [row.id]
    finally:
        await s2.close()


async def test_concurrent_claimers_never_share_a_row(store, store_url):
    total = 60
    await store.enqueue_notifications([note(i) for i in range(total)], who="ipa", now=100.0)
    others = [open_store(store_url) for _ in range(3)]
    for s in others:
        await s.open()
    got: dict[str, list[int]] = {}

    async def claimer(name: str, s) -> None:
        got[name] = []
        while True:
            batch = await s.claim_notifications(now=100.0, lease_s=600, owner=name, limit=4)
            if not batch:
                return
            got[name] += [n.id for n in batch]
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(claimer(f"w{i}", s) for i, s in enumerate([store, *others])))
    finally:
        for s in others:
            await s.close()
    ids = [i for v in got.values() for i in v]
    assert len(ids) == total and len(set(ids)) == total, got
    leased = await store.list_notifications(limit=1000)
    assert {n.id: n.leased_by for n in leased} == {i: name for name, v in got.items() for i in v}
