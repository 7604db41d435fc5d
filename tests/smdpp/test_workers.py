"""``smdpp serve --workers N``: several processes on one port sharing the store (``smdpp.workers``), and the RSP
sessions in that store (``smdpp.session``).

The server runs as a real subprocess on a free port. Downloads are complete (``bench.es9_client.download``: ES9+
over HTTPS, the software eUICC doing the card side) and each ES9+ function is sent over a connection that a known
worker accepted (every answer names its worker in ``X-Smdpp-Worker``), so one download is demonstrably served by
two processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.es9_client import CardMaker, Connection, DownloadError, Target, download
from smdpp.session import INITIATED, Session, SessionConflict, SessionStore
from smdpp.store import OrderStore
from smdpp.workers import worker_count
from tests.services import free_port, wait_port

FUNCTIONS = ("initiateAuthentication", "authenticateClient", "getBoundProfilePackage", "handleNotification")


def _children(pid: int) -> set[int]:
    found = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(d))
    return found


class Server:
    def __init__(self, pki, data: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.data = data
        argv = [sys.executable, "-m", "smdpp", "serve", "--pki", str(pki.root), "--data", str(data)]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port), "--curve", "nist", "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_port(self.port, 30), "smdpp serve --workers did not listen"
        self.target = Target(url=f"https://127.0.0.1:{self.port}", ca_file=str(pki.ca_bundle_path))
        self.tls = ssl.create_default_context(cafile=str(pki.ca_bundle_path))
        self.http = httpx.Client(base_url=self.target.url, verify=self.tls, timeout=20)
        self.workers = self.wait_workers(workers)

    def wait_workers(self, n: int) -> set[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = _children(self.proc.pid)
            if len(pids) == n:
                return pids
            time.sleep(0.1)
        raise AssertionError(f"expected {n} workers, have {_children(self.proc.pid)}")

    def order(self, **fields) -> str:
        r = self.http.post("/v1/orders", json={"profile": "ts48", "smdp_address": self.target.smdp_address, **fields})
        assert r.status_code == 201, r.text
        return r.json()["matching_id"]

    def state(self, mid: str) -> str:
        return self.http.get(f"/v1/orders/{mid}").json()["state"]

    def stop(self) -> tuple[int, str]:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture
def server(lab_pki, tmp_path):
    srv = Server(lab_pki, tmp_path / "data")
    yield srv
    srv.stop()


async def _connection_per_worker(target: Target, want: set[int]) -> dict[int, Connection]:
    """Keep-alive connections until each worker in ``want`` holds one (opened concurrently, so a worker busy with
    one handshake leaves the next connection to another). Each is asked a malformed initiateAuthentication: the
    answer names the worker and must be the ES9+ error for a missing element."""
    tls = target.ssl_context()
    found: dict[int, Connection] = {}
    for _ in range(20):
        conns = [Connection(target, tls) for _ in range(8)]
        answers = await asyncio.gather(*(c.post_json("initiateAuthentication", {"header": {}}) for c in conns))
        for conn, (status, headers, body) in zip(conns, answers, strict=True):
            assert status == 200 and b'"reasonCode":"2.2"' in body and b'"subjectCode":"1.2"' in body, body
            pid = int(headers["x-smdpp-worker"])
            assert pid in want
            if pid in found:
                await conn.close()
            else:
                found[pid] = conn
        if set(found) == want:
            return found
    raise AssertionError(f"connections reached only workers {set(found)} of {want}")


def test_one_download_is_served_by_two_workers_and_orders_move_on(server, lab_pki):
    a, b = sorted(server.workers)
    mids = [server.order() for _ in range(3)]
    assert {server.state(m) for m in mids} == {"released"}

    async def run() -> list:
        conns = await _connection_per_worker(server.target, {a, b})
        results = []
        for i, mid in enumerate(mids):
            first, second = (a, b) if i % 2 == 0 else (b, a)
            plan = {f: conns[first if n % 2 == 0 else second] for n, f in enumerate(FUNCTIONS)}
            results.append(await download(server.target, CardMaker(str(lab_pki.root))(), mid, connections=plan))
        for c in conns.values():
            await c.close()
        return results

    results = asyncio.run(run())
    for i, r in enumerate(results):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        assert [int(w) for w in r.workers] == [first, second, first, second]  # started on one, finished on other
        assert r.bpp_bytes > 12_000
    for mid in mids:
        order = server.http.get(f"/v1/orders/{mid}").json()
        assert order["state"] == "installed"
        assert [e["state"] for e in order["history"]][-2:] == ["downloaded", "installed"]
    notes = server.http.get("/v1/notifications").json()
    assert len(notes) == 3 and all(n["verified"] and n["kind"] == "pir" for n in notes)
    # the matchingId is one-time whichever worker is asked again
    with pytest.raises(DownloadError, match=r"authenticateClient.*8\.2\.6"):
        asyncio.run(download(server.target, CardMaker(str(lab_pki.root))(), mids[0]))


class _KillFirst:
    """Posts through ``conn`` after killing worker ``pid`` (and waiting until it is gone)."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid, self.conn = pid, conn

    async def post_json(self, function: str, body: dict):
        await asyncio.to_thread(self._kill_and_wait)
        return await self.conn.post_json(function, body)

    def _kill_and_wait(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        stat = Path(f"/proc/{self.pid}/stat")
        while True:
            try:  # gone (reaped) between two looks: ENOENT, or ESRCH while reading
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)


