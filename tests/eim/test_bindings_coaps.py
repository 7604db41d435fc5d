"""ESipa over CoAPS (DTLS 1.2 PSK) against real servers on loopback: the eIM's ``CoapBinding`` with a ``PskFile``
on aiocoap's tinydtls server, real aiocoap tinydtls clients (and the IPA's ``CoapTransport``), raw UDP for
garbage. Two servers: one in front of the real ESipa dispatcher on SQLite (the exact answers, the EID check), one
in front of the test peer of ``test_bindings_common.py`` (large messages, what the handler sees)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.coap import CoapBinding
from eim.bindings.coap_dtls import (
    DTLS_VERSIONS,
    HANDSHAKE,
    DtlsSessionTable,
    carries_finished,
    dtls_records,
    starts_handshake,
)
from eim.bindings.coap_psk import PskFile, format_psk_line
from eim.interfaces import RequestContext
from eim.logs import JsonFormatter
from rsp import asn1
from rsp.pki import create_lab_pki
from tests.eim.helpers import make_env
from tests.eim.test_bindings_common import (
    EID,
    EID2,
    NO_PACKAGE,
    SpecHandler,
    get_eim_package_request,
    large_package_response,
    large_provide_result,
    provide_result,
)
from tests.services import free_port, require_dtls

EID3 = "89049032123451234512345678909999"
KEYS = {EID: bytes(range(16)), EID2: bytes(range(100, 116))}
INVALID_EID = bytes.fromhex("BF4F03020103")  # eimPackageError invalidEid (3)
EID_NOT_FOUND = bytes.fromhex("BF4F03020102")


class Recorder:
    """An ESipa handler that remembers what reached it, in front of another one."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[bytes, RequestContext]] = []

    async def handle(self, message: bytes, ctx: RequestContext) -> bytes | None:
        self.calls.append((message, ctx))
        return await self.inner.handle(message, ctx)


