"""ESipa over HTTP(S): ``POST /gsma/rsp2/asn1`` (SGP.32 v1.2 §6.1 "ESipa ASN.1 binding over HTTPS").

Body = DER ``EsipaMessageFromIpaToEim``, answer = DER ``EsipaMessageFromEimToIpa``, both with
``Content-Type: application/x-gsma-rsp-asn1`` and ``X-Admin-Protocol: gsma/rsp/v2.1.0``. This is the binding
third-party IPAs speak, so it is kept strict on the wire and lenient on what does not matter:

====================================================  ==============================================
request                                               answer
====================================================  ==============================================
POST, right content type, handler returns bytes       200, the handler's bytes verbatim
POST, right content type, handler returns ``None``    204 (``no_body_status``; 200 with 0 bytes if configured)
handler raises ``EsipaRejected(status, message)``     ``status`` (4xx, or 503: try again later), ``text/plain``
content type missing or not the ESipa one             415, ``text/plain`` message
body over ``max_body_size``                           413, ``text/plain`` message (body not read)
method other than POST                                405 with ``Allow: POST``
any other path (standalone app)                       404 (or the ``fallback`` app)
handler fails unexpectedly                            500, logged with the traceback (a bug, not bad input)
``Authorization: Bearer`` token that does not verify  401, ``WWW-Authenticate: Bearer error="invalid_token"``
(with ``[devices] secret_file``)
verified client certificate without an EID, or a      403, ``text/plain`` message
certificate and a token naming different EIDs
====================================================  ==============================================

**Device authentication** (``device_auth=HttpDeviceAuth(...)``, :mod:`eim.esipa.device_auth`): a verified TLS
client certificate (its subject serialNumber is the EID; ``scope["extensions"]["tls"]`` as filled by
:class:`eim.bindings.tls.TlsHttpToolsProtocol`) or a per-device token (:mod:`eim.bindings.device_secrets`)
makes the request's ``RequestContext.eid_hint`` that EID. Without credentials the request goes to the
dispatcher unauthenticated with the peer's address, and the device policy decides. Checked before the body is
read.

The request's ``X-Admin-Protocol`` and ``User-Agent`` are not required (``curl`` sends neither); they are only
logged at debug level. The hot path is a plain ASGI callable: ~2x cheaper than a Starlette route and ~4x cheaper
than a FastAPI route on this machine (docs/ceilings.md). Two ways to serve it:

* ``EsipaHttpApp(handler, fallback=rest_app)`` in front of the operator API: ESipa requests never reach the
  framework's router; everything else is passed to ``fallback`` unchanged (lifespan included).
* ``esipa_route(handler)``: a Starlette ``Route`` to put first in a Starlette/FastAPI app's routes.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from eim.bindings import ESIPA_CONTENT_TYPE, ESIPA_PATH, X_ADMIN_PROTOCOL
from eim.interfaces import EsipaHandler, EsipaRejected, RequestContext
from rsp.errors import RspError

log = logging.getLogger("eim.esipa.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest accepted request body. IPA->eIM messages are small (a ProvideEimPackageResult with a notification
#: list and certificates is a few KB); the large messages (bound profile packages) flow eIM->IPA.
DEFAULT_MAX_BODY = 256 * 1024

_CT = ESIPA_CONTENT_TYPE.encode()
_XAP = X_ADMIN_PROTOCOL.encode()
_TEXT = b"text/plain; charset=utf-8"


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


class EsipaHttpApp:
    """The ESipa HTTP binding as a plain ASGI application.

    ``handler``: the ESipa dispatcher. ``max_body_size``: requests above it get 413. ``no_body_status``: 204
    (SGP.22 convention, default) or 200 (what onomondo-eim does) for answers without a body.
    ``fallback``: ASGI app for every other path and for the lifespan protocol; without it they get 404 and the
    lifespan is acknowledged. ``path=None`` serves every path (used by :func:`esipa_route`, whose router has
    already matched it).
    """

    def __init__(
        self,
        handler: EsipaHandler,
        *,
        max_body_size: int = DEFAULT_MAX_BODY,
        no_body_status: int = 204,
        fallback: AsgiApp | None = None,
        path: str | None = ESIPA_PATH,
        device_auth: HttpDeviceAuth | None = None,
    ) -> None:
        if no_body_status not in (200, 204):
            raise ValueError("no_body_status must be 200 or 204")
        self.handler = handler
        self.max_body_size = max_body_size
        self.no_body_status = no_body_status
        self.fallback = fallback
        self.path = path
        self.device_auth = device_auth if device_auth is not None else HttpDeviceAuth()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and (self.path is None or scope["path"] == self.path):
            await self._esipa(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await _text(send, 404, f"not found: ESipa is served at {self.path}")

    async def _esipa(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _text(send, 405, "ESipa accepts POST only", extra=[(b"allow", b"POST")])
            return
        content_type = None
        content_length = None
        authorization: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
            elif name == b"authorization":
                authorization.append(value)
        if content_type is None or _media_type(content_type) != _CT:
            shown = content_type.decode("latin-1") if content_type is not None else "none"
            await _text(send, 415, f"Content-Type must be {ESIPA_CONTENT_TYPE} (got {shown})")
            return
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                await _text(send, 400, "invalid Content-Length")
                return
            if declared > self.max_body_size:
                await _text(send, 413, f"request body over {self.max_body_size} bytes")
                return
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else None
        try:
            eid, auth = self.device_auth.identify(scope, authorization)
        except DeviceCredentialsRefused as exc:
            log.info("device credentials refused", extra={"peer": peer, "status": exc.status, "reason": exc.reason})
            extra = [(b"www-authenticate", b'Bearer error="invalid_token"')] if exc.status == 401 else None
            await _text(send, exc.status, exc.reason, extra=extra)
            return
        body = await self._read_body(receive)
        if body is None:
            await _text(send, 413, f"request body over {self.max_body_size} bytes")
            return
        if body is _DISCONNECTED:
            return
        ctx = RequestContext("http", peer, eid, auth, client[0] if client else None)
        try:
            answer = await self.handler.handle(body, ctx)
        except EsipaRejected as exc:
            status = exc.http_status if 400 <= exc.http_status < 500 or exc.http_status == 503 else 400
            log.info("ESipa request rejected", extra={"peer": peer, "status": status, "reason": exc.message})
            await _text(send, status, exc.message)
            return
        except RspError as exc:  # a decoder error that escaped the dispatcher: still the input's fault
            log.warning("ESipa request undecodable", extra={"peer": peer, "reason": str(exc)})
            await _text(send, 400, f"undecodable ESipa message: {exc}")
            return
        except Exception:
            log.exception("ESipa handler failed", extra={"peer": peer})
            await _text(send, 500, "internal error")
            return
        if answer is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.no_body_status,
                    "headers": [(b"x-admin-protocol", _XAP), (b"content-length", b"0")]
                    if self.no_body_status == 200
                    else [(b"x-admin-protocol", _XAP)],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", _CT),
                    (b"x-admin-protocol", _XAP),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _read_body(self, receive: Receive) -> bytes | object | None:
        """The whole body, ``None`` when it grows past the limit, ``_DISCONNECTED`` if the client left."""
        first = await receive()
        if first["type"] != "http.request":
            return _DISCONNECTED
        body = first.get("body", b"")
        if not first.get("more_body", False):
            return body if len(body) <= self.max_body_size else None
        parts = [body]
        size = len(body)
        while True:
            if size > self.max_body_size:
                return None
            message = await receive()
            if message["type"] != "http.request":
                return _DISCONNECTED
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        if size > self.max_body_size:
            return None
        return b"".join(parts)


_DISCONNECTED = object()


class DeviceCredentialsRefused(Exception):
    """Credentials were presented and do not authenticate a device: ``status`` 401 or 403."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class HttpDeviceAuth:
    """How the HTTP binding authenticates devices. ``client_certificates``: trust the verified client
    certificate of the ASGI TLS extension (only with a server that verifies it against the device CA, see
    :mod:`eim.bindings.tls`). ``secrets``: a :class:`eim.bindings.device_secrets.DeviceSecretFile` for
    ``Authorization: Bearer <EID>.<secret>``. With neither, every request is unauthenticated."""

    def __init__(self, *, client_certificates: bool = False, secrets: Any = None) -> None:
        self.client_certificates = client_certificates
        self.secrets = secrets

    def identify(self, scope: Scope, authorization: list[bytes]) -> tuple[str | None, str]:
        """``(EID, auth method)`` or ``(None, "none")``; raises :class:`DeviceCredentialsRefused`."""
        cert_eid = token_eid = None
        if self.client_certificates:
            der = client_cert_der(scope)
            if der is not None:
                from eim.esipa.device_auth import DeviceAuthError, eid_from_client_certificate

                try:
                    cert_eid = eid_from_client_certificate(der)
                except DeviceAuthError as exc:
                    raise DeviceCredentialsRefused(403, str(exc)) from None
        if self.secrets is not None and authorization:
            if len(authorization) > 1:
                raise DeviceCredentialsRefused(401, "more than one Authorization header")
            scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                token_eid = self.secrets.verify(token.strip())
                if token_eid is None:
                    raise DeviceCredentialsRefused(401, "device token not accepted")
        if cert_eid is not None and token_eid is not None and cert_eid != token_eid:
            raise DeviceCredentialsRefused(403, "client certificate and device token name different EIDs")
        if cert_eid is not None:
            return cert_eid, "mtls"
        if token_eid is not None:
            return token_eid, "device-secret"
        return None, "none"


def client_cert_der(scope: Scope) -> bytes | None:
    """The leaf client certificate (DER) of the scope's ASGI TLS extension, or ``None``."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain or not isinstance(chain[0], str):
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None


async def _text(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = message.encode()
    headers = [(b"content-type", _TEXT), (b"x-admin-protocol", _XAP), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def esipa_route(handler: EsipaHandler, **options: Any):
    """A Starlette ``Route`` for ``POST /gsma/rsp2/asn1``; put it first in the app's routes.

    ``options`` go to :class:`EsipaHttpApp` (``max_body_size``, ``no_body_status``).
    """
    from starlette.routing import Route

    return Route(ESIPA_PATH, endpoint=EsipaHttpApp(handler, path=None, **options), methods=["POST"], name="esipa")
