"""Certificates of the RSP PKI: loading, key identifiers, roles, EIDs (SGP.22 v2.5 §4.5, SGP.32 v1.2 §2.4a).

RSP roles are told apart by the certificate policy OID under ``id-rspRole`` = 2.23.146.1.2.1 (SGP.22 §4.5.2;
confirmed on the SGP.26 test certificates in ``tests/data/sgp26``). SGP.32 v1.2 defines no certificate policy for
the eIM that we could confirm, so the lab PKI marks eIM certificates with OIDs under the ITU-T/ISO *example* arc
2.999 (X.660: reserved for documentation and examples, never assigned): :data:`LAB_EIM_POLICY` 2.999.32.1 (eIM
package signing) and :data:`LAB_EIM_TLS_POLICY` 2.999.32.2 (eIM ESipa TLS server).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from typing import Union

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from rsp.crypto import KeyLoadError, load_certificate

__all__ = [
    "ID_RSP_ROLE",
    "LAB_EIM_POLICY",
    "LAB_EIM_TLS_POLICY",
    "LAB_EIN",
    "LAB_SMDP_OID",
    "POLICY_OF_ROLE",
    "CertLike",
    "Role",
    "as_certificate",
    "authority_key_id",
    "eid_check_digits",
    "eid_of",
    "is_valid_eid",
    "lab_eid",
    "load_certificates",
    "policies_of",
    "role_of",
    "roles_of",
    "subject_key_id",
]

ID_RSP_ROLE = "2.23.146.1.2.1"
LAB_EIM_POLICY = "2.999.32.1"
LAB_EIM_TLS_POLICY = "2.999.32.2"
#: the lab EUM's EID prefix (8 digits, like an SGP.22 IIN): every :func:`lab_eid` starts with it
LAB_EIN = "89999000"
#: lab SM-DP+ OID (subjectAltName registeredID of DPauth/DPpb/DPtls; the ``smdpOid`` of activation codes/PIRs)
LAB_SMDP_OID = "2.999.32.10"


class Role(enum.StrEnum):
    """RSP certificate roles (value = the short name used on the command line and in errors)."""

    CI = "ci"
    EUICC = "euicc"
    EUM = "eum"
    DP_TLS = "dptls"
    DP_AUTH = "dpauth"
    DP_PB = "dppb"
    DS_TLS = "dstls"
    DS_AUTH = "dsauth"
    EIM = "eim"
    EIM_TLS = "eimtls"

    @property
    def policy_oid(self) -> str:
        return POLICY_OF_ROLE[self]

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def parse(cls, value: Role | str) -> Role:
        if isinstance(value, Role):
            return value
        key = str(value).lower().replace("-", "").replace("_", "").replace(".", "")
        for role in cls:
            if role.value == key or role.name.lower().replace("_", "") == key:
                return role
        raise ValueError(f"unknown RSP role {value!r} (one of {', '.join(r.value for r in cls)})")


POLICY_OF_ROLE: dict[Role, str] = {
    Role.CI: ID_RSP_ROLE + ".0",
    Role.EUICC: ID_RSP_ROLE + ".1",
    Role.EUM: ID_RSP_ROLE + ".2",
    Role.DP_TLS: ID_RSP_ROLE + ".3",
    Role.DP_AUTH: ID_RSP_ROLE + ".4",
    Role.DP_PB: ID_RSP_ROLE + ".5",
    Role.DS_TLS: ID_RSP_ROLE + ".6",
    Role.DS_AUTH: ID_RSP_ROLE + ".7",
    Role.EIM: LAB_EIM_POLICY,
    Role.EIM_TLS: LAB_EIM_TLS_POLICY,
}
ROLE_OF_POLICY = {oid: role for role, oid in POLICY_OF_ROLE.items()}

_LABELS = {
    Role.CI: "CI",
    Role.EUICC: "eUICC",
    Role.EUM: "EUM",
    Role.DP_TLS: "SM-DP+ TLS (DPtls)",
    Role.DP_AUTH: "SM-DP+ authentication (DPauth)",
    Role.DP_PB: "SM-DP+ profile binding (DPpb)",
    Role.DS_TLS: "SM-DS TLS (DStls)",
    Role.DS_AUTH: "SM-DS authentication (DSauth)",
    Role.EIM: "eIM package signing",
    Role.EIM_TLS: "eIM TLS",
}

CertLike = Union[x509.Certificate, bytes, str, "os.PathLike[str]"]


def as_certificate(cert: CertLike) -> x509.Certificate:
    """A certificate object from a certificate, PEM/DER bytes or a file path (raises ``KeyLoadError``)."""
    if isinstance(cert, x509.Certificate):
        return cert
    return load_certificate(cert)


def load_certificates(source: bytes | str | os.PathLike[str]) -> list[x509.Certificate]:
    """All certificates in a PEM bundle (or the single certificate of a DER file)."""
    data = source if isinstance(source, bytes) else None
    if data is None:
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise KeyLoadError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise KeyLoadError(f"bad PEM certificate bundle: {exc}") from exc
    return [load_certificate(data)]


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier):
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def subject_key_id(cert: CertLike) -> bytes | None:
    """The SubjectKeyIdentifier (for a CI: the ``euiccCiPKId``), or ``None`` when absent."""
    ski = _ext(as_certificate(cert), ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return None if ski is None else ski.digest


def authority_key_id(cert: CertLike) -> bytes | None:
    """The keyIdentifier of the AuthorityKeyIdentifier extension, or ``None``."""
    aki = _ext(as_certificate(cert), ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    return None if aki is None else aki.key_identifier


def policies_of(cert: CertLike) -> list[str]:
    """The certificate policy OIDs (dotted strings)."""
    pol = _ext(as_certificate(cert), ExtensionOID.CERTIFICATE_POLICIES)
    return [] if pol is None else [p.policy_identifier.dotted_string for p in pol]


def roles_of(cert: CertLike) -> list[Role]:
    """The RSP roles named by the certificate's policies (usually exactly one)."""
    return [ROLE_OF_POLICY[oid] for oid in policies_of(cert) if oid in ROLE_OF_POLICY]