class Loop:
    """An event loop in a background thread (the servers and the clients run on it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def write_keys(path: Path, keys: dict[str, bytes], extra: str = "") -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# test devices\n" + "".join(format_psk_line(e, k) for e, k in keys.items()) + extra)
    tmp.chmod(0o600)
    tmp.replace(path)  # a new inode: the watcher sees a change even within one mtime tick


@dataclass(frozen=True)
class Endpoint:
    port: int

    @property
    def uri(self) -> str:
        return f"coaps://127.0.0.1:{self.port}/gsma/rsp2/asn1"


class Server:
    def __init__(self, loop: Loop, handler, psk_path: Path, **options) -> None:
        self.loop = loop
        self.handler = Recorder(handler)
        self.port = free_port(socket.SOCK_DGRAM)
        self.psk = PskFile(psk_path, check_interval=0.05)
        self.binding = CoapBinding(self.handler, "127.0.0.1", self.port, psk=self.psk, **options)
        loop.run(self.binding.start())

    @property
    def table(self) -> DtlsSessionTable:
        (table,) = self.binding.dtls_sessions
        return table

    @property
    def uri(self) -> str:
        return f"coaps://127.0.0.1:{self.port}/gsma/rsp2/asn1"

    def stop(self) -> None:
        self.loop.run(self.binding.stop())


async def client_for(port: int, identity: str, key: bytes) -> Context:
    ctx = await Context.create_client_context(transports=["tinydtls"])
    ctx.client_credentials.load_from_dict(
        {f"coaps://127.0.0.1:{port}/*": {"dtls": {"psk": key, "client-identity": identity.encode()}}}
    )
    return ctx


async def coaps(
    server: Server | Endpoint, identity: str, key: bytes, payload: bytes, *, blockwise: bool = True, wait=15.0
):
    """One request on a fresh client (a new DTLS session from a new source port), the response or the exception."""
    ctx = await client_for(server.port, identity, key)
    try:
        msg = Message(code=Code.POST, uri=server.uri, payload=payload)
        return await asyncio.wait_for(ctx.request(msg, handle_blockwise=blockwise).response, wait)
    except Exception as exc:  # the caller asserts which
        return exc
    finally:
        await ctx.shutdown()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    require_dtls()
    lp = Loop()
    try:
        yield lp
    finally:
        lp.close()


@pytest.fixture(scope="module")
def psk_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("coaps") / "psk.txt"
    write_keys(path, KEYS)
    return path


@pytest.fixture(scope="module")
def esipa(loop, psk_path, tmp_path_factory) -> Iterator[Server]:
    """The real dispatcher on SQLite, EID registered with nothing queued, EID2 registered too."""
    from eim.store import open_store

    pki = create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[])
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('store')}/eim.db")

    async def setup():
        await store.open()
        env = make_env(store, pki)
        for eid in (EID, EID2):
            await env.service.register_euicc(eid)
        return env

    env = loop.run(setup())
    server = Server(loop, env.dispatcher, psk_path)
    try:
        yield server
    finally:
        server.stop()
        loop.run(store.close())


@pytest.fixture(scope="module")
def spec(loop, psk_path) -> Iterator[Server]:
    server = Server(loop, SpecHandler(), psk_path, max_body_size=32 * 1024)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def logs(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="eim.esipa.coaps")
    caplog.set_level(logging.INFO, logger="eim.esipa.coap")
    return caplog


def records(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(message)]


def no_key_in_logs(caplog, *keys: bytes) -> None:
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records).lower()
    for key in keys:
        assert key.hex() not in text


# ------------------------------------------------------------------------------------------ exact answers
def test_get_eim_package_over_dtls_is_bf4f03020101(loop, esipa):
    r = loop.run(coaps(esipa, EID, KEYS[EID], get_eim_package_request(EID)))
    assert isinstance(r, Message), r
    assert r.code == Code.CHANGED and r.opt.content_format == 42
    assert r.payload == NO_PACKAGE == bytes.fromhex("BF4F03020101")
    message, ctx = esipa.handler.calls[-1]
    assert message == get_eim_package_request(EID)
    assert ctx.binding == "coap" and ctx.eid_hint == EID and "127.0.0.1" in (ctx.peer or "")
    # the other device with its own key
    r = loop.run(coaps(esipa, EID2, KEYS[EID2], get_eim_package_request(EID2)))
    assert r.payload == NO_PACKAGE


def test_a_device_cannot_speak_for_another_eid(loop, esipa):
    """EID's session asks for EID2's packages: the dispatcher answers invalidEid, EID2's queue is not touched."""
    r = loop.run(coaps(esipa, EID, KEYS[EID], get_eim_package_request(EID2)))
    assert r.code == Code.CHANGED and r.payload == INVALID_EID
    assert esipa.handler.calls[-1][1].eid_hint == EID
    # nor report a result in EID2's name
    r = loop.run(coaps(esipa, EID, KEYS[EID], provide_result(EID2)))
    assert r.payload == bytes.fromhex("BF5003020103")
    assert asn1.decode("EsipaMessageFromEimToIpa", r.payload) == (
        "provideEimPackageResultResponse",
        ("provideEimPackageResultError", 3),  # invalidEid
    )
    # EID2's own session gets EID2's answer
    r = loop.run(coaps(esipa, EID2, KEYS[EID2], get_eim_package_request(EID2)))
    assert r.payload == NO_PACKAGE


def test_ipa_coap_transport_polls_over_coaps(loop, esipa):
    from ipa.esipa.coap import CoapTransport

    async def poll():
        t = CoapTransport(f"coaps://127.0.0.1:{esipa.port}", psk=KEYS[EID], psk_identity=EID.encode(), timeout=15)
        try:
            return await t.send(get_eim_package_request(EID))
        finally:
            await t.close()

    assert loop.run(poll()) == NO_PACKAGE


# ------------------------------------------------------------------------------------------ block-wise
def test_blockwise_large_request_and_answer_over_dtls(loop, spec):
    big_request = large_provide_result(EID)
    big_answer = large_package_response()
    assert len(big_request) > 1024 and len(big_answer) > 1024
    before = len(spec.handler.calls)
    r = loop.run(coaps(spec, EID, KEYS[EID], big_request))
    assert r.code == Code.CHANGED
    assert asn1.decode("EsipaMessageFromEimToIpa", r.payload) == (
        "provideEimPackageResultResponse",
        ("eimAcknowledgements", [77]),
    )
    assert [m for m, _ in spec.handler.calls[before:]] == [big_request]  # reassembled once, whole
    assert spec.handler.calls[-1][1].eid_hint == EID

    spec.handler.inner.queue(EID, big_answer)
    first = loop.run(coaps(spec, EID, KEYS[EID], get_eim_package_request(EID), blockwise=False))
    assert first.opt.block2 is not None and first.opt.block2.more and first.opt.block2.block_number == 0
    assert first.payload == big_answer[: len(first.payload)] and len(first.payload) <= 1024
    spec.handler.inner.queue(EID, big_answer)
    assert loop.run(coaps(spec, EID, KEYS[EID], get_eim_package_request(EID))).payload == big_answer


