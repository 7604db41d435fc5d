"""Push wake-ups across eIM workers on a real PostgreSQL: an operation queued through worker A reaches the device
that observes at worker B (LISTEN/NOTIFY); junk on the channel is ignored and the listener survives losing its
connection."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.bindings.coap import CoapBinding
from eim.bindings.coap_observe import WAITING, PushService
from eim.push_bus import CHANNEL, LocalWakeBus, PgWakeBus
from eim.store import open_store
from rsp.pki import create_lab_pki
from tests.eim.conftest import fresh_pg_database
from tests.eim.helpers import make_env
from tests.eim.test_bindings_coap_push import EID, EIDS, PSMO, RawDevice, eventually, registered
from tests.services import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[])


class Worker:
    def __init__(self, env, bus, binding=None, push=None) -> None:
        self.env, self.bus, self.binding, self.push = env, bus, binding, push


@pytest.fixture
async def two_workers(postgres, pki):
    """Worker A: REST side only (its bus sends). Worker B: the CoAP binding holding the observations."""
    dsn = await fresh_pg_database(postgres.dsn)
    workers = []
    for name in ("a", "b"):
        store = open_store(dsn)
        await store.open()
        env = make_env(store, pki)
        if name == "a":
            for eid in [EID, *EIDS]:
                await env.service.register_euicc(eid)
            bus = PgWakeBus(dsn, [], worker="a")
            await bus.start()
            env.service.wakers.append(bus)
            workers.append(Worker(env, bus))
        else:
            push = PushService(env.service.has_work, env.service.is_registered, ack_timeout=2.0, max_retransmit=2)
            bus = PgWakeBus(dsn, [push], worker="b")
            await bus.start()
            env.service.wakers.append(bus)
            binding = CoapBinding(env.dispatcher, "127.0.0.1", free_port(socket.SOCK_DGRAM), push=push)
            await binding.start()
            workers.append(Worker(env, bus, binding, push))
    try:
        yield dsn, workers[0], workers[1]
    finally:
        for w in workers:
            await w.bus.stop()
            if w.binding is not None:
                await w.binding.stop()
            await w.env.store.close()


async def test_operation_queued_at_one_worker_wakes_the_device_observing_at_another(two_workers):
    _dsn, a, b = two_workers
    dev = RawDevice(b.binding.port)
    try:
        await registered(b, dev)
        op = await a.env.service.create(EID, "psmo", PSMO)  # the operator's REST call lands on worker A
        note = await dev.receive(30)
        assert note is not None and note.payload == WAITING
        dev.ack(note)
        assert b.bus.received >= 1
        assert (await b.env.store.get_operation(op.id)).status.value == "queued"  # claimed only by the poll
        await a.bus.drain()
    finally:
        dev.close()


async def test_junk_on_the_channel_is_ignored_and_the_bus_keeps_working(two_workers):
    dsn, _a, b = two_workers
    dev = RawDevice(b.binding.port)
    conn = await asyncpg.connect(dsn)
    try:
        await registered(b, dev)
        for junk in ("", ":", "b:" + EID, "x" * 7000, "a:not-an-eid", ":::" + EID[:10], "\u00e9:\u00e9" * 3):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, junk)
        # "b:<EID>" is worker B's own name: ignored (it wakes its observers itself)
        assert await dev.receive(0.5) is None
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, "a:" + EID)
        note = await dev.receive(30)
        assert note is not None and note.payload == WAITING
        dev.ack(note)
    finally:
        await conn.close()
        dev.close()


async def test_the_listener_reconnects_after_losing_its_connection(two_workers):
    dsn, a, b = two_workers
    dev = RawDevice(b.binding.port)
    conn = await asyncpg.connect(dsn)
    try:
        await registered(b, dev)
        old = b.bus._conn
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1", old.get_server_pid()
        )
        await eventually(lambda: b.bus._conn is not None and b.bus._conn is not old, "listener reconnected", 60)
        await a.env.service.create(EID, "psmo", PSMO)
        note = await dev.receive(30)
        assert note is not None and note.payload == WAITING
        dev.ack(note)
    finally:
        await conn.close()
        dev.close()


class _Table:
    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, eid: str) -> bool:
        self.woken.append(eid)
        return True

    def status(self, eid: str):
        return {"binding": "coap", "since": 1.0} if eid in self.woken else None


def test_local_bus_fans_out_and_reports_status():
    t1, t2 = _Table(), _Table()
    bus = LocalWakeBus([t1, t2])
    assert bus.wake(EID) is True
    assert t1.woken == [EID] and t2.woken == [EID]
    assert bus.status(EID) == {"binding": "coap", "since": 1.0} and bus.status(EIDS[0]) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.text(max_size=200))
def test_any_payload_on_the_channel_wakes_nothing_but_a_32_digit_eid(payload):
    table = _Table()
    bus = PgWakeBus("postgresql://unused", [table], worker="me")
    bus._received(None, 0, CHANNEL, payload)
    worker, _, eid = payload.rpartition(":")
    if table.woken:
        assert table.woken == [eid] and len(eid) == 32 and eid.isdigit() and worker != "me"


async def test_bus_without_a_database_loses_only_the_wake_up(pki):
    table = _Table()
    bus = PgWakeBus("postgresql://127.0.0.1:1/none", [table], worker="me", reconnect_max=0.2)
    await bus.start(wait=0.3)
    try:
        assert bus.wake(EID) is True  # this worker's observers are woken; the NOTIFY is lost with a warning
        await bus.drain()
        assert table.woken == [EID]
    finally:
        await bus.stop()
    await asyncio.sleep(0)
