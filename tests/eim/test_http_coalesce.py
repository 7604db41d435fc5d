"""One send per HTTP response (eim.api.coalesce): a response's head and body reach the real transport as one
write, in order, and nothing is held past the event-loop iteration it was written in."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from eim.api.coalesce import CoalescingTransport
from eim.api.timeouts import guarded_protocol


class Recorder(asyncio.Transport):
    """A transport that keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.closed = False
        self.eof = False
        self.aborted = False

    def write(self, data) -> None:  # type: ignore[override]
        self.chunks.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_head_and_body_leave_in_one_write_and_a_lone_head_by_the_end_of_the_iteration():
    loop = asyncio.get_running_loop()
    raw = Recorder()
    t = CoalescingTransport(raw, loop)
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.chunks == []
    t.write(memoryview(b"ok"))
    assert raw.chunks == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]

    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # no body follows
    assert len(raw.chunks) == 1
    await asyncio.sleep(0)  # the iteration it was written in ends
    assert raw.chunks[-1] == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert t.writes == 2

    t.write(b"")  # nothing to send, nothing scheduled
    await asyncio.sleep(0)
    assert len(raw.chunks) == 2
    assert t.get_extra_info("peername") == ("127.0.0.1", 1) and t.can_write_eof()


async def test_close_and_eof_send_what_is_held_first_and_abort_drops_it():
    loop = asyncio.get_running_loop()
    raw = Recorder()
    t = CoalescingTransport(raw, loop)
    t.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    t.write_eof()
    assert raw.chunks == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and raw.eof
    t.write(b"last")
    t.close()
    assert raw.chunks[-1] == b"last" and raw.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing held
    assert len(raw.chunks) == 2

    raw2 = Recorder()
    t2 = CoalescingTransport(raw2, loop)
    t2.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t2.abort()
    await asyncio.sleep(0)
    assert raw2.chunks == [] and raw2.aborted  # an aborted connection sends nothing more
    raw3 = Recorder()
    t3 = CoalescingTransport(raw3, loop)
    t3.write(b"held")
    raw3.closed = True  # closing underneath (aborted, connection lost): it would drop the bytes, so none are given
    await asyncio.sleep(0)
    assert raw3.chunks == []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    if scope["path"] == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/stream":  # a head, then the body in two parts with a pause in between
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})
        return
    out = b"echo:" + body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def _recv_until(sock: socket.socket, marker: bytes, count: int) -> bytes:
    data = b""
    while data.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
async def server():
    protocol = guarded_protocol(header_timeout=5.0, body_timeout=5.0, max_connections=10)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=protocol, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    for _ in range(1000):  # the server starts within 10 s or the test fails
        if srv.started or task.done():
            break
        await asyncio.sleep(0.01)  # uvicorn.Server offers no event for "started"
    assert srv.started, "uvicorn did not start"
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield srv, port
    srv.should_exit = True
    await task


async def test_a_real_uvicorn_connection_gets_every_response_whole_with_one_write_each(server):
    srv, port = server

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            # three pipelined requests on one keep-alive connection: a body, a 204, a HEAD
            s.sendall(
                b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
                b"GET /empty HTTP/1.1\r\nhost: t\r\n\r\n"
                b"HEAD /y HTTP/1.1\r\nhost: t\r\n\r\n"
            )
            return _recv_until(s, b"HTTP/1.1 ", 3)

    data = await asyncio.to_thread(client)
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert [p.split(b"\r\n", 1)[0] for p in parts] == [b"200 OK", b"204 No Content", b"200 OK"]
    assert parts[0].endswith(b"\r\n\r\necho:hello")
    assert parts[1].endswith(b"\r\n\r\n") and parts[2].endswith(b"\r\n\r\n")  # no body for 204 nor HEAD
    assert b"content-length: 5" in parts[2]  # HEAD: the length of the body it would have had, no body

    def streamed() -> tuple[bytes, int]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
            first = s.recv(65536)  # the head leaves before the app's pause ends, without its body
            rest = first
            while not rest.endswith(b"abcdef"):
                rest += s.recv(65536)
            return first, len(rest)

    first, _ = await asyncio.to_thread(streamed)
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"\r\n\r\n")

    def four_requests(s: socket.socket) -> None:
        for i in range(4):
            s.sendall(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\n" + bytes([65 + i]))
            assert _recv_until(s, b"echo:", 1).endswith(b"echo:" + bytes([65 + i]))

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        await asyncio.to_thread(four_requests, s)
        writes = [p.transport.writes for p in list(srv.server_state.connections)]  # on the loop, connection open
    assert 4 in writes  # that connection: four responses, four writes (head and body joined), not eight


async def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(server):
    """The client sends its request and then shuts down its side (FIN): the transport closes itself after the
    protocol's ``eof_received``, so a held head (HEAD: no body to push it out) must leave before that."""
    _srv, port = server

    def ask(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    for _ in range(10):
        head = await asyncio.to_thread(ask, b"HEAD /y HTTP/1.1\r\nhost: t\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
        empty = await asyncio.to_thread(ask, b"GET /empty HTTP/1.1\r\nhost: t\r\n\r\n")
        assert empty.startswith(b"HTTP/1.1 204 No Content\r\n")
