"""Persistent state of the software eUICC: one file, written atomically after every state-changing command,
never written otherwise; a failure or crash at any point leaves the old or the new state; counters and
sequence numbers are never reused; the private key is never shown."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from euicc import state as state_mod
from euicc.card import SoftEuicc
from euicc.cli import main as euicc_main
from rsp import crypto, tlv
from tests.euicc.conftest import LAB_EID, Es10Driver, add_initial_eim, download, eim_config, make_card, new_profile
from tests.euicc.smdp_side import SmdpSide

T = tlv.encode


def test_create_writes_a_private_state_file_that_reloads_identically(lab_pki, tmp_path):
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SoftEuicc.load(path).state == card.state
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["eid"] == LAB_EID.lower()


def test_state_changes_are_persisted_and_read_only_commands_write_nothing(lab_pki, tmp_path):
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    driver = Es10Driver(card)
    inode, content = os.stat(path).st_ino, path.read_bytes()
    for command in ("BF2000", "BF2200", "BF2E00", "BF3E035C015A", "BF2D00", "BF5500", "BF2B00", "BF4300"):
        driver.call(bytes.fromhex(command))
    assert os.stat(path).st_ino == inode and path.read_bytes() == content
    download(driver, SmdpSide(lab_pki), new_profile(1))
    assert os.stat(path).st_ino != inode  # replaced by rename
    reloaded = SoftEuicc.load(path)
    assert [p.iccid for p in reloaded.state.profiles] == [new_profile(1).iccid]
    assert reloaded.state == card.state


def test_failed_write_rolls_the_command_back(lab_pki, tmp_path, monkeypatch):
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    driver = Es10Driver(card)
    before_file, before_state = path.read_bytes(), card.state.snapshot()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod.os, "replace", broken_replace)
    assert driver.call_sw(T(0xBF65, T(0x80, b"smdp.example")))[1] == 0x6581
    assert path.read_bytes() == before_file
    assert card.state == before_state and card.state.default_dp_address is None
    assert [f for f in os.listdir(tmp_path) if f != "card.json"] == []  # no temporary file left
    monkeypatch.undo()
    assert driver.call(T(0xBF65, T(0x80, b"smdp.example"))) == bytes.fromhex("BF6503800100")
    assert SoftEuicc.load(path).state.default_dp_address == "smdp.example"


def test_sequence_numbers_and_tokens_continue_after_reload(lab_pki, tmp_path):
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    driver = Es10Driver(card)
    download(driver, SmdpSide(lab_pki), new_profile(1))
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    add_initial_eim(driver, eim_config("a", spki, token=-1))
    driver.call(bytes.fromhex("BF3003800100"))  # the PIR (seq 0) delivered and removed
    again = SoftEuicc.load(path)
    pir = download(Es10Driver(again), SmdpSide(lab_pki), new_profile(2))
    seq = tlv.require(pir, 0xBF27, 0xBF2F, 0x80).value
    assert seq == b"\x01"  # seq 0 was used (and removed): never reused
    assert again.state.next_token == 2


def test_corrupt_or_missing_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(state_mod.StateError, match="not JSON"):
        SoftEuicc.load(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(state_mod.StateError, match="unsupported version"):
        SoftEuicc.load(path)
    path.write_text(json.dumps({"version": 1, "eid": "00"}))
    with pytest.raises(state_mod.StateError, match="malformed"):
        SoftEuicc.load(path)
    with pytest.raises(state_mod.StateError, match=r"missing\.json"):
        SoftEuicc.load(tmp_path / "missing.json")


def test_show_never_prints_the_private_key(lab_pki, tmp_path, capsys):
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    key_body = card.state.private_key_pem.splitlines()[1]
    for args in (["show", "--state", str(path)], ["show", "--state", str(path), "--json"]):
        assert euicc_main(args) == 0
        out = capsys.readouterr().out
        assert key_body not in out and "PRIVATE" not in out
        assert LAB_EID in out
    assert key_body not in repr(card.identity) and key_body not in repr(card) and key_body not in repr(card.state)


CRASH_CHILD = r"""
import sys, itertools
sys.path.insert(0, {root!r})
from euicc.card import SoftEuicc
from rsp import crypto, tlv
from tests.euicc.conftest import Es10Driver, eim_package
from rsp.pki import LabPki
pki = LabPki.load({pki!r})
card = SoftEuicc.load({path!r})
driver = Es10Driver(card)
key = pki.eim_key("nist")
for n in itertools.count(card.state.eim("e").counter + 1):
    driver.call(eim_package(key, "e", card.state.eid, n, tlv.encode(0xA6, b""), token=1))
    print(n, flush=True)
