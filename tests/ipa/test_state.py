"""The IPA state file: atomic CBOR, strict decoding, nothing but StateError escapes the decoder."""

from __future__ import annotations

import os

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipa.state import IpaState, PendingResult, StateError, StateStore, decode_state, encode_state


def test_round_trip_every_field(tmp_path):
    store = StateStore(tmp_path / "s.cbor")
    store.load()
    r = store.add_result(
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
    store.set_inflight("euicc_package", package=b"\xbf\x51\x00", before=[0, 1], counter=9)
    again = StateStore(tmp_path / "s.cbor").load()
    assert again.results[0].id == r.id and again.results[0].der == b"\xbf\x50\x00"
    assert again.results[0].seq_numbers == [0, 7] and again.results[0].rollback == {"allowed": True, "done": False}
    assert again.remove_seqs == [3] and again.failures == 2 and again.state_change == 5
    assert again.inflight == {"procedure": "euicc_package", "package": b"\xbf\x51\x00", "before": [0, 1], "counter": 9}
    assert again.association_tokens == {"eim": 1}


def test_result_delivered_records_acks_in_the_same_write(tmp_path):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    r = store.add_result("provide_eim_package_result", b"x", seq_numbers=[4])
    store.result_delivered(r.id, [4, 0])
    on_disk = decode_state(path.read_bytes())
    assert on_disk.results == [] and on_disk.remove_seqs == [4, 0]


def test_write_is_atomic_no_temp_left_and_mode_0600(tmp_path):
    path = tmp_path / "dir" / "s.cbor"
    store = StateStore(path)
    for i in range(5):
        store.add_result("provide_eim_package_result", bytes([i]))
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


def test_fsync_failure_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "s.cbor"
    store = StateStore(path)
    store.add_result("provide_eim_package_result", b"old")
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        store.add_result("provide_eim_package_result", b"new")
    assert path.read_bytes() == before
