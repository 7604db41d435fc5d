"""ES9+ client of the eIM (the "ES9+'" side of an indirect download): SGP.22 v2.5 §6.5 JSON binding over HTTPS.

``POST https://<smdpAddress>/gsma/rsp2/es9plus/<function>`` with ``Content-Type: application/json;charset=UTF-8``,
``X-Admin-Protocol: gsma/rsp/v2.1.0`` and a ``header`` with ``functionRequesterIdentifier`` /
``functionCallIdentifier``. The answer is HTTP 200 with a JSON ``header.functionExecutionStatus`` (``status`` is
``Executed-Success``, ``Executed-WithWarning`` or ``Failed`` with ``statusCodeData``), or 204 for
handleNotification.

TLS is always verified, against the CA certificates given (the GSMA / lab TLS CAs), never the system store
unless asked: an SM-DP+ whose certificate does not chain to them is refused (:class:`Es9Unreachable` with
``tls=True``). One connection pool per client; requests to the same SM-DP+ reuse connections.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eim.relay.errors import Es9BadResponse, Es9Failed, Es9Unreachable, InvalidSmdpAddress
from rsp.resolve import ResolveMap, mapped_transport

log = logging.getLogger("eim.relay.es9plus")

X_ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"
USER_AGENT = "gsma-rsp-eim sgp32-stack"
JSON_CT = "application/json;charset=UTF-8"
MAX_RESPONSE = 4 * 1024 * 1024  # a bound profile package is tens of KB; keep a generous ceiling

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_ADDRESS = re.compile(rf"^{_LABEL}(\.{_LABEL})*(:[1-9][0-9]{{0,4}})?$")
SUCCESS = ("Executed-Success", "Executed-WithWarning")


def check_address(address: str, function: str = "initiateAuthentication") -> str:
    """An SM-DP+ address is a host name (FQDN) with an optional ``:port``; no scheme, path, user or IP literal
    brackets. Returns it unchanged; raises :class:`InvalidSmdpAddress`."""
    if not isinstance(address, str) or len(address) > 255 or not _ADDRESS.match(address):
        raise InvalidSmdpAddress(function, f"{address!r} is not an SM-DP+ address (host name[:port])")
    port = address.rpartition(":")[2] if ":" in address else None
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidSmdpAddress(function, f"{address!r}: port out of range")
    return address


def tls_context(ca_files: Sequence[str | Path] = (), *, use_system_store: bool = False) -> ssl.SSLContext:
    """A client TLS context that verifies the server against ``ca_files`` (PEM or DER, one or more certs each)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are its defaults
    if use_system_store:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    loaded = 0
    for path in ca_files:
        data = Path(path).read_bytes()
        if b"-----BEGIN" in data:
            ctx.load_verify_locations(cadata=data.decode("ascii"))
        else:
            ctx.load_verify_locations(cadata=data)
        loaded += 1
    if not loaded and not use_system_store:
        raise ValueError("ES9+ client needs at least one CA certificate to verify SM-DP+ servers")
    return ctx


class Es9PlusClient:
    """Calls ES9+ functions on any SM-DP+. ``verify``: an ``ssl.SSLContext`` (see :func:`tls_context`).
    ``resolve``: a lab address map (``[relay] resolve``, :mod:`rsp.resolve`); TLS still checks the SM-DP+ name."""

    def __init__(
        self,
        verify: ssl.SSLContext,
        *,
        timeout: float = 30.0,
        requester_id: str = "eim",
        max_connections: int = 100,
        resolve: ResolveMap | None = None,
    ) -> None:
        import httpx

        self.requester_id = requester_id
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(
            verify=verify,
            transport=mapped_transport(resolve, verify, limits) if resolve else None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=limits,
            headers={"X-Admin-Protocol": X_ADMIN_PROTOCOL, "User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Es9PlusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, address: str, function: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST one ES9+ function; return the JSON answer (without checking its fields) or ``None`` for 204.

        Raises :class:`Es9Failed` (functionExecutionStatus Failed), :class:`Es9Unreachable` (network/TLS),
        :class:`Es9BadResponse` (anything else unexpected), :class:`InvalidSmdpAddress`.
        """
        import httpx

        check_address(address, function)
        url = f"https://{address}/gsma/rsp2/es9plus/{function}"
        payload = {
            "header": {"functionRequesterIdentifier": self.requester_id, "functionCallIdentifier": uuid.uuid4().hex},
            **body,
        }
        content = json.dumps(payload, separators=(",", ":")).encode()
        try:
            response = await self._client.post(url, content=content, headers={"Content-Type": JSON_CT})
        except httpx.ConnectError as exc:
            tls = _is_tls_failure(exc)
            raise Es9Unreachable(function, f"{address}: {_reason(exc)}", tls=tls) from exc
        except httpx.TimeoutException as exc:
            raise Es9Unreachable(function, f"{address}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise Es9Unreachable(function, f"{address}: {_reason(exc)}", tls=_is_tls_failure(exc)) from exc
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise Es9BadResponse(
                function, f"{address} answered HTTP {response.status_code}", http_status=response.status_code
            )
        if len(response.content) > MAX_RESPONSE:
            raise Es9BadResponse(function, f"{address} answered {len(response.content)} bytes (limit {MAX_RESPONSE})")
        try:
            answer = json.loads(response.content)
        except ValueError:
            raise Es9BadResponse(function, f"{address} answered HTTP 200 without valid JSON") from None
        if not isinstance(answer, dict):
            raise Es9BadResponse(function, "answer is not a JSON object")
        status = _execution_status(answer, function)
        if status.get("status") in SUCCESS:
            return answer
        if status.get("status") == "Failed":
            data = status.get("statusCodeData") or {}
            if not isinstance(data, dict):
                data = {}
            raise Es9Failed(
                function,
                str(data.get("subjectCode", "")),
                str(data.get("reasonCode", "")),
                str(data.get("message", ""))[:200],
            )
        raise Es9BadResponse(function, f"unknown functionExecutionStatus {status.get('status')!r}")


def _execution_status(answer: dict[str, Any], function: str) -> dict[str, Any]:
    header = answer.get("header")
    status = header.get("functionExecutionStatus") if isinstance(header, dict) else None
    if not isinstance(status, dict):
        raise Es9BadResponse(function, "answer has no header.functionExecutionStatus")
    return status


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen) or "SSL" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
