"""eIM bootstrap with ES10b.AddInitialEim (SGP.32 v1.2 §5.9.x AddInitialEim; EimConfigurationData §2.11.1.1).

The provisioning file is either the DER of an AddInitialEimRequest (``BF57 ...``, e.g. produced by the eIM's
tooling) or a TOML file describing one or more eIMs::

    [[eim]]
    id = "eim.example.com"              # eimId (1..128 characters)
    fqdn = "eim.example.com:8443"       # eimFqdn (host[:port])
    id_type = "fqdn"                    # oid | fqdn | proprietary (optional)
    counter_value = 1                   # initial counterValue (optional)
    association_token = -1              # -1: ask the eUICC to generate one (default)
    public_key_pem = "eim-signing.pem"  # eimPublicKey (PEM public key) - or certificate_pem = "eim.crt"
    tls_certificate_pem = "ca.pem"      # trustedPublicKeyDataTls (certificate), optional
    protocols = ["retrieveHttps", "proprietary"]   # eimSupportedProtocol
    euicc_ci_pkid = "f54172bdf98a95d65cbeb88a38a1c11d800a85c3"  # optional, hex
    indirect_profile_download = true    # optional

Paths in a TOML file are relative to the file. Malformed files raise :class:`ProvisioningError` naming the field.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from ipa import messages as m
from ipa.es10 import AddInitialEimResult
from ipa.procedures.context import IpaContext
from rsp import tlv
from rsp.errors import DecodeError

log = logging.getLogger("ipa.procedures.add_initial_eim")

PROTOCOL_BITS = {"retrieveHttps": 0, "retrieveCoaps": 1, "injectHttps": 2, "injectCoaps": 3, "proprietary": 4}
ID_TYPES = {"oid": 1, "fqdn": 2, "proprietary": 3}


class ProvisioningError(Exception):
    """The provisioning file is malformed; the message names the field."""


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """``(label, DER)`` of each PEM block (RFC 7468), without loading a crypto library."""
    import base64
    import binascii
    import re

    out = []
    for label, body in re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", text, re.S):
        try:
            out.append((label, base64.b64decode("".join(body.split()), validate=True)))
        except (binascii.Error, ValueError):
            raise ProvisioningError(f"PEM block {label}: not base64") from None
    return out


def _spki_of_certificate(cert: bytes) -> bytes:
    """subjectPublicKeyInfo of an X.509 certificate (7th field of tbsCertificate, 6th without [0] version)."""
    tbs = tlv.children(tlv.parse_exact(cert, what="Certificate"), what="Certificate")[0]
    fields = tlv.children(tbs, what="tbsCertificate")
    if fields and fields[0].tag == 0xA0:
        fields = fields[1:]
    if len(fields) < 6 or fields[5].tag != 0x30:
        raise DecodeError("Certificate", "no subjectPublicKeyInfo")
    return fields[5].raw


def _pem_der(text_or_path: str, base: Path, kind: str, field: str) -> bytes:
    """DER of a PEM public key (SPKI) or certificate, given inline or as a path relative to the file."""
    text = text_or_path
    if "-----BEGIN" not in text:
        try:
            text = (base / text_or_path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ProvisioningError(f"{field}: cannot read {text_or_path}: {exc}") from None
    blocks = _pem_blocks(text)
    wanted = ("CERTIFICATE",) if kind == "cert" else ("PUBLIC KEY", "CERTIFICATE")
    for label, der in blocks:
        if label not in wanted:
            continue
        try:
            tlv.parse_exact(der, what=label)
            if label == "CERTIFICATE" and kind == "key":
                return _spki_of_certificate(der)
            if label == "PUBLIC KEY" and len(tlv.children(der)) != 2:
                raise DecodeError(label, "SubjectPublicKeyInfo needs algorithm and key")
        except DecodeError as exc:
            raise ProvisioningError(f"{field}: {exc}") from None
        return der
    what = "certificate" if kind == "cert" else "public key or certificate"
    raise ProvisioningError(f"{field}: no PEM {what} found")


def _choice(tag: int, spki_or_cert: bytes, alt: int) -> bytes:
    """``[5]``/``[6]`` explicit over CHOICE { [0] SPKI | [1] Certificate } (implicit over the SEQUENCE)."""
    inner = tlv.parse_exact(spki_or_cert)
    return tlv.encode(tag, tlv.encode(alt, inner.value))


def eim_configuration_data(entry: dict[str, Any], base: Path) -> bytes:
    def get(name: str, typ: type | tuple[type, ...], default: Any = None) -> Any:
        v = entry.get(name, default)
        if v is not None and (not isinstance(v, typ) or (isinstance(v, bool) and typ is int)):
            raise ProvisioningError(f"eim.{name} has the wrong type ({type(v).__name__})")
        return v

    known = {
        "id",
        "fqdn",
        "id_type",
        "counter_value",
        "association_token",
        "public_key_pem",
        "certificate_pem",
        "tls_certificate_pem",
        "tls_public_key_pem",
        "protocols",
        "euicc_ci_pkid",
        "indirect_profile_download",
    }
    extra = set(entry) - known
    if extra:
        raise ProvisioningError(f"unknown eim key(s): {', '.join(sorted(extra))}")
    eim_id = get("id", str)
    if not eim_id or len(eim_id) > 128:
        raise ProvisioningError("eim.id is required (1..128 characters)")
    body = tlv.encode(0x80, eim_id.encode())
    fqdn = get("fqdn", str)
    if fqdn:
        body += tlv.encode(0x81, fqdn.encode())
    id_type = get("id_type", str)
    if id_type is not None:
        if id_type not in ID_TYPES:
            raise ProvisioningError(f"eim.id_type must be one of {', '.join(ID_TYPES)}")
        body += m.enc_int(0x82, ID_TYPES[id_type])
    counter = get("counter_value", int)
    if counter is not None:
        body += m.enc_int(0x83, counter)
    body += m.enc_int(0x84, get("association_token", int, -1))
    pub, cert = get("public_key_pem", str), get("certificate_pem", str)
    if pub and cert:
        raise ProvisioningError("give either eim.public_key_pem or eim.certificate_pem, not both")
    if pub:
        body += _choice(0xA5, _pem_der(pub, base, "key", "eim.public_key_pem"), 0xA0)
    elif cert:
        body += _choice(0xA5, _pem_der(cert, base, "cert", "eim.certificate_pem"), 0xA1)
    else:
        raise ProvisioningError("eim.public_key_pem or eim.certificate_pem is required (eIM signature key)")
    tls_cert, tls_pub = get("tls_certificate_pem", str), get("tls_public_key_pem", str)
    if tls_pub:
        body += _choice(0xA6, _pem_der(tls_pub, base, "key", "eim.tls_public_key_pem"), 0xA0)
    elif tls_cert:
        body += _choice(0xA6, _pem_der(tls_cert, base, "cert", "eim.tls_certificate_pem"), 0xA1)
    protos = get("protocols", list)
    if protos is not None:
        bad = [p for p in protos if p not in PROTOCOL_BITS]
        if bad:
            raise ProvisioningError(f"eim.protocols: unknown {bad} (known: {', '.join(PROTOCOL_BITS)})")
        body += m.enc_bitstring(0x87, {PROTOCOL_BITS[p] for p in protos})
    pkid = get("euicc_ci_pkid", str)
    if pkid:
        try:
            body += tlv.encode(0x88, bytes.fromhex(pkid))
        except ValueError:
            raise ProvisioningError("eim.euicc_ci_pkid must be hex") from None
    if get("indirect_profile_download", bool, False):
        body += b"\x89\x00"
    return tlv.encode(0x30, body)


def load_provisioning(path: str | Path) -> bytes:
    """The AddInitialEimRequest (BF57) DER from a provisioning file (DER or TOML)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"cannot read {path}: {exc.strerror}") from None
    if data[:2] == b"\xbf\x57":
        try:
            t = m.expect(data, 0xBF57, "AddInitialEimRequest")
            lst = tlv.require(t, 0xA0, what="AddInitialEimRequest")
            for c in tlv.children(lst, what="AddInitialEimRequest"):
                if c.tag != 0x30 or tlv.find(c, 0x80) is None:
                    raise DecodeError("AddInitialEimRequest", "each entry needs an eimId")
        except DecodeError as exc:
            raise ProvisioningError(f"{path}: {exc}") from None
        return data
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisioningError(f"{path}: neither DER AddInitialEimRequest nor TOML: {exc}") from None
    entries = doc.get("eim")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ProvisioningError(f"{path}: needs at least one [[eim]] table")
    body = b"".join(eim_configuration_data(e, p.parent) for e in entries)
    return tlv.encode(0xBF57, tlv.encode(0xA0, body))


async def add_initial_eim(ctx: IpaContext, request: bytes) -> AddInitialEimResult:
    ctx.report("AddInitialEim", bytes=len(request))
    result = await ctx.es10.add_initial_eim(request)
    ids = [m.dec_utf8(tlv.require(c, 0x80).value, "eimId") for c in tlv.children(tlv.require(request, 0xA0))]
    for eim_id, token in zip(ids, result.association_tokens, strict=False):
        if token is not None:
            ctx.store.state.association_tokens[eim_id] = token
    await ctx.store.commit()
    return result
