"""Notifications are not lost: real ``eim serve`` processes, the real lab SM-DP+ over HTTPS, HandleNotification
over ESipa HTTP as an IPA sends it.

- the SM-DP+ is down when the notification arrives: the IPA gets success (HTTP 204), the row is in the store;
  the eIM is killed (SIGKILL) and started again; the SM-DP+ comes up: the notification arrives there exactly once
  (with the card's signature intact) and the row is gone;
- two workers on one PostgreSQL, the SM-DP+ down, then up: every notification arrives exactly once;
- a permanent refusal by the SM-DP+ ends as failed with the reason: API, CLI, metrics, audit trail.
The eUICC is registered and the SM-DP+ address is in ``[relay] allowed_smdp_addresses``: only notifications of
this eIM's eUICCs, with a verified signature, for an allowed SM-DP+ are taken.
No timing assertions: every wait is for a condition, with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest

from eim.store import open_store
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.conftest import fresh_pg_database
from tests.eim.servers import json_items, run_cli, start_eim
from tests.services import free_port
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID = lab_eid(61)
ICCID = "8949449999999990920"
CT = {"Content-Type": "application/x-gsma-rsp-asn1"}
# retries come fast here so that waits stay short; the schedule itself is checked in test_outbox.py
FAST = """notification_retry_initial_s = 0.1
notification_retry_max_s = 0.5
notification_poll_s = 0.2
timeout_s = 5"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=(EID,))


def smdp_at(lab, path, port: int):
    return running_server(SmdppConfig(data_dir=path, pki_dir=lab.root, port=port))


def arrived(smdp, seq: int) -> list:
    return [n for n in smdp.ctx.store.notifications(limit=10_000) if n.seq_number == seq and n.eid == EID]


def wait_for(what: str, predicate, deadline_s: float = 30.0, servers=()):
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        for s in servers:
            assert s.proc.poll() is None, f"eim serve exited while waiting for {what}:\n{s.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def allowing(address: str) -> str:
    """The ``[relay]`` keys of these tests: fast retries, ``address`` allowed."""
    return FAST + f'\nallowed_smdp_addresses = ["{address}"]'


def register(server) -> None:
    r = httpx.post(server.url + "/v1/euiccs", json={"eid": EID}, timeout=10)
    assert r.status_code in (200, 201), r.text


def handle_notification(url: str, notification: bytes) -> int:
    r = httpx.post(url, content=T(0xBF3D, T(0xA0, notification)), headers=CT, timeout=30)
    assert r.content == b"", r.content
    return r.status_code


def listed(server, status: str | None = None) -> list[dict]:
    params = {"status": status} if status else {}
    r = httpx.get(server.url + "/v1/notifications", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_smdp_down_eim_killed_then_smdp_up(lab, tmp_path):
    store_url = f"sqlite:///{tmp_path}/eim.db"
    port = free_port()
    address = f"127.0.0.1:{port}"
    card = SimEuicc(lab, "nist", eid=EID)
    note = card.other_notification(1, ICCID, address)  # enable; signed by the card
    eim = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root, relay=True, relay_config=allowing(address))
    try:
        register(eim)
        # the SM-DP+ is down: the IPA is told success, the eIM holds the notification
        assert handle_notification(eim.esipa, note) == 204
        [row] = listed(eim, "pending")
        assert base64_of(row) == note and (row["address"], row["eid"], row["kind"]) == (address, EID, "other")
        wait_for("a failed attempt", lambda: listed(eim)[0]["attempts"] >= 2, servers=[eim])
        assert "127.0.0.1" in listed(eim)[0]["last_error"]
        assert handle_notification(eim.esipa, note) == 204  # the IPA sends it again: still one row
        assert len(listed(eim)) == 1
        metrics = httpx.get(eim.url + "/metrics").text
        assert 'eim_notification_queue{status="pending"} 1.0' in metrics and EID not in metrics
        r = run_cli(eim, "notification", "list", "--status", "pending")
        assert r.returncode == 0 and r.stdout.split()[1:3] == ["pending", "other"] and address in r.stdout, r
        eim.kill()  # a crash: no shutdown code runs
    finally:
        eim.stop()
    with smdp_at(lab, tmp_path / "smdp", port) as smdp:
        assert arrived(smdp, card.seq) == []
        eim = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root, relay=True, relay_config=allowing(address))
        try:
            wait_for("the notification at the SM-DP+", lambda: arrived(smdp, card.seq), servers=[eim])
            wait_for("the row to go", lambda: listed(eim) == [], servers=[eim])
            [got] = arrived(smdp, card.seq)
            assert got.kind == "other" and got.verified  # the SM-DP+ verified the card's signature: same bytes
            assert '"message": "notification delivered"' in eim.log_text()
            assert 'eim_notification_queue{status="pending"} 0.0' in httpx.get(eim.url + "/metrics").text
        finally:
            eim.stop()
        assert len(arrived(smdp, card.seq)) == 1

    async def audit():
        s = open_store(store_url)
        await s.open()
        try:
            return [(a.who, a.outcome) for a in await s.list_audit(eid=EID) if a.action == "notification"]
        finally:
            await s.close()

    assert asyncio.run(audit()) == [("ipa", "queued"), ("eim", "delivered")]


