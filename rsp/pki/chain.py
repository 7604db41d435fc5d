"""Certificate chain verification for the RSP roles (SGP.22 v2.5 §4.5.2, §5.1.x certificate checks).

``verify_chain(leaf, intermediates, trusted_cis, role)`` builds the path from the leaf to one of the trusted CIs by
AuthorityKeyIdentifier -> SubjectKeyIdentifier (falling back to issuer/subject name when a certificate has no
AKI), selects the CI by its SubjectKeyIdentifier (= ``euiccCiPKId``), and checks on every certificate:
the ECDSA signature (DER in X.509) by its issuer, the validity period at ``at``, basicConstraints (issuers are
CAs, within pathLenConstraint; the leaf is not a CA), keyUsage (issuers: keyCertSign; leaf: digitalSignature),
and the RSP role by certificate policy OID (leaf = ``role``; an eUICC's issuer must be an EUM; the CI must carry
the CI policy); for TLS roles also extendedKeyUsage serverAuth; for an eUICC, that its EID lies within the
permitted EID range of its EUM (:mod:`rsp.pki.eid_range`, SGP.22 §4.5.2.2).

Failures raise :class:`ChainError` with ``reason`` one of :data:`REASONS` and a message naming the certificate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from rsp.crypto import CryptoError, curve_name
from rsp.errors import RspError
from rsp.pki.certs import (
    CertLike,
    Role,
    as_certificate,
    authority_key_id,
    by_key_id,
    describe,
    eid_of,
    policies_of,
    subject_key_id,
)
from rsp.pki.eid_range import EidRangeError, check_eid_in_range

__all__ = ["REASONS", "ChainError", "VerifiedChain", "verify_chain"]

REASONS = (
    "malformed",
    "untrusted-ci",
    "no-issuer",
    "bad-signature",
    "expired",
    "not-yet-valid",
    "wrong-role",
    "not-a-ca",
    "path-length",
    "key-usage",
    "wrong-ci",
    "eid-range",
)
MAX_DEPTH = 6
_TLS_ROLES = {Role.DP_TLS, Role.DS_TLS, Role.EIM_TLS}


class ChainError(RspError):
    """A certificate chain was refused. ``reason`` is one of :data:`REASONS`; ``certificate`` (may be ``None``)
    the certificate at fault; ``key_id`` the CI key id involved for ``untrusted-ci`` / ``wrong-ci``."""

    def __init__(
        self, reason: str, message: str, certificate: x509.Certificate | None = None, key_id: bytes | None = None
    ) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.certificate = certificate
        self.key_id = key_id
        super().__init__(f"certificate chain refused ({reason}): {message}")


@dataclass(frozen=True)
class VerifiedChain:
    """The outcome of a successful :func:`verify_chain`: ``path`` = leaf, intermediates..., CI."""

    leaf: x509.Certificate
    path: tuple[x509.Certificate, ...]
    ci: x509.Certificate
    ci_key_id: bytes
    role: Role

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.leaf.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

    @property
    def curve(self) -> str:
        return curve_name(self.leaf)


def _load(cert: CertLike, what: str) -> x509.Certificate:
    """Load and force-parse everything the checks read, so that a malformed certificate fails here, named."""
    try:
        c = as_certificate(cert)
        c.subject.rfc4514_string()
        c.issuer.rfc4514_string()
        for ext in c.extensions:
            _ = ext.value
        _ = (c.not_valid_before_utc, c.not_valid_after_utc, c.signature, c.signature_hash_algorithm)
        _ = c.tbs_certificate_bytes
        c.public_key()
        return c
    except Exception as exc:  # untrusted input: cryptography raises many exception types while parsing
        raise ChainError("malformed", f"{what}: {type(exc).__name__}: {exc}") from None


def _utc(t: dt.datetime | None) -> dt.datetime:
    if t is None:
        return dt.datetime.now(dt.UTC)
    if t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ext(cert: x509.Certificate, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate/undecodable extension
        raise ChainError("malformed", f"{describe(cert)}: bad extensions: {exc}", cert) from None


def _find_issuer(
    cert: x509.Certificate, pool: dict[bytes, x509.Certificate], all_certs: list[x509.Certificate]
) -> x509.Certificate | None:
    aki = authority_key_id(cert)
    if aki is not None:
        return pool.get(aki)
    for cand in all_certs:
        if cand.subject == cert.issuer and cand is not cert:
            return cand
    return None


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise ChainError(
            "bad-signature", f"signature of {describe(cert)} does not verify with the key of {describe(issuer)}", cert
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # issuer name mismatch, unsupported signature algorithm ...
        raise ChainError(
            "bad-signature", f"{describe(cert)} is not validly issued by {describe(issuer)}: {exc}", cert
        ) from None


def _check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at > na:
        raise ChainError("expired", f"{describe(cert)} expired on {_fmt(na)}", cert)
    if at < nb:
        raise ChainError("not-yet-valid", f"{describe(cert)} is not yet valid (valid from {_fmt(nb)})", cert)


def _check_ca(cert: x509.Certificate, below: int) -> None:
    """``below`` = number of CA certificates between this one and the leaf."""
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if bc is None or not bc.ca:
        raise ChainError("not-a-ca", f"{describe(cert)} issues certificates but is not a CA (basicConstraints)", cert)
    if bc.path_length is not None and below > bc.path_length:
        raise ChainError("path-length", f"{describe(cert)} allows {bc.path_length} CA(s) below it, found {below}", cert)
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    if ku is not None and not ku.key_cert_sign:
        raise ChainError("key-usage", f"{describe(cert)} lacks keyUsage keyCertSign", cert)


def _check_role(cert: x509.Certificate, role: Role) -> None:
    policies = policies_of(cert)
    if role.policy_oid not in policies:
        shown = ", ".join(policies) or "none"
        raise ChainError(
            "wrong-role",
            f"{describe(cert)} is not a {role.label} certificate (needs policy {role.policy_oid}, has {shown})",
            cert,
        )


def verify_chain(
    leaf: CertLike,
    intermediates: Iterable[CertLike] = (),
    trusted_cis: Iterable[CertLike] = (),
    role: Role | str = Role.EUICC,
    at: dt.datetime | None = None,
    *,
    ci_key_id: bytes | None = None,
    eid_range: bool = True,
) -> VerifiedChain:
    """Verify ``leaf`` for ``role`` up to one of ``trusted_cis``.

    ``intermediates`` are untrusted helpers (e.g. the EUM certificate for an eUICC), ``at`` the verification time
    (default now, naive datetimes are UTC). ``ci_key_id`` restricts the acceptable CI to the one with that
    SubjectKeyIdentifier (e.g. the ``euiccCiPKIdToBeUsed``). ``eid_range=False`` skips the EUM's permitted EID
    range (only for test data made under a lab PKI that predates it). Returns a :class:`VerifiedChain` or raises
    :class:`ChainError`.
    """
    try:
        role = Role.parse(role)
    except ValueError as exc:
        raise ChainError("malformed", str(exc)) from None
    when = _utc(at)
    leaf_cert = _load(leaf, "leaf certificate")
    inter = [_load(c, "intermediate certificate") for c in intermediates]
    cis = [_load(c, "trusted CI certificate") for c in trusted_cis]
    ci_by_id = by_key_id(cis)
    inter_by_id = by_key_id(inter)

    path = [leaf_cert]
    cert = leaf_cert
    ci: x509.Certificate | None = None
    for _ in range(MAX_DEPTH):
        aki = authority_key_id(cert)
        # the CI is selected by key id; a certificate without AKI falls back to issuer name
        cand = ci_by_id.get(aki) if aki is not None else _find_issuer(cert, {}, cis)
        if cand is not None:
            ci = cand
            break
        nxt = _find_issuer(cert, inter_by_id, inter)
        if nxt is None or nxt in path:
            if cert.issuer == cert.subject and (aki is None or aki == subject_key_id(cert)):
                kid = subject_key_id(cert)
                raise ChainError(
                    "untrusted-ci",
                    f"chain ends at {describe(cert)}, a root that is not a trusted CI"
                    f" (key id {kid.hex().upper() if kid else 'none'})",
                    cert,
                    kid,
                )
            known = ", ".join(k.hex().upper() for k in ci_by_id) or "none"
            if aki is not None:
                raise ChainError(
                    "untrusted-ci",
                    f"{describe(cert)} was issued by key id {aki.hex().upper()}, which is not a trusted CI "
                    f"(trusted: {known}) nor a given intermediate",
                    cert,
                    aki,
                )
            raise ChainError(
                "no-issuer", f"issuer '{cert.issuer.rfc4514_string()}' of {describe(cert)} not found", cert
            )
        path.append(nxt)
        cert = nxt
    else:
        raise ChainError("path-length", f"no CI within {MAX_DEPTH} certificates of {describe(leaf_cert)}")

    ci_id = subject_key_id(ci)
    if ci_id is None:
        raise ChainError("malformed", f"trusted {describe(ci)} has no SubjectKeyIdentifier", ci)
    if ci_key_id is not None and ci_id != bytes(ci_key_id):
        raise ChainError(
            "wrong-ci",
            f"chain leads to CI key id {ci_id.hex().upper()}, but CI key id "
            f"{bytes(ci_key_id).hex().upper()} is required",
            ci,
            ci_id,
        )
    full = [*path, ci]

    # signatures, from the CI down
    for i in range(len(full) - 1, 0, -1):
        _check_signature(full[i - 1], full[i])
    if ci.issuer == ci.subject:
        _check_signature(ci, ci)  # self-signed root: checks that it is intact
    # validity of every certificate including the CI
    for c in full:
        _check_validity(c, when)
    # CA constraints of every issuer
    for depth, c in enumerate(full[1:]):
        _check_ca(c, depth)
    _check_role(ci, Role.CI)
    # leaf
    if role is not Role.CI:
        bc = _ext(leaf_cert, ExtensionOID.BASIC_CONSTRAINTS)
        if bc is not None and bc.ca and role is not Role.EUM:
            raise ChainError("wrong-role", f"{describe(leaf_cert)} is a CA certificate, not a {role.label}", leaf_cert)
    _check_role(leaf_cert, role)
    ku = _ext(leaf_cert, ExtensionOID.KEY_USAGE)
    if role in (Role.CI, Role.EUM):
        if ku is not None and not ku.key_cert_sign:
            raise ChainError("key-usage", f"{describe(leaf_cert)} lacks keyUsage keyCertSign", leaf_cert)
    elif ku is None or not ku.digital_signature:
        raise ChainError("key-usage", f"{describe(leaf_cert)} lacks keyUsage digitalSignature", leaf_cert)
    if role in _TLS_ROLES:
        eku = _ext(leaf_cert, ExtensionOID.EXTENDED_KEY_USAGE)
        if eku is None or ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            raise ChainError("key-usage", f"{describe(leaf_cert)} lacks extendedKeyUsage serverAuth", leaf_cert)
    if role is Role.EUICC:
        if len(full) < 3:
            raise ChainError("wrong-role", f"{describe(leaf_cert)} is not issued by an EUM", leaf_cert)
        _check_role(full[1], Role.EUM)
        try:
            eid = eid_of(leaf_cert)
        except ValueError as exc:
            raise ChainError("malformed", f"{describe(leaf_cert)}: {exc}", leaf_cert) from None
        try:
            if eid_range:
                check_eid_in_range(eid, full[1], leaf_cert)
        except EidRangeError as exc:
            raise ChainError("eid-range", f"{describe(full[1])}: {exc}", leaf_cert) from None
    for c in full:
        try:
            curve_name(c)
        except CryptoError as exc:
            raise ChainError("malformed", f"{describe(c)}: {exc}", c) from None
    return VerifiedChain(leaf=leaf_cert, path=tuple(full), ci=ci, ci_key_id=ci_id, role=role)
