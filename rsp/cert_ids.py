"""Key identifiers read from a certificate's DER, without parsing the whole certificate.

RFC 5280 §4.1: ``Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }``,
``TBSCertificate ::= SEQUENCE { [0] version, serialNumber, signature, issuer, validity, subject,
subjectPublicKeyInfo, [1] issuerUniqueID, [2] subjectUniqueID, [3] EXPLICIT extensions }``, ``Extension ::=
SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }``. §4.2.1.2
SubjectKeyIdentifier (2.5.29.14): ``extnValue`` holds an OCTET STRING (the key id); §4.2.1.1
AuthorityKeyIdentifier (2.5.29.35): ``extnValue`` holds ``SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING
OPTIONAL, ... }``.

The software eUICC lists these ids in EUICCInfo1/2 (``euiccCiPKIdListForVerification`` / ``...ForSigning``, SGP.22
§4.5.2.1): reading them here spares a card that only answers GetEUICCInfo2 the import of cryptography's x509
(``ipa --card STATE chip info``, docs/performance.md 5b). The values equal those of
:func:`rsp.pki.subject_key_id` / :func:`rsp.pki.authority_key_id` (tests/rsp/test_cert_ids.py). Malformed DER
raises :class:`rsp.errors.DecodeError`.
"""

from __future__ import annotations

from rsp import tlv
from rsp.errors import DecodeError

OID_SUBJECT_KEY_ID = bytes.fromhex("551d0e")  # 2.5.29.14
OID_AUTHORITY_KEY_ID = bytes.fromhex("551d23")  # 2.5.29.35
WHAT = "certificate"


def _extension(cert_der: bytes, oid: bytes) -> bytes | None:
    """The ``extnValue`` contents of extension ``oid``, or ``None`` when the certificate has none."""
    cert = tlv.parse_exact(bytes(cert_der), what=WHAT)
    if cert.tag != 0x30:
        raise DecodeError(WHAT, "not a SEQUENCE")
    parts = tlv.children(cert, what=WHAT)
    if not parts or parts[0].tag != 0x30:
        raise DecodeError(WHAT, "no tbsCertificate")
    exts = next((c for c in tlv.children(parts[0], what=WHAT) if c.tag == 0xA3), None)
    if exts is None:
        return None
    seq = tlv.children(exts, what=WHAT)
    if len(seq) != 1 or seq[0].tag != 0x30:
        raise DecodeError(WHAT, "extensions [3] holds no SEQUENCE")
    for ext in tlv.children(seq[0], what=WHAT):
        fields = tlv.children(ext, what=WHAT) if ext.tag == 0x30 else []
        if len(fields) < 2 or fields[0].tag != 0x06 or fields[-1].tag != 0x04:
            raise DecodeError(WHAT, "malformed Extension")
        if fields[0].value == oid:
            return fields[-1].value
    return None


def subject_key_id(cert_der: bytes) -> bytes | None:
    """The SubjectKeyIdentifier (for a CI: the ``euiccCiPKId``), or ``None`` when absent."""
    value = _extension(cert_der, OID_SUBJECT_KEY_ID)
    if value is None:
        return None
    ski = tlv.parse_exact(value, what="SubjectKeyIdentifier")
    if ski.tag != 0x04:
        raise DecodeError("SubjectKeyIdentifier", "not an OCTET STRING")
    return ski.value


def authority_key_id(cert_der: bytes) -> bytes | None:
    """The keyIdentifier of the AuthorityKeyIdentifier extension, or ``None``."""
    value = _extension(cert_der, OID_AUTHORITY_KEY_ID)
    if value is None:
        return None
    aki = tlv.parse_exact(value, what="AuthorityKeyIdentifier")
    if aki.tag != 0x30:
        raise DecodeError("AuthorityKeyIdentifier", "not a SEQUENCE")
    key_id = next((c for c in tlv.children(aki, what="AuthorityKeyIdentifier") if c.tag == 0x80), None)
    return None if key_id is None else key_id.value
