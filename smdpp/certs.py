"""eUICC certificate chain checks on the SM-DP+ side (SGP.22 v2.5 §5.6.3 steps, §4.5.2 certificate roles).

eUICC certificate <- EUM certificate <- a trusted CI, the CI selected by ``euiccCiPKIdToBeUsed`` (its
SubjectKeyIdentifier). Each failure maps to the ES9+ status code SGP.22 names for it, so the caller learns
which certificate failed and why.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from rsp.pki.eid_range import EidRangeError, check_eid_in_range
from smdpp import errors

OID_ROLE_CI = "2.23.146.1.2.1.0"
OID_ROLE_EUICC = "2.23.146.1.2.1.1"
OID_ROLE_EUM = "2.23.146.1.2.1.2"
OID_ROLE_DPTLS = "2.23.146.1.2.1.3"
OID_ROLE_DPAUTH = "2.23.146.1.2.1.4"
OID_ROLE_DPPB = "2.23.146.1.2.1.5"


def load_der(data: bytes, code: errors.StatusCode, what: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(data)
        cert.public_key()
        return cert
    except Exception as exc:  # cryptography raises ValueError and friends for every malformed DER
        raise code.error(f"{what} is not a usable X.509 certificate: {exc}") from None


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def policies(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return set()
    return {p.policy_identifier.dotted_string for p in ext}


def smdp_oid(cert: x509.Certificate) -> str | None:
    """The SM-DP+ OID: the registeredID in CERT.DPauth's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = san.get_values_for_type(x509.RegisteredID)
    return ids[0].dotted_string if ids else None


def eid_of(cert: x509.Certificate) -> str | None:
    """The EID of an eUICC certificate: the subject serialNumber (SGP.22 §4.5.2.1.0.2)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def _check_issued(child: x509.Certificate, issuer: x509.Certificate, code: errors.StatusCode, what: str) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise code.error(f"{what} is not signed by its issuer: {exc or 'bad signature'}") from None


def _check_validity(cert: x509.Certificate, code: errors.StatusCode, what: str, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise code.error(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if now < cert.not_valid_before_utc:
        raise code.error(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")


def verify_euicc_chain(
    euicc_der: bytes,
    eum_der: bytes,
    trusted_cis: dict[bytes, x509.Certificate],
    ci_pkid: bytes,
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, str]:
    """Check eUICC <- EUM <- CI(ci_pkid). Returns the eUICC certificate and its EID; raises Es9Error."""
    now = now or dt.datetime.now(dt.UTC)
    euicc = load_der(euicc_der, errors.EUICC_CERT_INVALID, "eUICC certificate")
    eum = load_der(eum_der, errors.EUM_CERT_INVALID, "EUM certificate")
    ci = trusted_cis.get(ci_pkid)
    if ci is None:
        raise errors.CI_PK_UNKNOWN.error(f"CI Public Key - Unknown: {ci_pkid.hex().upper()} is not a trusted CI")
    if authority_key_id(eum) != ci_pkid:
        aki = authority_key_id(eum)
        raise errors.CI_PK_UNKNOWN.error(
            "CI Public Key - Unknown: the EUM certificate is issued by "
            f"{aki.hex().upper() if aki else 'an unnamed key'}, not by euiccCiPKIdToBeUsed {ci_pkid.hex().upper()}"
        )
    _check_issued(eum, ci, errors.EUM_CERT_INVALID, "EUM certificate")
    if OID_ROLE_EUM not in policies(eum):
        raise errors.EUM_CERT_INVALID.error("EUM certificate lacks the EUM role policy (2.23.146.1.2.1.2)")
    _check_validity(eum, errors.EUM_CERT_EXPIRED, "EUM certificate", now)
    if authority_key_id(euicc) not in (None, subject_key_id(eum)):
        raise errors.EUICC_CERT_INVALID.error("eUICC certificate is not issued by the EUM certificate sent with it")
    _check_issued(euicc, eum, errors.EUICC_CERT_INVALID, "eUICC certificate")
    if OID_ROLE_EUICC not in policies(euicc):
        raise errors.EUICC_CERT_INVALID.error("eUICC certificate lacks the eUICC role policy (2.23.146.1.2.1.1)")
    _check_validity(euicc, errors.EUICC_CERT_EXPIRED, "eUICC certificate", now)
    eid = eid_of(euicc)
    if eid is None or len(eid) != 32 or not eid.isdigit():
        raise errors.EUICC_CERT_INVALID.error(f"eUICC certificate carries no valid EID (serialNumber {eid!r})")
    try:
        check_eid_in_range(eid, eum, euicc)  # SGP.22 §4.5.2.2
    except EidRangeError as exc:
        raise errors.EID_OUT_OF_RANGE.error(
            f"EID is not within the permitted range of the EUM certificate: {exc}"
        ) from None
    return euicc, eid
