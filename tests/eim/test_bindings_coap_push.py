"""Push over CoAP: real aiocoap servers (the eIM's ``CoapBinding`` with a ``PushService``) and real clients on
loopback - aiocoap client contexts and raw UDP sockets that behave as an attacker, a NAT or a sleeping device would.
What is asserted is what goes over the wire (datagrams received, CoAP codes and payloads) and the rows in the store.
"""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import ACK, CON, RST
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.bindings.coap import CoapBinding
from eim.bindings.coap_observe import NOTHING, WAITING, ObserverTable, PushService, unauthenticated_observer_allowed
from eim.model import OpStatus
from eim.push_bus import LocalWakeBus
from eim.store import open_store
from rsp.pki import create_lab_pki
from tests.eim.helpers import get_eim_package_request, make_env
from tests.services import free_port

EID = "89049032123451234512345678901235"


def _eid(body30: str) -> str:
    return body30 + f"{98 - int(body30 + '00') % 97:02d}"  # GSMA SGP.29 check digits


EIDS = [_eid(f"890490321234512345123456{i:06d}") for i in range(6)]
PSMO = {"psmos": [{"getRAT": {}}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[])


class Lab:
    """An eIM worker on SQLite with the CoAP binding and push, on a free loopback port."""

    def __init__(self, env, binding: CoapBinding, push: PushService) -> None:
        self.env = env
        self.binding = binding
        self.push = push

    @property
    def port(self) -> int:
        return self.binding.port

    @property
    def table(self) -> ObserverTable:
        return self.push.table

    async def queue(self, eid: str = EID) -> str:
        op = await self.env.service.create(eid, "psmo", PSMO)
        return op.id


async def start_lab(tmp_path, pki, *, port: int | None = None, store=None, **push_options) -> Lab:
    if store is None:
        store = open_store(f"sqlite:///{tmp_path}/eim.db")
        await store.open()
    env = make_env(store, pki)
    for eid in [EID, *EIDS]:
        await env.service.register_euicc(eid)
    push_options.setdefault("ack_timeout", 2.0)  # a loaded machine acknowledges late: no spurious retransmissions
    push_options.setdefault("max_retransmit", 2)
    push = PushService(env.service.has_work, env.service.is_registered, **push_options)
    env.service.wakers.append(LocalWakeBus([push]))
    binding = CoapBinding(env.dispatcher, "127.0.0.1", port or free_port(socket.SOCK_DGRAM), push=push)
    await binding.start()
    return Lab(env, binding, push)


@pytest.fixture
async def lab(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    try:
        yield lab
    finally:
        await lab.binding.stop()
        await lab.env.store.close()


class RawDevice:
    """A CoAP client on one UDP socket, built by hand: what a NAT'd device (or an attacker) puts on the wire."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.mid = 100

    def send(self, msg: Message) -> None:
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.port))

    def register(self, eid: str, token: bytes, observe: int = 0, mtype=CON) -> int:
        self.mid += 1
        msg = raw(mtype, self.mid, Code.GET, token, observe=observe)
        msg.opt.uri_path = ("esipa", "push", eid)
        self.send(msg)
        return self.mid

    async def receive(self, timeout: float = 20.0) -> Message | None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), timeout)
        except TimeoutError:
            return None
        return Message.decode(data)

    def ack(self, msg: Message) -> None:
        self.send(raw(ACK, msg.mid, Code.EMPTY))

    def close(self) -> None:
        self.sock.close()


def raw(mtype, mid: int, code, token: bytes = b"", **options) -> Message:
    """A message with the type, MID and token chosen by hand (aiocoap's constructor no longer takes them)."""
    msg = Message(code=code, **options)
    msg.mtype, msg.mid, msg.token = mtype, mid, token
    return msg


async def eventually(condition, what: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


async def registered(lab: Lab, dev: RawDevice, eid: str = EID, token: bytes = b"\x01\x02") -> Message:
    dev.register(eid, token)
    answer = await dev.receive()
    assert answer is not None and answer.code == Code.CONTENT and answer.opt.observe == 0
    return answer


async def test_registration_then_queued_operation_is_notified_and_fetched(lab):
    ctx = await aiocoap.Context.create_client_context()
    try:
        uri = f"coap://127.0.0.1:{lab.port}/esipa/push/{EID}"
        req = ctx.request(Message(code=Code.GET, uri=uri, observe=0))
        first = await req.response
        assert first.code == Code.CONTENT and first.payload == NOTHING and first.opt.observe == 0
        assert lab.table.status(EID)["binding"] == "coap"
        op_id = await lab.queue()
        note = await asyncio.wait_for(req.observation.__aiter__().__anext__(), 10)
        assert note.payload == WAITING and note.opt.observe >= 1
        # the notification claimed nothing: the operation is still queued until the device fetches it
        assert (await lab.env.store.get_operation(op_id)).status is OpStatus.QUEUED
        poll = Message(code=Code.POST, uri=f"coap://127.0.0.1:{lab.port}/gsma/rsp2/asn1")
        poll.payload = get_eim_package_request(EID)
        answer = await ctx.request(poll).response
        assert answer.code == Code.CHANGED and answer.payload[:2] == b"\xbf\x4f" and len(answer.payload) > 20
        req.observation.cancel()
    finally:
        await ctx.shutdown()


async def test_registration_answers_package_waiting_when_work_was_queued_before(lab):
    await lab.queue()  # queued while the device had no observation (sleeping, or the eIM restarted)
    dev = RawDevice(lab.port)
    try:
        first = await registered(lab, dev)
        assert first.payload == WAITING
    finally:
        dev.close()


async def test_get_without_observe_answers_state_and_keeps_nothing(lab):
    dev = RawDevice(lab.port)
    try:
        dev.mid += 1
        msg = raw(CON, dev.mid, Code.GET, b"\x09")
        msg.opt.uri_path = ("esipa", "push", EID)
        dev.send(msg)
        answer = await dev.receive()
        assert answer.code == Code.CONTENT and answer.payload == NOTHING and answer.opt.observe is None
        assert len(lab.table) == 0
    finally:
        dev.close()


@pytest.mark.parametrize(
    ("path", "code", "expect"),
    [
        (("esipa", "push", "89049032123451234512345678909999"), Code.GET, Code.NOT_FOUND),  # not registered
        (("esipa", "push", "not-an-eid"), Code.GET, Code.NOT_FOUND),
        (("esipa", "push", EID, "x"), Code.GET, Code.NOT_FOUND),
        (("esipa", "push"), Code.GET, Code.NOT_FOUND),
        (("esipa", "push", EID), Code.POST, Code.METHOD_NOT_ALLOWED),
        (("esipa", "push", EID), Code.DELETE, Code.METHOD_NOT_ALLOWED),
    ],
)
async def test_bad_registrations_are_refused_and_keep_nothing(lab, path, code, expect):
    dev = RawDevice(lab.port)
    try:
        dev.mid += 1
        msg = raw(CON, dev.mid, code, b"\x07", observe=0)
        msg.opt.uri_path = path
        dev.send(msg)
        answer = await dev.receive()
        assert answer is not None and answer.code == expect
        assert len(lab.table) == 0
    finally:
        dev.close()


async def test_forged_token_from_another_address_reaches_nothing(lab):
    victim, attacker = RawDevice(lab.port), RawDevice(lab.port)
    try:
        await registered(lab, victim, token=b"\xaa\xbb")
        # the attacker knows (or guesses) the victim's token: deregistration, Reset and a re-registration for
        # another EID with it, all from its own address
        attacker.register(EID, b"\xaa\xbb", observe=1)
        assert (await attacker.receive()).code == Code.CONTENT
        for mid in range(0, 400):
            attacker.send(raw(RST, mid, Code.EMPTY))
        await lab.queue()
        note = await victim.receive()
        assert note is not None and note.token == b"\xaa\xbb" and note.payload == WAITING and note.mtype == CON
        victim.ack(note)
        assert await attacker.receive(0.3) is None  # nothing of the victim's went to the attacker
        assert lab.table.observers[EID].notifications == 1
    finally:
        victim.close()
        attacker.close()


async def test_nat_rebinding_new_source_port_takes_over_nothing_sent_twice(lab):
    old, new = RawDevice(lab.port), RawDevice(lab.port)
    try:
        await registered(lab, old, token=b"\x01")
        await registered(lab, new, token=b"\x02")  # same device, the NAT gave it another port
        assert len(lab.table) == 1
        await lab.queue()
        note = await new.receive()
        assert note is not None and note.token == b"\x02" and note.payload == WAITING
        new.ack(note)
        assert await old.receive(0.5) is None  # the dropped observation gets nothing, not even a final answer
        assert await new.receive(0.3) is None  # one notification, acknowledged: not repeated
    finally:
        old.close()
        new.close()


async def test_unacknowledged_notifications_are_retransmitted_then_dropped_and_the_poll_gets_it_once(tmp_path, pki):
    lab = await start_lab(tmp_path, pki, ack_timeout=0.1)
    sleeper = RawDevice(lab.port)
    try:
        await registered(lab, sleeper)
        op_id = await lab.queue()
        copies = []
        while (m := await sleeper.receive(3.0)) is not None:
            copies.append(m)
        # the CON notification and its retransmissions (max_retransmit = 2), all the same message
        assert len(copies) == 3 and len({c.mid for c in copies}) == 1 and copies[0].payload == WAITING
        await eventually(lambda: EID not in lab.table.observers, "observer dropped after unacknowledged notification")
        # back to polling: the device wakes and polls; the package is handed out once, by the poll
        assert (await lab.env.store.get_operation(op_id)).status is OpStatus.QUEUED
        ctx = await aiocoap.Context.create_client_context()
        try:
            poll = Message(code=Code.POST, uri=f"coap://127.0.0.1:{lab.port}/gsma/rsp2/asn1")
            poll.payload = get_eim_package_request(EID)
            answer = await ctx.request(poll).response
            assert answer.payload[:2] == b"\xbf\x4f" and len(answer.payload) > 20
        finally:
            await ctx.shutdown()
        ops = await lab.env.store.list_operations(eid=EID, status=OpStatus.IN_PROGRESS)
        assert len(ops) == 1 and ops[0].attempts == 1
    finally:
        sleeper.close()
        await lab.binding.stop()
        await lab.env.store.close()


async def test_reset_on_a_notification_drops_the_observer(lab):
    dev = RawDevice(lab.port)
    try:
        await registered(lab, dev)
        await lab.queue()
        note = await dev.receive()
        dev.send(raw(RST, note.mid, Code.EMPTY))  # "I forgot this observation"
        await eventually(lambda: EID not in lab.table.observers, "observer dropped after a Reset")
    finally:
        dev.close()


async def test_flood_of_registrations_keeps_the_table_bounded_oldest_first(tmp_path, pki):
    lab = await start_lab(tmp_path, pki, max_observers=3)
    devs = [RawDevice(lab.port) for _ in EIDS]
    try:
        for i, (dev, eid) in enumerate(zip(devs, EIDS, strict=True)):
            await registered(lab, dev, eid, token=bytes([i + 1]))
        assert list(lab.table.observers) == EIDS[-3:]
        for eid in EIDS:
            await lab.queue(eid)
        for dev in devs[-3:]:
            note = await dev.receive()
            assert note is not None and note.payload == WAITING
            dev.ack(note)
        for dev in devs[:3]:
            assert await dev.receive(0.3) is None  # pushed out: polls again
    finally:
        for dev in devs:
            dev.close()
        await lab.binding.stop()
        await lab.env.store.close()


async def test_operation_state_in_api_shows_push(tmp_path, pki):
    lab = await start_lab(tmp_path, pki)
    dev = RawDevice(lab.port)
    try:
        euicc = await lab.env.service.get_euicc(EID)
        assert lab.env.service.push_status(euicc) is None
        await registered(lab, dev)
        status = lab.env.service.push_status(euicc)
        assert status is not None and status["binding"] == "coap" and status["since"] > 0
    finally:
        dev.close()
        await lab.binding.stop()
        await lab.env.store.close()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.0.2.7", False),
        ("::ffff:192.0.2.7", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("evil.example", False),
    ],
)
def test_unauthenticated_policy_hook_accepts_loopback_only(host, allowed):
    assert unauthenticated_observer_allowed(host) is allowed


@pytest.mark.parametrize(("trusted", "answer"), [(["127.0.0.2/32"], Code.UNAUTHORIZED), (["127.0.0.0/8"], None)])
async def test_plain_coap_observers_follow_the_device_policy(tmp_path, pki, trusted, answer):
    """A plain-CoAP registration proves no identity: it is admitted by the same ``[devices]`` rule as every other
    unauthenticated ESipa request. A peer outside ``trusted_networks`` (127.0.0.1 when only 127.0.0.2 is trusted:
    all on loopback, as the tests' traffic must be) gets 4.01 and no observation."""
    from eim.esipa.device_auth import DevicePolicy

    store = open_store(f"sqlite:///{tmp_path}/eim.db")
    await store.open()
    env = make_env(store, pki)
    await env.service.register_euicc(EID)
    policy = DevicePolicy(trusted_networks=trusted)
    push = PushService(
        env.service.has_work,
        env.service.is_registered,
        admits=lambda peer: policy.allow_unauthenticated or policy.peer_trusted(peer),
    )
    binding = CoapBinding(env.dispatcher, "127.0.0.1", free_port(socket.SOCK_DGRAM), push=push)
    await binding.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        msg = raw(CON, 1, Code.GET, b"\x01", observe=0)
        msg.opt.uri_path = ("esipa", "push", EID)
        sock.sendto(msg.encode(), ("127.0.0.1", binding.port))
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 5)
        code = Message.decode(data).code
        if answer is None:
            assert code.is_successful() and len(push.table) == 1
        else:
            assert code == answer and len(push.table) == 0
    finally:
        sock.close()
        await binding.stop()
        await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(st.text(min_size=0, max_size=40), min_size=0, max_size=4),
    observe=st.one_of(st.none(), st.integers(0, 2**24 - 1)),
    payload=st.binary(max_size=64),
    code=st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH]),
)
async def test_malformed_registrations_never_disturb_the_registered_device(lab, segments, observe, payload, code):
    victim = lab.table.observers.get(EID)
    if victim is None:
        dev = RawDevice(lab.port)
        await registered(lab, dev, token=b"\x55")
        victim = lab.table.observers[EID]
    junk = RawDevice(lab.port)
    try:
        junk.mid += 1
        msg = raw(CON, junk.mid, code, b"\x66", observe=observe, payload=payload)
        msg.opt.uri_path = ("esipa", "push", *segments)
        junk.send(msg)
        answer = await junk.receive()
        assert answer is not None  # the server keeps serving and answers every request
        if segments != [EID] and segments != [EID.lower()]:
            assert lab.table.observers.get(EID) is victim
    finally:
        junk.close()