# ------------------------------------------------------------------------------------------ failed handshakes
def test_unknown_identity_gets_no_answer_and_others_are_served(loop, esipa, logs):
    before = len(esipa.handler.calls)
    r = loop.run(coaps(esipa, EID3, KEYS[EID], get_eim_package_request(EID3)))
    assert isinstance(r, aiocoap.error.NetworkError), r  # tinydtls' fatal alert ends the client's handshake
    assert len(esipa.handler.calls) == before  # nothing reached ESipa
    (line,) = records(logs, "DTLS handshake with an unknown PSK identity")
    assert line.identity == EID3 and "127.0.0.1" in line.peer
    assert loop.run(coaps(esipa, EID, KEYS[EID], get_eim_package_request(EID))).payload == NO_PACKAGE
    no_key_in_logs(logs, *KEYS.values())


def test_wrong_key_gets_no_answer_the_eim_names_the_device(loop, esipa, logs):
    failed = esipa.table.failed
    before = len(esipa.handler.calls)
    wrong = bytes(16)

    async def attempt():
        task = asyncio.ensure_future(coaps(esipa, EID, wrong, get_eim_package_request(EID), wait=60))
        await asyncio.to_thread(wait_for, lambda: esipa.table.failed > failed, "the eIM sees the bad Finished")
        answered = task.done()
        task.cancel()
        return answered

    assert loop.run(attempt()) is False  # the handshake failed before any answer could come
    assert len(esipa.handler.calls) == before
    (line,) = records(logs, "DTLS handshake failed: the device's Finished message did not verify")
    assert line.eid == EID and "127.0.0.1" in line.peer and line.levelname == "WARNING"
    assert loop.run(coaps(esipa, EID, KEYS[EID], get_eim_package_request(EID))).payload == NO_PACKAGE
    no_key_in_logs(logs, wrong, *KEYS.values())


# ------------------------------------------------------------------------------------------ PSK file reload
def test_psk_file_reload_new_key_broken_file_and_fix(loop, tmp_path, logs):
    path = tmp_path / "psk.txt"
    write_keys(path, {EID: KEYS[EID]})
    server = Server(loop, SpecHandler(), path)
    try:
        assert isinstance(loop.run(coaps(server, EID3, KEYS[EID], get_eim_package_request(EID3))), Exception)

        write_keys(path, {EID: KEYS[EID], EID3: KEYS[EID2]})  # a device added while running
        wait_for(lambda: EID3 in server.psk, "the watcher reloads the file")
        r = loop.run(coaps(server, EID3, KEYS[EID2], get_eim_package_request(EID3)))
        assert r.payload == NO_PACKAGE and server.handler.calls[-1][1].eid_hint == EID3

        write_keys(path, {EID: KEYS[EID]}, extra="89049032123451234512345678901235:nothex\n")  # broken line 3
        wait_for(lambda: records(logs, "PSK file not reloaded"), "the broken file is reported")
        for _ in range(3):
            server.psk.reload()  # checked again, unchanged: not reported again
        (line,) = records(logs, "PSK file not reloaded")
        assert line.levelname == "ERROR" and "line 3" in line.error and "hex" in line.error
        assert line.devices == 2
        assert loop.run(coaps(server, EID3, KEYS[EID2], get_eim_package_request(EID3))).payload == NO_PACKAGE

        write_keys(path, {EID: KEYS[EID]})  # fixed: EID3 is gone now
        wait_for(lambda: EID3 not in server.psk, "the fixed file is loaded")
        assert isinstance(loop.run(coaps(server, EID3, KEYS[EID2], get_eim_package_request(EID3))), Exception)
        assert loop.run(coaps(server, EID, KEYS[EID], get_eim_package_request(EID))).payload == NO_PACKAGE
        no_key_in_logs(logs, *KEYS.values())
    finally:
        server.stop()


def test_psk_file_open_to_others_is_warned_about(tmp_path, logs):
    path = tmp_path / "psk.txt"
    write_keys(path, {EID: KEYS[EID]})
    PskFile(path)
    assert not records(logs, "PSK file is accessible to other users")
    path.chmod(0o644)
    PskFile(path)
    (line,) = records(logs, "PSK file is accessible to other users")
    assert line.mode == "0o644"


