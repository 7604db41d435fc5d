"""ESipa ASN.1 binding over HTTP(S) (SGP.32 §6.1.1): ``POST /gsma/rsp2/asn1``, DER in, DER out.

Headers: ``Content-Type: application/x-gsma-rsp-asn1``, ``X-Admin-Protocol: gsma/rsp/v2.1.0``,
``User-Agent: gsma-rsp-ipad``. A 200 with a body is the answer; 200 with an empty body or 204 means "no answer"
(HandleNotification). Any other status is an :class:`EsipaError` naming the function and the status.
TLS is verified against the configured CAs unless the explicit lab switch ``eim.insecure`` is set.

Device authentication (the eIM's ``[devices]`` policy): a TLS client certificate (``eim.tls_client_cert`` /
``eim.tls_client_key``, loaded into the TLS context by :func:`ipa.esipa.open_transport`) and/or a device secret
(``device_token``, sent as ``Authorization: Bearer <EID>.<secret>`` on every request; never logged). A 401 from
the eIM (token refused) is an :class:`EsipaError` like any other status.
"""

from __future__ import annotations

import logging
import ssl

import httpx

from ipa.esipa import ADMIN_PROTOCOL, CONTENT_TYPE, ESIPA_PATH, USER_AGENT, EsipaError, step_of

log = logging.getLogger("ipa.esipa.http")


class HttpTransport:
    binding = "http"

    def __init__(
        self,
        base_url: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
        device_token: str | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + ESIPA_PATH
        headers = {
            "Content-Type": CONTENT_TYPE,
            "X-Admin-Protocol": ADMIN_PROTOCOL,
            "User-Agent": USER_AGENT,
            "Accept": CONTENT_TYPE,
        }
        if device_token is not None:
            headers["Authorization"] = f"Bearer {device_token}"
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout, headers=headers)

    async def send(self, message_der: bytes) -> bytes | None:
        step = step_of(message_der)
        try:
            resp = await self._client.post(self.url, content=message_der)
        except httpx.HTTPError as exc:
            raise EsipaError(step, f"{type(exc).__name__}: {exc or 'no detail'} ({self.url})") from None
        if resp.status_code == 204 or (resp.status_code == 200 and not resp.content):
            return None
        if resp.status_code != 200:
            detail = resp.text[:200].strip() if resp.content else ""
            raise EsipaError(step, f"HTTP {resp.status_code} {detail}".rstrip(), resp.status_code)
        return resp.content

    async def close(self) -> None:
        await self._client.aclose()