def role_of(cert: CertLike) -> Role | None:
    roles = roles_of(cert)
    return roles[0] if roles else None


# --- EIDs -------------------------------------------------------------------------------------------------------


def eid_check_digits(first30: str) -> str:
    """The two EID check digits for the first 30 digits: ISO 7064 MOD 97-10 as for IBANs (the rule of
    GSMA SGP.29): ``98 - (int(first30 + "00") mod 97)``. A complete EID then satisfies ``int(EID) mod 97 == 1``
    (true for both real EIDs in ``tests/data/vectors.json``)."""
    if len(first30) != 30 or not first30.isdigit() or not first30.isascii():
        raise ValueError(f"EID body must be 30 decimal digits, got {first30!r}")
    return f"{98 - int(first30 + '00') % 97:02d}"


def is_valid_eid(eid: str) -> bool:
    """32 decimal digits with correct check digits."""
    return isinstance(eid, str) and len(eid) == 32 and eid.isdigit() and eid.isascii() and int(eid) % 97 == 1


def lab_eid(serial: int = 1) -> str:
    """A valid lab EID: ``89`` ``999`` (no such country code) + zero-padded ``serial`` + check digits."""
    body = f"89999{serial:025d}"
    if len(body) != 30:
        raise ValueError("serial too large for an EID")
    return body + eid_check_digits(body)


def eid_of(euicc_cert: CertLike) -> str:
    """The EID of an eUICC certificate: the subject ``serialNumber`` attribute (SGP.22 §4.5.2.1.0.3).

    Raises ``ValueError`` when the attribute is missing or is not a 32-digit EID."""
    cert = as_certificate(euicc_cert)
    attrs = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not attrs:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()!r} has no serialNumber (EID) in its subject")
    eid = str(attrs[0].value)
    if len(eid) != 32 or not eid.isdigit():
        raise ValueError(f"subject serialNumber {eid!r} is not a 32-digit EID")
    return eid


def subject_text(cert: x509.Certificate) -> str:
    """RFC 4514 subject with ``serialNumber`` spelled out (the EID of an eUICC certificate)."""
    return cert.subject.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})


def describe(cert: x509.Certificate) -> str:
    """Short human name of a certificate for error messages: role and subject."""
    role = role_of(cert)
    subject = subject_text(cert) or "(empty subject)"
    return f"{role.label if role else 'certificate'} '{subject}'"


def by_key_id(certs: Iterable[x509.Certificate]) -> dict[bytes, x509.Certificate]:
    out: dict[bytes, x509.Certificate] = {}
    for c in certs:
        ski = subject_key_id(c)
        if ski is not None:
            out.setdefault(ski, c)
    return out