# ------------------------------------------------------------------------------------------ session table
@pytest.fixture(scope="module")
def client_hello(loop) -> bytes:
    """The first datagram a real aiocoap tinydtls client sends: its ClientHello."""
    require_dtls()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(10)
        port = sink.getsockname()[1]

        async def start():
            ctx = await client_for(port, EID, KEYS[EID])
            msg = Message(code=Code.POST, uri=f"coaps://127.0.0.1:{port}/gsma/rsp2/asn1", payload=b"x")
            return ctx, asyncio.ensure_future(ctx.request(msg).response)

        ctx, pending = loop.run(start())
        try:
            hello = sink.recv(4096)
        finally:
            pending.cancel()
            loop.run(ctx.shutdown())
    assert starts_handshake(hello)
    return hello


def test_session_table_stays_bounded_and_evicted_devices_handshake_again(loop, tmp_path, client_hello):
    path = tmp_path / "psk.txt"
    write_keys(path, KEYS)
    server = Server(loop, SpecHandler(), path, dtls_max_sessions=4)
    held = []  # responses keep their DTLS session alive on the client side (aiocoap's pool is weak)

    async def session(identity: str) -> tuple[Context, int]:
        ctx = await client_for(server.port, identity, KEYS[identity])
        r = await asyncio.wait_for(
            ctx.request(Message(code=Code.POST, uri=server.uri, payload=get_eim_package_request(identity))).response,
            30,
        )
        assert r.payload == NO_PACKAGE
        held.append(r)
        return ctx, r.remote._transport.get_extra_info("sockname")[1]

    try:
        first_ctx, first_port = loop.run(session(EID))
        contexts = [first_ctx]
        for i in range(6):  # 7 devices, 4 places
            ctx, _ = loop.run(session(EID if i % 2 else EID2))
            contexts.append(ctx)
            assert len(server.table) <= 4
        assert len(server.table) == 4 and server.table.evicted >= 3
        assert ("127.0.0.1", first_port) not in server.table.sessions
        # the first device still holds its session; the eIM's close_notify made it handshake again on its next poll
        r = loop.run(
            asyncio.wait_for(
                first_ctx.request(
                    Message(code=Code.POST, uri=server.uri, payload=get_eim_package_request(EID))
                ).response,
                30,
            )
        )
        assert r.payload == NO_PACKAGE and server.handler.calls[-1][1].eid_hint == EID

        # handshakes that never finish are pushed out before established sessions
        established = dict(server.table.sessions)
        evicted = server.table.evicted
        for _ in range(6):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(client_hello, ("127.0.0.1", server.port))
                s.settimeout(5)
                s.recv(4096)  # tinydtls' HelloVerifyRequest: the session exists now
        assert len(server.table) == 4
        survivors = [k for k, a in established.items() if server.table.sessions.get(k) is a]
        assert len(survivors) == 3  # one place went to the first scanner, the others took turns in it
        assert server.table.evicted == evicted + 6
        for ctx in contexts:
            loop.run(ctx.shutdown())
        held.clear()
    finally:
        server.stop()


def test_a_device_closing_its_session_frees_its_place(loop, spec):
    before = spec.table.established
    r = loop.run(coaps(spec, EID2, KEYS[EID2], get_eim_package_request(EID2)))  # the client closes on shutdown
    assert r.payload == NO_PACKAGE
    assert spec.table.established == before + 1
    port = r.remote._transport.get_extra_info("sockname")[1]
    wait_for(lambda: ("127.0.0.1", port) not in spec.table.sessions, "the close_notify ends the session")


