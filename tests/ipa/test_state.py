"""The IPA state file: atomic CBOR, strict decoding, nothing but StateError escapes the decoder; written off the
event loop, in order, durable when ``commit`` returns."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipa.state import IpaState, PendingResult, StateError, StateStore, decode_state, encode_state


async def test_round_trip_every_field(tmp_path):
    store = StateStore(tmp_path / "s.cbor")
    await store.aload()
    r = await store.add_result(
        "provide_eim_package_result",
        b"\xbf\x50\x00",
        eim_id="eim",
        seq_numbers=[0, 7],
        rollback={"allowed": True, "done": False},
    )
    store.state.remove_seqs = [3]
    store.state.failures = 2
    store.state.state_change = 5
    store.state.association_tokens = {"eim": 1}
    await store.set_inflight("euicc_package", package=b"\xbf\x51\x00", before=[0, 1], counter=9)
    again = StateStore(tmp_path / "s.cbor").load()
    assert again.results[0].id == r.id and again.results[0].der == b"\xbf\x50\x00"
    assert again.results[0].seq_numbers == [0, 7] and again.results[0].rollback == {"allowed": True, "done": False}
    assert again.remove_seqs == [3] and again.failures == 2 and again.state_change == 5
    assert again.inflight == {"procedure": "euicc_package", "package": b"\xbf\x51\x00", "before": [0, 1], "counter": 9}
    assert again.association_tokens == {"eim": 1}


async def test_finished_downloads_survive_a_restart_and_bad_ones_are_refused(tmp_path):
    store = StateStore(tmp_path / "s.cbor")
    await store.aload()
    store.state.finished_downloads = [b"\x01" * 16, b"\x44"]
    await store.commit()
    assert StateStore(tmp_path / "s.cbor").load().finished_downloads == [b"\x01" * 16, b"\x44"]
    for bad in (["x"], [b""], [b"\x00" * 17], "ab"):
        obj = IpaState().to_obj()
        obj["downloads"] = bad
        with pytest.raises(StateError, match="downloads"):
            decode_state(cbor2.dumps(obj))


async def test_result_delivered_records_acks_in_the_same_write(tmp_path):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    r = await store.add_result("provide_eim_package_result", b"x", seq_numbers=[4])
    await store.result_delivered(r.id, [4, 0])
    on_disk = decode_state(path.read_bytes())
    assert on_disk.results == [] and on_disk.remove_seqs == [4, 0]


async def test_write_is_atomic_no_temp_left_and_mode_0600(tmp_path):
    path = tmp_path / "dir" / "s.cbor"
    store = StateStore(path)
    for i in range(5):
        await store.add_result("provide_eim_package_result", bytes([i]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.cbor"]
    assert (path.stat().st_mode & 0o777) == 0o600
    assert len(decode_state(path.read_bytes()).results) == 5


def test_damaged_file_is_kept_aside_and_state_starts_empty(tmp_path):
    path = tmp_path / "s.cbor"
    path.write_bytes(b"\xa1\x61v\x63bad")
    state = StateStore(path).load()
    assert state == IpaState()
    assert (tmp_path / "s.cbor.corrupt").read_bytes() == b"\xa1\x61v\x63bad"
    assert not path.exists()


def test_unsupported_version_refused():
    with pytest.raises(StateError, match="version"):
        decode_state(cbor2.dumps({"v": 99}))


def test_bad_types_name_the_field():
    good = IpaState(results=[PendingResult("a", "k", b"d")]).to_obj()
    good["results"][0]["seq"] = ["x"]
    with pytest.raises(StateError, match="seq"):
        decode_state(cbor2.dumps(good))
    good = IpaState().to_obj()
    good["backoff"] = {"failures": -1}
    with pytest.raises(StateError, match="failures"):
        decode_state(cbor2.dumps(good))


@given(st.binary(max_size=300))
def test_decoder_never_raises_anything_but_state_error_on_bytes(data):
    try:
        decode_state(data)
    except StateError:
        pass


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "results",
                "remove_seqs",
                "inflight",
                "backoff",
                "last_contact",
                "state_change",
                "tokens",
                "fallback",
                "downloads",
                "x",
            ]
        ),
        cbor_values,
        max_size=9,
    )
)
def test_decoder_on_structured_garbage(obj):
    obj.setdefault("v", 1)
    try:
        state = decode_state(cbor2.dumps(obj))
    except StateError:
        return
    assert decode_state(encode_state(state)) == state


async def test_fsync_failure_leaves_the_old_file_and_the_next_commit_writes(tmp_path, monkeypatch):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    await store.add_result("provide_eim_package_result", b"old")
    before = path.read_bytes()
    real_fsync = os.fsync

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        await store.add_result("provide_eim_package_result", b"new")  # the error reaches the procedure
    assert path.read_bytes() == before
    monkeypatch.setattr(os, "fsync", real_fsync)
    await store.commit()
    assert [r.der for r in decode_state(path.read_bytes()).results] == [b"old", b"new"]


def test_save_outside_an_event_loop_writes_in_the_caller(tmp_path):
    """The CLI-style path: no loop, a plain blocking write."""
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    store.state.failures = 3
    store.save()
    assert decode_state(path.read_bytes()).failures == 3
    with pytest.raises(OSError):
        StateStore(tmp_path / "s.cbor" / "not-a-dir").save()


class SlowDisk:
    """``os.fsync`` that waits until ``release()`` (a disk busy for as long as the test wants), recording which
    states were renamed into place (``failures`` of each, in order)."""

    def __init__(self, monkeypatch, path) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.renamed: list[int] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.entered.set()
            assert self.gate.wait(30), "the test never released the disk"
            real_fsync(fd)

        def replace(src, dst):
            if str(dst) == str(path):
                self.renamed.append(decode_state(open(src, "rb").read()).failures)
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def release(self) -> None:
        self.gate.set()


async def test_commit_leaves_the_loop_running_and_returns_once_on_disk(tmp_path, monkeypatch):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    await store.commit()
    disk = SlowDisk(monkeypatch, path)
    store.state.failures = 7
    commit = asyncio.create_task(store.commit())
    await asyncio.to_thread(disk.entered.wait, 30)  # the writer thread is inside fsync, stuck
    ticks = 0
    for _ in range(20):  # meanwhile the loop keeps running other tasks
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 20 and not commit.done()  # not durable yet, so commit has not returned
    assert decode_state(path.read_bytes()).failures == 0
    disk.release()
    await commit
    assert decode_state(path.read_bytes()).failures == 7  # durable when commit returned
    await store.aclose()


async def test_writes_stay_in_order_and_queued_states_are_written_once(tmp_path, monkeypatch):
    """While the disk is busy with state 1, states 2..5 are committed by concurrent tasks: afterwards the file holds
    5, the file only ever went forwards (1, then 5: the queued snapshots coalesce into the newest), and every
    commit returned after its state (or a later one) was on disk."""
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    disk = SlowDisk(monkeypatch, path)

    async def change(n: int) -> int:
        store.state.failures = n
        await store.commit()
        return decode_state(path.read_bytes()).failures

    first = asyncio.create_task(change(1))
    await asyncio.to_thread(disk.entered.wait, 30)
    later = [asyncio.create_task(change(n)) for n in range(2, 6)]
    for _ in range(50):  # each task takes its snapshot at its first step, while state 1 is still being written
        await asyncio.sleep(0)
    assert store.writes == 5 and not any(t.done() for t in [first, *later])
    disk.release()
    seen = await asyncio.gather(first, *later)
    assert all(on_disk >= n for on_disk, n in zip(seen, range(1, 6), strict=True))
    assert decode_state(path.read_bytes()).failures == 5
    assert disk.renamed == [1, 5] and store.files_written == 2
    await store.aclose()


async def test_cancelled_commit_still_reaches_the_disk(tmp_path, monkeypatch):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    disk = SlowDisk(monkeypatch, path)
    store.state.results.append(PendingResult("r1", "provide_eim_package_result", b"result"))  # as add_result
    commit = asyncio.create_task(store.commit())
    await asyncio.to_thread(disk.entered.wait, 30)
    commit.cancel()  # the caller goes away (a cancelled task), the write must not
    with pytest.raises(asyncio.CancelledError):
        await commit
    disk.release()
    await store.aclose()  # waits for the writes in progress
    assert [x.der for x in decode_state(path.read_bytes()).results] == [b"result"]


async def test_blocking_save_on_a_running_loop_is_reported_and_still_written(tmp_path, caplog):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    store.state.failures = 2
    with caplog.at_level(logging.ERROR, logger="ipa.state"):
        store.save()
    assert decode_state(path.read_bytes()).failures == 2  # never dropped
    [record] = [r for r in caplog.records if r.name == "ipa.state"]
    assert "blocking save() on the event loop" in record.getMessage() and "test_state.py" in record.getMessage()
    caplog.clear()  # seen: the suite's guard (tests/ipa/conftest.py) fails any other test that does this


async def test_store_without_a_file_keeps_state_in_memory():
    store = StateStore(None)
    await store.add_result("provide_eim_package_result", b"x")
    store.save()
    assert store.writes == 2 and store.files_written == 0
