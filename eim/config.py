"""eIM configuration: TOML file, then environment overrides ``EIM_<SECTION>_<KEY>`` (e.g. ``EIM_STORE_URL``,
``EIM_HTTP_PORT``, ``EIM_API_TOKEN``, ``EIM_MQTT_ENABLED=false``). Every key has a default, so ``eim serve`` with
no file at all runs a lab eIM on loopback with SQLite in ``./eim-data``.

Keys and certificates: ``[eim] signing_key`` / ``signing_cert`` (PEM or DER files of the operator's own PKI), or
``[eim] lab_pki`` (a lab PKI directory made by ``rsp pki init``; the key is ``LabPki.eim_key(curve)``). With
neither, ``eim serve`` creates a lab PKI under the data directory on first start. ``trusted_ci`` lists the CI
certificate files eUICC certificates must chain to (default: the lab PKI's CIs).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; names the key."""


@dataclass
class EimSection:
    eim_id: str = "eim.lab"
    data_dir: str = "eim-data"
    signing_key: str = ""
    signing_cert: str = ""
    lab_pki: str = ""
    curve: str = "nist"
    trusted_ci: list[str] = field(default_factory=list)


@dataclass
class StoreSection:
    url: str = ""  # default: sqlite:///<data_dir>/eim.db
    pool_size: int = 10
    sqlite_read_connection: bool = True  # SQLite: reads and no-work polls on a 2nd connection, never behind writes


@dataclass
class HttpSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    workers_note: str = ""  # free text shown in logs (e.g. "worker 2 of 3")
    # hardening of the HTTP port (ESipa and the operator API), eim.api.limits / eim.api.timeouts
    allowed_hosts: list[str] = field(default_factory=list)  # Host header allowlist ("*.x" ok); empty = any
    max_connections: int = 1000  # open connections; one more is answered 503 and closed
    header_timeout_s: float = 10.0  # connect (or first byte of a request) to end of its headers
    body_timeout_s: float = 30.0  # end of the headers to end of the body
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this


@dataclass
class CoapSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5683
    plain: bool = True  # serve coap:// on `port`
    dtls: bool = False  # serve coaps:// (DTLS 1.2 PSK) on `dtls_port`; needs psk_file, one host address, [dtls]
    dtls_port: int = 5684
    psk_file: str = ""  # EID:hexkey per line (Mosquitto psk_file format), reloaded when it changes
    dtls_max_sessions: int = 1024  # DTLS sessions kept: unfinished handshakes dropped first, then the least recent
    push: bool = True  # serve /esipa/push/{EID} (RFC 7641 Observe): wake devices at once when work is queued
    push_max_observers: int = 100_000  # observations held by one worker; the oldest registration goes first
    push_ack_timeout_s: float = 2.0  # a CON notification is retransmitted from this, doubling, 4 times; then dropped


@dataclass
class MqttSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""  # default: eim-<hostname>-<pid>
    shared_group: str = "eim"
    prefix: str = "esipa"
    username: str = ""
    password: str = ""
    push: bool = True


@dataclass
class ApiSection:
    token: str = ""  # legacy single bearer token: the admin operator "admin"; empty (and no file) = no auth (lab)
    url: str = ""  # what the CLI talks to; default http://<http.host>:<http.port>
    operators_file: str = ""  # name:role:sha256:<hex> lines (eim operator add|rotate|remove|list), reloaded
    public_metrics: bool = False  # /metrics without a token
    public_docs: bool = False  # /docs, /redoc, /openapi.json without a token
    insecure_no_auth: bool = False  # let `eim serve` run without operator auth on a non-loopback address
    max_body_bytes: int = 1024 * 1024  # request body limit of the operator API (413 above it)
    max_batch_body_bytes: int = 4 * 1024 * 1024  # ... of POST /v1/batches


@dataclass
class OperationsSection:
    default_validity_s: float = 7 * 24 * 3600.0
    max_validity_s: float = 365 * 24 * 3600.0
    default_download_mode: str = "indirect"
    auto_learn_certificates: bool = True
    push_retry_s: float = 300.0
    sweep_interval_s: float = 5.0
    max_handouts: int = 3  # hand-outs whose results were refused, then the operation fails (0 = no limit)


@dataclass
class RelaySection:
    enabled: bool = True
    ca_files: list[str] = field(default_factory=list)  # CAs that SM-DP+ TLS certificates must chain to
    use_system_store: bool = False
    default_smdp_address: str = ""
    allowed_smdp_addresses: list[str] = field(default_factory=list)  # empty = any (downloads; see docs/eim.md)
    # SM-DP+ IP literals in loopback/private ranges (link-local never); loopback is fine anyway when the eIM's own
    # listeners are all on loopback (a lab)
    allow_private_addresses: bool = False
    max_pending_notifications_per_eid: int = 50  # notifications of one eUICC waiting in the outbox; 0 = no cap
    notification_rate_per_eid_per_hour: float = 120.0  # token bucket per EID and worker; 0 = no limit
    notification_burst_per_eid: int = 20
    timeout_s: float = 30.0
    # notifications owed to SM-DP+s wait in the store's outbox; delivery retries back off exponentially (jittered)
    notification_retry_initial_s: float = 5.0  # delay after the first failed attempt
    notification_retry_max_s: float = 900.0  # no delay is longer
    notification_retry_jitter: float = 0.2  # each delay spread over +-20 %
    notification_retry_max_attempts: int = 500  # then the notification ends as failed; 0 = never give up
    notification_poll_s: float = 2.0  # how often a worker looks for due notifications
    # SM-DP+ not reachable during an indirect download: its package is handed out again after retry_initial_s,
    # doubling per failed hand-out up to retry_max_s, until the operation's validity ends
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    # labs: connect to another address for an SM-DP+ name, {"host[:port]" = "address:port"} (like curl --resolve);
    # TLS still checks the certificate against the name. Environment: EIM_RELAY_RESOLVE="host=address:port,..."
    resolve: dict[str, str] = field(default_factory=dict)


