"""ECDSA signatures, ECDH and key handling for GSMA RSP (SGP.22 v2.5 §2.6, SGP.32 v1.2 §2.6).

Every RSP signature (serverSignature1, euiccSignature1/2, smdpSignature2, smdpSign, euiccSignPIR, eimSignature,
euiccSignEPR/EPE ...) is ECDSA with SHA-256 over NIST P-256 or brainpoolP256r1, carried in the **BSI TR-03111
plain format**: ``r || s``, each big-endian and left-padded to 32 bytes (64 bytes in all) - never the DER
``SEQUENCE { INTEGER r, INTEGER s }`` used inside X.509 certificates.

Curves are named ``"nist"`` (P-256 / prime256v1 / secp256r1) and ``"brainpool"`` (brainpoolP256r1).

The module also has ECDSA public-key *recovery* (:func:`recover_public_keys`): given a signature and the signed
bytes it returns the (at most four) public keys that make the signature valid. It is a diagnostic tool: it lets
a test prove which bytes a real eUICC signed when the eUICC's certificate is not at hand.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from rsp.errors import RspError

__all__ = [
    "BRAINPOOL",
    "CURVES",
    "NIST",
    "CryptoError",
    "CurveName",
    "KeyLoadError",
    "PublicKeyLike",
    "SignatureError",
    "as_public_key",
    "curve_name",
    "curve_object",
    "der_to_raw_signature",
    "ecdh",
    "generate_key",
    "is_valid_signature",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "private_key_der",
    "private_key_pem",
    "public_key_from_point",
    "public_key_spki_der",
    "public_point",
    "raw_to_der_signature",
    "recover_public_keys",
    "shared_secret",
    "sign",
    "verify",
]

CurveName = Literal["nist", "brainpool"]
NIST: CurveName = "nist"
BRAINPOOL: CurveName = "brainpool"

#: curve name -> cryptography curve class
CURVES: dict[str, type[ec.EllipticCurve]] = {NIST: ec.SECP256R1, BRAINPOOL: ec.BrainpoolP256R1}

_ALIASES = {
    "nist": NIST,
    "p256": NIST,
    "p-256": NIST,
    "prime256v1": NIST,
    "secp256r1": NIST,
    "brainpool": BRAINPOOL,
    "brp": BRAINPOOL,
    "brainpoolp256r1": BRAINPOOL,
}

#: anything :func:`verify` accepts as "the public key"
PublicKeyLike = Union[  # noqa: UP007 - readable alias
    ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey, x509.Certificate, bytes, bytearray
]


class CryptoError(RspError):
    """A cryptographic step failed (bad key, wrong curve, malformed input)."""


class SignatureError(CryptoError):
    """A signature does not verify, or is malformed (not 64 bytes r||s, r or s out of range)."""


class KeyLoadError(CryptoError):
    """A key or certificate could not be loaded (not PEM/DER, wrong algorithm, unsupported curve)."""


# ---------------------------------------------------------------------------------------------------------------
# curves


def curve_object(curve: str | ec.EllipticCurve) -> ec.EllipticCurve:
    """``"nist"`` / ``"brainpool"`` (or a common alias, or a curve object) -> cryptography curve instance."""
    if isinstance(curve, ec.EllipticCurve):
        curve_name(curve)  # validates that it is one of ours
        return curve
    name = _ALIASES.get(str(curve).lower())
    if name is None:
        raise CryptoError(f"unknown curve {curve!r} (use 'nist' or 'brainpool')")
    return CURVES[name]()


def curve_name(obj: object) -> CurveName:
    """The RSP curve name of a curve, key (private or public) or certificate: ``"nist"`` or ``"brainpool"``."""
    if isinstance(obj, str):
        name = _ALIASES.get(obj.lower())
        if name is None:
            raise CryptoError(f"unknown curve {obj!r} (use 'nist' or 'brainpool')")
        return name  # type: ignore[return-value]
    if isinstance(obj, x509.Certificate):
        obj = _cert_public_key(obj)
    if isinstance(obj, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        obj = obj.curve
    if isinstance(obj, ec.SECP256R1):
        return NIST
    if isinstance(obj, ec.BrainpoolP256R1):
        return BRAINPOOL
    if isinstance(obj, ec.EllipticCurve):
        raise CryptoError(f"curve {obj.name} is not an RSP curve (P-256 or brainpoolP256r1)")
    raise CryptoError(f"cannot tell the curve of a {type(obj).__name__}")


def _cert_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"certificate public key unusable: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyLoadError(f"certificate carries a {type(key).__name__}, not an EC key")
    return key


# ---------------------------------------------------------------------------------------------------------------
# keys


def generate_key(curve: str | ec.EllipticCurve = NIST) -> ec.EllipticCurvePrivateKey:
    """A fresh private key on the given curve."""
    return ec.generate_private_key(curve_object(curve))


def public_point(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    """The 65-byte uncompressed point ``04 || X || Y`` (as in ``euiccOtpk`` / ``smdpOtpk`` 5F49)."""
    if isinstance(key, x509.Certificate):
        key = _cert_public_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def public_key_from_point(point: bytes, curve: str | ec.EllipticCurve = NIST) -> ec.EllipticCurvePublicKey:
    """Public key from an X9.62 point (65-byte uncompressed, or 33-byte compressed) on ``curve``."""
    point = bytes(point)
    if len(point) not in (33, 65) or point[0] not in (2, 3, 4):
        raise CryptoError(f"not an EC point: {len(point)} bytes starting {point[:1].hex() or 'nothing'}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve_object(curve), point)
    except ValueError as exc:
        raise CryptoError(f"point is not on {curve_name(curve_object(curve))}: {exc}") from exc


def public_key_spki_der(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    """DER SubjectPublicKeyInfo (what ``eimPublicKey`` / ``trustedPublicKeyDataTls`` carry)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (lab keys; the file is written with mode 0600 by the caller)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read(source: bytes | bytearray | str | os.PathLike[str]) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN" in data[:200] or data.lstrip().startswith(b"-----BEGIN")


