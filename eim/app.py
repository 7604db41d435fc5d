"""Wiring of one eIM worker: keys, store, operations, ESipa dispatcher, relay, REST API, metrics.

``create_app(config, store, handler)`` returns the ASGI application: the ESipa HTTP binding (``POST
/gsma/rsp2/asn1``, a plain ASGI app from ``eim.bindings.http``) in front, the FastAPI operator API behind it as
its fallback, so ESipa requests never go through FastAPI's router (``docs/performance.md``).
``build(config)`` makes everything ``eim serve`` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from eim.config import Config, ConfigError
from eim.esipa.dispatcher import EsipaDispatcher
from eim.esipa.results import ResultProcessor
from eim.interfaces import DownloadRelay, EsipaHandler
from eim.metrics import Metrics
from eim.operations import OperationService, OperationSettings
from eim.packages import EimKey, PackageFactory
from eim.packages.euicc_package import EuiccKeys
from eim.store import Store, open_store

log = logging.getLogger("eim.app")


def lab_pki_dir(config: Config) -> Path | None:
    """The lab PKI in use: ``[eim] lab_pki``, or ``<data_dir>/pki`` when no signing key is configured."""
    if config.eim.lab_pki:
        return Path(config.eim.lab_pki)
    if config.eim.signing_key:
        return None
    return Path(config.eim.data_dir) / "pki"


def ensure_lab_pki(config: Config):
    """Load (or, for the default ``<data_dir>/pki``, create) the lab PKI."""
    from rsp.pki import LabPki, LabPkiError, create_lab_pki

    path = lab_pki_dir(config)
    if path is None:
        return None
    if (path / "manifest.json").exists():
        return LabPki.load(path)
    if config.eim.lab_pki:
        raise ConfigError(f"[eim] lab_pki: {path} is not a lab PKI (create one with `rsp pki init {path}`)")
    log.info("creating a lab PKI", extra={"path": str(path)})
    try:
        return create_lab_pki(path, curves=("nist", "brainpool"), hosts=("localhost",))
    except LabPkiError as exc:
        raise ConfigError(f"cannot create a lab PKI in {path}: {exc}") from None


def load_signing_key(config: Config, lab: Any = None) -> EimKey:
    from rsp import crypto

    if config.eim.signing_key:
        try:
            key = crypto.load_private_key(config.eim.signing_key)
            cert = crypto.load_certificate(config.eim.signing_cert) if config.eim.signing_cert else None
        except (OSError, crypto.CryptoError, ValueError) as exc:
            raise ConfigError(f"[eim] signing_key/signing_cert: {exc}") from None
        return EimKey(config.eim.eim_id, key, cert)
    if lab is None:
        raise ConfigError("[eim] signing_key or lab_pki is required")
    try:
        return EimKey(config.eim.eim_id, lab.eim_key(config.eim.curve), lab.eim_cert(config.eim.curve))
    except Exception as exc:
        raise ConfigError(f"[eim] curve {config.eim.curve!r}: not in the lab PKI ({exc})") from None


def load_trusted_cis(config: Config, lab: Any = None) -> list[x509.Certificate]:
    from rsp.pki import load_certificates

    out: list[x509.Certificate] = []
    for path in config.eim.trusted_ci:
        try:
            out.extend(load_certificates(path))
        except Exception as exc:
            raise ConfigError(f"[eim] trusted_ci {path}: {exc}") from None
    if not out and lab is not None:
        out = list(lab.ci_certs())
    return out


def smdp_address_policy(config: Config) -> Any:
    """Which SM-DP+ addresses this eIM may contact (``eim.smdp_addresses``): ``[relay] allowed_smdp_addresses`` and
    ``allow_private_addresses``; loopback SM-DP+s are fine when every endpoint of the eIM is on loopback (a lab)."""
    from eim.smdp_addresses import SmdpAddressPolicy, loopback_only

    hosts = [h for on, h in ((config.http.enabled, config.http.host), (config.coap.enabled, config.coap.host)) if on]
    if config.mqtt.enabled:
        hosts.append(config.mqtt.host)
    return SmdpAddressPolicy.of(
        config.relay.allowed_smdp_addresses,
        allow_private=config.relay.allow_private_addresses,
        allow_loopback=loopback_only(hosts),
    )


def operation_settings(config: Config) -> OperationSettings:
    o = config.operations
    return OperationSettings(
        smdp_addresses=smdp_address_policy(config),
        default_validity_s=o.default_validity_s,
        max_validity_s=o.max_validity_s,
        default_download_mode=o.default_download_mode,
        auto_learn_certificates=o.auto_learn_certificates,
        push_retry_s=o.push_retry_s,
        max_handouts=o.max_handouts,
        relay_retry_initial_s=config.relay.retry_initial_s,
        relay_retry_max_s=config.relay.retry_max_s,
    )


def create_app(
    config: Config,
    store: Store,
    handler: EsipaHandler,
    *,
    service: OperationService | None = None,
    metrics: Metrics | None = None,
    registry: Any = None,
    device_secrets: Any = None,
):
    """The worker's ASGI app: the Host allowlist (``[http] allowed_hosts``), the ESipa HTTP binding, and behind
    it the operator API (FastAPI) with its front (``eim.api.front``: operators, roles, body limits, access log).
    ``registry``: the :class:`eim.api.auth.OperatorRegistry` (default: made from ``[api]``)."""
    from eim.api import create_api
    from eim.api.front import ApiFront
    from eim.api.limits import HostAllowlist

    if metrics is None:
        metrics = getattr(handler, "metrics", None)
    if service is None:
        lab = ensure_lab_pki(config)
        service = OperationService(
            store, PackageFactory(load_signing_key(config, lab)), operation_settings(config), metrics=metrics
        )
    if registry is None:
        registry = operator_registry(config)
    a = config.api
    rest = create_api(service, store, metrics=metrics, registry=registry, settings=fleet_api_settings(config))
    api: Any = ApiFront(
        rest,
        registry,
        max_body_bytes=a.max_body_bytes,
        max_batch_body_bytes=a.max_batch_body_bytes,
        public_metrics=a.public_metrics,
        public_docs=a.public_docs,
        metrics=metrics,
    )
    from eim.ui import dashboard  # the operator dashboard at / and /ui/ (eim.ui), in front of the API's front

    api = dashboard(api, rest, registry, config)
    try:
        from eim.bindings.http import EsipaHttpApp

        api = EsipaHttpApp(handler, fallback=api, device_auth=http_device_auth(config, device_secrets))
    except ImportError:  # the binding is missing: the API still runs, ESipa answers 404
        log.error("eim.bindings.http is not available: ESipa over HTTP is off")
    if config.http.allowed_hosts:
        api = HostAllowlist(api, config.http.allowed_hosts)
    return api


def event_settings(config: Config) -> Any:
    """``[events]`` and ``[fleet]`` as :class:`eim.events.deliverer.EventSettings`."""
    from eim.events.deliverer import EventSettings
    from eim.events.webhook_url import UrlPolicy

    e = config.events
    return EventSettings(
        url_policy=UrlPolicy(allow_loopback=e.allow_loopback, allow_private=e.allow_private),
        retry_initial_s=e.retry_initial_s,
        retry_max_s=e.retry_max_s,
        max_attempts=e.max_attempts,
        poll_s=e.poll_s,
        timeout_s=e.timeout_s,
        default_poll_interval_s=config.fleet.poll_interval_s,
        stale_check_s=e.stale_check_s,
    )


def fleet_api_settings(config: Config) -> Any:
    """What the fleet routes need: ``[fleet]``, the subscriber URL policy, and the wake-up of this process's event
    workers (a re-sent delivery goes out at once)."""
    from eim.api.fleet import FleetApiSettings
    from eim.events.deliverer import wake_all

    s = event_settings(config)
    return FleetApiSettings(
        default_poll_interval_s=s.default_poll_interval_s, url_policy=s.url_policy, wake_events=wake_all
    )


def make_events(config: Config, store: Store, metrics: Metrics | None = None) -> Any:
    """The worker's event fan-out and webhook deliverer (``eim.events.deliverer``), or None (``[events] enabled``
    false)."""
    if not config.events.enabled:
        return None
    from eim.events.deliverer import EventDeliverer

    return EventDeliverer(store, event_settings(config), metrics=metrics)


def operator_registry(config: Config) -> Any:
    """The operators of ``[api] operators_file`` and the legacy ``[api] token`` (ConfigError on a bad file)."""
    from eim.api.auth import OperatorRegistry, OperatorsFileError

    try:
        return OperatorRegistry(config.api.operators_file or None, legacy_token=config.api.token or None)
    except OperatorsFileError as exc:
        raise ConfigError(f"[api] operators_file: {exc}") from None


def device_policy(config: Config):
    """The ``[devices]`` policy for unauthenticated requests (``eim.esipa.device_auth``)."""
    from eim.esipa.device_auth import DevicePolicy

    d = config.devices
    try:
        return DevicePolicy(allow_unauthenticated=d.allow_unauthenticated, trusted_networks=d.trusted_networks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_device_secrets(config: Config):
    """``[devices] secret_file`` as a :class:`eim.bindings.device_secrets.DeviceSecretFile`, or ``None``."""
    if not config.devices.secret_file:
        return None
    from eim.bindings.device_secrets import DeviceSecretError, DeviceSecretFile

    try:
        return DeviceSecretFile(config.devices.secret_file)
    except DeviceSecretError as exc:
        raise ConfigError(f"[devices] secret_file: {exc}") from None


def http_device_auth(config: Config, secrets: Any = None):
    """How the HTTP binding authenticates devices: client certificates when ``[devices] client_ca`` is set (the
    server then runs :class:`eim.bindings.tls.TlsHttpToolsProtocol`), device secrets when given."""
    from eim.bindings.http import HttpDeviceAuth

    return HttpDeviceAuth(client_certificates=bool(config.devices.client_ca), secrets=secrets)


@dataclass
class Runtime:
    """Everything one worker runs (built by :func:`build`, closed by :meth:`aclose`)."""

    config: Config
    store: Store
    key: EimKey
    service: OperationService
    results: ResultProcessor
    dispatcher: EsipaDispatcher
    metrics: Metrics
    relay: DownloadRelay | None = None
    closers: list[Any] = field(default_factory=list)
    app: Any = None
    outbox: Any = None  # eim.relay.outbox.NotificationOutbox when the relay is on
    operators: Any = None  # eim.api.auth.OperatorRegistry, its file watched while the worker runs
    events: Any = None  # eim.events.deliverer.EventDeliverer when [events] enabled
    _watch: Any = None
    device_secrets: Any = None  # eim.bindings.device_secrets.DeviceSecretFile with [devices] secret_file

    def start_background(self) -> None:
        """Start the worker's background tasks that need a running loop (the notification forwarder)."""
        if self.outbox is not None:
            self.outbox.start()
        if self.events is not None:
            self.events.start()
        if self.operators is not None and self.operators.path is not None and self._watch is None:
            import asyncio

            self._watch = asyncio.create_task(self.operators.watch())

    async def aclose(self) -> None:
        if self._watch is not None:
            import asyncio
            import contextlib

            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.outbox is not None:
            await self.outbox.aclose()  # before the store closes: gives back its leases
        if self.events is not None:
            await self.events.aclose()  # gives back its delivery leases
        await self.service.aclose()
        for c in reversed(self.closers):
            try:
                await c()
            except Exception as exc:  # closing must not hide the first error
                log.warning("close failed", extra={"error": str(exc)})
        await self.store.close()