def test_a_session_survives_the_worker_that_started_it_and_a_dead_worker_is_replaced(server, lab_pki):
    a, b = sorted(server.workers)
    mid = server.order()

    async def run():
        conns = await _connection_per_worker(server.target, {a, b})
        plan = {
            "initiateAuthentication": conns[a],
            "authenticateClient": conns[a],
            "getBoundProfilePackage": _KillFirst(a, conns[b]),
            "handleNotification": conns[b],
        }
        result = await download(server.target, CardMaker(str(lab_pki.root))(), mid, connections=plan)  # type: ignore[arg-type]
        for c in conns.values():
            await c.close()
        return result

    result = asyncio.run(run())
    assert [int(w) for w in result.workers] == [a, a, b, b]
    assert server.state(mid) == "installed"
    replaced = server.wait_workers(2)
    assert a not in replaced and b in replaced
    # the new worker serves too: a download on fresh connections lands on the workers alive now
    other = server.order()
    fresh = Target(server.target.url, server.target.ca_file, fresh_connections=True)
    again = asyncio.run(download(fresh, CardMaker(str(lab_pki.root))(), other))
    assert {int(w) for w in again.workers} <= replaced
    assert server.state(other) == "installed"
    code, err = server.stop()
    assert code == 0
    assert f"worker {a} was killed by SIGKILL; started worker" in err
    assert not _children(server.proc.pid)


def test_malformed_requests_get_es9_errors_from_every_worker_and_nothing_changes(server, lab_pki):
    mid = server.order()
    before = server.http.get(f"/v1/orders/{mid}").json()
    bodies = [b"{", b"[]", b'{"header": 5}', b'{"transactionId": "zz", "prepareDownloadResponse": "%%%"}']
    seen = set()
    for _ in range(3):
        for body in bodies:
            for fn in FUNCTIONS:
                with httpx.Client(base_url=server.target.url, verify=server.tls) as fresh:
                    r = fresh.post(
                        f"/gsma/rsp2/es9plus/{fn}", content=body, headers={"Content-Type": "application/json"}
                    )
                assert r.status_code == 200
                fes = r.json()["header"]["functionExecutionStatus"]
                assert fes["status"] == "Failed"
                assert fes["statusCodeData"]["subjectCode"] in ("1.2", "8.10.1"), fes
                seen.add(int(r.headers["x-smdpp-worker"]))
    assert seen <= server.workers
    after = server.http.get(f"/v1/orders/{mid}").json()
    assert after == before
    assert server.wait_workers(2) == server.workers  # nobody died
    result = asyncio.run(download(server.target, CardMaker(str(lab_pki.root))(), mid))
    assert server.state(mid) == "installed" and result.bpp_bytes > 0