"""


def test_kill_at_any_moment_leaves_a_consistent_state(lab_pki, tmp_path):
    """A child process runs eUICC packages in a loop on a state file and is killed (SIGKILL) at random moments:
    the file always loads, and every accepted counter value has exactly one stored result."""
    path = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=path)
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    add_initial_eim(Es10Driver(card), eim_config("e", spki, counter=0, token=1))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = CRASH_CHILD.format(root=root, pki=str(lab_pki.root), path=str(path))
    seen = 0
    for delay in (0.9, 1.1, 1.3, 1.5):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        st = SoftEuicc.load(path).state
        counter = st.eim("e").counter
        eprs = [n for n in st.notifications if n.kind == "epr"]
        assert len(eprs) == counter == st.next_seq  # one result per accepted package, nothing half-written
        assert counter >= seen
        seen = counter
        assert [f for f in os.listdir(tmp_path) if not f.startswith(".")] == ["card.json"]
    assert seen > 0, "the child never got a package through"


def _mutations():
    from hypothesis import strategies as st

    leaf = (
        st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5) | st.sampled_from(["zz", "00", "f" * 20])
    )
    return st.lists(st.tuples(st.integers(0, 10_000), leaf | st.lists(leaf, max_size=2)), min_size=1, max_size=4)


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def test_mutated_state_files_load_or_fail_with_state_error(lab_pki, tmp_path):
    from hypothesis import given, settings

    card = make_card(lab_pki)
    driver = Es10Driver(card)
    download(driver, SmdpSide(lab_pki), new_profile(1, notifications=[((1,), "x.example")]))
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    add_initial_eim(driver, eim_config("a", spki))
    good = card.state.to_json()
    paths = list(_paths(good))

    @settings(max_examples=200, deadline=None)
    @given(_mutations())
    def check(mutations):
        doc = json.loads(json.dumps(good))
        for index, value in mutations:
            path = paths[index % len(paths)]
            node = doc
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue
        path = tmp_path / "mutated.json"
        path.write_text(json.dumps(doc))
        try:
            mutated = SoftEuicc.load(path)
        except state_mod.StateError:
            return
        # a state that loads is usable: every command gets a proper answer, never an internal error
        mutated_driver = Es10Driver(mutated)
        for command in ("BF2200", "BF2D00", "BF2B00", "BF5500", "BF3C00", "BF2800"):
            assert mutated_driver.call_sw(bytes.fromhex(command))[1] != 0x6F00

    check()


def test_snapshot_is_an_equal_independent_copy(lab_pki, tmp_path):
    """``EuiccState.snapshot`` (the rollback copy, a pickle round trip): equal to the state and to its deep copy,
    and nothing nested is shared, so changing the live state after a snapshot leaves the snapshot as it was."""
    import copy

    card = make_card(lab_pki, state_path=tmp_path / "card.json")
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    add_initial_eim(Es10Driver(card), eim_config("e", spki, counter=0, token=1))
    state = card.state
    snap = state.snapshot()
    assert snap == state == copy.deepcopy(state)
    assert snap is not state and snap.eims is not state.eims and snap.profiles is not state.profiles
    frozen = copy.deepcopy(state)
    state.eims[0].counter += 7
    state.ci_certs.append(b"\x30\x00")
    state.next_seq += 1
    assert snap == frozen and snap != state
