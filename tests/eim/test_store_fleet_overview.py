"""Migration 0005 and the rest of the fleet overview on both backends (SQLite and a real PostgreSQL): eUICCs by
SGP.32 version and by the SM-DP+ of their enabled profile, the failure rate, and the hourly series of operations and
polls - rows in through the store, counts out, and still right after the rows change (version change, profile change,
a removed eUICC). Hypothesis feeds the notification metadata and profile-list parsers garbage."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from eim.metrics import bounded_smdps
from eim.model import Euicc, Operation, OpKind, OpStatus
from eim.packages import notification as nv
from eim.store import Built, ResultUpdate
from eim.store.enabled_profile import enabled_from_notification, enabled_from_profiles, smdp_key
from eim.store.logic import new_id
from rsp import tlv
from rsp.pki import lab_eid
from tests.eim.test_store_fleet import index_names

EIDS = [lab_eid(120 + i) for i in range(5)]
ICCID_A, ICCID_B = "89000000000000000011", "89000000000000000022"
NOW = 1_800_000_000.0  # a whole hour: NOW // 3600 * 3600 == NOW
assert NOW % 3600 == 0


async def add(store, eid: str, **kw) -> None:
    e = Euicc(eid=eid, eim_id="eim.test", association_token=None, counter_value=0, created_at=NOW - 86400 * 3, **kw)
    assert await store.add_euicc(e, who="test")


def op(eid: str, created_at: float) -> Operation:
    return Operation(new_id(), eid, OpKind.EUICC_DATA, {}, OpStatus.QUEUED, created_at, created_at)


def build(e: Euicc, o: Operation, next_counter: int) -> Built:
    txid = os.urandom(16)
    return Built(b"\xbf\x51" + next_counter.to_bytes(4, "big") + txid, txid, next_counter)


async def counts(store, now: float = NOW):
    return await store.fleet_counts(now=now, default_interval_s=86400.0)


async def test_migration_0005_indexes_and_columns(store):
    assert await store.schema_version() >= 5
    assert {"operations_created", "operations_ended"} <= (await index_names(store))
    await add(store, EIDS[0])
    e = await store.get_euicc(EIDS[0])
    assert (e.enabled_iccid, e.enabled_smdp, e.sgp32_version) == (None, None, None)


async def test_contact_counts_agree_with_a_count_by_hand_for_any_default_interval(store):
    """seen / stale are computed with as few index walks as possible (stale from registered minus the recently
    seen): the same numbers as counting each eUICC, for the intervals with a shortcut (1 h, 24 h) and others."""
    ages = [None, 10, 3000, 4000, 7000, 8000, 50_000, 90_000, 200_000, None]
    own = [None, None, None, 600.0, None, 10_000.0, None, 100_000.0, None, 60.0]
    eids = [lab_eid(170 + i) for i in range(len(ages))]
    for eid, age, interval in zip(eids, ages, own, strict=True):
        await add(store, eid, last_contact=None if age is None else NOW - age)
        if interval is not None:
            await store.patch_euicc(eid, {"poll_interval_s": interval}, who="t")
    for default in (3600.0, 7200.0, 86400.0, 150_000.0):
        c = await store.fleet_counts(now=NOW, default_interval_s=default)
        seen = [a for a in ages if a is not None]
        stale = sum(
            1 for a, i in zip(ages, own, strict=True) if a is not None and a > (i if i is not None else default)
        )
        assert (c.registered, c.never_seen) == (10, 2)
        assert (c.seen_1h, c.seen_24h) == (sum(a <= 3600 for a in seen), sum(a <= 86400 for a in seen))
        assert c.stale == stale, default


async def test_counts_by_sgp32_version_follow_changes_and_removal(store):
    for eid in EIDS[:4]:
        await add(store, eid)
    assert (await counts(store)).by_sgp32_version == {"1.2": 4}
    await store.update_euicc(EIDS[0], sgp32_version="1.0")
    await store.update_euicc(EIDS[1], sgp32_version="1.0")
    assert (await counts(store)).by_sgp32_version == {"1.2": 2, "1.0": 2}
    await store.update_euicc(EIDS[1], sgp32_version=None)  # back to the default
    assert (await counts(store)).by_sgp32_version == {"1.2": 3, "1.0": 1}
    removal = await store.delete_euicc(EIDS[0], who="t")
    assert removal.deleted
    c = await counts(store)
    assert c.by_sgp32_version == {"1.2": 3} and c.registered == 3


async def test_counts_by_enabled_smdp_from_profile_lists_and_notifications(store):
    for eid in EIDS[:4]:
        await add(store, eid)
    listed = [
        {"iccid": ICCID_A, "state": "enabled", "smdpAddress": "SMDP.Example.com "},
        {"iccid": ICCID_B, "state": "disabled"},
    ]
    await store.update_euicc(EIDS[0], profiles=listed)
    await store.update_euicc(EIDS[1], profiles=listed)
    await store.update_euicc(EIDS[2], profiles=[{"iccid": ICCID_B, "state": "enabled"}])  # no address listed
    c = await counts(store)
    assert c.by_enabled_smdp == {"smdp.example.com": 2, "unknown": 2}
    e2 = await store.get_euicc(EIDS[2])
    assert (e2.enabled_iccid, e2.enabled_smdp) == (ICCID_B, None)

    # a verified enable notification names the SM-DP+ of the profile the list did not
    assert await store.note_profile_event(EIDS[2], "enable", ICCID_B, "rsp.operator-b.example")
    assert (await counts(store)).by_enabled_smdp == {"smdp.example.com": 2, "rsp.operator-b.example": 1, "unknown": 1}
    # the same list again does not forget it (same enabled ICCID)
    await store.update_euicc(EIDS[2], profiles=[{"iccid": ICCID_B, "state": "enabled"}])
    assert (await store.get_euicc(EIDS[2])).enabled_smdp == "rsp.operator-b.example"
    # a profile change: EIDS[1] enables B (its SM-DP+ from the notification), a late disable of A changes nothing
    assert await store.note_profile_event(EIDS[1], "enable", ICCID_B, "rsp.operator-b.example")
    assert not await store.note_profile_event(EIDS[1], "disable", ICCID_A, "smdp.example.com")
    assert (await counts(store)).by_enabled_smdp == {"smdp.example.com": 1, "rsp.operator-b.example": 2, "unknown": 1}
    # disable of the enabled one, and a list with nothing enabled: none
    assert await store.note_profile_event(EIDS[1], "disable", ICCID_B, "rsp.operator-b.example")
    await store.update_euicc(EIDS[0], profiles=[{"iccid": ICCID_A, "state": "disabled"}])
    assert (await counts(store)).by_enabled_smdp == {"rsp.operator-b.example": 1, "unknown": 3}
    assert (await store.get_euicc(EIDS[0])).enabled_iccid is None
    # removal takes its count with it; an unknown eUICC's notification changes nothing
    assert (await store.delete_euicc(EIDS[2], who="t")).deleted
    assert (await counts(store)).by_enabled_smdp == {"unknown": 3}
    assert not await store.note_profile_event(EIDS[4], "enable", ICCID_A, "x.example")


async def _ended(store, eid: str, at: float, status: OpStatus) -> None:
    """One operation created at ``at`` that ends at ``at`` + 60 with ``status`` (through the store's own paths)."""
    [o] = await store.add_operations([op(eid, at)], who="t")
    if status is OpStatus.CANCELLED:
        await store.cancel_operation(o.id, who="t", now=at + 60)
        return
    claim = await store.claim_next(eid, at + 30, build)
    assert claim.operation is not None and claim.operation.id == o.id
    update = ResultUpdate(operation_id=o.id, eid=eid, status=status, who="ipa", now=at + 60, error="x")
    assert await store.record_result(update) is not None


async def test_failure_rate_and_hourly_operations(store):
    await add(store, EIDS[0])
    await add(store, EIDS[1])
    await _ended(store, EIDS[0], NOW - 2 * 3600 + 10, OpStatus.DONE)  # bucket -3 (NOW is the next hour's start)
    await _ended(store, EIDS[0], NOW - 2 * 3600 + 100, OpStatus.FAILED)
    await _ended(store, EIDS[0], NOW - 600, OpStatus.DONE)  # bucket -1
    await _ended(store, EIDS[1], NOW - 500, OpStatus.CANCELLED)
    await _ended(store, EIDS[1], NOW - 30 * 3600, OpStatus.FAILED)  # older than 24 h
    [late] = await store.add_operations([op(EIDS[1], NOW - 300)], who="t")  # still queued
    c = await counts(store, NOW + 1)
    assert c.ended_24h == {"done": 2, "failed": 1, "cancelled": 1}
    assert c.failure_rate_24h == 1 / 3
    assert c.failure_rate_all == 2 / 4  # the old failure too; cancelled never counts
    assert len(c.hourly) == 24
    assert c.hourly[-1]["hour"] == NOW and c.hourly[0]["hour"] == NOW - 23 * 3600
    by_hour = {h["hour"]: h for h in c.hourly}
    assert by_hour[NOW - 2 * 3600] == {"hour": NOW - 2 * 3600, "created": 2, "ended": 2, "failed": 1, "polls": 0}
    assert by_hour[NOW - 3600]["created"] == 3 and by_hour[NOW - 3600]["ended"] == 2  # incl. the queued one
    assert sum(h["created"] for h in c.hourly) == 5 and sum(h["ended"] for h in c.hourly) == 4
    # an expiry ends an operation too, and counts as a failure
    [exp] = await store.add_operations(
        [Operation(new_id(), EIDS[1], OpKind.EUICC_DATA, {}, OpStatus.QUEUED, NOW + 5, NOW + 5, expires_at=NOW + 10)],
        who="t",
    )
    assert await store.expire_operations(NOW + 20) == 1
    c = await counts(store, NOW + 30)
    assert c.ended_24h["expired"] == 1 and c.failure_rate_24h == 2 / 4
    assert c.hourly[-1] == {"hour": NOW, "created": 1, "ended": 1, "failed": 1, "polls": 0}
    assert late.id != exp.id


async def test_polls_per_hour_are_counted_and_survive_a_reopen(store_url):
    from eim.store import open_store

    s = open_store(store_url)
    await s.open()
    try:
        await add(s, EIDS[0])
        for i in range(5):
            await s.claim_next(EIDS[0], NOW - 3600 + i * 10, build, binding="http")  # 5 polls in the last hour
        await s.claim_next(EIDS[0], NOW + 1, build, binding="http")
        await s.claim_next(EIDS[3], NOW + 2, build, binding="http")  # not registered: no poll of the fleet
        await s.claim_next(EIDS[0], NOW + 3, build)  # no binding: not a poll (the eIM's own look)
    finally:
        await s.close()  # writes the tally
    s = open_store(store_url)
    await s.open()
    try:
        c = await counts(s, NOW + 5)
        assert [h["polls"] for h in c.hourly[-2:]] == [5, 1] and sum(h["polls"] for h in c.hourly) == 6
        for i in range(3):
            await s.claim_next(EIDS[0], NOW + 100 + i, build, binding="coap")
        await s.flush_poll_tally()
        assert (await counts(s, NOW + 200)).hourly[-1]["polls"] == 4
    finally:
        await s.close()


# ------------------------------------------------------------------------------------------------ the tallies
POOL = [lab_eid(150 + i) for i in range(4)]
BINDINGS = st.sampled_from([None, "http", "mqtt", "coap"])
STEPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), BINDINGS),
    st.tuples(st.just("delete"), st.integers(0, 3)),
    st.tuples(st.just("update"), st.integers(0, 3), BINDINGS, st.sampled_from([None, "1.0", "1.2"])),
    st.tuples(
        st.just("profiles"),
        st.integers(0, 3),
        st.sampled_from(["enabled", "disabled"]),
        st.sampled_from([ICCID_A, ICCID_B]),
        st.sampled_from([None, "a.example", "B.example"]),
    ),
    st.tuples(
        st.just("event"),
        st.integers(0, 3),
        st.sampled_from(nv.EVENTS),
        st.sampled_from([None, ICCID_A, ICCID_B]),
        st.sampled_from(["a.example", "c.example", " "]),
    ),
    st.tuples(st.just("poll"), st.integers(0, 3), st.sampled_from(["http", "mqtt", "coap"])),
    st.tuples(st.just("compact")),
)


