"""ESipa ASN.1 binding over HTTP(S) (SGP.32 §6.1.1): ``POST /gsma/rsp2/asn1``, DER in, DER out.

Headers: ``Content-Type: application/x-gsma-rsp-asn1``, ``X-Admin-Protocol: gsma/rsp/v2.1.0``,
``User-Agent: gsma-rsp-ipad``. A 200 with a body is the answer; 200 with an empty body or 204 means "no answer"
(HandleNotification). Any other status is an :class:`EsipaError` naming the function and the status.
TLS is verified against the configured CAs unless the explicit lab switch ``eim.insecure`` is set.

Device authentication (the eIM's ``[devices]`` policy): a TLS client certificate (``eim.tls_client_cert`` /
``eim.tls_client_key``, loaded into the TLS context by :func:`ipa.esipa.open_transport`) and/or a device secret
(``device_token``, sent as ``Authorization: Bearer <EID>.<secret>`` on every request; never logged). A 401 from
the eIM (token refused) is an :class:`EsipaError` like any other status.

The client is :mod:`ipa.esipa.http1` (one keep-alive connection, a few hundred lines, ~10 MB less resident than
httpx). When an HTTP proxy is configured in the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, any
case), httpx is used instead, which honours it as before.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from ipa.esipa import ADMIN_PROTOCOL, CONTENT_TYPE, ESIPA_PATH, USER_AGENT, EsipaError, step_of
from ipa.esipa.http1 import Http1Client, HttpProtocolError

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
        self._httpx: Any = None
        self._lean: Http1Client | None = None
        if proxied():
            import httpx

            self._httpx = httpx.AsyncClient(verify=verify, timeout=timeout, headers=headers)
        else:
            self._lean = Http1Client(self.url, verify=verify, timeout=timeout, headers=headers)

    async def send(self, message_der: bytes) -> bytes | None:
        step = step_of(message_der)
        if self._lean is not None:
            try:
                status, _headers, content = await self._lean.post(message_der)
            except (OSError, TimeoutError, HttpProtocolError, ssl.SSLError) as exc:
                raise EsipaError(step, f"{type(exc).__name__}: {exc or 'no detail'} ({self.url})") from None
        else:
            import httpx

            try:
                resp = await self._httpx.post(self.url, content=message_der)
            except httpx.HTTPError as exc:
                raise EsipaError(step, f"{type(exc).__name__}: {exc or 'no detail'} ({self.url})") from None
            status, content = resp.status_code, resp.content
        if status == 204 or (status == 200 and not content):
            return None
        if status != 200:
            detail = content[:200].decode("utf-8", "replace").strip() if content else ""
            raise EsipaError(step, f"HTTP {status} {detail}".rstrip(), status)
        return content

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.close()
        if self._httpx is not None:
            await self._httpx.aclose()


def proxied() -> bool:
    """An HTTP proxy is configured in the environment (httpx's ``trust_env`` reads these)."""
    return any(
        os.environ.get(k) for k in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
    )
