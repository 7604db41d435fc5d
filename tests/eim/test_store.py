"""The Store on both backends: registry, ordered claims, counters, guarded results, batches, relay sessions."""

from __future__ import annotations

import asyncio
import os

import pytest

from eim.model import Batch, BatchItem, Euicc, Operation, OpKind, OpStatus
from eim.store import Built, ClaimOutcome, ResultUpdate, StoreError, open_store
from eim.store.base import migrations
from eim.store.logic import PackageBuildError, new_id

EID = "89049032123451234512345678901235"
EID2 = "89049032123451234512345678901236"


def euicc(eid: str = EID, counter: int = 10) -> Euicc:
    return Euicc(eid=eid, eim_id="eim.test", association_token=1, counter_value=counter, created_at=1000.0)


def op(eid: str = EID, kind: OpKind = OpKind.PSMO, expires_at: float | None = None, **params) -> Operation:
    return Operation(
        id=new_id(),
        eid=eid,
        kind=kind,
        params=params or {"psmos": [{"getRAT": {}}]},
        status=OpStatus.QUEUED,
        created_at=1000.0,
        updated_at=1000.0,
        expires_at=expires_at,
    )


def signing_builder(calls: list | None = None):
    """A builder that consumes a counter value and makes a package naming it (like a signed BF51)."""

    def build(e: Euicc, o: Operation, next_counter: int) -> Built:
        if calls is not None:
            calls.append(o.id)
        txid = os.urandom(16)
        return Built(b"\xbf\x51" + next_counter.to_bytes(4, "big") + txid, txid, next_counter)

    return build


async def test_migrations_once_and_data_survives_reopen(store_url):
    s = open_store(store_url)
    await s.open()
    latest = migrations()[-1][0]
    assert latest >= 2 and await s.schema_version() == latest  # 0002: the notification outbox
    assert await s.add_euicc(euicc(), who="t") is True
    assert await s.add_euicc(euicc(counter=99), who="t") is False  # duplicate: nothing changed
    await s.put_download_session("tx1", {"eid": EID, "step": 2})
    await s.close()
    s2 = open_store(store_url)
    await s2.open()  # migrations already applied: no error, same version
    try:
        assert await s2.schema_version() == latest
        e = await s2.get_euicc(EID)
        assert e is not None and e.counter_value == 10 and e.eim_id == "eim.test"
        assert await s2.get_download_session("tx1") == {"eid": EID, "step": 2}
    finally:
        await s2.close()


async def test_registry_fields(store):
    await store.add_euicc(euicc(), who="alice")
    await store.add_euicc(euicc(EID2), who="alice")
    assert [e.eid for e in await store.list_euiccs()] == [EID, EID2]
    assert [e.eid for e in await store.list_euiccs(after=EID)] == [EID2]
    assert await store.update_euicc(
        EID, profiles=[{"iccid": "8901"}], ipa_capabilities={"ipaFeatures": ["indirect"]}, info_merge={"a": 1}
    )
    await store.set_euicc_certificates(EID, b"\x30\x01\x00", b"\x30\x01\x01")
    e = await store.get_euicc(EID)
    assert e.profiles == [{"iccid": "8901"}]
    assert e.ipa_capabilities == {"ipaFeatures": ["indirect"]}
    assert e.info == {"a": 1}
    assert (e.euicc_certificate, e.eum_certificate) == (b"\x30\x01\x00", b"\x30\x01\x01")
    assert await store.update_euicc("89000000000000000000000000000000", binding="http") is False
    with pytest.raises(StoreError):
        await store.update_euicc(EID, counter_value=1)  # counters move only with a signed package
    audit = await store.list_audit(eid=EID)
    assert [(a.action, a.who) for a in audit] == [("register", "alice")]