async def _play(url: str, program: list[tuple]) -> None:
    from eim.store import open_store
    from eim.store.logic import Q

    s = open_store(url)
    await s.open()
    try:
        for step in program:
            kind, eid = step[0], POOL[step[1]] if len(step) > 1 else None
            if kind == "add":  # False when already registered: nothing changes
                e = Euicc(eid=eid, eim_id="eim.test", association_token=None, counter_value=0, binding=step[2])
                await s.add_euicc(e, who="t")
            elif kind == "delete":
                await s.delete_euicc(eid, who="t", force=True)
            elif kind == "update":
                await s.update_euicc(eid, binding=step[2], sgp32_version=step[3])
            elif kind == "profiles":
                p = {"iccid": step[3], "state": step[2]} | ({"smdpAddress": step[4]} if step[4] else {})
                await s.update_euicc(eid, profiles=[p])
            elif kind == "event":
                await s.note_profile_event(eid, step[2], step[3], step[4])
            elif kind == "poll":
                await s.claim_next(eid, NOW, build, binding=step[2])
            else:
                await s._run(s.fleet.compact_tallies)
        c = await counts(s)

        def truth(col: str, null: str):
            def gen():
                rows = yield Q(f"SELECT {col} AS v, COUNT(*) AS n FROM euiccs GROUP BY {col}", (), "all")
                out: dict[str, int] = {}
                for r in rows:  # NULL and a stored "1.2" are both counted as "1.2"
                    key = null if r["v"] is None else r["v"]
                    out[key] = out.get(key, 0) + int(r["n"])
                return out

            return gen

        assert c.by_binding == await s._run(truth("binding", "none"), write=False)
        versions = await s._run(truth("sgp32_version", "1.2"), write=False)
        assert c.by_sgp32_version == {"1.2": 0} | versions
        smdps = await s._run(truth("enabled_smdp", "unknown"), write=False)
        assert c.by_enabled_smdp == smdps and c.registered == sum(smdps.values())
    finally:
        await s.close()


