"""The contracts between the eIM core and its edges (ESipa bindings, the indirect-download relay).

Core (``eim.esipa``, ``eim.operations``, ``eim.store``) and edges (``eim.bindings.*``, ``eim.relay``) only
meet here. Everything is bytes in, bytes out: the bindings never decode ASN.1, the core never sees a socket.

EID rule for the relay: ESipa ``InitiateAuthenticationRequestEsipa`` (BF39) carries no EID. The dispatcher finds
it, in this order, from (1) the ``eimTransactionId`` [82] of the request -> the download operation that handed
it out -> its EID; (2) ``RequestContext.eid_hint`` (the authenticated EID: MQTT topic, PSK, client certificate
or device secret); (3) when neither is present,
the dispatcher answers ``invalidEimTransactionId`` (52) itself and never calls the relay. BF3B/BF3A/BF41 carry
the ES9+ ``transactionId``: the dispatcher records ``transactionId -> (operation, EID)`` from the relay's BF39
answer and uses it to pass the EID; an unknown ``transactionId`` gets ``invalidTransactionId`` from the
dispatcher without calling the relay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from eim.model import Operation


@dataclass(frozen=True)
class RequestContext:
    """Where an ESipa message came from, and who the transport says sent it.

    Contract: ``eid_hint`` is set **if and only if** the binding *authenticated* the device as that EID: the
    MQTT topic (which the broker's ACL restricts to that device, ``auth="mqtt-acl"``), the PSK identity of a
    CoAPS (DTLS) session (``"psk"``), the EID of a verified TLS client certificate on HTTPS (``"mtls"``), or
    the EID whose per-device secret the HTTP request carried (``"device-secret"``). An unauthenticated request
    (plain HTTP or CoAP without credentials) has ``eid_hint=None`` and ``auth="none"``; whether it is served at
    all is the device policy's decision (:mod:`eim.esipa.device_auth`), made from ``peer_ip``. The dispatcher
    refuses a message about another eUICC than ``eid_hint``. The ESipa message's own signatures remain the
    authentication of results.

    It is the only thing that lets an unsigned error (euiccPackageErrorUnsigned, eimPackageResultResponseError,
    TransferEimPackageResponse eimPackageError) end an operation: only when it equals the operation's EID
    (docs/eim.md, "How results are verified").
    """

    binding: str  # "http" | "coap" | "mqtt"
    peer: str | None = None  # address or MQTT topic, for logs only
    eid_hint: str | None = None  # the EID the binding authenticated (see the class docstring), else None
    auth: str = "none"  # how eid_hint was authenticated: "mqtt-acl" | "psk" | "mtls" | "device-secret" | "none"
    peer_ip: str | None = None  # the peer's IP address (HTTP, CoAP), for the device policy; None = unknown


class EsipaRejected(Exception):
    """No ESipa answer is possible for this input (e.g. not even a recognisable top-level tag).

    Bindings map it to HTTP ``http_status`` (400), CoAP 4.00, or an MQTT error reply carrying ``message``.
    """

    def __init__(self, http_status: int, message: str) -> None:
        self.http_status = http_status
        self.message = message
        super().__init__(f"ESipa request rejected ({http_status}): {message}")


@runtime_checkable
class EsipaHandler(Protocol):
    async def handle(self, message: bytes, ctx: RequestContext) -> bytes | None:
        """Handle one DER ``EsipaMessageFromIpaToEim`` as received.

        Returns DER ``EsipaMessageFromEimToIpa``, or ``None`` when the function has no response body
        (HandleNotification; also a TransferEimPackageResponse that needs no acknowledgement). Never raises for
        bad input: undecodable input gets the right ESipa error message where one exists; raises
        :class:`EsipaRejected` only when no ESipa answer is possible.
        """
        ...


@runtime_checkable
class PackagePusher(Protocol):
    """Implemented by the MQTT binding: deliver a DER ``TransferEimPackageRequest`` (BF4E) to one eUICC's IPA."""

    async def push(self, eid: str, transfer_eim_package_request: bytes) -> None: ...


@dataclass(frozen=True)
class RelayFailure:
    """Why a relayed ES9+ step failed, as the relay knows it (the ESipa error code alone says much less).

    ``transient``: no answer from the SM-DP+ (connection refused or reset, timeout, HTTP 502/503/504) - the same
    request may succeed later. Otherwise the failure is final: the SM-DP+ refused (``subject_code``,
    ``reason_code``, ``message`` of its ``statusCodeData``), or it cannot be used (TLS, address, malformed answer).
    """

    function: str  # the ES9+ function
    reason: str
    transient: bool = False
    subject_code: str | None = None
    reason_code: str | None = None
    message: str | None = None


class FailedRelayAnswer(bytes):
    """A relay's ESipa error answer (the bytes the IPA gets) that also carries the :class:`RelayFailure`, so the
    dispatcher can keep the reason on the operation. Compares and encodes as the plain answer bytes."""

    failure: RelayFailure

    def __new__(cls, answer: bytes, failure: RelayFailure) -> FailedRelayAnswer:
        obj = super().__new__(cls, answer)
        obj.failure = failure
        return obj


@runtime_checkable
class PushWaker(Protocol):
    """Implemented by the CoAP push observers (``eim.bindings.coap_observe``) and the bus that carries wake-ups to
    other workers (``eim.push_bus``): tell the eUICC's IPA that a package is waiting. Never blocks, never raises for
    an EID it does not hold."""

    def wake(self, eid: str) -> bool: ...

    def status(self, eid: str) -> dict[str, Any] | None: ...


@runtime_checkable
class DownloadRelay(Protocol):
    """Implemented by ``eim.relay``: the ES9+ client for indirect profile downloads. All arguments are DER.

    A failed ES9+ step is answered with the function's ESipa error; the relay may return it as a
    :class:`FailedRelayAnswer` to say why."""

    async def initiate_authentication(self, eid: str, request: bytes) -> bytes: ...  # BF39 in -> BF39 out

    async def authenticate_client(self, eid: str, request: bytes) -> bytes: ...  # BF3B -> BF3B

    async def get_bound_profile_package(self, eid: str, request: bytes) -> bytes: ...  # BF3A -> BF3A

    async def cancel_session(self, eid: str, request: bytes) -> bytes: ...  # BF41 -> BF41

    async def forward_notification(self, eid: str | None, pending_notification: bytes) -> None: ...  # to the SM-DP+


@runtime_checkable
class RelayStore(Protocol):
    """The part of :class:`eim.store.Store` the relay uses. Every store backend implements it.

    Download sessions are JSON-serialisable dicts, keyed by a string of the relay's choosing (e.g. the ES9+
    transactionId in hex); they survive restarts and are shared by all workers on one store.
    """

    async def put_download_session(self, key: str, data: dict[str, Any]) -> None: ...

    async def get_download_session(self, key: str) -> dict[str, Any] | None: ...

    async def delete_download_session(self, key: str) -> None: ...

    async def set_euicc_certificates(self, eid: str, euicc_cert_der: bytes, eum_cert_der: bytes) -> None:
        """Record the eUICC's certificates (learned in AuthenticateClient). Unknown EID: no-op."""
        ...

    async def find_operation_by_eim_transaction_id(self, eim_transaction_id: bytes) -> Operation | None: ...


class NotificationRefused(Exception):
    """A notification the outbox does not take; ``reason`` says why, ``cause`` names the check (``unverified``,
    ``unforwardable``, ``address``, ``cap``, ``rate``: see ``eim.relay.outbox``). Nothing was stored."""

    def __init__(self, reason: str, *, cause: str = "unforwardable") -> None:
        self.reason = reason
        self.cause = cause
        super().__init__(f"notification not accepted for forwarding: {reason}")


@runtime_checkable
class NotificationQueue(Protocol):
    """Implemented by ``eim.relay.outbox``: the durable queue of notifications owed to SM-DP+s.

    :meth:`accept` takes only an ``eim.packages.notification.VerifiedNotification`` (its eUICC signature checked
    for its EID) and is where the eIM takes responsibility for a notification: when it returns, the notification is
    in the store (a forwarder delivers it later, with retries), so the IPA may be told success. It raises
    :class:`NotificationRefused` for a notification that can never be forwarded (nothing is stored then), and
    lets store errors through (the IPA must then keep the notification and send it again).
    """

    async def accept(self, notification: Any, *, operation_id: str | None = None) -> Any: ...
