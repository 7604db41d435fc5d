"""The card's identity and certificate checks (SGP.22 v2.5 §4.5 certificates, §5.7.13 / §5.7.5 verifications).

Holds the eUICC private key (``SK.EUICC.ECDSA``), ``CERT.EUICC.ECDSA``, ``CERT.EUM.ECDSA`` and the trusted CI
certificates; signs with TR-03111 ``r||s`` (``rsp.crypto``) and verifies SM-DP+ certificates (CERT.DPauth,
CERT.DPpb) against a trusted CI. A card has no reliable clock, so certificate validity periods are not checked
(as on real eUICCs); issuer key, signature, curve and role (certificate policy) are.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from rsp import crypto
from rsp.errors import RspError
from rsp.pki import authority_key_id, policies_of, subject_key_id

# id-rspRole OIDs (SGP.22 §A, RSPDefinitions)
ROLE_CI = "2.23.146.1.2.1.0"
ROLE_EUICC = "2.23.146.1.2.1.1"
ROLE_EUM = "2.23.146.1.2.1.2"
ROLE_DP_TLS = "2.23.146.1.2.1.3"
ROLE_DP_AUTH = "2.23.146.1.2.1.4"
ROLE_DP_PB = "2.23.146.1.2.1.5"


class CertificateCheckError(RspError):
    """A certificate was refused. ``kind``: ``"invalid"`` (malformed, wrong issuer signature, wrong role),
    ``"unknown_ci"`` (issuer is no trusted CI), ``"curve"`` (key not on P-256 / brainpoolP256r1)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def registered_oid(cert: x509.Certificate) -> str | None:
    """The SM-DP+ / EUM OID: subjectAltName registeredID (SGP.22 §4.5.2)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = san.get_values_for_type(x509.RegisteredID)
    return ids[0].dotted_string if ids else None


@dataclass
class Identity:
    eid: bytes
    key: ec.EllipticCurvePrivateKey
    euicc_cert_der: bytes
    eum_cert_der: bytes
    ci_certs: list[x509.Certificate]

    @classmethod
    def from_state(cls, state) -> Identity:  # state: euicc.state.EuiccState
        key = crypto.load_private_key(state.private_key_pem.encode())
        cis = [crypto.load_certificate(c) for c in state.ci_certs]
        return cls(state.eid, key, state.euicc_cert, state.eum_cert, cis)

    def __repr__(self) -> str:  # never show the key
        return f"Identity(eid={self.eid.hex().upper()}, key=<redacted>)"

    # ------------------------------------------------------------------------------------------------ keys
    @property
    def curve(self) -> str:
        return crypto.curve_name(self.key)

    def sign(self, data: bytes) -> bytes:
        return crypto.sign(self.key, data)

    @property
    def euicc_cert(self) -> x509.Certificate:
        return crypto.load_certificate(self.euicc_cert_der)

    @property
    def eum_cert(self) -> x509.Certificate:
        return crypto.load_certificate(self.eum_cert_der)

    # ------------------------------------------------------------------------------------------------ CI lists
    def ci_pkids_for_verification(self) -> list[bytes]:
        """Key ids of every trusted CI (EUICCInfo1/2 euiccCiPKIdListForVerification)."""
        out = []
        for ci in self.ci_certs:
            ski = subject_key_id(ci)
            if ski is not None and ski not in out:
                out.append(ski)
        return out

    def ci_pkids_for_signing(self) -> list[bytes]:
        """Key ids of the CI(s) our certificate chain hangs from (euiccCiPKIdListForSigning)."""
        aki = authority_key_id(self.eum_cert)
        return [aki] if aki is not None else []

    def ci_by_key_id(self, key_id: bytes) -> x509.Certificate | None:
        for ci in self.ci_certs:
            if subject_key_id(ci) == key_id:
                return ci
        return None

    # ------------------------------------------------------------------------------------------------ checks
    def verify_server_certificate(self, der: bytes, role: str) -> x509.Certificate:
        """Check an SM-DP+ certificate: well-formed, on an RSP curve, signed by a trusted CI, with ``role`` in
        its certificate policies. Raises :class:`CertificateCheckError`."""
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
            key = cert.public_key()
        except (ValueError, TypeError) as exc:
            raise CertificateCheckError("invalid", f"certificate does not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CertificateCheckError("curve", "certificate key is not an EC key")
        try:
            crypto.curve_name(key)
        except RspError as exc:
            raise CertificateCheckError("curve", str(exc)) from None
        aki = authority_key_id(cert)
        issuer = self.ci_by_key_id(aki) if aki is not None else None
        if issuer is None:
            candidates = [ci for ci in self.ci_certs if ci.subject == cert.issuer]
            issuer = candidates[0] if candidates else None
        if issuer is None:
            raise CertificateCheckError("unknown_ci", f"issuer {cert.issuer.rfc4514_string()} is no trusted CI")
        ci_key = issuer.public_key()
        try:
            if not isinstance(ci_key, ec.EllipticCurvePublicKey) or cert.signature_hash_algorithm is None:
                raise InvalidSignature
            ci_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        except (InvalidSignature, ValueError, TypeError):
            raise CertificateCheckError("invalid", "certificate signature does not verify with the CI key") from None
        if role not in policies_of(cert):
            raise CertificateCheckError("invalid", f"certificate lacks the role policy {role}")
        return cert
