"""ESipa over CoAP (SGP.32 v1.2 §6.1: the ASN.1 binding carried by CoAP, RFC 7252 + RFC 7959 block-wise).

The same DER as the HTTP binding on ``POST coap://<eim>/gsma/rsp2/asn1``:

=======================================================  =================================================
request                                                  answer
=======================================================  =================================================
POST, handler returns bytes                              2.04 Changed, payload = the handler's bytes,
                                                         Content-Format 42 (application/octet-stream)
POST, handler returns ``None`` (HandleNotification)      2.04 Changed, empty payload
handler raises ``EsipaRejected``                         4.00 Bad Request, diagnostic payload (UTF-8 text);
                                                         4.03 Forbidden for the device policy's 403
handler raises ``EsipaRejected(503, ...)``               5.03 Service Unavailable (try again later)
Content-Format set and not 42 / experimental 65000+      4.15 Unsupported Content-Format
request (all Block1 blocks together) > max_body_size     4.13 Request Entity Too Large
GET/PUT/DELETE/...                                       4.05 Method Not Allowed
other paths                                              4.04 Not Found
=======================================================  =================================================

There is no registered CoAP Content-Format for ``application/x-gsma-rsp-asn1``, so requests may carry none
(normal), 42, or a number from the experimental range 65000-65535; anything else is refused.

Block-wise transfer (RFC 7959) is aiocoap's: Block1 requests are reassembled before the handler sees them
(bounded by ``max_body_size``, checked on every block), large answers are served as Block2 from aiocoap's
response cache.

**Duplicate-request cache.** aiocoap remembers every received request for EXCHANGE_LIFETIME (247 s), with one
timer handle per request, to answer retransmitted CONs from a cache. At thousands of requests per second that is
~10^6 live objects and the garbage collector pauses for hundreds of milliseconds (``performance.md``). The binding
replaces that cache on its own message managers with :class:`BoundedDedupCache`: an insertion-ordered dict
without timers, entries kept ``dedup_lifetime`` seconds (default 60 s: a client's last retransmission comes at
most MAX_TRANSMIT_SPAN = 45 s after the first) and at most ``dedup_max_entries`` (default 50 000, oldest dropped
first). Dropping an entry early only means that a very late retransmission is handled as a new request; every
ESipa request is safe to handle twice (the eIM hands out the same package again, results are idempotent).

**Plain CoAP authenticates nobody**: its requests reach the dispatcher with ``eid_hint=None``, ``auth="none"``
and the sender's address as ``peer_ip``, so the device policy (:mod:`eim.esipa.device_auth`, ``[devices]``) serves
them from ``trusted_networks`` (default loopback) only, or from anywhere with ``allow_unauthenticated``; others get
the function's ``undefinedError`` (4.03 Forbidden for HandleNotification, which has no error answer).

**DTLS** (CoAPS, DTLS 1.2 with pre-shared keys, RFC 7252 §9): ``CoapBinding(..., psk=PskFile(path))`` serves
``coaps://`` through aiocoap's ``tinydtls_server`` transport (the DTLSSocket package, extra ``[dtls]``). The PSK
identity is the EID (:mod:`eim.bindings.coap_psk`); every request of a DTLS session is handled with that EID as
``RequestContext.eid_hint``, so the dispatcher refuses a message about another eUICC. aiocoap binds the DTLS
socket to *port + 1* of what it is given; the binding compensates, so ``port`` is the port that is listened on.
The session table is bounded by ``dtls_max_sessions`` (:mod:`eim.bindings.coap_dtls`: unfinished handshakes go
first, an established session that is pushed out gets a close_notify and its device handshakes again); the key
file is re-read when it changes (``PskFile.watch``, started and stopped with the binding).

**Push** (``push=PushService(...)``): the binding also serves the observable ``/esipa/push/{EID}`` through which
the eIM wakes a device at once when a package is queued for it (:mod:`eim.bindings.coap_observe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from eim.bindings import ESIPA_PATH
from eim.interfaces import EsipaHandler, EsipaRejected, RequestContext
from eim.logs import RateLimitedLog
from rsp.errors import RspError

log = logging.getLogger("eim.esipa.coap")
_PROTOCOL_ERRORS = RateLimitedLog(log, 60.0)

DEFAULT_MAX_BODY = 256 * 1024
RESOURCE_PATH = tuple(ESIPA_PATH.strip("/").split("/"))  # ("gsma", "rsp2", "asn1")
OCTET_STREAM = 42


class BoundedDedupCache:
    """Replacement for aiocoap's per-MessageManager duplicate-request cache: bounded in time and size, no timers.

    Installed with :meth:`install`; keeps the semantics of ``MessageManager._deduplicate_message`` (a duplicate
    CON is answered with the stored response, or ignored while the response is pending) and of
    ``_store_response_for_duplicates``. An entry is two small containers (key tuple, ``(deadline, encoded
    response)``, both of plain data that the garbage collector stops tracking) instead of a timer handle plus a
    whole response ``Message``; the stored answer is decoded again only when a duplicate actually arrives.
    """

    def __init__(self, lifetime: float, max_entries: int) -> None:
        if lifetime <= 0 or max_entries <= 0:
            raise ValueError("dedup lifetime and size must be positive")
        self.lifetime = lifetime
        self.max_entries = max_entries
        # (peer, message id) -> (deadline, encoded response or None); see _peer_key
        self.entries: OrderedDict[tuple[Any, int], tuple[float, bytes | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def install(self, message_manager: Any) -> None:
        from aiocoap import Message
        from aiocoap.message import Direction
        from aiocoap.numbers.types import CON

        def replay(raw: bytes, remote: Any) -> Any:
            again = Message.decode(raw, remote)
            again.direction = Direction.OUTGOING  # the very bytes we sent, sent again
            return again

        entries = self.entries
        loop = message_manager.loop
        lifetime = self.lifetime
        max_entries = self.max_entries

        def deduplicate(message: Any) -> bool:
            now = loop.time()
            # purge expired entries from the old end (insertion order == deadline order)
            while entries:
                first = next(iter(entries.values()))
                if first[0] > now:
                    break
                entries.popitem(last=False)
            key = (_peer_key(message.remote), message.mid)
            entry = entries.get(key)
            if entry is not None:
                if message.mtype is CON and entry[1] is not None:
                    message_manager._send_via_transport(replay(entry[1], message.remote))
                return True
            entries[key] = (now + lifetime, None)
            if len(entries) > max_entries:
                entries.popitem(last=False)
            return False

        def store_response(message: Any) -> None:
            key = (_peer_key(message.remote), message.mid)
            entry = entries.get(key)
            if entry is not None:
                entries[key] = (entry[0], message.encode())  # same place in the order: the deadline is kept

        message_manager._recent_messages = entries  # anything left reading it sees the live entries
        message_manager._deduplicate_message = deduplicate
        message_manager._store_response_for_duplicates = store_response


def _peer_key(remote: Any) -> Any:
    """The peer half of a duplicate-cache key, as plain data where the transport allows it.

    The simple socket server's remote is a tuple of (its server socket, the peer's socket address), new for each
    datagram. Within one message manager the server socket is always the same, so the socket address alone
    names the peer; as a tuple of a string and numbers it is not tracked by the garbage collector, and the
    cache's 50,000 entries no longer keep 50,000 remote objects alive for every collection to walk (a poll's p99
    over CoAP was 2.5x aiocoap's, from collections of 11-41 ms: docs/performance.md). Other transports' remotes
    (udp6, DTLS) are kept as they are."""
    address = getattr(remote, "address", None) if isinstance(remote, tuple) else None
    return address if isinstance(address, tuple) else remote


def _resource_class():
    from aiocoap import Message, error, resource
    from aiocoap.numbers.codes import Code

    class EsipaResource(resource.Resource):
        """``/gsma/rsp2/asn1``: POST only."""

        def __init__(self, handler: EsipaHandler, max_body_size: int) -> None:
            super().__init__()
            self.handler = handler
            self.max_body_size = max_body_size

        def get_link_description(self) -> dict[str, Any] | None:
            return None  # not advertised in /.well-known/core

        async def render_to_pipe(self, pipe: Any) -> None:
            request = pipe.request
            block1 = request.opt.block1
            size = (block1.start if block1 is not None else 0) + len(request.payload)
            if size > self.max_body_size:
                raise error.RequestEntityTooLarge(f"request over {self.max_body_size} bytes")
            try:
                await super().render_to_pipe(pipe)
            except ValueError:
                # aiocoap's Block1 reassembly raises a bare ValueError for a block that does not continue the
                # assembly it started (out of order, another size). RFC 7959 §2.9.2: 4.08 Request Entity
                # Incomplete. A peer decides how often this happens: one rate-limited line, no traceback.
                _PROTOCOL_ERRORS.warning(
                    "block1-out-of-order", "CoAP Block1 out of order: answered 4.08", peer=_peer(request)
                )
                raise error.RequestEntityIncomplete("Block1 does not continue the request's earlier blocks") from None

        async def render_post(self, request: Any) -> Any:
            cf = request.opt.content_format
            if cf is not None and int(cf) != OCTET_STREAM and not 65000 <= int(cf) <= 65535:
                raise error.UnsupportedContentFormat(
                    "ESipa payload is DER (no Content-Format, 42, or an experimental number)"
                )
            peer = _peer(request)
            eid = _dtls_eid(request)
            ctx = RequestContext("coap", peer, eid, "psk" if eid is not None else "none", _peer_ip(request))
            try:
                answer = await self.handler.handle(request.payload, ctx)
            except EsipaRejected as exc:
                log.info("ESipa request rejected", extra={"peer": peer, "reason": exc.message})
                if exc.http_status == 503:  # try again later (an SM-DP+ the relay could not reach)
                    raise error.ServiceUnavailable(exc.message) from None
                if exc.http_status == 403:  # the device policy refused an unauthenticated request
                    raise error.Forbidden(exc.message) from None
                raise error.BadRequest(exc.message) from None
            except RspError as exc:
                log.warning("ESipa request undecodable", extra={"peer": peer, "reason": str(exc)})
                raise error.BadRequest(f"undecodable ESipa message: {exc}") from None
            except Exception:
                log.exception("ESipa handler failed", extra={"peer": peer})
                raise error.InternalServerError("internal error") from None
            if answer is None:
                return Message(code=Code.CHANGED)
            return Message(code=Code.CHANGED, payload=answer, content_format=OCTET_STREAM)

    return EsipaResource


def _peer(request: Any) -> str | None:
    try:
        return str(request.remote.hostinfo)
    except Exception:
        return None


def _peer_ip(request: Any) -> str | None:
    """The sender's IP address: ``sockaddr`` (udp6, tinydtls) or ``address`` (simplesocketserver)."""
    remote = request.remote
    addr = getattr(remote, "sockaddr", None) or getattr(remote, "address", None)
    if isinstance(addr, tuple) and addr and isinstance(addr[0], str):
        return addr[0]
    return None


