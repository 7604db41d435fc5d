"""ESipa over CoAP (SGP.32 §6.1, CoAP binding): the ASN.1 DER on ``POST /gsma/rsp2/asn1``.

aiocoap does block-wise transfer (RFC 7959, Block1 for large requests, Block2 for large answers) by itself.
A 2.04/2.05 answer with a payload is the eIM's message; an empty payload means "no answer". Any other code is an
:class:`EsipaError` naming the function and the CoAP code.

``coaps://`` is CoAP over DTLS 1.2 with a pre-shared key (RFC 7252 §9.1.3.1, aiocoap's ``tinydtls`` transport,
package DTLSSocket from the ``[dtls]`` extra). The PSK identity is the EID unless configured otherwise; the eIM
looks the key up by it. The key is exactly 16 bytes (tinydtls' ``DTLS_PSK_MAX_KEY_LEN``; DTLSSocket copies a longer
key past its buffer). An unknown identity fails at once (aiocoap ``NetworkError``); a wrong key shows as no answer
within ``timeout`` (tinydtls drops the Finished it cannot decrypt), so each error says what to check. The DTLS
session is kept between requests (one datagram each way per poll) and dropped after any failure, so a session the
eIM has forgotten (restart, eviction) costs one failed request and then a new handshake.

**Push** (``push_eid`` set, ``eim.push`` in the configuration): the transport observes (RFC 7641) the eIM's
``/esipa/push/{EID}`` over the same context (for CoAPS: the same DTLS session the polls use). The eIM notifies it
when a package is queued; :meth:`CoapTransport.next_push` then returns :class:`ipa.esipa.PackageWaiting` and the
agent polls at once (GetEimPackage): the notification carries no package, so a lost or repeated one hands out
nothing twice. The registration is renewed every ``push_refresh`` seconds (below the carrier NAT's UDP timeout,
default 25 s) and after any failure (with backoff up to ``push_refresh``); the answer to every registration says
whether a package is already waiting, so nothing queued while the observation was down is missed. An eIM that does
not offer push (4.04, 4.05) or refuses this device (4.01, 4.03) leaves the transport polling; it asks again after
``push_retry_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ipa.esipa import ESIPA_PATH, EsipaError, PackageWaiting, step_of

log = logging.getLogger("ipa.esipa.coap")

CONTENT_FORMAT_OCTET_STREAM = 42
PUSH_PATH = "/esipa/push/"
WAITING = b"\x01"


class CoapTransport:
    binding = "coap"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        psk: bytes | None = None,
        psk_identity: bytes = b"",
        push_eid: str | None = None,
        push_refresh: float = 25.0,
        push_retry_after: float = 3600.0,
    ) -> None:
        self.uri = base_url.rstrip("/") + ESIPA_PATH
        self.push_uri = base_url.rstrip("/") + PUSH_PATH + push_eid.upper() if push_eid else None
        self.push_refresh = push_refresh
        self.push_retry_after = push_retry_after
        self.push_registered = False  # an observation is open at the eIM now (observability, tests)
        self.push_registrations = 0  # successful registrations so far
        self._waiting: asyncio.Queue[PackageWaiting] = asyncio.Queue(maxsize=1)
        self._observer: asyncio.Task[None] | None = None
        self._push_request: object | None = None
        self.timeout = timeout
        self.dtls = base_url.startswith("coaps://")
        if self.dtls:
            if not psk:
                raise EsipaError("CoAP", "coaps:// needs a pre-shared key: set eim.psk_hex or eim.psk_file")
            if not psk_identity:
                raise EsipaError("CoAP", "coaps:// needs a PSK identity (eim.psk_identity, default the EID)")
            try:
                import DTLSSocket  # noqa: F401
            except ImportError:
                raise EsipaError(
                    "CoAP", "coaps:// needs the DTLSSocket package: pip install 'sgp32-stack[dtls]'"
                ) from None
        self._psk = psk
        self._psk_identity = psk_identity
        self._ctx = None
        self._session: object | None = None

    async def start(self) -> None:
        import aiocoap

        if self._ctx is None:
            if not self.dtls:
                self._ctx = await aiocoap.Context.create_client_context()
            else:
                ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
                origin = self.uri.split("/gsma/", 1)[0]
                ctx.client_credentials.load_from_dict(
                    {f"{origin}/*": {"dtls": {"psk": self._psk, "client-identity": self._psk_identity}}}
                )
                self._ctx = ctx

    # ------------------------------------------------------------------ push (RFC 7641 Observe)
    def start_push(self) -> None:
        """Open the push observation (kept and renewed in the background until :meth:`close`). Called by the first
        :meth:`next_push`, so one-shot commands that only send a message never register."""
        if self.push_uri is not None and self._observer is None and self._ctx is not None:
            self._observer = asyncio.create_task(self._observe(), name="ipa.esipa.coap push observation")

    def _signal(self) -> None:
        if self._waiting.empty():  # one "package waiting" is enough: the poll takes everything queued
            self._waiting.put_nowait(PackageWaiting())

    async def _register(self) -> tuple[object, object]:
        """One registration: GET Observe=0; returns (request, observation) once the eIM accepted it."""
        import aiocoap

        req = self._ctx.request(aiocoap.Message(code=aiocoap.GET, uri=self.push_uri, observe=0))
        resp = await asyncio.wait_for(req.response, self.timeout)
        if not resp.code.is_successful():
            raise _Refused(str(resp.code), resp.payload[:100])
        if self.dtls:
            self._session = resp.remote
        if resp.payload == WAITING:
            self._signal()
        if resp.opt.observe is None:
            raise _Refused("not observable", b"")
        return req, req.observation

    async def _observe(self) -> None:
        """Keep one observation open: renew it every ``push_refresh`` seconds, and after any failure."""
        delay = 1.0
        current: object | None = None
        while True:
            try:
                self._push_request, observation = await self._register()  # keep the request referenced
            except asyncio.CancelledError:
                raise
            except _Refused as exc:
                self.push_registered = False
                log.warning("eIM refused the push observation (%s %r): polling only", exc.code, exc.payload)
                await asyncio.sleep(self.push_retry_after)
                continue
            except Exception as exc:  # timeout, network error, DTLS session gone: register again soon
                self.push_registered = False
                log.info("push registration failed (%s: %s), again in %.0f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.push_refresh)
                continue
            if current is not None:
                current.cancel()  # the eIM replaced it with the new one already
            current = observation
            self.push_registered = True
            self.push_registrations += 1
            delay = 1.0
            try:
                await asyncio.wait_for(self._notifications(observation), self.push_refresh)
            except TimeoutError:
                continue  # renew before the NAT forgets the mapping
            except asyncio.CancelledError:
                observation.cancel()
                raise
            except Exception as exc:  # the eIM ended the observation (restart, replaced, unacknowledged)
                log.info("push observation ended (%s: %s): registering again", type(exc).__name__, exc)
            self.push_registered = False
            observation.cancel()
            current = None
            await asyncio.sleep(min(delay, self.push_refresh))

    async def _notifications(self, observation) -> None:
        async for note in observation:
            if note.code.is_successful() and note.payload == WAITING:
                self._signal()
        raise EsipaError("push", "observation ended by the eIM")

    async def next_push(self, timeout: float | None = None) -> PackageWaiting | None:  # noqa: ASYNC109
        """The next "package waiting" from the eIM, or ``None`` after ``timeout`` seconds."""
        self.start_push()
        try:
            return await asyncio.wait_for(self._waiting.get(), timeout)
        except TimeoutError:
            return None

    def push_pending(self) -> bool:
        return not self._waiting.empty()

    async def send(self, message_der: bytes) -> bytes | None:
        import aiocoap

        step = step_of(message_der)
        if self._ctx is None:
            await self.start()
        req = aiocoap.Message(
            code=aiocoap.POST, uri=self.uri, payload=message_der, content_format=CONTENT_FORMAT_OCTET_STREAM
        )
        try:
            resp = await asyncio.wait_for(self._ctx.request(req).response, self.timeout)
        except TimeoutError:
            self._session = None  # a session the eIM no longer knows (restart, eviction): handshake again next time
            hint = " (DTLS: check that the eIM has this EID's key)" if self.dtls else ""
            raise EsipaError(step, f"no CoAP answer within {self.timeout:.0f} s ({self.uri}){hint}") from None
        except Exception as exc:  # aiocoap raises its own error hierarchy (network, timeouts, resets)
            self._session = None
            hint = " (DTLS: check that the eIM knows this PSK identity)" if self.dtls else ""
            raise EsipaError(step, f"{type(exc).__name__}: {exc} ({self.uri}){hint}") from None
        if self.dtls:
            # aiocoap keeps a DTLS session only while something refers to it: keep it for the next request, so a
            # poll costs one datagram each way instead of a new handshake (7 datagrams each way)
            self._session = resp.remote
        if not resp.code.is_successful():
            raise EsipaError(step, f"CoAP {resp.code} {resp.payload[:100]!r}", str(resp.code))
        return resp.payload or None

    async def close(self) -> None:
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await observer
        self.push_registered = False
        self._session = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.shutdown()


class _Refused(Exception):
    def __init__(self, code: str, payload: bytes) -> None:
        self.code = code
        self.payload = payload
        super().__init__(f"{code} {payload!r}")
