"""IPA configuration: a TOML file (``--config FILE``) with environment overrides ``IPA_<SECTION>_<KEY>``.

Every key has a default, so ``ipa --card lab.cbor chip info`` runs with no file at all. Unknown sections or keys
and values of the wrong type are refused with a message naming the key (a typo must not be ignored silently).
See ``deploy/ipa.example.toml`` for every key with a comment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(Exception):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


@dataclass
class DeviceConfig:
    port: str = ""  # AT port of the modem, e.g. /dev/ttyUSB2
    route: str = "auto"  # auto | csim | cgla
    block_size: int = 120
    baudrate: int = 115200
    modem: str = ""  # modem profile name (firmware_bridge), empty = generic
    card: str = ""  # lab: state file of an in-process software eUICC instead of a modem
    apdu_timeout: float = 30.0


@dataclass
class EimConfig:
    id: str = ""  # preferred eimId when several are configured on the eUICC (empty: the first)
    binding: str = "auto"  # auto | http | coap | mqtt
    url: str = ""  # overrides the eUICC's eimFqdn: https://host:port, coap://host:port, mqtt://host:port
    ca_file: str = ""  # CA bundle to verify the eIM's TLS certificate (plus trustedPublicKeyDataTls on the eUICC)
    insecure: bool = False  # lab only: do not verify TLS
    timeout: float = 30.0
    provisioning_file: str = ""  # AddInitialEim bootstrap when the eUICC has no eIM (DER BF57 or TOML)
    psk_identity: str = ""  # coaps (DTLS PSK): identity sent in the handshake (default: the EID, 32 digits)
    psk_hex: str = ""  # coaps: the pre-shared key, 16 bytes in hex (prefer psk_file or IPA_EIM_PSK_HEX)
    psk_file: str = ""  # coaps: a file holding the key in hex (mode 0600)
    # https with a client certificate (mutual TLS): PEM certificate (subject serialNumber = EID) and its key
    tls_client_cert: str = ""
    tls_client_key: str = ""
    # http(s) device secret: the token `eim device-secret set EID` printed (<EID>.<secret>), sent as
    # Authorization: Bearer; prefer device_secret_file (mode 0600) or IPA_EIM_DEVICE_SECRET to the file itself
    device_secret: str = ""
    device_secret_file: str = ""
    push: bool = True  # coap(s): observe the eIM's push resource so queued work arrives at once (where offered)
    push_refresh: float = 25.0  # coap(s): renew the observation before the carrier NAT drops the UDP mapping


@dataclass
class MqttConfig:
    host: str = ""  # default: host of eim.url / eimFqdn
    port: int = 0  # default 1883 (8883 with tls)
    tls: bool = False
    client_id: str = ""  # default ipa-<EID>
    username: str = ""
    password: str = ""
    keepalive: int = 60
    session_expiry: int = 7 * 24 * 3600  # persistent session: the broker keeps pushed packages while we sleep
    topic_prefix: str = "esipa"
    notification_wait: float = 5.0  # how long to wait for the eIM's (optional) answer to HandleNotification
    # a request without an answer is published again (same correlation data) after retransmit_interval seconds,
    # doubling up to retransmit_max_interval, until eim.timeout (ipa/esipa/mqtt.py says which requests and why);
    # 0 = only after a reconnect
    retransmit_interval: float = 2.0
    retransmit_max_interval: float = 8.0


@dataclass
class PollConfig:
    interval: float = 60.0  # idle poll interval
    min_interval: float = 1.0
    max_backoff: float = 3600.0
    jitter: float = 0.2  # +-20 %
    rollback_after: int = 3  # failed result deliveries after an enable with rollbackFlag before ProfileRollback
    fallback_after: float = 0.0  # seconds without eIM contact before ExecuteFallbackMechanism (0 = never)
    return_from_fallback_after: float = 0.0  # seconds in fallback before ReturnFromFallback (0 = never)


@dataclass
class Es9Config:
    ca_file: str = ""  # CA bundle for SM-DP+ TLS (default: system store)
    insecure: bool = False
    timeout: float = 60.0
    # labs: connect to another address for an SM-DP+ name, {"host[:port]" = "address:port"} (like curl --resolve);
    # TLS still checks the certificate against the name. Environment: IPA_ES9_RESOLVE="host=address:port,..."
    resolve: dict[str, str] = field(default_factory=dict)


@dataclass
class IpaFeatures:
    direct_download: bool = True
    indirect_download: bool = True
    immediate_enable: bool = False  # ES10b.ImmediateEnable after a successful download (if the eUICC allows it)
    tac: str = "35290611"  # DeviceInfo.tac (8 hex digits)
    imei: str = ""  # DeviceInfo.imei (16 hex digits, BCD) - optional
    device_capabilities: str = (
        "85030f0000"  # DeviceCapabilities contents (hex) - default: eutranEpcSupportedRelease 15.0.0
    )
    state_file: str = "/var/lib/ipa/state.cbor"


@dataclass
class IpaConfig:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    eim: EimConfig = field(default_factory=EimConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    es9: Es9Config = field(default_factory=Es9Config)
    ipa: IpaFeatures = field(default_factory=IpaFeatures)


SECTIONS = {f.name for f in fields(IpaConfig)}


def _coerce(section: str, key: str, current: Any, value: Any, *, from_env: bool) -> Any:
    name = f"{section}.{key}"
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(current, dict):
        from rsp.resolve import ResolveMapError, parse_text

        if isinstance(value, dict):
            return dict(value)  # checked entry by entry in validate()
        if from_env and isinstance(value, str):
            try:
                return parse_text(value)
            except ResolveMapError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        raise ConfigError(f'{name} must be a table of host[:port] = "address:port", got {value!r}')
    if isinstance(value, str):
        return value
    raise ConfigError(f"{name} must be a string, got {value!r}")


def _apply(cfg: IpaConfig, section: str, key: str, value: Any, *, from_env: bool) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}] (known: {', '.join(sorted(SECTIONS))})")
    sect = getattr(cfg, section)
    known = {f.name for f in fields(sect)}
    if key not in known:
        raise ConfigError(f"unknown key {section}.{key} (known: {', '.join(sorted(known))})")
    setattr(sect, key, _coerce(section, key, getattr(sect, key), value, from_env=from_env))


PSK_BYTES = 16  # tinydtls' DTLS_PSK_MAX_KEY_LEN (AES-128); DTLSSocket overruns its buffer with a longer key


def psk_from_hex(text: str, name: str) -> bytes:
    """A DTLS pre-shared key, written in hex: exactly 16 bytes (128 bits; all tinydtls can hold)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be hex digits") from None
    if len(key) != PSK_BYTES:
        raise ConfigError(f"{name} is {len(key)} bytes; a CoAPS PSK is {PSK_BYTES} bytes (32 hex digits)")
    return key


