"""``ipa status``: the daemon's view from its status file (ipa/status.py), without opening the port (issue 17).

A real ``ipa run`` against the scripted eIM writes ``status-<EID>.json`` next to its state file; ``ipa status``
(another process, no card, no port) shows it in the envelope of docs/cli.md and tells a running daemon from a
stopped one and from a file left behind by a killed one (pid gone)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipa.status import StatusError, StatusWriter, daemon_view, process_start, read_status, status_path
from tests.ipa.conftest import EID_TEXT
from tests.ipa.test_cli import ipa

ROOT = Path(__file__).resolve().parents[2]
EID = bytes.fromhex(EID_TEXT)


async def test_writer_replaces_the_file_atomically_private_and_only_on_change(tmp_path):
    path = status_path(tmp_path / "state" / "state.cbor", EID)
    assert path == tmp_path / "state" / f"status-{EID_TEXT}.json"
    clock = iter(range(1000, 2000)).__next__
    w = StatusWriter(path, EID, clock=lambda: float(clock()))
    assert await w.update(state="idle", binding="http", eimUrl="http://127.0.0.1:1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_status(path)
    assert first["state"] == "idle" and first["pid"] == os.getpid() and first["eid"] == EID_TEXT
    assert first["pidStart"] == process_start(os.getpid())
    assert await w.update(state="idle", lastPoll={"outcome": "idle", "detail": "", "at": 5.0})  # a first poll
    # an idle poll after an idle poll changes nothing the view shows (only times): no write
    assert not await w.update(state="idle", lastPoll={"outcome": "idle", "detail": "", "at": 9.0})
    assert w.writes == 2 and read_status(path)["lastPoll"]["at"] == 5.0
    assert await w.update(state="backoff", failures=1, nextPoll=2000.0)
    now = read_status(path)
    assert now["state"] == "backoff" and now["failures"] == 1 and now["since"] > first["since"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_daemon_view_running_stopped_and_stale():
    base = {"v": 1, "pid": 4242, "pidStart": 77, "state": "idle", "since": 1.0, "updated": 1.0, "failures": 0}
    assert daemon_view(None)["running"] is False
    assert daemon_view(base, alive=lambda pid: 77)["running"] is True
    gone = daemon_view(base, alive=lambda pid: None)
    assert gone["running"] is False and "pid 4242 is gone" in gone["note"] and "stale" in gone["note"]
    reused = daemon_view(base, alive=lambda pid: 78)
    assert reused["running"] is False and "another process" in reused["note"]
    assert daemon_view({**base, "state": "stopped"}, alive=lambda pid: 77)["running"] is False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=6),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"v": st.just(1), "pid": st.integers(-3, 10**7) | st.text(max_size=3)},
            optional={"state": st.sampled_from(["idle", "running", ""]), "failures": st.integers(-2, 3)},
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_malformed_status_files_are_refused_naming_the_field(tmp_path, data):
    path = tmp_path / "status.json"
    path.write_bytes(data)
    try:
        view = read_status(path)
    except StatusError as exc:
        assert str(exc)  # says what is wrong
    else:  # only a well-formed status gets through
        assert view is not None and view["v"] == 1 and view["state"] in ("starting", "idle", "working", "backoff")


def test_status_with_a_damaged_status_file_still_shows_the_state_file(tmp_path):
    """`ipa status` keeps working (exit 0, the envelope) and says the status file is unreadable."""
    from ipa.state import IpaState, encode_state

    state = tmp_path / "state.cbor"
    state.write_bytes(encode_state(IpaState(eid=EID)))
    status_path(state, EID).write_bytes(b"\xff{not json")
    rc, lines, err = ipa("--json", "--state", str(state), "status")
    assert rc == 0, err
    daemon = lines[-1]["payload"]["data"]["daemon"]
    assert daemon["running"] is False and daemon["note"].startswith("status file unreadable: not JSON")


async def _status(env: dict) -> tuple[int, dict, str]:
    rc, lines, err = await asyncio.to_thread(ipa, "--json", "status", env=env)
    assert len(lines) == 1 and lines[0]["type"] == "lpa", (lines, err)
    return rc, lines[0]["payload"], err


async def _wait_for(path: Path, proc: subprocess.Popen, predicate, within: float = 30.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            view = read_status(path)
        except StatusError:
            view = None  # never torn: the writer renames, but keep waiting rather than fail on a reader's race
        if view is not None and predicate(view):
            return view
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)


async def test_ipa_status_shows_the_running_daemon_then_stopped_then_killed(make_rig):
    rig = await make_rig("http")
    state_file = Path(rig.config.ipa.state_file)
    env = {
        "IPA_EIM_URL": rig.config.eim.url,
        "IPA_EIM_PROVISIONING_FILE": rig.config.eim.provisioning_file,
        "IPA_IPA_STATE_FILE": str(state_file),
        "IPA_POLL_INTERVAL": "0.2",
        "IPA_POLL_MIN_INTERVAL": "0.1",
        "IPA_POLL_MAX_BACKOFF": "0.2",
        "IPA_POLL_JITTER": "0",
    }
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("IPA_")}, **env}
    cmd = [sys.executable, "-m", "ipa.cli", "--card", str(rig.card.state_path), "run"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    path = status_path(state_file, EID)
    proc = start()
    try:
        view = await _wait_for(path, proc, lambda v: v["state"] == "idle")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert view["pid"] == proc.pid and view["binding"] == "http" and view["eimUrl"] == rig.config.eim.url
        rc, payload, err = await _status(env)  # no --card, no --port: the daemon keeps its card and port
        assert rc == 0 and payload["code"] == 0 and payload["message"] == "success", err
        daemon = payload["data"]["daemon"]
        assert daemon["running"] is True and daemon["pid"] == proc.pid and daemon["state"] == "idle"
        assert daemon["binding"] == "http" and daemon["queue"] == [] and daemon["failures"] == 0
        assert daemon["lastPoll"]["outcome"] == "idle" and daemon["statusFile"] == str(path)
        assert payload["data"]["eid"] == EID_TEXT
        # the eIM stops answering: the daemon backs off, and says so
        rig.peer.drop = lambda name, der: True
        view = await _wait_for(path, proc, lambda v: v["state"] == "backoff" and v["failures"] >= 1)
        rc, payload, _ = await _status(env)
        daemon = payload["data"]["daemon"]
        assert rc == 0 and daemon["state"] == "backoff" and daemon["failures"] >= 1 and daemon["nextPoll"]
        rig.peer.drop = None
        await _wait_for(path, proc, lambda v: v["state"] == "idle" and v["failures"] == 0)
        # a clean stop is recorded as such
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        rc, payload, _ = await _status(env)
        daemon = payload["data"]["daemon"]
        assert rc == 0 and daemon["running"] is False and daemon["state"] == "stopped" and daemon["stopped"]
        # killed: the file still says idle, but its pid is gone - a stale file, not a running daemon
        proc = start()
        await _wait_for(path, proc, lambda v: v["state"] == "idle" and v["pid"] == proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        rc, payload, _ = await _status(env)
        daemon = payload["data"]["daemon"]
        assert rc == 0 and daemon["running"] is False and daemon["state"] == "idle"
        assert f"pid {proc.pid} is gone" in daemon["note"] and "stale" in daemon["note"]
        human = await asyncio.to_thread(  # the human form says it too
            subprocess.run,
            [sys.executable, "-m", "ipa.cli", "status"],
            env=full_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert human.returncode == 0 and f"daemon        not running: pid {proc.pid} is gone" in human.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("eid", [EID, EID_TEXT.lower()])
def test_status_path_is_per_eid(tmp_path, eid):
    assert status_path(tmp_path / "s.cbor", eid).name == f"status-{EID_TEXT}.json"


def test_status_text_says_idle_since_and_last_contact_not_a_stale_last_poll_time(tmp_path):
    """An idle daemon rewrites its status file only when its view changes, so the file's ``lastPoll.at`` is the
    first idle poll, not the latest. ``ipa status`` printed ``last poll idle at <that time>``, hours old on a
    healthy daemon; it says ``idle since`` that time and takes the last contact from the state file."""
    import datetime

    from ipa.state import IpaState, encode_state
    from ipa.status import write_status

    def iso(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")

    became_idle, last_contact = 1765090000.0, 1765097200.0  # two hours of idle polls since the view last changed
    state = tmp_path / "state.cbor"
    state.write_bytes(encode_state(IpaState(eid=EID, last_contact=last_contact)))
    me = os.getpid()  # a live process with its own start time: the daemon shows as running
    view = {"v": 1, "pid": me, "pidStart": process_start(me), "eid": EID_TEXT, "state": "idle", "since": became_idle}
    view |= {"updated": became_idle, "binding": "http", "eimUrl": "http://eim.example", "failures": 0}
    view |= {"nextPoll": None, "queue": [], "inflight": None, "stopped": None}
    view["lastPoll"] = {"outcome": "idle", "detail": "noEimPackageAvailable", "at": became_idle}
    write_status(status_path(state, EID), view)
    proc = subprocess.run(
        [sys.executable, "-m", "ipa.cli", "--state", str(state), "status"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("IPA_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"last contact  {iso(last_contact)}" in proc.stdout
    daemon = next(line for line in proc.stdout.splitlines() if line.startswith("daemon"))
    assert f"running (pid {me}), idle since {iso(became_idle)}" in daemon
    assert "polls idle (noEimPackageAvailable)" in daemon
    assert daemon.count(iso(became_idle)) == 1 and " at " not in daemon, daemon  # no "last poll idle at <then>"