def test_the_tallies_match_the_registry_after_any_sequence_of_changes(store_url):
    """Registrations, removals, new bindings in claims, learned versions and enabled profiles, compactions in any
    order: the maintained counts are always the registry's GROUP BY (both backends)."""
    import asyncio

    from hypothesis import HealthCheck

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(program=st.lists(STEPS, min_size=1, max_size=12))
    def check(program):
        asyncio.run(_play(store_url, program))

    check()


async def test_recount_rebuilds_the_tallies_after_rows_written_around_the_store(store):
    from eim.store.logic import Q

    for eid in EIDS[:3]:
        await add(store, eid, binding="http")

    def around():
        yield Q("UPDATE euiccs SET binding = 'mqtt', sgp32_version = '1.0' WHERE eid = ?", (EIDS[0],))

    await store._run(around)  # a bulk load or a hand edit: the tallies do not see it
    assert (await counts(store)).by_binding == {"http": 3}
    await store.recount_fleet_tallies()
    c = await counts(store)
    assert c.by_binding == {"http": 2, "mqtt": 1} and c.by_sgp32_version == {"1.2": 2, "1.0": 1}


# ------------------------------------------------------------------------------------------------ through ESipa
async def test_verified_notifications_set_the_enabled_smdp_and_forged_ones_do_not(store, tmp_path_factory):
    """HandleNotification (ESipa BF3D) with the software eUICC's signed enable / disable notifications moves the
    eUICC's enabled SM-DP+; a forged enable (random signature) is refused and changes nothing."""
    import pytest

    from eim.interfaces import EsipaRejected
    from rsp.pki import create_lab_pki
    from tests.eim.helpers import make_env
    from tests.eim.test_dispatcher_flows import ready_card
    from tests.eim.test_notification_forgery import forged, handle
    from tests.smdpp.sim import SimEuicc

    eid = EIDS[4]
    lab = create_lab_pki(tmp_path_factory.mktemp("overview-pki"), curves=("nist",), eids=(eid,))
    env = make_env(store, lab)
    card = await ready_card(env, lab, eid)
    sim = SimEuicc(lab, "nist", eid=card.eid, seq=40)
    assert await env.handle(handle(sim.other_notification(1, ICCID_A, "SMDP.Example.com"))) is None  # enable
    e = await store.get_euicc(eid)
    assert (e.enabled_iccid, e.enabled_smdp) == (ICCID_A, "smdp.example.com")
    with pytest.raises(EsipaRejected):
        await env.handle(handle(forged(lab, card.eid, "evil.example")))
    assert (await store.get_euicc(eid)).enabled_smdp == "smdp.example.com"
    assert (await counts(store)).by_enabled_smdp == {"smdp.example.com": 1}
    assert await env.handle(handle(sim.other_notification(2, ICCID_A, "smdp.example.com"))) is None  # disable
    e = await store.get_euicc(eid)
    assert (e.enabled_iccid, e.enabled_smdp) == (None, None)
    assert (await counts(store)).by_enabled_smdp == {"unknown": 1}