def make_relay(config: Config, store: Store, lab: Any) -> tuple[DownloadRelay | None, Any]:
    """The ES9+ relay (``eim.relay``) if enabled; ``(relay, closer)``."""
    if not config.relay.enabled:
        return None, None
    try:
        from eim.relay import Es9PlusClient, Es9Relay, tls_context
    except ImportError as exc:
        raise ConfigError(f"[relay] enabled but eim.relay cannot be imported: {exc}") from None
    ca_files = list(config.relay.ca_files)
    if not ca_files and lab is not None:
        ca_files = [str(lab.ca_bundle_path)]
    try:
        ctx = tls_context(ca_files, use_system_store=config.relay.use_system_store)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[relay] ca_files: {exc}") from None
    from rsp import resolve

    client = Es9PlusClient(
        ctx,
        timeout=config.relay.timeout_s,
        requester_id=config.eim.eim_id,
        resolve=resolve.parse(config.relay.resolve),
    )
    relay = Es9Relay(
        store,
        client,
        default_smdp_address=config.relay.default_smdp_address or None,
        allowed_smdp_addresses=config.relay.allowed_smdp_addresses or None,
        address_policy=smdp_address_policy(config),
    )
    return relay, client.aclose


def make_outbox(config: Config, store: Store, relay: DownloadRelay, metrics: Metrics | None = None) -> Any:
    """The notification outbox and forwarder (``eim.relay.outbox``) with the ``[relay]`` retry settings. A lease
    outlasts two ES9+ calls, so a live worker's notification is never picked up by another one."""
    from eim.relay.admission import Admission
    from eim.relay.outbox import NotificationOutbox, RetryPolicy

    r = config.relay
    policy = RetryPolicy(
        initial_s=r.notification_retry_initial_s,
        max_s=r.notification_retry_max_s,
        jitter=r.notification_retry_jitter,
        max_attempts=r.notification_retry_max_attempts,
        poll_s=r.notification_poll_s,
        lease_s=2 * r.timeout_s + 10,
    )
    admission = Admission(
        addresses=smdp_address_policy(config),
        default_smdp_address=r.default_smdp_address or None,
        max_pending_per_eid=r.max_pending_notifications_per_eid,
        rate_per_hour=r.notification_rate_per_eid_per_hour,
        burst=r.notification_burst_per_eid,
    )
    return NotificationOutbox(store, relay, policy, admission=admission, metrics=metrics)