async def test_claim_in_order_counter_and_same_bytes_again(store):
    await store.add_euicc(euicc(counter=10), who="t")
    o1, o2 = await store.add_operations([op(), op()], who="t")
    assert o1.seq < o2.seq
    build = signing_builder()
    c = await store.claim_next(EID, 2000.0, build, binding="http")
    assert c.outcome is ClaimOutcome.PACKAGE and c.operation.id == o1.id and not c.rehanded
    assert c.operation.counter_value == 11 and c.euicc.counter_value == 11
    first = c.operation.package
    # The result never came: the head is handed out again, byte for byte, with no new counter value.
    c2 = await store.claim_next(EID, 2001.0, build, binding="coap")
    assert c2.rehanded and c2.operation.id == o1.id and c2.operation.package == first
    assert c2.operation.attempts == 2
    e = await store.get_euicc(EID)
    assert e.counter_value == 11 and e.binding == "coap" and e.last_contact == 2001.0
    # last contact is recorded to within 5 s (an idle poll is a read-only transaction), binding changes at once
    await store.claim_next(EID, 2003.0, build, binding="coap")
    assert (await store.get_euicc(EID)).last_contact == 2001.0
    await store.claim_next(EID, 2006.5, build, binding="coap")
    assert (await store.get_euicc(EID)).last_contact == 2006.5
    # Result arrives: done; next poll moves to the second operation with the next counter value.
    done = await store.record_result(
        ResultUpdate(
            o1.id,
            EID,
            OpStatus.DONE,
            "eim",
            2002.0,
            c.operation.eim_transaction_id,
            {"ok": 1},
            euicc_fields={"last_seq_number": 7},
        )
    )
    assert done.status is OpStatus.DONE
    c3 = await store.claim_next(EID, 2003.0, build)
    assert c3.operation.id == o2.id and c3.operation.counter_value == 12
    stored = await store.get_operation(o1.id)
    assert stored.status is OpStatus.DONE and stored.result == {"ok": 1} and stored.package == first
    assert (await store.get_euicc(EID)).last_seq_number == 7
    assert await store.find_operation_by_eim_transaction_id(c3.operation.eim_transaction_id) == c3.operation


async def test_claim_unknown_none_and_not_before(store):
    build = signing_builder()
    assert (await store.claim_next(EID, 1.0, build)).outcome is ClaimOutcome.UNKNOWN_EID
    await store.add_euicc(euicc(), who="t")
    assert (await store.claim_next(EID, 1.0, build)).outcome is ClaimOutcome.NONE
    later = op()
    later = Operation(**{**later.__dict__, "not_before": 5000.0})
    await store.add_operations([later], who="t")
    assert (await store.claim_next(EID, 1000.0, build)).outcome is ClaimOutcome.NONE
    assert (await store.claim_next(EID, 5000.0, build)).outcome is ClaimOutcome.PACKAGE


async def test_expired_and_unbuildable_heads_are_closed(store):
    await store.add_euicc(euicc(counter=3), who="t")
    old, bad, good = await store.add_operations([op(expires_at=1500.0), op(), op()], who="t")

    def build(e, o, n):
        if o.id == bad.id:
            raise PackageBuildError("no such PSMO")
        return signing_builder()(e, o, n)

    c = await store.claim_next(EID, 2000.0, build)
    assert c.operation.id == good.id and c.operation.counter_value == 4  # nothing consumed by the closed ones
    assert [(x.id, x.status) for x in c.closed] == [(old.id, OpStatus.EXPIRED), (bad.id, OpStatus.FAILED)]
    assert (await store.get_operation(bad.id)).error == "build: no such PSMO"
    # An operation whose window ends before it ran expires, whether queued or handed out without a result.
    (late,) = await store.add_operations([op(expires_at=3000.0)], who="t")
    assert await store.expire_operations(2999.0) == 0
    assert await store.expire_operations(3500.0) == 1
    assert (await store.get_operation(late.id)).status is OpStatus.EXPIRED
    assert (await store.get_operation(good.id)).status is OpStatus.IN_PROGRESS  # no window: stays


async def test_expire_sweep(store):
    await store.add_euicc(euicc(), who="t")
    a, b = await store.add_operations([op(expires_at=10.0), op(expires_at=99999.0)], who="t")
    assert await store.expire_operations(100.0) == 1
    assert (await store.get_operation(a.id)).status is OpStatus.EXPIRED
    assert (await store.get_operation(b.id)).status is OpStatus.QUEUED
    assert [x.action for x in await store.list_audit(operation_id=a.id)] == ["create", "expired"]
    counts = await store.count_operations_by_status()
    assert counts == {("psmo", "expired"): 1, ("psmo", "queued"): 1}