# ------------------------------------------------------------------------------------------------ pure parts
def _metadata(op_bits: bytes | None, iccid: bytes | None) -> bytes:
    body = tlv.encode(0x80, b"\x05")
    if op_bits is not None:
        body += tlv.encode(0x81, op_bits)
    body += tlv.encode(0x0C, b"smdp.example.com")
    if iccid is not None:
        body += tlv.encode(0x5A, iccid)
    return tlv.encode(0xBF2F, body)


def _other(meta: bytes) -> bytes:
    return tlv.encode(0x30, meta + tlv.encode(0x5F37, b"\x00" * 64) + tlv.encode(0x30, b"") + tlv.encode(0x30, b""))


def test_notification_event_and_iccid_are_read_from_the_metadata():
    iccid = bytes.fromhex("98000000000000000011")
    parts = nv.parse(_other(_metadata(b"\x06\x40", iccid)))  # notificationEnable
    assert (parts.event, parts.iccid) == ("enable", "89000000000000000011")
    assert nv.parse(_other(_metadata(b"\x05\x20", None))).event == "disable"
    assert nv.parse(_other(_metadata(b"\x06\x60", None))).event is None  # two bits: not one event
    assert nv.parse(_other(_metadata(None, None))).event is None


@settings(max_examples=200, deadline=None)
@given(bits=st.one_of(st.none(), st.binary(max_size=4)), iccid=st.one_of(st.none(), st.binary(max_size=12)))
def test_garbage_event_or_iccid_never_breaks_the_parse(bits, iccid):
    parts = nv.parse(_other(_metadata(bits, iccid)))  # the rest of the metadata is fine: it parses
    assert parts.event in (None, *nv.EVENTS)
    assert parts.iccid is None or (iccid is not None and len(iccid) == 10)


