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
"""

from __future__ import annotations

import asyncio
import logging

from ipa.esipa import ESIPA_PATH, EsipaError, step_of

log = logging.getLogger("ipa.esipa.coap")

CONTENT_FORMAT_OCTET_STREAM = 42


class CoapTransport:
    binding = "coap"

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, psk: bytes | None = None, psk_identity: bytes = b""
    ) -> None:
        self.uri = base_url.rstrip("/") + ESIPA_PATH
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

        if not self.dtls:
            self._ctx = await aiocoap.Context.create_client_context()
            return
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        origin = self.uri.split("/gsma/", 1)[0]
        ctx.client_credentials.load_from_dict(
            {f"{origin}/*": {"dtls": {"psk": self._psk, "client-identity": self._psk_identity}}}
        )
        self._ctx = ctx

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
        self._session = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.shutdown()