async def build(config: Config, *, store: Store | None = None, metrics: Metrics | None = None) -> Runtime:
    """Open the store (migrations) and wire one worker."""
    operators = operator_registry(config)  # a bad operators file stops the start before anything opens
    lab = ensure_lab_pki(config)
    key = load_signing_key(config, lab)
    cis = load_trusted_cis(config, lab)
    policy = device_policy(config)
    secrets = load_device_secrets(config)
    if not cis:
        log.warning("no trusted CI configured: eUICC results cannot be verified ([eim] trusted_ci)")
    metrics = metrics or Metrics()
    metrics.stale_after_s = config.fleet.poll_interval_s
    store = store or open_store(config.store_url, **_store_options(config))
    await store.open()
    relay, closer = make_relay(config, store, lab)
    service = OperationService(store, PackageFactory(key), operation_settings(config), metrics=metrics)
    outbox = make_outbox(config, store, relay, metrics) if relay is not None else None
    results = ResultProcessor(store, service, EuiccKeys(cis), relay, outbox=outbox, metrics=metrics)
    dispatcher = EsipaDispatcher(results, metrics=metrics, device_policy=policy)
    rt = Runtime(config, store, key, service, results, dispatcher, metrics, relay, outbox=outbox)
    rt.device_secrets = secrets
    if closer is not None:
        rt.closers.append(closer)
    rt.events = make_events(config, store, metrics)
    rt.operators = operators
    rt.app = create_app(
        config, store, dispatcher, service=service, metrics=metrics, registry=rt.operators, device_secrets=secrets
    )
    return rt


def _store_options(config: Config) -> dict[str, Any]:
    if config.store_url.startswith(("postgresql:", "postgres:")):
        return {"max_size": config.store.pool_size}
    return {"read_connection": config.store.sqlite_read_connection}