async def test_results_are_guarded(store):
    await store.add_euicc(euicc(), who="t")
    (o,) = await store.add_operations([op()], who="t")
    c = await store.claim_next(EID, 10.0, signing_builder())
    txid = c.operation.eim_transaction_id
    # wrong transaction id, wrong EID, unknown op: nothing changes
    assert await store.record_result(ResultUpdate(o.id, EID, OpStatus.DONE, "x", 11.0, b"\x00" * 16)) is None
    assert await store.record_result(ResultUpdate(o.id, EID2, OpStatus.DONE, "x", 11.0, txid)) is None
    assert await store.record_result(ResultUpdate("nope", EID, OpStatus.DONE, "x", 11.0, txid)) is None
    assert (await store.get_operation(o.id)).status is OpStatus.IN_PROGRESS
    r = await store.record_result(ResultUpdate(o.id, EID, OpStatus.FAILED, "x", 12.0, txid, {"code": 1}, 1))
    assert r.status is OpStatus.FAILED and r.result_code == 1
    # replay: nothing changes
    assert await store.record_result(ResultUpdate(o.id, EID, OpStatus.DONE, "x", 13.0, txid)) is None
    after = await store.get_operation(o.id)
    assert after.status is OpStatus.FAILED and after.updated_at == 12.0


async def test_cancel_and_late_result(store):
    await store.add_euicc(euicc(), who="t")
    queued, _handed = await store.add_operations([op(), op()], who="t")
    c = await store.claim_next(EID, 10.0, signing_builder())
    assert c.operation.id == queued.id
    cancelled = await store.cancel_operation(queued.id, who="bob", now=11.0)
    assert cancelled.status is OpStatus.CANCELLED
    assert (await store.cancel_operation(queued.id, who="bob", now=12.0)).status is OpStatus.CANCELLED
    assert await store.cancel_operation("missing", who="bob", now=12.0) is None
    # the eUICC had executed it: the genuine late result is recorded
    late = await store.record_result(
        ResultUpdate(queued.id, EID, OpStatus.DONE, "eim", 13.0, c.operation.eim_transaction_id)
    )
    assert late.status is OpStatus.DONE
    audit = await store.list_audit(operation_id=queued.id)
    assert [(a.action, a.who, a.outcome) for a in audit] == [
        ("create", "t", "queued"),
        ("hand_out", "eim", "in_progress"),
        ("cancelled", "bob", "cancelled"),
        ("result", "eim", "done"),
    ]
    assert audit[-1].detail == {"after": "cancelled"}
    # a final operation cannot be cancelled
    assert (await store.cancel_operation(queued.id, who="bob", now=14.0)).status is OpStatus.DONE


async def test_operations_need_a_registered_euicc(store):
    with pytest.raises(StoreError, match="not registered"):
        await store.add_operations([op()], who="t")
    assert await store.list_operations() == []


async def test_batches_with_per_item_results(store):
    await store.add_euicc(euicc(), who="t")
    await store.add_euicc(euicc(EID2), who="t")
    o1, o2 = op(EID), op(EID2)
    o3 = op("89049032123451234512345678901299")
    batch = Batch(
        id=new_id(),
        created_at=5.0,
        created_by="ops",
        kind=OpKind.PSMO,
        params={"psmos": []},
        items=[
            BatchItem(0, EID, o1.id),
            BatchItem(1, EID2, o2.id),
            BatchItem(2, o3.eid, o3.id),
            BatchItem(3, "bad", None, "invalid EID"),
        ],
    )
    o1 = Operation(**{**o1.__dict__, "batch_id": batch.id})
    o2 = Operation(**{**o2.__dict__, "batch_id": batch.id})
    o3 = Operation(**{**o3.__dict__, "batch_id": batch.id})
    saved = await store.add_batch(batch, [o1, o2, o3], who="ops")
    got = await store.get_batch(batch.id)
    assert got == saved
    assert [(i.eid, i.operation_id is not None, i.error) for i in got.items] == [
        (EID, True, None),
        (EID2, True, None),
        (o3.eid, False, f"eUICC {o3.eid} is not registered"),
        ("bad", False, "invalid EID"),
    ]
    assert {o.id for o in await store.list_operations(batch_id=batch.id)} == {o1.id, o2.id}
    assert await store.get_batch("nope") is None


async def test_download_sessions_and_smdp_links(store):
    await store.put_download_session("k", {"a": [1, 2], "b": "x"})
    await store.put_download_session("k", {"a": [3]})
    assert await store.get_download_session("k") == {"a": [3]}
    await store.delete_download_session("k")
    assert await store.get_download_session("k") is None
    await store.add_euicc(euicc(), who="t")
    a, b = await store.add_operations([op(kind=OpKind.DOWNLOAD), op(kind=OpKind.DOWNLOAD)], who="t")
    assert await store.link_smdp_transaction(a.id, b"\x01\x02") is True
    assert await store.link_smdp_transaction(a.id, b"\x01\x02") is True
    assert await store.link_smdp_transaction(b.id, b"\x01\x02") is False
    assert (await store.find_operation_by_smdp_transaction_id(b"\x01\x02")).id == a.id
    assert await store.find_operation_by_smdp_transaction_id(b"\x09") is None


