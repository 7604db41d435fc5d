"""A small HTTP/1.1 client for ESipa over HTTP(S) (SGP.32 §6.1.1): one keep-alive connection, one POST at a time.

Why not httpx: ``ipa run`` on a gateway should hold little memory, and httpx with httpcore, anyio, h11, idna and
its CA bundle took ~10 MB of the daemon's ~34 MB RSS (docs/performance.md, "IPA footprint"). The IPA sends one
request at a time to one eIM, so this needs only what that takes:

=========================================  ==================================================================
situation                                  behaviour
=========================================  ==================================================================
``https://``                               TLS with the caller's ``ssl.SSLContext`` (verified against the
                                           configured CAs, ``ipa.esipa.tls_context``), SNI and hostname check
                                           for the URL's host; ``verify=False`` (the lab switch) = no check
answer with ``Content-Length``             that many bytes (at most ``max_body``)
``Transfer-Encoding: chunked``             the chunks joined (trailers skipped)
neither                                    read until the server closes (HTTP/1.0 style)
``Connection: close`` / HTTP/1.0 answer    the connection is closed after the answer
idle connection the server has closed      a new connection for the next request (never a resend)
``1xx`` interim answers                    skipped
malformed status line, headers or chunk    :class:`HttpProtocolError` naming the part; the connection is
sizes, too large, truncated                closed
no answer within ``timeout``               ``TimeoutError``; the connection is closed
=========================================  ==================================================================

Parsing is bounded: status line and each header line at most 8 KiB, at most 100 headers, bodies at most
``max_body`` (64 MiB). :func:`read_response` is the parser (fed by any ``asyncio.StreamReader``).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024


class HttpProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it (which part, and why)."""


async def _line(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise HttpProtocolError(f"{what}: connection closed after {len(exc.partial)} bytes") from None
    except asyncio.LimitOverrunError:
        raise HttpProtocolError(f"{what}: line too long") from None
    if len(line) > MAX_LINE:
        raise HttpProtocolError(f"{what}: line too long")
    return line.rstrip(b"\r\n")


async def _exactly(reader: asyncio.StreamReader, n: int, what: str) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise HttpProtocolError(f"{what}: connection closed after {len(exc.partial)} of {n} bytes") from None


async def read_response(
    reader: asyncio.StreamReader, *, max_body: int = MAX_BODY
) -> tuple[int, dict[str, str], bytes, bool]:
    """One answer from ``reader``: ``(status, headers (lower-case names; repeated ones joined with ", "), body,
    keep_alive)``. Raises :class:`HttpProtocolError` for anything malformed, truncated or over the limits."""
    while True:
        status_line = await _line(reader, "status line")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise HttpProtocolError(f"status line: not HTTP/1.x: {status_line[:60]!r}")
        if len(parts[1]) != 3 or not parts[1].isdigit():
            raise HttpProtocolError(f"status line: bad status code {parts[1][:10]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = await _line(reader, "header")
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise HttpProtocolError(f"header: malformed line {line[:60]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        else:
            raise HttpProtocolError(f"header: more than {MAX_HEADERS} headers")
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue...): the real one follows
        break
    keep_alive = parts[0] == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        return status, headers, b"", keep_alive
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await _line(reader, "chunk size")
            digits = line.split(b";", 1)[0].strip()
            if not digits or len(digits) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
                raise HttpProtocolError(f"chunk size: {line[:20]!r} is not hexadecimal")
            n = int(digits, 16)
            if n == 0:
                while await _line(reader, "trailer"):  # trailers end with an empty line
                    pass
                break
            size += n
            if size > max_body:
                raise HttpProtocolError(f"body: over {max_body} bytes")
            chunks.append(await _exactly(reader, n, "chunk"))
            if await _line(reader, "chunk end"):
                raise HttpProtocolError("chunk end: data after the chunk")
        return status, headers, b"".join(chunks), keep_alive
    if "content-length" in headers:
        text = headers["content-length"]
        if not text.isdigit() or len(text) > 12:
            raise HttpProtocolError(f"Content-Length: {text[:20]!r} is not a length")
        n = int(text)
        if n > max_body:
            raise HttpProtocolError(f"body: {n} bytes is over {max_body}")
        return status, headers, await _exactly(reader, n, "body"), keep_alive
    body = await reader.read(max_body + 1)  # until the server closes
    rest = body
    while rest and len(body) <= max_body:
        rest = await reader.read(max_body + 1 - len(body))
        body += rest
    if len(body) > max_body:
        raise HttpProtocolError(f"body: over {max_body} bytes")
    return status, headers, body, False


class Http1Client:
    """POSTs to one URL over one keep-alive connection (opened on first use, again after the server closed it)."""

    def __init__(
        self,
        url: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.ssl: ssl.SSLContext | None = None
        if u.scheme == "https":
            if isinstance(verify, ssl.SSLContext):
                self.ssl = verify
            elif verify:
                self.ssl = ssl.create_default_context()
            else:
                self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if u.scheme == "https" else 80
        self._host_header = host if self.port == default else f"{host}:{self.port}"
        self.timeout = timeout
        self.max_body = max_body
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connections = 0  # connections opened (for tests)

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)``; raises ``OSError``, ``TimeoutError`` or :class:`HttpProtocolError`."""
        try:
            return await asyncio.wait_for(self._post(body), self.timeout)
        except BaseException:
            await self.close()
            raise

    async def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or reader.at_eof() or writer.is_closing():
            await self.close()
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
            self._reader, self._writer = reader, writer
            self.connections += 1
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self._host_header}\r\n{self._headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        status, headers, data, keep_alive = await read_response(reader, max_body=self.max_body)
        if not keep_alive:
            await self.close()
        return status, headers, data

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        await close_writer(writer)


async def close_writer(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer`` (if any), waiting at most a second for it; errors of a connection already gone are
    ignored."""
    if writer is not None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