class OneAddress(asyncio.DatagramProtocol):
    """A NAT in front of the server: every client reaches it from this one socket; client alerts are dropped
    (the device vanished without closing its session)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if data[:1] != bytes([21]):  # 21 = alert
            self.transport.sendto(data, self.server)


def test_another_device_behind_the_same_address_never_inherits_a_session(loop, tmp_path, logs):
    """EID's session stays open; EID2 then handshakes from the very same address and port (a NAT mapping handed to
    another device): nothing is ever handled as EID for it, the server keeps serving, EID2 gets in afresh."""
    path = tmp_path / "psk.txt"
    write_keys(path, KEYS)
    server = Server(loop, SpecHandler(), path)

    async def nat():
        return await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: OneAddress(("127.0.0.1", server.port)), local_addr=("127.0.0.1", 0)
        )

    transport, _ = loop.run(nat())
    front = Endpoint(transport.get_extra_info("sockname")[1])  # the same server, reached through the NAT
    try:
        r = loop.run(coaps(front, EID, KEYS[EID], get_eim_package_request(EID)))
        assert r.payload == NO_PACKAGE and len(server.table) == 1
        before = len(server.handler.calls)
        # the first attempt meets EID's session and fails; a later one gets through. Up to 6: under a full suite's
        # load, a failed attempt's last retransmissions can still reach the NAT and take its mapping (seen once at 3)
        for _ in range(6):
            r = loop.run(coaps(front, EID2, KEYS[EID2], get_eim_package_request(EID2), wait=5))
            if isinstance(r, Message):
                break
        assert isinstance(r, Message) and r.payload == NO_PACKAGE
        assert [ctx.eid_hint for _, ctx in server.handler.calls[before:]] == [EID2]
        assert server.table.errors >= 1 and records(logs, "DTLS datagram not handled, session dropped")
        assert loop.run(coaps(server, EID, KEYS[EID], get_eim_package_request(EID))).payload == NO_PACKAGE
    finally:
        transport.close()
        server.stop()


# ------------------------------------------------------------------------------------------ garbage
def mutate(hello: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(hello)
    for pos, value in flips:
        b[pos % len(b)] = value
    return bytes(b)


@pytest.fixture(scope="module")
def fuzz_target(loop, psk_path) -> Iterator[Server]:
    server = Server(loop, SpecHandler(), psk_path, dtls_max_sessions=16)
    try:
        yield server
    finally:
        server.stop()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_garbage_datagrams_do_not_stop_the_server(loop, fuzz_target, client_hello, data):
    """Random bytes, CoAP without DTLS, record headers with random bodies and mutated ClientHellos (which reach
    tinydtls' parser): afterwards a device still gets its answer and the table keeps its bound."""
    header = st.builds(
        lambda t, v, e, body: bytes([t]) + v + e.to_bytes(2, "big") + bytes(6) + len(body).to_bytes(2, "big") + body,
        st.sampled_from([20, 21, 22, 23, 0, 255]),
        st.sampled_from([b"\xfe\xfd", b"\xfe\xff", b"\x03\x03"]),
        st.integers(0, 3),
        st.binary(max_size=120),
    )
    datagram = data.draw(
        st.one_of(
            st.binary(min_size=1, max_size=300),
            header,
            st.builds(
                lambda body: bytes([22, 0xFE, 0xFD]) + bytes(8) + len(body).to_bytes(2, "big") + body,
                st.builds(lambda b: b"\x01" + b, st.binary(max_size=200)),
            ),
            st.builds(
                mutate,
                st.just(client_hello),
                st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=6),
            ),
        )
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", fuzz_target.port))
        s.sendto(datagram, ("127.0.0.1", fuzz_target.port))
    r = loop.run(coaps(fuzz_target, EID, KEYS[EID], get_eim_package_request(EID)))
    assert isinstance(r, Message) and r.payload == NO_PACKAGE, r
    assert len(fuzz_target.table) <= 16


# ------------------------------------------------------------------------------------------ record parsing
def record(content_type: int, epoch: int, body: bytes, version: bytes = b"\xfe\xfd") -> bytes:
    return bytes([content_type]) + version + epoch.to_bytes(2, "big") + bytes(6) + len(body).to_bytes(2, "big") + body


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 65535), st.binary(max_size=60)), max_size=5),
    st.binary(max_size=12),
)
def test_record_parsing_round_trips_and_ignores_a_short_tail(parts, tail):
    datagram = b"".join(record(t, e, b) for t, e, b in parts) + tail  # a tail under 13 bytes is no record
    got = dtls_records(datagram)
    assert [(r.content_type, r.epoch, r.length) for r in got] == [(t, e, len(b)) for t, e, b in parts]
    assert carries_finished(datagram) == any(t == HANDSHAKE and e >= 1 for t, e, _ in parts)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_record_parsing_never_raises(data):
    got = dtls_records(data)
    assert sum(13 + r.length for r in got) <= len(data)
    if starts_handshake(data):
        assert got[0].content_type == HANDSHAKE and got[0].handshake_type == 1


def test_record_parsing_on_real_handshake_datagrams(client_hello):
    (hello,) = dtls_records(client_hello)
    assert (hello.content_type, hello.epoch, hello.handshake_type) == (HANDSHAKE, 0, 1)
    assert hello.version in DTLS_VERSIONS and hello.length == len(client_hello) - 13
    assert not carries_finished(client_hello)
    finished = record(HANDSHAKE, 1, bytes(40))
    ccs = record(20, 0, b"\x01")
    assert carries_finished(ccs + finished) and not starts_handshake(ccs + finished)
    assert not starts_handshake(client_hello[:-1])  # truncated: not a complete record
    assert not starts_handshake(b"\x40\x02\x12\x34")  # plain CoAP