async def test_concurrent_claims_never_reuse_a_counter(store_url):
    """Several store instances (PostgreSQL: pools; SQLite: connections to one file) claim for one fleet."""
    stores = [open_store(store_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        eids = [f"8904903212345123451234567890{i:04d}" for i in range(5)]
        for e in eids:
            await stores[0].add_euicc(euicc(e, counter=100), who="t")
            await stores[0].add_operations([op(e) for _ in range(4)], who="t")
        handed: list[tuple[str, str, int, bytes]] = []

        async def worker(s):
            build = signing_builder()
            for _ in range(40):
                for e in eids:
                    c = await s.claim_next(e, 50.0, build)
                    if c.outcome is ClaimOutcome.PACKAGE:
                        o = c.operation
                        handed.append((e, o.id, o.counter_value, o.package))
                        await s.record_result(ResultUpdate(o.id, e, OpStatus.DONE, "t", 51.0, o.eim_transaction_id))
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(s) for s in stores))
        ops = await stores[0].list_operations(limit=1000)
        assert all(o.status is OpStatus.DONE for o in ops) and len(ops) == 20
        for e in eids:
            mine = [h for h in handed if h[0] == e]
            # every counter value belongs to exactly one package content
            by_counter: dict[int, set[bytes]] = {}
            for _, _, counter, pkg in mine:
                by_counter.setdefault(counter, set()).add(pkg)
            assert all(len(p) == 1 for p in by_counter.values())
            assert sorted(by_counter) == [101, 102, 103, 104]
            # operations ran in creation order
            order = [h[1] for h in mine]
            created = [o.id for o in ops if o.eid == e]
            assert list(dict.fromkeys(order)) == created
    finally:
        for s in stores:
            await s.close()


async def test_eids_with_work_to_push(store):
    await store.add_euicc(euicc(), who="t")
    await store.add_euicc(euicc(EID2), who="t")
    await store.update_euicc(EID, binding="mqtt")
    await store.update_euicc(EID2, binding="http")
    await store.add_operations([op(EID), op(EID2)], who="t")
    assert await store.eids_with_queued_work(binding="mqtt", now=2000.0) == [EID]
    await store.claim_next(EID, 2000.0, signing_builder())  # handed out at 2000, no result yet
    assert await store.eids_with_queued_work(binding="mqtt", now=2100.0) == []
    assert await store.eids_with_queued_work(binding="mqtt", now=2400.0, stale_before=1999.0) == []
    assert await store.eids_with_queued_work(binding="mqtt", now=2400.0, stale_before=2100.0) == [EID]
    assert await store.eids_with_queued_work(binding="http", now=2400.0) == [EID2]


async def test_migration_3_adds_sgp32_version_to_a_version_2_store(store_url, monkeypatch):
    """A store written before migration 0003 (schema version 2, with an eUICC in it) opens, migrates, keeps its
    data, and the new ``sgp32_version`` field reads NULL and can be set (SQLite and PostgreSQL)."""
    import eim.store.postgres as pg_backend
    import eim.store.sqlite as sqlite_backend
    from eim.store.logic import Logic

    older = [m for m in migrations() if m[0] <= 2]
    with monkeypatch.context() as m:
        m.setattr(sqlite_backend, "migrations", lambda: older)
        m.setattr(pg_backend, "migrations", lambda: older)
        m.setattr(Logic, "_tally", lambda self, rows: iter(()))  # the code of that time kept no fleet tallies
        s = open_store(store_url)
        await s.open()
        assert await s.schema_version() == 2
        await s.add_euicc(euicc(), who="t")
        await s.close()
    s2 = open_store(store_url)
    await s2.open()
    try:
        assert await s2.schema_version() == migrations()[-1][0] >= 3
        e = await s2.get_euicc(EID)
        assert e is not None and e.counter_value == 10 and e.sgp32_version is None
        assert await s2.update_euicc(EID, sgp32_version="1.0") is True
        assert (await s2.get_euicc(EID)).sgp32_version == "1.0"
        assert (await s2.list_euiccs())[0].sgp32_version == "1.0"
        c = await s2.fleet_counts()  # migration 0005 counted the eUICC already there
        assert (c.registered, c.by_sgp32_version) == (1, {"1.2": 0, "1.0": 1})
    finally:
        await s2.close()