@dataclass
class DevicesSection:
    """Device authentication on ESipa (``eim.esipa.device_auth``; docs/esipa-bindings.md)."""

    allow_unauthenticated: bool = False  # serve devices that prove no identity from ANY address (warned at start)
    trusted_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])  # else: only from here
    client_ca: str = ""  # HTTPS: PEM CA(s) of device client certificates (subject serialNumber = EID)
    secret_file: str = ""  # HTTP(S): per-device secrets (`eim device-secret`), Authorization: Bearer <EID>.<secret>


@dataclass
class EventsSection:
    """Webhook subscriptions and their deliveries (eim.events, docs/eim.md "Events (webhooks)")."""

    enabled: bool = True  # this worker fans out events and delivers them
    allow_loopback: bool = False  # subscriber URLs on loopback (http:// too): labs and tests only
    allow_private: bool = False  # subscriber URLs that are RFC 1918 / other non-global IP literals
    retry_initial_s: float = 5.0  # delay after the first failed attempt, doubling
    retry_max_s: float = 3600.0  # no delay is longer
    max_attempts: int = 20  # then the delivery ends as failed (re-send it over the API); 0 = never give up
    timeout_s: float = 10.0  # one POST to a subscriber
    poll_s: float = 1.0  # how often a worker looks for events and due deliveries
    stale_check_s: float = 60.0  # how often eUICCs are checked for going silent (euicc.stale)


@dataclass
class FleetSection:
    poll_interval_s: float = 86400.0  # expected poll interval; an eUICC silent longer is stale (per-eUICC override)


@dataclass
class LogSection:
    level: str = "INFO"
    json: bool = True


