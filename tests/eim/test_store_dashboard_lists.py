"""Migration 0007 and the lists the dashboard reads at scale, on both backends: the label table mirrors the labels
column (backfilled by the migration, kept through register / relabel / remove), label and state filters give the
rows a filter over every row gives (whichever index the walk starts from, paged with cursors, combined), and a
batch is read one page of items at a time with the counts of the whole batch (store and ``GET /v1/batches/{id}``).
"""

from __future__ import annotations

import time
import uuid

import pytest

from eim.model import Batch, BatchItem, Euicc, Operation, OpKind, OpStatus
from eim.store import fleet as fleet_mod
from eim.store import open_store
from eim.store.fleet import StateFilter
from eim.store.logic import Q
from rsp.pki import lab_eid
from tests.eim.test_api_fleet import api, lab  # noqa: F401 - fixtures

NOW = 2_000_000.0
DEFAULT = 3600.0
EIDS = [lab_eid(200 + i) for i in range(24)]


def contact_of(i: int) -> tuple[float | None, float | None]:
    """(last_contact, poll_interval_s) of the i-th eUICC: never seen, seen within 1 h, within 24 h, days ago,
    and some with their own interval (stale after 100 s or only after a week)."""
    return [
        (None, None),
        (NOW - 10, None),
        (NOW - 5000, None),
        (NOW - 5 * 86400, None),
        (NOW - 500, 100.0),
        (NOW - 5000, 7 * 86400.0),
    ][i % 6]


def labels_of(i: int) -> dict[str, str]:
    out = {"site": "berlin" if i % 3 == 0 else "paris"}
    if i % 8 == 5:
        out["rack"] = "r7"
    return out


async def add(store, i: int) -> None:
    contact, interval = contact_of(i)
    e = Euicc(EIDS[i], "eim.test", None, 0, created_at=NOW, last_contact=contact, labels=labels_of(i))
    assert await store.add_euicc(e, who="test")
    if interval is not None:
        await store.patch_euicc(EIDS[i], {"poll_interval_s": interval}, who="test", now=NOW)


def states(i: int, labels: dict[str, str]) -> set[str]:
    contact, interval = contact_of(i)
    if contact is None:
        return {"never_seen"}
    out = set()
    if contact >= NOW - 3600:
        out.add("seen_1h")
    if contact >= NOW - 86400:
        out.add("seen_24h")
    if contact + (interval or DEFAULT) < NOW:
        out.add("stale")
    return out


def expected(labels: list[tuple[str, str]], state: str | None, label_map: dict[str, dict[str, str]]) -> list[str]:
    return sorted(
        eid
        for i, eid in enumerate(EIDS)
        if eid in label_map
        and all(label_map[eid].get(k) == v for k, v in labels)
        and (state is None or state in states(i, label_map[eid]))
    )


async def walk(store, labels: list[tuple[str, str]], state: str | None, page: int) -> list[str]:
    """Every page of the filtered list, following the last EID as the cursor (as the API does)."""
    out: list[str] = []
    after = None
    sf = StateFilter(state, NOW, DEFAULT) if state else None
    while True:
        got = await store.find_euiccs(labels=labels, limit=page, after=after, state=sf)
        out += [e.eid for e in got]
        if len(got) < page:
            return out
        after = got[-1].eid


async def label_rows(store) -> set[tuple[str, str, str]]:
    def gen():
        rows = yield Q("SELECT eid, key, value FROM euicc_labels", (), "all")
        return {(r["eid"], r["key"], r["value"]) for r in rows}

    return await store._run(gen, write=False)


FILTERS = [
    ([], None),
    ([("site", "berlin")], None),
    ([("rack", "r7")], None),
    ([("rack", "r7"), ("site", "paris")], None),
    ([("site", "paris"), ("rack", "r7")], None),
    ([("site", "nowhere")], None),
    *[([], s) for s in fleet_mod.STATES],
    ([("site", "berlin")], "stale"),
    ([("rack", "r7")], "seen_24h"),
    ([("site", "paris")], "never_seen"),
]


@pytest.mark.parametrize("cap", [2, 5_000])
async def test_filtered_lists_match_a_filter_over_every_row(store, monkeypatch, cap):
    """``cap`` 2: every state set and label counts as large (the walk starts from the EID index or a label);
    5,000: every set is small (the walk starts from the state's contact index or the rarest label)."""
    monkeypatch.setattr(fleet_mod, "DRIVER_CAP", cap)
    for i in range(len(EIDS)):
        await add(store, i)
    label_map = {eid: labels_of(i) for i, eid in enumerate(EIDS)}
    for labels, state in FILTERS:
        want = expected(labels, state, label_map)
        for page in (1, 2, 5, 100):
            assert await walk(store, labels, state, page) == want, (labels, state, page)
    assert len(expected([("rack", "r7")], None, label_map)) == 3  # the filters do select something
    assert all(expected([], s, label_map) for s in fleet_mod.STATES)


