"""ESipa clients (IPA side) behind one :class:`EsipaTransport` interface (SGP.32 §6.1).

Bindings: ``http`` (ASN.1 over HTTP(S), ``POST /gsma/rsp2/asn1``), ``coap`` (the same DER over CoAP, block-wise),
``mqtt`` (MQTT v5, topics ``esipa/{eid}/up`` / ``esipa/{eid}/down`` with response topic + correlation data, and
pushed TransferEimPackageRequest on the down topic). Each binding module imports its library (httpx, aiocoap,
aiomqtt) only when it is used, so an HTTP-only device never loads the MQTT or CoAP stack.

:func:`choose_binding` picks the binding from the eIM configuration on the eUICC (``eimSupportedProtocol``,
``eimFqdn``) and the local configuration; :func:`open_transport` builds it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ipa.config import IpaConfig
    from ipa.es10 import EimConfiguration

log = logging.getLogger("ipa.esipa")

ESIPA_PATH = "/gsma/rsp2/asn1"
CONTENT_TYPE = "application/x-gsma-rsp-asn1"
ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"
USER_AGENT = "gsma-rsp-ipad"

# EimSupportedProtocol bits
RETRIEVE_HTTPS, RETRIEVE_COAPS, INJECT_HTTPS, INJECT_COAPS, PROPRIETARY = range(5)


class EsipaError(Exception):
    """The eIM could not be reached or answered with a transport-level error (HTTP status, CoAP code, timeout).

    ``step`` names the ESipa function being called; ``status`` is the HTTP status / CoAP code when there was one.
    """

    def __init__(self, step: str, message: str, status: int | str | None = None) -> None:
        self.step = step
        self.status = status
        super().__init__(f"{step}: {message}")


@runtime_checkable
class EsipaTransport(Protocol):
    """One ESipa binding. ``send`` posts one DER ``EsipaMessageFromIpaToEim`` and returns the DER
    ``EsipaMessageFromEimToIpa`` answer, or ``None`` when the eIM answers nothing (HandleNotification)."""

    binding: str

    async def send(self, message_der: bytes) -> bytes | None: ...

    async def close(self) -> None: ...


@runtime_checkable
class PushTransport(EsipaTransport, Protocol):
    """A binding that can receive packages pushed by the eIM (TransferEimPackageRequest)."""

    def pushed(self) -> AsyncIterator[PushedPackage]: ...

    async def answer_push(self, push: PushedPackage, response_der: bytes) -> None: ...


@dataclass(frozen=True)
class PushedPackage:
    """A TransferEimPackageRequest pushed by the eIM; ``reply_to`` / ``correlation`` route the answer."""

    der: bytes
    reply_to: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True)
class PackageWaiting:
    """The eIM says a package is waiting (CoAP push notification): poll now (GetEimPackage)."""


def step_of(message_der: bytes) -> str:
    """Name of the ESipa function a message belongs to (for errors and logs)."""
    names = {
        0xBF39: "InitiateAuthentication",
        0xBF3B: "AuthenticateClient",
        0xBF3A: "GetBoundProfilePackage",
        0xBF41: "CancelSession",
        0xBF3D: "HandleNotification",
        0xBF4E: "TransferEimPackage",
        0xBF4F: "GetEimPackage",
        0xBF50: "ProvideEimPackageResult",
    }
    tag = int.from_bytes(message_der[:2], "big") if len(message_der) >= 2 else -1
    return names.get(tag, f"ESipa({message_der[:2].hex()})")


@dataclass(frozen=True)
class Endpoint:
    binding: str  # http | coap | mqtt
    scheme: str  # https | http | coaps | coap | mqtt | mqtts
    host: str
    port: int | None

    @property
    def url(self) -> str:
        hostpart = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{hostpart}{port}"


def _split_host_port(fqdn: str) -> tuple[str, int | None]:
    if fqdn.startswith("["):
        host, _, rest = fqdn[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if fqdn.count(":") == 1:
        host, _, port = fqdn.partition(":")
        return host, int(port)
    return fqdn, None


SCHEMES = {"https": "http", "http": "http", "coaps": "coap", "coap": "coap", "mqtt": "mqtt", "mqtts": "mqtt"}


def parse_url(url: str) -> Endpoint:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"eIM URL {url!r}: scheme must be one of {', '.join(SCHEMES)}")
    hostport = rest.split("/", 1)[0]
    try:
        host, port = _split_host_port(hostport)
    except ValueError:
        raise ValueError(f"eIM URL {url!r}: bad port") from None
    if not host:
        raise ValueError(f"eIM URL {url!r}: no host")
    return Endpoint(SCHEMES[scheme], scheme, host, port)


def choose_binding(config: IpaConfig, eim: EimConfiguration | None) -> Endpoint:
    """Pick the binding and endpoint.

    Order: an explicit ``eim.url`` wins (its scheme names the binding); otherwise ``eim.binding`` if not ``auto``;
    otherwise the eIM's ``eimSupportedProtocol`` from the eUICC: proprietary (MQTT) if it is the only one offered,
    else retrieve/inject over HTTPS, else CoAPS. The host comes from ``eimFqdn``.
    """
    if config.eim.url:
        ep = parse_url(config.eim.url)
        if config.eim.binding not in ("auto", ep.binding):
            raise ValueError(f"eim.binding={config.eim.binding} contradicts eim.url={config.eim.url}")
        return ep
    if eim is None or not eim.fqdn:
        raise ValueError("no eIM address: set eim.url or configure an eIM with eimFqdn on the eUICC")
    host, port = _split_host_port(eim.fqdn)
    binding = config.eim.binding
    if binding == "auto":
        protos = eim.supported_protocols
        if protos and protos <= {PROPRIETARY}:
            binding = "mqtt"
        elif not protos or RETRIEVE_HTTPS in protos or INJECT_HTTPS in protos:
            binding = "http"
        elif RETRIEVE_COAPS in protos or INJECT_COAPS in protos:
            binding = "coap"
        else:
            binding = "mqtt"
    scheme = {"http": "https", "coap": "coaps", "mqtt": "mqtts" if config.mqtt.tls else "mqtt"}[binding]
    return Endpoint(binding, scheme, host, port)


def tls_context(ca_file: str, extra_ca_der: bytes | None, insecure: bool) -> ssl.SSLContext | bool:
    """TLS verification: the configured CA bundle plus a trusted certificate from the eUICC's eIM configuration.

    ``insecure`` (labs only) disables verification and logs a warning every time it is used.
    """
    if insecure:
        log.warning("TLS verification is OFF (insecure = true): use this in a lab only")
        return False
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if extra_ca_der:
        try:
            ctx.load_verify_locations(cadata=extra_ca_der)
        except ssl.SSLError as exc:
            log.warning("ignoring trustedPublicKeyDataTls certificate from the eUICC: %s", exc)
    return ctx


def _http_device_auth(
    endpoint: Endpoint, config: IpaConfig, eid: bytes, verify: ssl.SSLContext | bool
) -> tuple[ssl.SSLContext | bool, str | None]:
    """The device's credentials for ESipa over HTTP(S): the client certificate goes into the TLS context, the
    device secret into an ``Authorization: Bearer`` header (docs/ipa.md). Errors name the configuration key."""
    from ipa.config import ConfigError, load_device_secret

    try:
        token = load_device_secret(config)
    except ConfigError as exc:
        raise EsipaError("HTTP", str(exc)) from None
    if token is not None and token.split(".", 1)[0] != eid.hex().upper():
        raise EsipaError("HTTP", "eim.device_secret: the token is for another EID than this eUICC's")
    if token is not None and endpoint.scheme != "https":
        log.warning("device secret sent over plain http: anyone on the path can read it (use https)")
    if config.eim.tls_client_cert and endpoint.scheme == "https":
        if not isinstance(verify, ssl.SSLContext):  # insecure = true: no server check, still a client cert
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
        try:
            verify.load_cert_chain(config.eim.tls_client_cert, config.eim.tls_client_key)
        except (OSError, ssl.SSLError) as exc:
            raise EsipaError("HTTP", f"eim.tls_client_cert / eim.tls_client_key: {exc}") from None
    return verify, token


async def open_transport(
    endpoint: Endpoint, config: IpaConfig, eid: bytes, eim: EimConfiguration | None = None
) -> EsipaTransport:
    """Build the transport for ``endpoint`` (the binding's library is imported here, not before)."""
    trust = eim.tls_trust if eim is not None and eim.tls_trust_is_certificate else None
    if endpoint.binding == "http":
        from ipa.esipa.http import HttpTransport

        # plain http (lab): no TLS, so no CA store is loaded at all
        verify = tls_context(config.eim.ca_file, trust, config.eim.insecure) if endpoint.scheme == "https" else False
        verify, token = _http_device_auth(endpoint, config, eid, verify)
        return HttpTransport(endpoint.url, verify=verify, timeout=config.eim.timeout, device_token=token)
    if endpoint.binding == "coap":
        from ipa.esipa.coap import CoapTransport

        psk = None
        if endpoint.scheme == "coaps":
            from ipa.config import ConfigError, load_psk

            try:
                psk = load_psk(config)
            except ConfigError as exc:
                raise EsipaError("CoAP", str(exc)) from None
        identity = config.eim.psk_identity or eid.hex().upper()
        t = CoapTransport(
            endpoint.url,
            timeout=config.eim.timeout,
            psk=psk,
            psk_identity=identity.encode(),
            push_eid=eid.hex().upper() if config.eim.push else None,
            push_refresh=config.eim.push_refresh,
        )
        await t.start()
        return t
    from ipa.esipa.mqtt import MqttTransport

    mc = config.mqtt
    use_tls = endpoint.scheme == "mqtts" or mc.tls
    ctx = tls_context(config.eim.ca_file, trust, config.eim.insecure) if use_tls else None
    t = MqttTransport(
        host=mc.host or endpoint.host,
        port=mc.port or endpoint.port or (8883 if use_tls else 1883),
        eid=eid,
        client_id=mc.client_id or f"ipa-{eid.hex().upper()}",
        topic_prefix=mc.topic_prefix,
        tls=ctx if ctx is not None else None,
        username=mc.username or None,
        password=mc.password or None,
        keepalive=mc.keepalive,
        session_expiry=mc.session_expiry,
        timeout=config.eim.timeout,
        notification_wait=mc.notification_wait,
        retransmit_interval=mc.retransmit_interval,
        retransmit_max_interval=mc.retransmit_max_interval,
    )
    await t.start()
    return t