def load_private_key(
    source: bytes | str | os.PathLike[str], password: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    """Load an EC private key from PEM or DER (PKCS#8 or SEC1 'EC PRIVATE KEY'), bytes or a file path."""
    data = _read(source)
    try:
        if _is_pem(data):
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"not a private key (PEM or DER): {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyLoadError(f"private key is a {type(key).__name__}, not an EC key")
    curve_name(key)
    return key


def load_certificate(source: bytes | str | os.PathLike[str]) -> x509.Certificate:
    """Load one X.509 certificate from PEM or DER (bytes or a file path)."""
    data = _read(source)
    try:
        if _is_pem(data):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise KeyLoadError(f"not an X.509 certificate (PEM or DER): {exc}") from exc


def load_public_key(source: bytes | str | os.PathLike[str], curve: str | None = None) -> ec.EllipticCurvePublicKey:
    """Load an EC public key from: PEM/DER SubjectPublicKeyInfo, a PEM/DER certificate, or a raw X9.62 point
    (then ``curve`` says which curve, default NIST)."""
    data = _read(source)
    if not _is_pem(data) and len(data) in (33, 65) and data[0] in (2, 3, 4):
        return public_key_from_point(data, curve or NIST)
    if _is_pem(data):
        if b"CERTIFICATE" in data:
            return _cert_public_key(load_certificate(data))
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyLoadError(f"not a public key PEM: {exc}") from exc
    else:
        try:
            key = serialization.load_der_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            try:
                return _cert_public_key(x509.load_der_x509_certificate(data))
            except (ValueError, x509.InvalidVersion) as exc:
                raise KeyLoadError("neither SubjectPublicKeyInfo nor certificate DER") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyLoadError(f"public key is a {type(key).__name__}, not an EC key")
    curve_name(key)
    return key


def as_public_key(obj: PublicKeyLike, curve: str | ec.EllipticCurve | None = None) -> ec.EllipticCurvePublicKey:
    """Normalise what callers have at hand to a public key: a public key, a private key (its public half), a
    certificate, a 65-byte point (+ ``curve``, default NIST), or SPKI/certificate DER/PEM bytes."""
    if isinstance(obj, ec.EllipticCurvePublicKey):
        return obj
    if isinstance(obj, ec.EllipticCurvePrivateKey):
        return obj.public_key()
    if isinstance(obj, x509.Certificate):
        return _cert_public_key(obj)
    if isinstance(obj, bytes | bytearray):
        data = bytes(obj)
        if len(data) in (33, 65) and data[0] in (2, 3, 4):
            return public_key_from_point(data, curve if curve is not None else NIST)
        return load_public_key(data)
    raise CryptoError(f"cannot use a {type(obj).__name__} as a public key")


# ---------------------------------------------------------------------------------------------------------------
# signatures


def raw_to_der_signature(signature: bytes) -> bytes:
    """TR-03111 ``r||s`` (64 bytes) -> DER ``SEQUENCE{r, s}``."""
    if len(signature) != 64:
        raise SignatureError(f"signature must be 64 bytes r||s, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    return encode_dss_signature(r, s)


def der_to_raw_signature(der: bytes) -> bytes:
    """DER ``SEQUENCE{r, s}`` -> TR-03111 ``r||s`` (64 bytes)."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise SignatureError(f"not a DER ECDSA signature: {exc}") from exc
    if r >> 256 or s >> 256 or r < 0 or s < 0:
        raise SignatureError("r or s longer than 32 bytes")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# ECDSA with SHA-256, made once (an immutable parameter object; making one costs ~1.8 µs, twice per PSMO round trip)
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 over ``data``; returns the 64-byte TR-03111 ``r||s``."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"sign needs an EC private key, got {type(private_key).__name__}")
    curve_name(private_key)
    der = private_key.sign(bytes(data), _ECDSA_SHA256)
    return der_to_raw_signature(der)


def verify(
    public_key: PublicKeyLike,
    data: bytes,
    signature: bytes,
    *,
    curve: str | ec.EllipticCurve | None = None,
    what: str = "signature",
) -> None:
    """Check a TR-03111 ``r||s`` ECDSA-SHA256 signature over ``data``. Returns ``None`` or raises
    :class:`SignatureError` (``what`` names the signature in the message, e.g. ``"eimSignature"``).

    ``public_key`` may be a public key, a private key, a certificate, or a 65-byte point (then ``curve`` says
    which curve; default NIST)."""
    key = as_public_key(public_key, curve)
    signature = bytes(signature)
    if len(signature) != 64:
        raise SignatureError(f"{what}: must be 64 bytes r||s, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    n = _PARAMS[curve_name(key)].n
    if not (0 < r < n and 0 < s < n):
        raise SignatureError(f"{what}: r or s out of range for {curve_name(key)}")
    try:
        key.verify(encode_dss_signature(r, s), bytes(data), _ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError(f"{what} does not verify with the given {curve_name(key)} key") from None


def is_valid_signature(
    public_key: PublicKeyLike, data: bytes, signature: bytes, *, curve: str | ec.EllipticCurve | None = None
) -> bool:
    """Like :func:`verify` but answers ``True``/``False`` (a malformed signature is ``False``)."""
    try:
        verify(public_key, data, signature, curve=curve)
    except SignatureError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# ECDH (ECKA-DH, BSI TR-03111 §4.3.1): shared secret = x coordinate of d * Q


def ecdh(private_key: ec.EllipticCurvePrivateKey, peer: PublicKeyLike) -> bytes:
    """ECKA shared secret ShS (32-byte x coordinate). ``peer`` may be a public key or a 65-byte point on the
    private key's curve (e.g. ``euiccOtpk`` / ``smdpOtpk``)."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"ecdh needs an EC private key, got {type(private_key).__name__}")
    peer_key = as_public_key(peer, private_key.curve)
    if curve_name(peer_key) != curve_name(private_key):
        raise CryptoError(f"ECDH curve mismatch: own key {curve_name(private_key)}, peer key {curve_name(peer_key)}")
    return private_key.exchange(ec.ECDH(), peer_key)


shared_secret = ecdh


# ---------------------------------------------------------------------------------------------------------------
# ECDSA public-key recovery (SEC 1 v2 §4.1.6), pure Python; diagnostics only (not constant time)


@dataclass(frozen=True)
class _Params:
    p: int
    a: int
    b: int
    n: int
    gx: int
    gy: int


_PARAMS: dict[str, _Params] = {
    # FIPS 186-4 D.1.2.3
    NIST: _Params(
        p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        a=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
        b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    ),
    # RFC 5639 §3.4
    BRAINPOOL: _Params(
        p=0xA9FB57DBA1EEA9BC3E660A909D838D726E3BF623D52620282013481D1F6E5377,
        a=0x7D5A0975FC2C3057EEF67530417AFFE7FB8055C126DC5C6CE94A4B44F330B5D9,
        b=0x26DC5C6CE94A4B44F330B5D9BBD77CBF958416295CF7E1CE6BCCDC18FF8C07B6,
        n=0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
        gx=0x8BD2AEB9CB7E57CB2C4B482FFC81B7AFB9DE27E1E3BD23C23A4453BD9ACE3262,
        gy=0x547EF835C3DAC4FD97F8461A14611DC9C27745132DED8E545C1D54C72F046997,
    ),
}

_Point = tuple[int, int] | None


def _add(c: _Params, p1: _Point, p2: _Point) -> _Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2:
        if (y1 + y2) % c.p == 0:
            return None
        lam = (3 * x1 * x1 + c.a) * pow(2 * y1, -1, c.p) % c.p
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, c.p) % c.p
    x3 = (lam * lam - x1 - x2) % c.p
    return x3, (lam * (x1 - x3) - y1) % c.p


def _mul(c: _Params, k: int, point: _Point) -> _Point:
    result: _Point = None
    addend = point
    while k:
        if k & 1:
            result = _add(c, result, addend)
        addend = _add(c, addend, addend)
        k >>= 1
    return result


def recover_public_keys(
    data: bytes, signature: bytes, curve: str | ec.EllipticCurve = NIST, *, prehashed: bool = False
) -> list[ec.EllipticCurvePublicKey]:
    """All public keys for which ``signature`` (64-byte r||s, ECDSA-SHA256) is valid over ``data``.

    ``prehashed=True`` means ``data`` already is the 32-byte SHA-256 digest. Returns up to 4 keys (usually 2);
    each one is re-checked with :func:`verify` before it is returned.
    """
    name = curve_name(curve_object(curve))
    c = _PARAMS[name]
    signature = bytes(signature)
    if len(signature) != 64:
        raise SignatureError(f"signature must be 64 bytes r||s, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < c.n and 0 < s < c.n):
        raise SignatureError("r or s out of range")
    digest = bytes(data) if prehashed else hashlib.sha256(bytes(data)).digest()
    e = int.from_bytes(digest, "big") % c.n  # 256-bit hash, 256-bit order: no truncation needed
    r_inv = pow(r, -1, c.n)
    g = (c.gx, c.gy)
    out: list[ec.EllipticCurvePublicKey] = []
    for j in range(2):
        x = r + j * c.n
        if x >= c.p:
            break
        alpha = (pow(x, 3, c.p) + c.a * x + c.b) % c.p
        beta = pow(alpha, (c.p + 1) // 4, c.p)  # p = 3 mod 4 for both curves
        if beta * beta % c.p != alpha:
            continue
        for y in (beta, c.p - beta):
            big_r = (x, y)
            q = _mul(c, r_inv, _add(c, _mul(c, s, big_r), _mul(c, (-e) % c.n, g)))
            if q is None:
                continue
            point = b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big")
            key = public_key_from_point(point, name)
            if not prehashed and not is_valid_signature(key, data, signature):
                continue
            if all(public_point(k) != point for k in out):
                out.append(key)
    return out


def _self_check(names: Iterable[str] = (NIST, BRAINPOOL)) -> None:
    """Curve constants sanity check (used by tests): G on the curve and equal to 1*G from OpenSSL."""
    for name in names:
        c = _PARAMS[name]
        assert (c.gy * c.gy - (c.gx**3 + c.a * c.gx + c.b)) % c.p == 0
        one = ec.derive_private_key(1, curve_object(name)).public_key()
        assert public_point(one) == b"\x04" + c.gx.to_bytes(32, "big") + c.gy.to_bytes(32, "big")
