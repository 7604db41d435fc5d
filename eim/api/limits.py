"""Request limits of the HTTP port at the ASGI level: the Host allowlist and the operator API's body limit.

====================================================  ==============================================
request                                               answer
====================================================  ==============================================
``Host`` not in ``[http] allowed_hosts`` (if set)     400 ``text/plain``, connection closed (any path, ESipa too)
no ``Host`` header while an allowlist is set          400, the same
``Content-Length`` above the route's limit            413 JSON error, connection closed, body never read
chunked body growing past the limit                   413 as soon as the count passes it; nothing more is read
``Content-Length`` not a number                       400 JSON error
client leaves while sending the body                  nothing is sent; the app never runs
====================================================  ==============================================

The operator API's limit is ``[api] max_body_bytes`` (1 MiB), ``max_batch_body_bytes`` (4 MiB) for ``POST
/v1/batches``; ESipa keeps its own (``eim.bindings.http``, 256 KiB). The body is read here, counting every chunk,
and handed to FastAPI only when complete and within the limit, so FastAPI never buffers more than the limit.
Slow clients (headers or body dripping in) are cut by ``eim.api.timeouts`` at the protocol level.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DISCONNECTED = object()


def header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


async def send_json_error(
    send: Send, status: int, code: str, message: str, *, close: bool = False, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------ Host allowlist
def _host_name(value: bytes) -> str | None:
    """The host of a Host header without the port, lower case; None when malformed."""
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0 or (len(text) > end + 1 and not text[end + 1 :].startswith(":")):
            return None
        return text[: end + 1]
    host, _, port = text.partition(":")
    if port and not port.isdigit():
        return None
    return host.rstrip(".") or None


def host_allowed(value: bytes | None, patterns: Sequence[str]) -> bool:
    """``value`` (a Host header) matches one of ``patterns``: exact names, ``*.example.com`` for any subdomain,
    ``*`` for anything."""
    if value is None:
        return False
    host = _host_name(value)
    if host is None:
        return False
    for p in patterns:
        p = p.lower()
        if p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1):
            return True
    return False


class HostAllowlist:
    """400 for a request whose Host header is not allowed (DNS rebinding, requests meant for another site)."""

    def __init__(self, app: AsgiApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = tuple(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not host_allowed(header(scope, b"host"), self.hosts):
            body = b"Host not allowed"
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------------ body limit
async def read_body(receive: Receive, limit: int) -> bytes | object | None:
    """The whole body, ``None`` as soon as it grows past ``limit``, ``DISCONNECTED`` if the client left."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return DISCONNECTED
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands ``body`` over once, then waits on the real one (for the disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def declared_length(scope: Scope) -> int | object | None:
    """Content-Length as an int, None without one, ``DISCONNECTED``-like sentinel ``BAD`` when malformed."""
    value = header(scope, b"content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        return BAD
    return int(value)


BAD = object()
