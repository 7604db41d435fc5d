"""The SM-DP+ credentials: per CI, a CERT.DPauth.SIG / CERT.DPpb.SIG pair with keys; the trusted CIs for eUICC
chains; the TLS server certificate (SGP.22 v2.5 §4.5.2, §2.6.5).

Two sources:

* the **lab PKI** (``rsp pki init DIR``, default): one credential set per curve present in the directory;
* the **GSMA SGP.26 test credentials** (``--sgp26``), shipped in ``smdpp/sgp26/`` (see its PROVENANCE.md):
  DPauth/DPpb for NIST and brainpool, the TLS certificate of ``testsmdpplus1.example.com`` (valid to 2030);
  eUICC chains may then end at the SGP.26 test CI or, when a lab PKI is given too, at the lab CI.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rsp import crypto
from smdpp.certs import OID_ROLE_DPAUTH, OID_ROLE_DPPB, authority_key_id, policies, smdp_oid, subject_key_id


class CredentialsError(Exception):
    """Credentials missing or inconsistent; the message names the file and the fault."""


@dataclass(frozen=True)
class CredentialSet:
    """DPauth + DPpb issued under one CI (one curve)."""

    curve: str
    ci: x509.Certificate
    ci_pkid: bytes
    dpauth_cert: x509.Certificate
    dpauth_der: bytes
    dpauth_key: ec.EllipticCurvePrivateKey
    dppb_cert: x509.Certificate
    dppb_der: bytes
    dppb_key: ec.EllipticCurvePrivateKey

    @property
    def smdp_oid(self) -> str | None:
        return smdp_oid(self.dpauth_cert)


@dataclass(frozen=True)
class Credentials:
    sets: dict[bytes, CredentialSet]  # CI PKId -> credentials issued under that CI
    trusted_cis: dict[bytes, x509.Certificate]  # CI PKId -> CI certificate (eUICC chains)
    tls_cert_file: Path
    tls_key_file: Path
    tls_host: str  # a DNS name in the TLS certificate
    ca_bundle: Path | None = None  # PEM a client verifies the TLS certificate with
    origin: str = "lab"
    _tmp: list[object] = field(default_factory=list, repr=False, compare=False)

    @property
    def curves(self) -> list[str]:
        return sorted({s.curve for s in self.sets.values()})


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make_set(
    ci: x509.Certificate,
    dpauth_cert: x509.Certificate,
    dpauth_key: ec.EllipticCurvePrivateKey,
    dppb_cert: x509.Certificate,
    dppb_key: ec.EllipticCurvePrivateKey,
) -> CredentialSet:
    """Check that DPauth/DPpb are issued by ``ci``, carry their roles and match their keys."""
    ci_pkid = subject_key_id(ci)
    if ci_pkid is None:
        raise CredentialsError("CI certificate has no SubjectKeyIdentifier")
    for cert, key, role, name in (
        (dpauth_cert, dpauth_key, OID_ROLE_DPAUTH, "DPauth"),
        (dppb_cert, dppb_key, OID_ROLE_DPPB, "DPpb"),
    ):
        if authority_key_id(cert) != ci_pkid:
            raise CredentialsError(f"CERT.{name} is not issued by CI {ci_pkid.hex().upper()}")
        if role not in policies(cert):
            raise CredentialsError(f"CERT.{name} lacks its role policy {role}")
        if crypto.public_point(cert) != crypto.public_point(key):
            raise CredentialsError(f"SK.{name} does not match CERT.{name}")
        try:
            cert.verify_directly_issued_by(ci)
        except Exception as exc:
            raise CredentialsError(f"CERT.{name} signature does not verify with the CI: {exc}") from None
    return CredentialSet(
        curve=crypto.curve_name(ci),
        ci=ci,
        ci_pkid=ci_pkid,
        dpauth_cert=dpauth_cert,
        dpauth_der=_der(dpauth_cert),
        dpauth_key=dpauth_key,
        dppb_cert=dppb_cert,
        dppb_der=_der(dppb_cert),
        dppb_key=dppb_key,
    )


def _dns_name(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
    except x509.ExtensionNotFound:
        pass
    return "localhost"


def sgp26_dir() -> Path:
    return Path(str(resources.files("smdpp") / "sgp26"))


def load_sgp26(
    curves: tuple[str, ...] = ("nist", "brainpool"), extra_trusted: dict[bytes, x509.Certificate] | None = None
) -> Credentials:
    """The GSMA SGP.26 test DPauth/DPpb/TLS credentials shipped with the package."""
    d = sgp26_dir()
    sets: dict[bytes, CredentialSet] = {}
    trusted: dict[bytes, x509.Certificate] = dict(extra_trusted or {})
    suffix = {"nist": "NIST", "brainpool": "BRP"}
    for curve in curves:
        s = suffix[crypto.curve_name(curve)]
        ci = crypto.load_certificate(d / f"CERT_CI_ECDSA_{s}.der")
        cs = make_set(
            ci,
            crypto.load_certificate(d / f"CERT_S_SM_DPauth_ECDSA_{s}.der"),
            crypto.load_private_key(d / f"SK_S_SM_DPauth_ECDSA_{s}.pem"),
            crypto.load_certificate(d / f"CERT_S_SM_DPpb_ECDSA_{s}.der"),
            crypto.load_private_key(d / f"SK_S_SM_DPpb_ECDSA_{s}.pem"),
        )
        sets[cs.ci_pkid] = cs
        trusted[cs.ci_pkid] = ci
    tls_cert = crypto.load_certificate(d / "CERT_S_SM_DP_TLS_NIST.der")
    # uvicorn/ssl want PEM files: write the DER certificate as PEM next to a temporary directory
    tmp = tempfile.TemporaryDirectory(prefix="smdpp-sgp26-")
    cert_pem = Path(tmp.name) / "dptls.pem"
    cert_pem.write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
    ca_pem = Path(tmp.name) / "ci.pem"
    ca_pem.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in trusted.values()))
    os.chmod(tmp.name, 0o700)
    return Credentials(
        sets=sets,
        trusted_cis=trusted,
        tls_cert_file=cert_pem,
        tls_key_file=d / "SK_S_SM_DP_TLS_NIST.pem",
        tls_host=_dns_name(tls_cert),
        ca_bundle=ca_pem,
        origin="sgp26",
        _tmp=[tmp],
    )


def load_lab(pki_dir: str | os.PathLike[str], curves: tuple[str, ...] = ("nist", "brainpool")) -> Credentials:
    """The SM-DP+ credentials of a lab PKI (``rsp pki init``): one set per requested curve the PKI has."""
    from rsp.pki import LabPki, LabPkiError

    try:
        pki = LabPki.load(pki_dir)
        wanted = [crypto.curve_name(c) for c in curves]
        present = [c for c in wanted if c in pki.curves]
        if not present:
            raise CredentialsError(
                f"lab PKI {pki_dir} has curves {', '.join(pki.curves)}; none of {', '.join(wanted)} requested"
            )
        sets: dict[bytes, CredentialSet] = {}
        for curve in present:
            cs = make_set(
                pki.ci_cert(curve),
                pki.dpauth_cert(curve),
                pki.dpauth_key(curve),
                pki.dppb_cert(curve),
                pki.dppb_key(curve),
            )
            sets[cs.ci_pkid] = cs
        trusted = {subject_key_id(c) or b"": c for c in pki.ci_certs()}
        tls = pki.dptls_cert()
        return Credentials(
            sets=sets,
            trusted_cis=trusted,
            tls_cert_file=pki.dptls_cert_path,
            tls_key_file=pki.dptls_key_path,
            tls_host=_dns_name(tls),
            ca_bundle=pki.ca_bundle_path,
            origin="lab",
        )
    except (LabPkiError, crypto.CryptoError) as exc:
        raise CredentialsError(f"lab PKI {pki_dir}: {exc}") from None