def _dtls_eid(request: Any) -> str | None:
    """The EID the DTLS session was authenticated for (its PSK identity), or None on plain CoAP."""
    if getattr(request.remote, "scheme", None) != "coaps":
        return None
    claims = getattr(request.remote, "authenticated_claims", None) or []
    for claim in claims:
        if isinstance(claim, str):
            return claim
    # a coaps remote without a claim cannot happen with PskFile; refuse rather than serve it unauthenticated
    raise _error().Unauthorized("DTLS session without an authenticated identity")


def _error() -> Any:
    from aiocoap import error

    return error


class CoapBinding:
    """The eIM's CoAP server for ESipa.

    ``transport``: ``"auto"`` uses aiocoap's ``simplesocketserver`` (~25 % cheaper per request) when ``host`` is
    one address and ``udp6`` for a wildcard bind. With ``psk`` the binding serves ``coaps://`` (DTLS PSK) instead,
    through ``tinydtls_server``.
    """

    def __init__(
        self,
        handler: EsipaHandler,
        host: str = "127.0.0.1",
        port: int = 5683,
        *,
        max_body_size: int = DEFAULT_MAX_BODY,
        transport: str = "auto",
        dedup_lifetime: float = 60.0,
        dedup_max_entries: int = 50_000,
        psk: Any = None,
        dtls_max_sessions: int = 1024,
        push: Any = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body_size = max_body_size
        self.transport = transport
        self.dedup_caches: list[BoundedDedupCache] = []
        self._dedup = (dedup_lifetime, dedup_max_entries)
        self._context: Any = None
        self.psk = psk
        self.dtls_max_sessions = dtls_max_sessions
        self.dtls_sessions: list[Any] = []  # one DtlsSessionTable per DTLS socket
        self._watch: asyncio.Task[None] | None = None
        self.push = push  # eim.bindings.coap_observe.PushService: serve /esipa/push/{EID} (Observe) when set
        if psk is not None and port < 2:
            raise ValueError("the CoAPS port must be 2 or higher (aiocoap binds DTLS to the given port + 1)")
        if psk is not None and dtls_max_sessions < 1:
            raise ValueError("dtls_max_sessions must be at least 1")
        if psk is not None and host in ("", "0.0.0.0", "::"):
            raise ValueError("CoAPS needs one address to bind, not a wildcard (aiocoap's DTLS server binds one)")

    @property
    def scheme(self) -> str:
        return "coaps" if self.psk is not None else "coap"

    def _transports(self) -> list[str]:
        if self.psk is not None:
            return ["tinydtls_server"]
        if self.transport != "auto":
            return [self.transport]
        if self.host in ("", "0.0.0.0", "::"):
            return ["udp6"]
        return ["simplesocketserver"]

    async def start(self) -> None:
        from aiocoap import Context, resource

        if self._context is not None:
            return
        if self.psk is not None:
            try:
                import DTLSSocket  # noqa: F401
            except ImportError:
                raise RuntimeError(
                    "CoAPS (DTLS) needs the DTLSSocket package: pip install 'sgp32-stack[dtls]' "
                    "(it builds from source with autoconf, automake and libtool)"
                ) from None
            from eim.bindings.coap_dtls import check_supported

            check_supported()
        aiocoap_log = logging.getLogger("eim.esipa.coap.aiocoap")
        if aiocoap_log.level == logging.NOTSET:  # aiocoap logs each 2.31 and 4.xx at info: keep it quiet
            aiocoap_log.setLevel(logging.WARNING)
        site = resource.Site()
        site.add_resource(RESOURCE_PATH, _resource_class()(self.handler, self.max_body_size))
        if self.push is not None:
            self.push.install(site)
        self._context = await Context.create_server_context(
            site,
            # aiocoap's tinydtls_server listens on the given port + 1 (its default ports are 5683 / 5684)
            bind=(self.host, self.port - 1 if self.psk is not None else self.port),
            transports=self._transports(),
            loggername="eim.esipa.coap.aiocoap",
            server_credentials=self.psk,
        )
        for interface in self._context.request_interfaces:
            manager = getattr(interface, "token_interface", None)
            if self.psk is not None:
                self._take_over_dtls_sessions(getattr(manager, "message_interface", None))
            if manager is not None and hasattr(manager, "_deduplicate_message"):
                cache = BoundedDedupCache(*self._dedup)
                cache.install(manager)
                self.dedup_caches.append(cache)
        if self.psk is not None and hasattr(self.psk, "watch"):
            self._watch = asyncio.create_task(self.psk.watch(), name="eim.esipa.coaps psk file watch")
        log.info("CoAP ESipa binding listening", extra={"host": self.host, "port": self.port, "scheme": self.scheme})

    def _take_over_dtls_sessions(self, interface: Any) -> None:
        from eim.bindings.coap_dtls import DtlsSessionTable

        pool = getattr(interface, "_pool", None)
        if pool is None or not hasattr(pool, "_connections"):
            raise RuntimeError("aiocoap's DTLS server socket has no session table to bound; CoAPS needs aiocoap 0.4.x")
        self.dtls_sessions.append(DtlsSessionTable(pool, self.dtls_max_sessions, self.psk))

    async def stop(self) -> None:
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if self._context is not None:
            context, self._context = self._context, None
            if self.push is not None:
                self.push.table.close_all()
            for table in self.dtls_sessions:
                table.close_all()
            self.dtls_sessions = []
            await context.shutdown()

    async def __aenter__(self) -> CoapBinding:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