profiles_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
profile_dicts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "iccid": st.one_of(st.text(max_size=22), st.integers()),
            "state": st.sampled_from(["enabled", "disabled", 7]),
            "smdpAddress": st.one_of(st.text(max_size=300), st.integers()),
        },
    )
    | profiles_json,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    current=st.one_of(st.none(), st.just(ICCID_A)),
    smdp=st.one_of(st.none(), st.just("a.example")),
    profiles=st.one_of(st.none(), profile_dicts),
    event=st.one_of(st.none(), st.sampled_from(nv.EVENTS), st.text(max_size=5)),
    address=st.one_of(st.none(), st.text(max_size=300)),
)
def test_enabled_profile_rules_take_any_input(current, smdp, profiles, event, address):
    for out in (
        enabled_from_profiles(current, smdp, profiles),
        enabled_from_notification(current, event, ICCID_B, address),
    ):
        assert set(out) <= {"enabled_iccid", "enabled_smdp"}
        assert all(v is None or isinstance(v, str) for v in out.values())
        s = out.get("enabled_smdp")
        assert s is None or (s == s.strip().lower() and 0 < len(s) <= 255)
    assert smdp_key(address) is None or len(smdp_key(address)) <= 255


def test_the_smdp_gauge_keeps_its_label_set_bounded():
    many = {f"smdp{i:02d}.example": 100 - i for i in range(30)} | {"unknown": 7}
    out = bounded_smdps(many, top=10)
    assert len(out) == 12 and out["other"] == sum(100 - i for i in range(10, 30)) and out["unknown"] == 7
    assert sum(out.values()) == sum(many.values())
    assert bounded_smdps({"a": 1}) == {"a": 1}
