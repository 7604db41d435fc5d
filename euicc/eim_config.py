"""eIM configuration data (SGP.32 v1.2 §2.11.1 EimConfigurationData) as the eUICC parses, checks and returns it.

``30 {80 eimId, [81 eimFqdn], [82 eimIdType], [83 counterValue], [84 associationToken], [A5 eimPublicKeyData
{A0 SPKI-content | A1 Certificate-content}], [A6 trustedPublicKeyDataTls], [87 eimSupportedProtocol],
[88 euiccCiPKId], [89 indirectProfileDownload NULL]}`` - the same SEQUENCE appears implicitly tagged as ``A8``
(addEim) and ``AA`` (updateEim).

Rules of this card (the numeric codes are those of AddEimResult / UpdateEimResult / AddInitialEimResponse):
``counterValue`` must lie in 0..:data:`COUNTER_MAX` (``counterValueOutOfRange(6)``); ``associationToken`` -1
asks the card to generate one (returned to the caller), another negative value is ``invalidAssociationToken(5)``;
``euiccCiPKId`` must be a CI key id this card knows (``ciPKUnknown(3)``); ``eimPublicKeyData`` must hold a
usable P-256/brainpoolP256r1 key (``commandError(7)``); malformed data is ``commandError(7)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from euicc import der
from euicc.context import Context
from euicc.state import EimConfig
from rsp import tlv
from rsp.errors import DecodeError, RspError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

#: the largest counterValue this card accepts (the counter is kept as a signed 32-bit value)
COUNTER_MAX = 0x7FFFFFFF
#: how many eIMs the card can be associated with at once
MAX_EIMS = 8

OK = 0
INSUFFICIENT_MEMORY = 1
ASSOCIATED_EIM_ALREADY_EXISTS = 2
CI_PK_UNKNOWN = 3
EIM_NOT_FOUND = 1
INVALID_ASSOCIATION_TOKEN = 5
COUNTER_VALUE_OUT_OF_RANGE = 6
COMMAND_ERROR = 7
UNDEFINED_ERROR = 127


class EimConfigError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass
class ParsedConfig:
    """An EimConfigurationData as received; ``None`` = field absent."""

    eim_id: str
    fqdn: str | None = None
    id_type: int | None = None
    counter: int | None = None
    token: int | None = None
    public_key_data: bytes | None = None
    tls_data: bytes | None = None
    supported_protocol: bytes | None = None
    euicc_ci_pkid: bytes | None = None
    indirect: bool = False


def parse(node: tlv.Tlv, ctx: Context) -> ParsedConfig:
    """Parse and check one EimConfigurationData (any outer tag). Raises :class:`EimConfigError`."""
    try:
        f = der.fields(node, "EimConfigurationData")
        unknown = set(f) - {0x80, 0x81, 0x82, 0x83, 0x84, 0xA5, 0xA6, 0x87, 0x88, 0x89}
        if unknown:
            raise DecodeError("EimConfigurationData", f"unknown field {min(unknown):X}")
        if 0x80 not in f:
            raise DecodeError("EimConfigurationData", "eimId (80) missing")
        eim_id = der.decode_utf8(f[0x80].value, "eimId")
        if not 1 <= len(eim_id) <= 128:
            raise DecodeError("EimConfigurationData", "eimId must be 1..128 characters")
        cfg = ParsedConfig(eim_id=eim_id)
        if 0x81 in f:
            cfg.fqdn = der.decode_utf8(f[0x81].value, "eimFqdn")
        if 0x82 in f:
            cfg.id_type = der.decode_int(f[0x82].value, "eimIdType")
        if 0x83 in f:
            cfg.counter = der.decode_int(f[0x83].value, "counterValue")
        if 0x84 in f:
            cfg.token = der.decode_int(f[0x84].value, "associationToken")
        if 0xA5 in f:
            cfg.public_key_data = f[0xA5].value
        if 0xA6 in f:
            cfg.tls_data = f[0xA6].value
        if 0x87 in f:
            der.decode_bits(f[0x87].value, "eimSupportedProtocol")
            cfg.supported_protocol = f[0x87].value
        if 0x88 in f:
            cfg.euicc_ci_pkid = f[0x88].value
        if 0x89 in f:
            if f[0x89].value:
                raise DecodeError("EimConfigurationData", "indirectProfileDownload must be NULL")
            cfg.indirect = True
    except DecodeError as exc:
        raise EimConfigError(COMMAND_ERROR, str(exc)) from None
    if cfg.public_key_data is not None:
        public_key(cfg.public_key_data)  # raises EimConfigError(COMMAND_ERROR)
    if cfg.euicc_ci_pkid is not None and cfg.euicc_ci_pkid not in ctx.identity.ci_pkids_for_verification():
        raise EimConfigError(CI_PK_UNKNOWN, "euiccCiPKId names no CI of this card")
    if cfg.counter is not None and not 0 <= cfg.counter <= COUNTER_MAX:
        raise EimConfigError(COUNTER_VALUE_OUT_OF_RANGE, f"counterValue {cfg.counter} outside 0..{COUNTER_MAX}")
    if cfg.token is not None and cfg.token < -1:
        raise EimConfigError(INVALID_ASSOCIATION_TOKEN, f"associationToken {cfg.token}")
    return cfg


def public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """The eIM signing key from the value of ``A5`` (``A0`` SPKI or ``A1`` certificate, implicitly tagged)."""
    from rsp import crypto  # only where a key is used: listing the eIMs (GetEimConfigurationData) needs none

    try:
        inner = tlv.parse_exact(data, what="eimPublicKeyData")
        if inner.tag not in (0xA0, 0xA1):
            raise DecodeError("eimPublicKeyData", f"alternative {inner.tag:X}")
        return crypto.load_public_key(tlv.encode(0x30, inner.value))
    except (DecodeError, RspError) as exc:
        raise EimConfigError(COMMAND_ERROR, f"eimPublicKeyData unusable: {exc}") from None


def new_config(ctx: Context, cfg: ParsedConfig) -> tuple[EimConfig, int | None]:
    """A stored EimConfig for a new association; returns it and the generated token (None if not generated).

    A new eIM must come with a signing key (``commandError(7)`` otherwise)."""
    if cfg.public_key_data is None:
        raise EimConfigError(COMMAND_ERROR, "eimPublicKeyData missing")
    generated = None
    token = cfg.token
    if token == -1:
        token = generated = ctx.state.take_token()
    return (
        EimConfig(
            eim_id=cfg.eim_id,
            fqdn=cfg.fqdn,
            id_type=cfg.id_type,
            counter=cfg.counter if cfg.counter is not None else 0,
            association_token=token,
            public_key_data=cfg.public_key_data,
            tls_data=cfg.tls_data,
            supported_protocol=cfg.supported_protocol,
            euicc_ci_pkid=cfg.euicc_ci_pkid,
            indirect_profile_download=cfg.indirect,
        ),
        generated,
    )


def encode(e: EimConfig) -> bytes:
    """EimConfigurationData ``30`` as returned by GetEimConfigurationData."""
    body = der.utf8(0x80, e.eim_id)
    if e.fqdn is not None:
        body += der.utf8(0x81, e.fqdn)
    if e.id_type is not None:
        body += der.integer(0x82, e.id_type)
    body += der.integer(0x83, e.counter)
    if e.association_token is not None:
        body += der.integer(0x84, e.association_token)
    if e.public_key_data is not None:
        body += tlv.encode(0xA5, e.public_key_data)
    if e.tls_data is not None:
        body += tlv.encode(0xA6, e.tls_data)
    if e.supported_protocol is not None:
        body += tlv.encode(0x87, e.supported_protocol)
    if e.euicc_ci_pkid is not None:
        body += tlv.encode(0x88, e.euicc_ci_pkid)
    if e.indirect_profile_download:
        body += der.null(0x89)
    return tlv.encode(0x30, body)


def token_tlv(token: int | None) -> bytes:
    """``84 L associationToken`` appended to every eIM/eUICC package signature input (protocol brief §3.3; none
    when the association has no token)."""
    return b"" if token is None else der.integer(0x84, token)
