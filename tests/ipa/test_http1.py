"""The IPA's small HTTP/1.1 client (ipa.esipa.http1) and HttpTransport on it: answers as servers send them
(Content-Length, chunked, until close, 1xx first, Connection: close), garbage from a hostile or broken server
(hypothesis: only HttpProtocolError, never another exception, never more than the limits), keep-alive reuse, a
server that closed the idle connection, and the httpx fallback when a proxy is configured."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa.esipa import EsipaError
from ipa.esipa.http import HttpTransport
from ipa.esipa.http1 import Http1Client, HttpProtocolError, read_response

NO_PACKAGE = bytes.fromhex("BF4F03020101")
POLL = bytes.fromhex("BF4F125A10") + bytes.fromhex("89049032123451234512345678901237")


def feed(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def parse(data: bytes, max_body: int = 1 << 20):
    async def go():
        return await read_response(feed(data), max_body=max_body)

    return asyncio.run(go())


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(data):
    try:
        status, _headers, body, _ = parse(data, max_body=100)
    except HttpProtocolError:
        return
    assert 100 <= status <= 999 and len(body) <= 100


@st.composite
def answers(draw):
    body = draw(st.binary(max_size=200))
    status = draw(st.sampled_from([200, 400, 401, 403, 500]))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/x-gsma-rsp-asn1\r\n"
    if framing == "length":
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    elif framing == "chunked":
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
        raw += b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    else:
        raw = (head + "Connection: close\r\n\r\n").encode() + body
    if draw(st.booleans()):
        raw = b"HTTP/1.1 100 Continue\r\n\r\n" + raw
    return status, body, framing, raw


@settings(max_examples=300, deadline=None)
@given(answers())
def test_well_formed_answers_are_read_exactly(answer):
    status, body, framing, raw = answer
    got_status, _headers, got_body, keep_alive = parse(raw)
    assert (got_status, got_body) == (status, body)
    assert keep_alive is (framing != "close")


@settings(max_examples=300, deadline=None)
@given(answers(), st.data())
def test_truncated_answers_are_protocol_errors(answer, data):
    _status, _body, framing, raw = answer
    if framing == "close":
        return  # until-close framing: any prefix of the body is a (shorter) answer
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(HttpProtocolError):
        parse(raw[:cut])


def test_limits():
    with pytest.raises(HttpProtocolError, match="over"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + bytes(101), max_body=100)
    with pytest.raises(HttpProtocolError, match="more than"):
        parse(b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n")
    with pytest.raises(HttpProtocolError, match="not a length"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
    with pytest.raises(HttpProtocolError, match="not hexadecimal"):
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    with pytest.raises(HttpProtocolError, match="not HTTP"):
        parse(b"SSH-2.0-OpenSSH\r\n\r\n")


# ------------------------------------------------------------------------------------------ against a server
class Scripted:
    """A TCP server that answers each request with the next scripted bytes (and closes when told to)."""

    def __init__(self, script: list[tuple[bytes, bool]]) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                self.requests.append(head + await reader.readexactly(length))
                answer, close = self.script.pop(0)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def ok(body: bytes = NO_PACKAGE, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_reuse_and_reconnect_after_server_close():
    server = Scripted([(ok(), False), (ok(), True), (ok(), False)])
    async with server as url:
        t = HttpTransport(url, timeout=5)
        assert await t.send(POLL) == NO_PACKAGE
        assert await t.send(POLL) == NO_PACKAGE  # same connection; the server closes it after answering
        await asyncio.sleep(0.05)
        assert await t.send(POLL) == NO_PACKAGE  # a new connection, not an error
        await t.close()
    assert server.connections == 2
    first = server.requests[0]
    assert first.startswith(b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Type: application/x-gsma-rsp-asn1\r\n" in first and first.endswith(POLL)
    assert b"X-Admin-Protocol: gsma/rsp/v2.1.0\r\n" in first and b"User-Agent: gsma-rsp-ipad\r\n" in first


async def test_statuses_become_esipa_answers_and_errors():
    server = Scripted(
        [
            (b"HTTP/1.1 204 No Content\r\n\r\n", False),
            (ok(b"", ""), False),
            (ok(b"token refused"[:13]).replace(b"200 OK", b"401 Unauthorized"), False),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True),  # truncated
        ]
    )
    async with server as url:
        t = HttpTransport(url, timeout=5)
        assert await t.send(POLL) is None
        assert await t.send(POLL) is None
        with pytest.raises(EsipaError, match="HTTP 401 token refused") as err:
            await t.send(POLL)
        assert err.value.status == 401
        with pytest.raises(EsipaError, match="GetEimPackage: HttpProtocolError: body: connection closed"):
            await t.send(POLL)
        await t.close()


async def test_silent_server_times_out():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        c = Http1Client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x", timeout=0.2)
        with pytest.raises(TimeoutError):
            await c.post(b"x")
        await c.close()
    finally:
        server.close()


def test_proxy_in_the_environment_uses_httpx(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    t = HttpTransport("https://eim.example", timeout=5)
    assert t._lean is None and t._httpx is not None
    monkeypatch.delenv("HTTPS_PROXY")
    t = HttpTransport("https://eim.example", timeout=5)
    assert t._lean is not None and t._httpx is None
