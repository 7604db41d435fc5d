"""An eUICC identity from outside the lab PKI: check that it can act as an eUICC (SGP.22 v2.5 §4.5.2 certificate
chain, §4.5.2.2 validation, §2.6.5 the eUICC signs with SK.EUICC.ECDSA).

Input: the eUICC certificate (CERT.EUICC.ECDSA), its private key, the EUM certificate (CERT.EUM.ECDSA) and one or
more CI certificates, already parsed (the caller reads the files and names them in errors). Checked in order, each
failure raising :class:`IdentityError` whose ``step`` names the input at fault:

1. ``euicc-key``: an EC private key on NIST P-256 or brainpoolP256r1 whose public key is the certificate's;
2. ``chain``: eUICC <- EUM <- one of the CIs with :func:`rsp.pki.verify_chain` (signatures, validity now, CA
   flags, key usage, role policies, and the EUM's permitted EID range);
3. ``eid``: the EID in the certificate subject has 32 digits with valid check digits and, when the caller names an
   EID, is that one.

Pure: no files, no clock other than ``at`` (default now).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rsp import crypto
from rsp.errors import RspError
from rsp.pki.certs import eid_check_digits, eid_of, is_valid_eid
from rsp.pki.chain import ChainError, verify_chain
from rsp.pki.eid_range import eid_range_of

__all__ = ["CheckedIdentity", "IdentityError", "check_identity"]

STEPS = ("euicc-cert", "euicc-key", "eum-cert", "ci", "chain", "eid")


class IdentityError(RspError):
    """An outside identity was refused; ``step`` is one of :data:`STEPS`."""

    def __init__(self, step: str, message: str) -> None:
        assert step in STEPS, step
        self.step = step
        super().__init__(message)


@dataclass(frozen=True)
class CheckedIdentity:
    """A verified eUICC identity. ``ci_certs`` keeps every given CI (the card trusts them all); ``ci`` is the one
    the eUICC chain leads to (its key id = ``euiccCiPKIdListForSigning``)."""

    eid: str
    curve: str
    key: ec.EllipticCurvePrivateKey
    euicc_cert: x509.Certificate
    eum_cert: x509.Certificate
    ci: x509.Certificate
    ci_key_id: bytes
    ci_certs: tuple[x509.Certificate, ...]
    eid_range: str

    def __repr__(self) -> str:  # never show the key
        return f"CheckedIdentity(eid={self.eid}, curve={self.curve}, key=<redacted>)"


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_identity(
    euicc_cert: x509.Certificate,
    euicc_key: object,
    eum_cert: x509.Certificate,
    ci_certs: Sequence[x509.Certificate],
    *,
    eid: str | None = None,
    at: dt.datetime | None = None,
) -> CheckedIdentity:
    """Check an outside eUICC identity (see the module docstring); returns :class:`CheckedIdentity`."""
    if not isinstance(euicc_key, ec.EllipticCurvePrivateKey):
        raise IdentityError("euicc-key", f"not an EC private key ({type(euicc_key).__name__})")
    try:
        curve = crypto.curve_name(euicc_key)
    except crypto.CryptoError as exc:
        raise IdentityError("euicc-key", str(exc)) from None
    try:
        cert_key = euicc_cert.public_key()
    except (ValueError, TypeError) as exc:
        raise IdentityError("euicc-cert", f"public key does not decode: {exc}") from None
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or _spki(cert_key) != _spki(euicc_key.public_key()):
        raise IdentityError(
            "euicc-key", "the private key does not belong to the eUICC certificate (public keys differ)"
        )
    if not ci_certs:
        raise IdentityError("ci", "at least one CI certificate is needed")
    try:
        chain = verify_chain(euicc_cert, [eum_cert], ci_certs, "euicc", at)
    except ChainError as exc:
        raise IdentityError("chain", str(exc)) from None
    try:
        cert_eid = eid_of(euicc_cert)
    except ValueError as exc:  # verify_chain already read it; kept for a clear message
        raise IdentityError("eid", str(exc)) from None
    if not is_valid_eid(cert_eid):
        expected = eid_check_digits(cert_eid[:30])
        raise IdentityError(
            "eid", f"EID {cert_eid} in the certificate fails the check-digit rule (expected {expected})"
        )
    if eid is not None and eid != cert_eid:
        raise IdentityError("eid", f"--eid {eid} differs from the EID {cert_eid} in the eUICC certificate")
    return CheckedIdentity(
        eid=cert_eid,
        curve=curve,
        key=euicc_key,
        euicc_cert=chain.leaf,
        eum_cert=chain.path[1],
        ci=chain.ci,
        ci_key_id=chain.ci_key_id,
        ci_certs=tuple(ci_certs),
        eid_range=eid_range_of(chain.path[1]).describe(),
    )
