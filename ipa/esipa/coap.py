"""ESipa over CoAP (SGP.32 §6.1, CoAP binding): the ASN.1 DER on ``POST /gsma/rsp2/asn1``.

aiocoap does block-wise transfer (RFC 7959, Block1 for large requests, Block2 for large answers) by itself.
A 2.04/2.05 answer with a payload is the eIM's message; an empty payload means "no answer". Any other code is an
:class:`EsipaError` naming the function and the CoAP code. DTLS (coaps with PSK) is not implemented in this
client: use ``coap://`` on a trusted network or a VPN (see docs/ipa.md).
"""

from __future__ import annotations

import asyncio
import logging

from ipa.esipa import ESIPA_PATH, EsipaError, step_of

log = logging.getLogger("ipa.esipa.coap")

CONTENT_FORMAT_OCTET_STREAM = 42


class CoapTransport:
    binding = "coap"

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        if base_url.startswith("coaps://"):
            raise EsipaError("CoAP", "coaps (DTLS) is not supported by this IPA build; use coap:// in the lab")
        self.uri = base_url.rstrip("/") + ESIPA_PATH
        self.timeout = timeout
        self._ctx = None

    async def start(self) -> None:
        import aiocoap

        self._ctx = await aiocoap.Context.create_client_context()

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
            raise EsipaError(step, f"no CoAP answer within {self.timeout:.0f} s ({self.uri})") from None
        except Exception as exc:  # aiocoap raises its own error hierarchy (network, timeouts, resets)
            raise EsipaError(step, f"{type(exc).__name__}: {exc} ({self.uri})") from None
        if not resp.code.is_successful():
            raise EsipaError(step, f"CoAP {resp.code} {resp.payload[:100]!r}", str(resp.code))
        return resp.payload or None

    async def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.shutdown()