def test_workers_that_keep_dying_stop_the_server_with_a_clear_exit(lab_pki, tmp_path):
    srv = Server(lab_pki, tmp_path / "data")
    killed: set[int] = set()
    deadline = time.monotonic() + 60
    while srv.proc.poll() is None and time.monotonic() < deadline:
        for pid in _children(srv.proc.pid) - killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.05)
    code, err = srv.stop()
    assert code == 1
    assert "workers died within 60 s: stopping the SM-DP+" in err
    assert "serve: worker processes kept dying" in err
    assert not _children(srv.proc.pid)


def test_workers_stop_when_the_supervisor_is_killed(lab_pki, tmp_path):
    srv = Server(lab_pki, tmp_path / "data")
    workers = srv.workers
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # do not leave them behind if the assertion fails
        os.kill(pid, signal.SIGKILL)
    srv.stop()
    assert alive == [], "workers kept running without their supervisor"
    assert not wait_port(srv.port, 0.5), "the port still answers"


@pytest.mark.parametrize("value", ["0", "-1", "two", "257", ""])
def test_workers_argument_refused(tmp_path, lab_pki, value):
    argv = [sys.executable, "-m", "smdpp", "serve", "--pki", str(lab_pki.root), "--data", str(tmp_path)]
    r = subprocess.run(
        [*argv, "--port", str(free_port()), "--workers", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "--workers: a number from 1 to 256 or auto" in r.stderr


@given(st.text(max_size=8))
def test_worker_count_accepts_numbers_and_auto_only(text):
    try:
        n = worker_count(text)
    except ValueError as exc:
        assert "--workers" in str(exc)
        assert not (text.isascii() and text.isdigit() and 1 <= int(text) <= 256) and text != "auto"
    else:
        assert n >= 1 and (text == "auto" or n == int(text))


# ---------------------------------------------------------------------- the shared session table, two connections
def _session(txid: bytes) -> Session:
    return Session(txid, b"c" * 16, b"s" * 16, b"\x01" * 20, b"\x01" * 20, "nist")


def test_sessions_are_shared_between_connections_and_guarded_by_state(tmp_path):
    one, two = OrderStore.in_dir(tmp_path), OrderStore.in_dir(tmp_path)  # as two workers hold them
    s1, s2 = SessionStore(one), SessionStore(two)
    txid = s1.new_transaction_id()
    s1.add(_session(txid))
    got = s2.get(txid)
    assert got is not None and got.state == INITIATED and got.server_challenge == b"s" * 16
    got.state, got.eid, got.smdp_signature2_tlv = "authenticated", "8" * 32, b"\x5f\x37\x00"
    s2.save(got, expect=INITIATED)
    stale = s1.get(txid)
    assert stale is not None and stale.eid == "8" * 32
    stale.state = "authenticated"
    with pytest.raises(SessionConflict):
        s1.save(_session(txid), expect=INITIATED)  # worker one still thinks it is initiated: refused
    assert s2.get(txid).smdp_signature2_tlv == b"\x5f\x37\x00"  # type: ignore[union-attr]
    assert s1.remove(txid) is not None and s2.get(txid) is None
    ended = s2.ended_after_error(txid)
    assert ended is not None and ended.failed_step == "getBoundProfilePackage"
    assert s1.ended_after_error(txid) is None  # once
    one.close()
    two.close()


def test_sessions_expire_and_are_bounded(tmp_path):
    store = OrderStore.in_dir(tmp_path)
    sessions = SessionStore(store, ttl=0.2, max_sessions=3)
    ids = [sessions.new_transaction_id() for _ in range(5)]
    for txid in ids:
        sessions.add(_session(txid))
    assert [sessions.get(t) is not None for t in ids] == [False, False, True, True, True]
    assert len(sessions) == 3
    time.sleep(0.3)
    assert len(sessions) == 0 and sessions.get(ids[-1]) is None
    store.close()