def test_two_workers_on_postgresql_deliver_each_once(postgres, lab, tmp_path):
    dsn = asyncio.run(fresh_pg_database(postgres.dsn))
    port = free_port()
    address = f"127.0.0.1:{port}"
    card = SimEuicc(lab, "nist", eid=EID)
    workers = [
        start_eim(
            tmp_path / name, store_url=dsn, lab_pki=lab.root, name=name, relay=True, relay_config=allowing(address)
        )
        for name in ("w1", "w2")
    ]
    try:
        register(workers[0])
        seqs = []
        for i in range(16):  # the SM-DP+ is down: each worker takes half of them
            note = card.other_notification(1 + i % 3, ICCID, address)
            seqs.append(card.seq)
            assert handle_notification(workers[i % 2].esipa, note) == 204
        assert len(listed(workers[0], "pending")) == 16
        wait_for("both workers to try", lambda: all("will retry" in w.log_text() for w in workers), servers=workers)
        with smdp_at(lab, tmp_path / "smdp", port) as smdp:
            wait_for("every row to go", lambda: listed(workers[1]) == [], deadline_s=60, servers=workers)
            for w in workers:  # stopped: nothing can arrive later, so what the SM-DP+ has is all there will be
                w.stop()
            got = Counter(n.seq_number for n in smdp.ctx.store.notifications(limit=10_000) if n.eid == EID)
            assert got == Counter(seqs), got  # each exactly once
        delivered = sum(w.log_text().count('"message": "notification delivered"') for w in workers)
        assert delivered == 16
    finally:
        for w in workers:
            w.stop()


def test_permanent_refusal_ends_failed_with_the_reason(lab, tmp_path):
    store_url = f"sqlite:///{tmp_path}/eim.db"
    with smdp_at(lab, tmp_path / "smdp", 0) as smdp:
        eim = start_eim(
            tmp_path, store_url=store_url, lab_pki=lab.root, relay=True, relay_config=allowing(smdp.address)
        )
        try:
            register(eim)
            # genuine and well-formed for ESipa (the eIM takes it) but over the SM-DP+'s 64 000-byte limit for a
            # pendingNotification: it answers Failed 1.2/2.1 ("too long"), which no retry can fix
            bad = oversized(SimEuicc(lab, "nist", eid=EID), smdp.address)
            assert handle_notification(eim.esipa, bad) == 204
            [failed] = wait_for("the refusal", lambda: listed(eim, "failed"), servers=[eim])
            assert "Failed 1.2/2.1" in failed["last_error"] and "too long" in failed["last_error"], failed
            assert failed["attempts"] == 1
            assert base64_of(failed) == bad and failed["next_attempt_at"] is None
            assert listed(eim, "pending") == []
            r = run_cli(eim, "--json", "notification", "list", "--status", "failed")
            assert r.returncode == 0, r.stderr
            [line] = json_items(r.stdout)
            assert line["id"] == failed["id"] and line["last_error"] == failed["last_error"]
            r = run_cli(eim, "notification", "list")
            assert "failed" in r.stdout and "Failed 1.2/2.1" in r.stdout
            assert 'eim_notification_queue{status="failed"} 1.0' in httpx.get(eim.url + "/metrics").text
            log = [json.loads(x) for x in eim.log_text().splitlines() if '"notification failed"' in x]
            assert log and log[0]["logger"] == "eim.relay" and "Failed 1.2/2.1" in log[0]["reason"]
        finally:
            eim.stop()

    async def audit():
        s = open_store(store_url)
        await s.open()
        try:
            return [a for a in await s.list_audit(limit=1000) if a.action == "notification"]
        finally:
            await s.close()

    entries = asyncio.run(audit())
    assert [a.outcome for a in entries] == ["queued", "failed"]
    assert "Failed 1.2/2.1" in entries[1].detail["reason"] and entries[1].detail["notification_id"] == failed["id"]


def oversized(card: SimEuicc, address: str) -> bytes:
    """An otherSignedNotification the card signed whose NotificationMetadata carries a 70 000-byte private
    extension (the metadata is extensible; the eUICC's signature covers it)."""
    from rsp import crypto

    meta = T(
        0xBF2F,
        T(0x80, b"\x63") + T(0x81, b"\x05\x20") + T(0x0C, address.encode()) + T(0xDF7F, bytes(70_000)),
    )
    return T(0x30, meta + T(0x5F37, crypto.sign(card.key, meta)) + card.cert_der + card.eum_der)


def base64_of(row: dict) -> bytes:
    import base64

    return base64.b64decode(row["notification"])
