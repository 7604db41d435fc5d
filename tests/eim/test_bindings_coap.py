"""ESipa CoAP binding against a real aiocoap server on loopback (aiocoap client, raw UDP for garbage)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.coap import BoundedDedupCache, CoapBinding
from rsp import asn1
from tests.eim.test_bindings_common import (
    EID,
    EID2,
    NO_PACKAGE,
    REAL_PACKAGE_RESPONSE,
    SpecHandler,
    get_eim_package_request,
    handle_notification,
    large_package_response,
    large_provide_result,
    provide_result,
)
from tests.services import free_port


class CoapLab:
    """A CoapBinding and an aiocoap client context, both on one event loop in a background thread."""

    def __init__(self, handler, **options) -> None:
        self.handler = handler
        self.port = free_port(socket.SOCK_DGRAM)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.binding = CoapBinding(handler, "127.0.0.1", self.port, **options)
        self.run(self.binding.start())
        self.client = self.run(Context.create_client_context())
        self.uri = f"coap://127.0.0.1:{self.port}/gsma/rsp2/asn1"

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, payload: bytes, *, code=Code.POST, uri: str | None = None, blockwise: bool = True, **opts):
        async def go():
            msg = Message(code=code, uri=uri or self.uri, payload=payload, **opts)
            return await self.client.request(msg, handle_blockwise=blockwise).response

        return self.run(go())

    def close(self) -> None:
        self.run(self.client.shutdown())
        self.run(self.binding.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def lab() -> Iterator[CoapLab]:
    lab = CoapLab(SpecHandler(), max_body_size=32 * 1024)
    try:
        yield lab
    finally:
        lab.close()


def test_get_eim_package_no_package(lab):
    r = lab.request(get_eim_package_request(EID))
    assert r.code == Code.CHANGED
    assert r.payload == NO_PACKAGE == bytes.fromhex("BF4F03020101")
    assert r.opt.content_format == 42
    message, ctx = lab.handler.calls[-1]
    assert message == get_eim_package_request(EID)
    assert ctx.binding == "coap" and ctx.peer and "127.0.0.1" in ctx.peer and ctx.eid_hint is None


def test_real_package_verbatim_and_ack(lab):
    lab.handler.queue(EID2, REAL_PACKAGE_RESPONSE)
    assert lab.request(get_eim_package_request(EID2)).payload == REAL_PACKAGE_RESPONSE
    assert lab.request(provide_result()).payload == bytes.fromhex("BF5006BF5303800114")


def test_handle_notification_empty_changed(lab):
    r = lab.request(handle_notification())
    assert r.code == Code.CHANGED and r.payload == b""
    assert lab.handler.notifications[-1] == handle_notification()


def test_blockwise_large_request_and_response(lab):
    big_request = large_provide_result()
    big_answer = large_package_response()
    assert len(big_request) > 1024 and len(big_answer) > 1024
    before = len(lab.handler.calls)
    r = lab.request(big_request)  # aiocoap's client sends it as Block1
    assert r.code == Code.CHANGED
    assert asn1.decode("EsipaMessageFromEimToIpa", r.payload) == (
        "provideEimPackageResultResponse",
        ("eimAcknowledgements", [77]),
    )
    assert [m for m, _ in lab.handler.calls[before:]] == [big_request]  # reassembled once, whole

    lab.handler.queue(EID, big_answer)
    raw = lab.request(get_eim_package_request(EID), blockwise=False)  # first block only: the server chunked it
    assert raw.code == Code.CHANGED
    assert raw.opt.block2 is not None and raw.opt.block2.more and raw.opt.block2.block_number == 0
    assert raw.payload == big_answer[: len(raw.payload)] and len(raw.payload) <= 1024

    lab.handler.queue(EID, big_answer)
    assert lab.request(get_eim_package_request(EID)).payload == big_answer  # the client fetches all blocks


def test_rejected_is_400_with_diagnostic(lab):
    r = lab.request(b"\x01\x02\x03")
    assert r.code == Code.BAD_REQUEST
    assert b"EsipaMessageFromIpaToEim" in r.payload


def test_methods_paths_formats_and_size(lab):
    assert lab.request(b"", code=Code.GET).code == Code.METHOD_NOT_ALLOWED
    assert lab.request(b"", code=Code.PUT).code == Code.METHOD_NOT_ALLOWED
    assert lab.request(get_eim_package_request(), uri=lab.uri + "x").code == Code.NOT_FOUND
    assert lab.request(get_eim_package_request(), content_format=50).code == Code.UNSUPPORTED_CONTENT_FORMAT
    assert lab.request(get_eim_package_request(), content_format=42).payload == NO_PACKAGE
    assert lab.request(get_eim_package_request(), content_format=65001).payload == NO_PACKAGE
    too_big = b"\x30\x82" + bytes(33 * 1024)
    assert lab.request(too_big).code == Code.REQUEST_ENTITY_TOO_LARGE
    assert lab.request(get_eim_package_request()).payload == NO_PACKAGE


def test_duplicate_cache_is_bounded_and_in_use(lab):
    assert lab.request(get_eim_package_request()).payload == NO_PACKAGE
    caches = lab.binding.dedup_caches
    assert caches and all(isinstance(c, BoundedDedupCache) for c in caches)
    assert sum(len(c) for c in caches) > 0  # the requests above went through it
    assert all(len(c) <= c.max_entries for c in caches)


async def test_bounded_dedup_cache_expires_evicts_and_replays():
    """Drive the cache with a stand-in message manager: duplicates are caught, answers replayed byte for byte,
    time and size bounds kept."""
    from aiocoap.numbers.types import ACK, CON

    class Clock:
        now = 0.0

        def time(self):
            return self.now

    sent = []

    class Manager:
        loop = Clock()

        def _send_via_transport(self, m):
            sent.append(m)

    def request(mid):
        m = Message(code=Code.POST, payload=b"req")
        m.mid, m.mtype, m.remote = mid, CON, "peer-a"
        return m

    cache = BoundedDedupCache(lifetime=10.0, max_entries=3)
    mgr = Manager()
    cache.install(mgr)
    assert mgr._deduplicate_message(request(1)) is False
    assert mgr._deduplicate_message(request(1)) is True and sent == []  # no answer stored yet
    answer = Message(code=Code.CHANGED, payload=NO_PACKAGE)
    answer.mid, answer.token, answer.mtype, answer.remote = 1, b"\x07", ACK, "peer-a"
    mgr._store_response_for_duplicates(answer)
    assert mgr._deduplicate_message(request(1)) is True
    assert len(sent) == 1 and sent[0].encode() == answer.encode() and sent[0].remote == "peer-a"  # replayed
    for mid in (2, 3, 4):
        assert mgr._deduplicate_message(request(mid)) is False
    assert len(cache) == 3 and ("peer-a", 1) not in cache.entries  # oldest evicted at the size bound
    Manager.loop.now = 11.0
    assert mgr._deduplicate_message(request(5)) is False
    assert list(cache.entries) == [("peer-a", 5)]  # everything older than the lifetime purged


async def test_dedup_entries_are_plain_data_and_a_new_remote_object_for_the_same_peer_is_a_duplicate():
    """The simple socket server makes a new remote object (its server socket, the peer's address) for every
    datagram. The cache keys by the peer's address: a retransmission is caught whichever remote object carries
    it, another peer is not, and after a collection no entry is tracked by the garbage collector or keeps a remote
    object alive (50,000 entries of remote objects made every collection walk them: docs/performance.md)."""
    import gc

    from aiocoap.numbers.types import ACK, CON
    from aiocoap.transports.simplesocketserver import _Address

    class Clock:
        def time(self):
            return 0.0

    sent = []

    class Manager:
        loop = Clock()

        def _send_via_transport(self, m):
            sent.append(m)

    server_socket = object()

    def request(mid, peer):
        m = Message(code=Code.POST, payload=b"req")
        m.mid, m.mtype, m.remote = mid, CON, _Address(server_socket, peer)
        return m

    cache = BoundedDedupCache(lifetime=60.0, max_entries=100)
    mgr = Manager()
    cache.install(mgr)
    first = request(7, ("192.0.2.1", 5683))
    assert mgr._deduplicate_message(first) is False
    answer = Message(code=Code.CHANGED, payload=NO_PACKAGE)
    answer.mid, answer.token, answer.mtype, answer.remote = (
        7,
        b"\x01",
        ACK,
        _Address(server_socket, ("192.0.2.1", 5683)),
    )
    mgr._store_response_for_duplicates(answer)
    again = request(7, ("192.0.2.1", 5683))  # a new remote object, the same peer
    assert again.remote is not first.remote
    assert mgr._deduplicate_message(again) is True and [m.encode() for m in sent] == [answer.encode()]
    assert sent[0].remote is again.remote  # replayed to the datagram's own remote
    assert mgr._deduplicate_message(request(7, ("192.0.2.2", 5683))) is False  # another peer, same message id
    gc.collect()
    for key, value in cache.entries.items():
        assert not gc.is_tracked(key) and not gc.is_tracked(value), (key, value)
    assert not any(isinstance(k[0], _Address) for k in cache.entries)  # no remote object kept alive


def test_retransmitted_con_is_answered_from_the_cache(lab):
    """A CON sent twice (the client missed our ACK): the same answer bytes twice, the handler runs once."""
    path = b"".join(bytes([0xB4 if i == 0 else 0x04]) + part for i, part in enumerate((b"gsma", b"rsp2", b"asn1")))
    datagram = bytes([0x41, 0x02, 0x12, 0x34, 0x5A]) + path + b"\xff" + get_eim_package_request(EID2)
    before = len(lab.handler.calls)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(datagram, ("127.0.0.1", lab.port))
        first = s.recv(2048)
        s.sendto(datagram, ("127.0.0.1", lab.port))
        second = s.recv(2048)
    assert first == second
    assert first[:5] == bytes([0x61, 0x44, 0x12, 0x34, 0x5A])  # ACK, 2.04, same message id and token
    assert first.endswith(b"\xff" + NO_PACKAGE)
    assert len(lab.handler.calls) == before + 1


def test_two_requests_in_parallel(lab):
    async def both():
        reqs = [
            lab.client.request(Message(code=Code.POST, uri=lab.uri, payload=get_eim_package_request(e))).response
            for e in (EID, EID2)
        ]
        return await asyncio.gather(*reqs)

    assert [r.payload for r in lab.run(both())] == [NO_PACKAGE, NO_PACKAGE]


ESIPA_TAGS = [bytes.fromhex(t) for t in ("BF39", "BF3B", "BF3A", "BF41", "BF3D", "BF4E", "BF4F", "BF50", "30")]
garbage = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda tag, rest: tag + rest, st.sampled_from(ESIPA_TAGS), st.binary(max_size=200)),
)


@settings(max_examples=120, deadline=None)
@given(body=garbage, datagram=st.binary(min_size=1, max_size=300))
def test_garbage_gets_esipa_answer_or_4_00_and_server_keeps_serving(lab, body, datagram):
    r = lab.request(body)
    assert r.code in (Code.CHANGED, Code.BAD_REQUEST), r
    if r.code == Code.CHANGED and r.payload:
        asn1.decode("EsipaMessageFromEimToIpa", r.payload)
    if r.code == Code.BAD_REQUEST:
        assert r.payload  # a diagnostic payload
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # not even CoAP
        s.sendto(datagram, ("127.0.0.1", lab.port))
    assert lab.request(get_eim_package_request()).payload == NO_PACKAGE


def test_udp6_transport_also_serves():
    lab = CoapLab(SpecHandler(), transport="udp6")
    try:
        assert lab.request(get_eim_package_request()).payload == NO_PACKAGE
        assert lab.binding.dedup_caches
    finally:
        lab.close()


def test_out_of_order_block1_is_4_08_one_warning_no_traceback(lab, caplog):
    """An attacker's Block1 that does not continue the assembly it started (aiocoap raises a bare ValueError
    there): 4.08 Request Entity Incomplete (RFC 7959 §2.9.2), one warning line without a traceback however many
    arrive, and the server keeps serving."""
    from aiocoap.optiontypes import BlockOption

    caplog.set_level("DEBUG", logger="eim.esipa.coap")
    block = BlockOption.BlockwiseTuple
    first = lab.request(b"\xbf" * 64, blockwise=False, block1=block(0, True, 2))
    assert first.code == Code.CONTINUE
    answers = [
        lab.request(b"\xbf" * 64, blockwise=False, block1=block(num, more, 2)).code
        for num, more in [(5, False), (2, True), (7, True)]
    ]
    assert answers == [Code.REQUEST_ENTITY_INCOMPLETE] * 3
    coap_records = [r for r in caplog.records if r.name.startswith("eim.esipa.coap")]
    assert not [r for r in coap_records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    warnings = [r for r in coap_records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Block1" in warnings[0].getMessage()
    r = lab.request(get_eim_package_request(EID))
    assert r.code == Code.CHANGED and r.payload == NO_PACKAGE