def load_psk(cfg: IpaConfig) -> bytes | None:
    """The configured CoAPS key, from ``eim.psk_hex`` or ``eim.psk_file``; None when neither is set."""
    if cfg.eim.psk_hex:
        return psk_from_hex(cfg.eim.psk_hex, "eim.psk_hex")
    if cfg.eim.psk_file:
        try:
            with open(cfg.eim.psk_file, encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read eim.psk_file {cfg.eim.psk_file}: {exc}") from None
        return psk_from_hex(text, f"eim.psk_file {cfg.eim.psk_file}")
    return None


_DEVICE_TOKEN = re.compile(r"[0-9]{32}\.[A-Za-z0-9_-]{43}")


def device_token(text: str, name: str) -> str:
    """A device secret token ``<EID>.<secret>`` (what ``eim device-secret set`` prints); the message names the
    key, never the text."""
    token = text.strip()
    if not _DEVICE_TOKEN.fullmatch(token):
        raise ConfigError(
            f"{name} must be the token `eim device-secret set` printed: <EID (32 digits)>.<43 characters>"
        )
    return token


def load_device_secret(cfg: IpaConfig) -> str | None:
    """The configured ESipa HTTP device token, from ``eim.device_secret`` or ``eim.device_secret_file``."""
    if cfg.eim.device_secret:
        return device_token(cfg.eim.device_secret, "eim.device_secret")
    if cfg.eim.device_secret_file:
        try:
            with open(cfg.eim.device_secret_file, encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read eim.device_secret_file {cfg.eim.device_secret_file}: {exc}") from None
        return device_token(text, f"eim.device_secret_file {cfg.eim.device_secret_file}")
    return None


def check_client_certificate(cfg: IpaConfig) -> None:
    """``eim.tls_client_cert`` and ``eim.tls_client_key``: both or neither, and they load as a pair."""
    cert, key = cfg.eim.tls_client_cert, cfg.eim.tls_client_key
    if bool(cert) != bool(key):
        raise ConfigError("eim.tls_client_cert and eim.tls_client_key: give both (the certificate and its key)")
    if not cert:
        return
    import ssl  # only when a client certificate is configured (a one-shot command on a card needs no TLS)

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"eim.tls_client_cert / eim.tls_client_key ({cert}, {key}): {exc}") from None


def validate(cfg: IpaConfig) -> IpaConfig:
    if cfg.es9.resolve:
        from rsp.resolve import ResolveMapError, parse

        try:
            parse(cfg.es9.resolve)
        except ResolveMapError as exc:
            raise ConfigError(f"es9.resolve: {exc}") from None
    if cfg.device.route not in ("auto", "csim", "cgla"):
        raise ConfigError(f"device.route must be auto, csim or cgla, got {cfg.device.route!r}")
    if not 1 <= cfg.device.block_size <= 255:
        raise ConfigError(f"device.block_size must be 1..255, got {cfg.device.block_size}")
    if cfg.eim.binding not in ("auto", "http", "coap", "mqtt"):
        raise ConfigError(f"eim.binding must be auto, http, coap or mqtt, got {cfg.eim.binding!r}")
    if cfg.eim.psk_hex and cfg.eim.psk_file:
        raise ConfigError("eim.psk_hex and eim.psk_file: give one of them, not both")
    if cfg.eim.psk_hex:
        psk_from_hex(cfg.eim.psk_hex, "eim.psk_hex")
    if cfg.eim.device_secret and cfg.eim.device_secret_file:
        raise ConfigError("eim.device_secret and eim.device_secret_file: give one of them, not both")
    load_device_secret(cfg)
    check_client_certificate(cfg)
    if len(cfg.eim.psk_identity.encode()) > 32:
        raise ConfigError("eim.psk_identity is at most 32 bytes (tinydtls)")
    if cfg.mqtt.retransmit_interval < 0 or cfg.mqtt.retransmit_max_interval < cfg.mqtt.retransmit_interval:
        raise ConfigError("mqtt.retransmit_interval must be >= 0 and mqtt.retransmit_max_interval >= it")
    if not 1.0 <= cfg.eim.push_refresh <= 86400.0:
        raise ConfigError("eim.push_refresh must be between 1 and 86400 seconds (below the NAT's UDP timeout)")
    if cfg.eim.timeout <= 0 or cfg.mqtt.notification_wait < 0:
        raise ConfigError("eim.timeout must be > 0 and mqtt.notification_wait >= 0")
    if not 0 <= cfg.poll.jitter < 1:
        raise ConfigError("poll.jitter must be in [0, 1)")
    if cfg.poll.interval <= 0 or cfg.poll.min_interval <= 0 or cfg.poll.max_backoff < cfg.poll.min_interval:
        raise ConfigError("poll.interval/min_interval must be > 0 and max_backoff >= min_interval")
    try:
        tac = bytes.fromhex(cfg.ipa.tac)
        bytes.fromhex(cfg.ipa.device_capabilities)
        imei = bytes.fromhex(cfg.ipa.imei) if cfg.ipa.imei else b"\x00" * 8
    except ValueError as exc:
        raise ConfigError(f"ipa.tac / ipa.imei / ipa.device_capabilities must be hex: {exc}") from None
    if len(tac) != 4 or len(imei) != 8:
        raise ConfigError("ipa.tac is 4 bytes (8 hex digits), ipa.imei 8 bytes (16 hex digits)")
    return cfg


def parse_config(text: str, env: dict[str, str] | None = None) -> IpaConfig:
    """Parse TOML text, then apply ``IPA_<SECTION>_<KEY>`` overrides from ``env``."""
    data: dict[str, Any] = {}
    if text.strip():  # no file (the defaults and IPA_* variables): the TOML parser is not even imported
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}") from None
    cfg = IpaConfig()
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"top-level key {section!r} must be a [section]")
        for key, value in values.items():
            _apply(cfg, section, key, value, from_env=False)
    for name, value in (env or {}).items():
        if not name.startswith("IPA_") or name in ("IPA_CONFIG",):
            continue
        rest = name[4:].lower()
        section, _, key = rest.partition("_")
        if not key:
            raise ConfigError(f"environment override {name} must be IPA_<SECTION>_<KEY>")
        _apply(cfg, section, key, value, from_env=True)
    return validate(cfg)


def load_config(path: str | None, env: dict[str, str] | None = None) -> IpaConfig:
    env = dict(os.environ) if env is None else env
    path = path or env.get("IPA_CONFIG") or None
    text = ""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return parse_config(text, env)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'environment'}: {exc}") from None