@dataclass
class Config:
    eim: EimSection = field(default_factory=EimSection)
    store: StoreSection = field(default_factory=StoreSection)
    http: HttpSection = field(default_factory=HttpSection)
    coap: CoapSection = field(default_factory=CoapSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    api: ApiSection = field(default_factory=ApiSection)
    operations: OperationsSection = field(default_factory=OperationsSection)
    relay: RelaySection = field(default_factory=RelaySection)
    events: EventsSection = field(default_factory=EventsSection)
    fleet: FleetSection = field(default_factory=FleetSection)
    log: LogSection = field(default_factory=LogSection)
    devices: DevicesSection = field(default_factory=DevicesSection)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{Path(self.eim.data_dir) / 'eim.db'}"

    @property
    def api_url(self) -> str:
        if self.api.url:
            return self.api.url.rstrip("/")
        host = "127.0.0.1" if self.http.host in ("0.0.0.0", "::", "") else self.http.host
        scheme = "https" if self.http.tls_cert else "http"
        return f"{scheme}://{host}:{self.http.port}"


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if isinstance(default, dict):
        from rsp.resolve import ResolveMapError, parse_text

        if isinstance(value, str):
            try:
                return parse_text(value)
            except ResolveMapError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if isinstance(value, dict):
            return dict(value)  # entries checked by load_config
        raise ConfigError(f'{where}: must be a table of host[:port] = "address:port"')
    if isinstance(default, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(f"{where}: must be a list of strings")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then ``EIM_*`` environment variables."""
    env = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    if path is None and env.get("EIM_CONFIG"):
        path = env["EIM_CONFIG"]
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path}: {exc}") from None
    cfg = Config()
    for sec_field in dataclasses.fields(cfg):
        name = sec_field.name
        section = getattr(cfg, name)
        given = data.pop(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{name}] must be a table")
        known = {f.name for f in dataclasses.fields(section)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}")
        for f in dataclasses.fields(section):
            default = getattr(section, f.name)
            if f.name in given:
                setattr(section, f.name, _coerce(name, f.name, default, given[f.name]))
            env_key = f"EIM_{name.upper()}_{f.name.upper()}"
            if env_key in env:
                setattr(section, f.name, _coerce(name, f.name, default, env[env_key]))
    if data:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(data))}")
    if cfg.operations.default_download_mode not in ("direct", "indirect"):
        raise ConfigError("[operations] default_download_mode: must be direct or indirect")
    if not 0 < cfg.http.port < 65536 or not 0 < cfg.coap.port < 65536 or not 0 < cfg.mqtt.port < 65536:
        raise ConfigError("ports must be between 1 and 65535")
    if cfg.coap.dtls:
        if not 1 < cfg.coap.dtls_port < 65536:
            raise ConfigError("[coap] dtls_port: must be between 2 and 65535")
        if not cfg.coap.psk_file:
            raise ConfigError("[coap] dtls = true needs psk_file (EID:hexkey lines)")
        if cfg.coap.host in ("", "0.0.0.0", "::"):
            raise ConfigError(
                "[coap] dtls = true needs host to be one address, not a wildcard (aiocoap's DTLS server binds a "
                "single address)"
            )
        if cfg.coap.plain and cfg.coap.dtls_port == cfg.coap.port:
            raise ConfigError("[coap] port and dtls_port must differ when both coap:// and coaps:// are served")
    r = cfg.relay
    if not 0 < r.notification_retry_initial_s <= r.notification_retry_max_s:
        raise ConfigError("[relay] notification_retry_initial_s: must be > 0 and <= notification_retry_max_s")
    if not 0 <= r.notification_retry_jitter <= 1:
        raise ConfigError("[relay] notification_retry_jitter: must be between 0 and 1")
    if r.notification_retry_max_attempts < 0:
        raise ConfigError("[relay] notification_retry_max_attempts: must be 0 (no limit) or more")
    if not r.notification_poll_s > 0 or not r.timeout_s > 0:
        raise ConfigError("[relay] notification_poll_s and timeout_s: must be > 0")
    if r.max_pending_notifications_per_eid < 0 or r.notification_rate_per_eid_per_hour < 0:
        raise ConfigError("[relay] max_pending_notifications_per_eid, notification_rate_per_eid_per_hour: must be >= 0")
    if r.notification_rate_per_eid_per_hour > 0 and r.notification_burst_per_eid < 1:
        raise ConfigError("[relay] notification_burst_per_eid: must be at least 1 when there is a rate limit")
    if cfg.operations.max_handouts < 0:
        raise ConfigError("[operations] max_handouts: must be 0 (no limit) or more")
    from rsp.resolve import ResolveMapError, parse

    try:
        parse(r.resolve)
    except ResolveMapError as exc:
        raise ConfigError(f"[relay] resolve: {exc}") from None
    if not 0 < r.retry_initial_s <= r.retry_max_s:
        raise ConfigError("[relay] retry_initial_s: must be > 0 and <= retry_max_s")
    if cfg.coap.dtls_max_sessions < 1:
        raise ConfigError("[coap] dtls_max_sessions: must be at least 1")
    if cfg.coap.push_max_observers < 1 or not 0 < cfg.coap.push_ack_timeout_s <= 60:
        raise ConfigError("[coap] push_max_observers: at least 1; push_ack_timeout_s: between 0 and 60 seconds")
    _check_events(cfg)
    _check_http_limits(cfg)
    _check_devices(cfg)
    return cfg


def _check_events(cfg: Config) -> None:
    e = cfg.events
    if not 0 < e.retry_initial_s <= e.retry_max_s <= 7 * 86400:
        raise ConfigError("[events] retry_initial_s, retry_max_s: must be > 0, initial <= max, max <= 7 days")
    if e.max_attempts < 0:
        raise ConfigError("[events] max_attempts: must be 0 (no limit) or more")
    for key in ("timeout_s", "poll_s", "stale_check_s"):
        if not 0 < getattr(e, key) <= 86400:
            raise ConfigError(f"[events] {key}: must be > 0 and at most 86400 seconds")
    if not 60 <= cfg.fleet.poll_interval_s <= 366 * 86400:
        raise ConfigError("[fleet] poll_interval_s: must be between 60 seconds and 366 days")


_HOST_PATTERN = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?|\[[0-9A-Fa-f:.]{2,45}\]|\*")


def _check_http_limits(cfg: Config) -> None:
    """The keys of HTTP hardening and operator authentication (eim.api.limits, eim.api.timeouts, eim.api.auth)."""
    h, a = cfg.http, cfg.api
    if h.max_connections < 1:
        raise ConfigError("[http] max_connections: must be at least 1")
    for key in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
        value = getattr(h, key)
        if not 0 < value <= 3600:  # NaN fails too
            raise ConfigError(f"[http] {key}: must be > 0 and at most 3600 seconds")
    for host in h.allowed_hosts:
        if not _HOST_PATTERN.fullmatch(host):
            raise ConfigError(
                f"[http] allowed_hosts: {host[:80]!r} is not a host name (no scheme or port; '*.example.com' and "
                "'[::1]' are allowed)"
            )
    for key in ("max_body_bytes", "max_batch_body_bytes"):
        if not 1024 <= getattr(a, key) <= 1024**3:
            raise ConfigError(f"[api] {key}: must be between 1024 and {1024**3} bytes")


def _check_devices(cfg: Config) -> None:
    from eim.esipa.device_auth import parse_networks

    try:
        parse_networks(cfg.devices.trusted_networks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.devices.client_ca and not cfg.http.tls_cert:
        raise ConfigError("[devices] client_ca: client certificates need HTTPS ([http] tls_cert and tls_key)")
