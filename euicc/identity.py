"""The card's identity and certificate checks (SGP.22 v2.5 §4.5 certificates, §5.7.13 / §5.7.5 verifications).

Holds the eUICC private key (``SK.EUICC.ECDSA``), ``CERT.EUICC.ECDSA``, ``CERT.EUM.ECDSA`` and the trusted CI
certificates; signs with TR-03111 ``r||s`` (``rsp.crypto``) and verifies SM-DP+ certificates (CERT.DPauth,
CERT.DPpb) against a trusted CI. A card has no reliable clock, so certificate validity periods are not checked
(as on real eUICCs); issuer key, signature, curve and role (certificate policy) are.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from rsp import cert_ids
from rsp.errors import RspError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

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
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = san.get_values_for_type(x509.RegisteredID)
    return ids[0].dotted_string if ids else None


class Identity:
    """The card's key and certificates. The private key and the CI certificates are parsed when first used (by a
    command that signs or checks a certificate); the key ids that EUICCInfo1/2 list are read from the DER when the
    card is loaded (:mod:`rsp.cert_ids`, which refuses a damaged certificate then). A card that only answers
    GetEUICCInfo2, GetEID or the address and eIM lists never imports cryptography (``ipa --card STATE chip
    info``, docs/performance.md 5b)."""

    def __init__(
        self, eid: bytes, key_pem: bytes, euicc_cert_der: bytes, eum_cert_der: bytes, ci_cert_ders: list[bytes]
    ) -> None:
        self.eid = eid
        self._key_pem = key_pem
        self.euicc_cert_der = euicc_cert_der
        self.eum_cert_der = eum_cert_der
        self.ci_cert_ders = list(ci_cert_ders)
        self._ci_skis = [cert_ids.subject_key_id(c) for c in self.ci_cert_ders]
        self._eum_aki = cert_ids.authority_key_id(eum_cert_der)

    @classmethod
    def from_state(cls, state) -> Identity:  # state: euicc.state.EuiccState
        return cls(state.eid, state.private_key_pem.encode(), state.euicc_cert, state.eum_cert, state.ci_certs)

    def __repr__(self) -> str:  # never show the key
        return f"Identity(eid={self.eid.hex().upper()}, key=<redacted>)"

    # ------------------------------------------------------------------------------------------------ keys
    @cached_property
    def key(self) -> ec.EllipticCurvePrivateKey:
        """``SK.EUICC.ECDSA`` (parsed at first use; :class:`rsp.crypto.KeyLoadError` if the state's PEM is bad)."""
        from rsp import crypto

        return crypto.load_private_key(self._key_pem)

    @cached_property
    def ci_certs(self) -> list[x509.Certificate]:
        from rsp import crypto

        return [crypto.load_certificate(c) for c in self.ci_cert_ders]

    @property
    def curve(self) -> str:
        from rsp import crypto

        return crypto.curve_name(self.key)

    def sign(self, data: bytes) -> bytes:
        from rsp import crypto

        return crypto.sign(self.key, data)

    @property
    def euicc_cert(self) -> x509.Certificate:
        from rsp import crypto

        return crypto.load_certificate(self.euicc_cert_der)

    @property
    def eum_cert(self) -> x509.Certificate:
        from rsp import crypto

        return crypto.load_certificate(self.eum_cert_der)

    # ------------------------------------------------------------------------------------------------ CI lists
    def ci_pkids_for_verification(self) -> list[bytes]:
        """Key ids of every trusted CI (EUICCInfo1/2 euiccCiPKIdListForVerification)."""
        out: list[bytes] = []
        for ski in self._ci_skis:
            if ski is not None and ski not in out:
                out.append(ski)
        return out

    def ci_pkids_for_signing(self) -> list[bytes]:
        """Key ids of the CI(s) our certificate chain hangs from (euiccCiPKIdListForSigning)."""
        return [self._eum_aki] if self._eum_aki is not None else []

    def ci_by_key_id(self, key_id: bytes) -> x509.Certificate | None:
        for i, ski in enumerate(self._ci_skis):
            if ski == key_id:
                return self.ci_certs[i]
        return None

    # ------------------------------------------------------------------------------------------------ checks
    def verify_server_certificate(self, der: bytes, role: str) -> x509.Certificate:
        """Check an SM-DP+ certificate: well-formed, on an RSP curve, signed by a trusted CI, with ``role`` in
        its certificate policies. Raises :class:`CertificateCheckError`."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ec

        from rsp import crypto
        from rsp.pki import authority_key_id, policies_of

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