async def test_label_table_follows_register_relabel_and_remove(store):
    for i in range(6):
        await add(store, i)
    want = {(EIDS[i], k, v) for i in range(6) for k, v in labels_of(i).items()}
    assert await label_rows(store) == want
    # relabel: a key changed, one added, one removed (merge patch)
    await store.patch_euicc(EIDS[5], {"labels": {"site": "berlin", "rack": None, "row": "3"}}, who="t", now=NOW)
    assert {r for r in await label_rows(store) if r[0] == EIDS[5]} == {
        (EIDS[5], "site", "berlin"),
        (EIDS[5], "row", "3"),
    }
    assert EIDS[5] in await walk(store, [("site", "berlin")], None, 2)
    assert EIDS[5] not in await walk(store, [("rack", "r7")], None, 2)
    assert await walk(store, [("row", "3")], None, 2) == [EIDS[5]]
    # a patch of the note alone leaves the labels as they are
    await store.patch_euicc(EIDS[5], {"note": "n"}, who="t", now=NOW)
    assert await walk(store, [("row", "3")], None, 2) == [EIDS[5]]
    # remove: its rows go with it
    removal = await store.delete_euicc(EIDS[0], who="t", now=NOW)
    assert removal.deleted
    assert not {r for r in await label_rows(store) if r[0] == EIDS[0]}
    assert EIDS[0] not in await walk(store, [("site", "berlin")], None, 2)
    assert await store.eids_by_labels([("site", "berlin")], limit=10) == [EIDS[3], EIDS[5]]


async def test_migration_0007_copies_the_labels_of_existing_euiccs(store_url):
    s = open_store(store_url)
    await s.open()
    try:
        for i in range(6):
            await add(s, i)

        def undo():  # back to schema 6 with the labels column only, as a store of the previous release
            yield Q("DROP TABLE euicc_labels", ())
            for name in ("operations_batch_status", "operations_batch_seq", "operations_kind_seq"):
                yield Q(f"DROP INDEX {name}", ())
            yield Q("DELETE FROM schema_version WHERE version = 7", ())

        await s._run(undo)
    finally:
        await s.close()
    s = open_store(store_url)
    await s.open()  # migration 0007 again
    try:
        assert await s.schema_version() >= 7
        assert await label_rows(s) == {(EIDS[i], k, v) for i in range(6) for k, v in labels_of(i).items()}
        assert await walk(s, [("rack", "r7")], None, 1) == [EIDS[5]]
    finally:
        await s.close()


async def make_batch(store, n: int) -> tuple[str, list[Operation]]:
    for i in range(n):
        await add(store, i)
    bid = str(uuid.uuid4())
    now = time.time()
    ops = [
        Operation(str(uuid.uuid4()), EIDS[i], OpKind.EUICC_DATA, {}, OpStatus.QUEUED, now, now, batch_id=bid)
        for i in range(n)
        if i != 2
    ]
    items = [
        BatchItem(i, EIDS[i], None if i == 2 else ops[i - (i > 2)].id, "refused" if i == 2 else None) for i in range(n)
    ]
    batch = Batch(bid, now, "test", OpKind.EUICC_DATA, {}, items=items)
    await store.add_batch(batch, ops, who="test")
    return bid, ops


async def test_a_batch_page_has_the_whole_batch_counts_and_one_page_of_items(store):
    bid, ops = await make_batch(store, 7)
    await store.cancel_operation(ops[0].id, who="t", now=time.time())
    b, n, counts, items = await store.batch_page(bid, limit=3)
    assert (b["id"], n, counts) == (bid, 7, {"queued": 5, "cancelled": 1, "refused": 1})
    assert [(r["idx"], r["eid"], r["status"]) for r in items] == [
        (0, EIDS[0], "cancelled"),
        (1, EIDS[1], "queued"),
        (2, EIDS[2], None),
    ]
    _, _, _, rest = await store.batch_page(bid, limit=3, after_idx=2)
    assert [r["idx"] for r in rest] == [3, 4, 5]
    # an eUICC removed with its open operation: its item counts as refused, as in the whole batch's view
    assert (await store.delete_euicc(EIDS[4], who="t", now=time.time(), force=True)).deleted
    _, n, counts, _ = await store.batch_page(bid, limit=3)
    assert (n, counts) == (7, {"queued": 4, "cancelled": 1, "refused": 2})
    assert await store.batch_page(str(uuid.uuid4()), limit=3) is None


async def test_rest_batch_pages_add_up_to_the_whole_batch(api, store):  # noqa: F811
    _, c = api
    bid, _ = await make_batch(store, 7)
    whole = (await c.get(f"/v1/batches/{bid}")).json()
    items, cursor, pages = [], None, 0
    while True:
        r = await c.get(f"/v1/batches/{bid}", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["summary"] == whole["summary"] and body["item_count"] == 7
        items += body["items"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert items == whole["items"] and pages == 3
    r = await c.get(f"/v1/batches/{bid}", params={"cursor": cursor or "x"})
    assert r.status_code == 400 and "cursor" in r.text
    r = await c.get(f"/v1/batches/{bid}", params={"limit": 3, "cursor": "bm90LWEtY3Vyc29y"})
    assert r.status_code == 400 and "cursor" in r.text


async def test_rest_state_filter_and_its_errors(api, store):  # noqa: F811
    _, c = api
    now = time.time()
    for i, contact in enumerate([None, now - 10, now - 2 * 86400]):
        e = Euicc(EIDS[i], "eim.test", None, 0, created_at=now, last_contact=contact, labels={"site": "x"})
        await store.add_euicc(e, who="t")
    got = {}
    for s in fleet_mod.STATES:
        r = await c.get("/v1/euiccs", params={"state": s, "label": "site=x"})
        assert r.status_code == 200, r.text
        got[s] = [e["eid"] for e in r.json()["items"]]
    assert got == {
        "never_seen": [EIDS[0]],
        "seen_1h": [EIDS[1]],
        "seen_24h": [EIDS[1]],
        "stale": [EIDS[2]],  # the API's default interval here is 3600 s
    }
    r = await c.get("/v1/euiccs", params={"state": "asleep"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "state"
