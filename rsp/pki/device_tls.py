"""Device TLS client certificates for ESipa over HTTPS (mutual TLS), for labs and tests.

Not an RSP (SGP.22) role: these certificates authenticate an IPA to its eIM on the transport, the way the eIM's
``[devices] client_ca`` expects (docs/esipa-bindings.md):

* **Device CA** ``tls/device-ca.cert.pem`` + ``tls/device-ca.key.pem`` in a lab PKI directory, made on first use:
  self-signed, NIST P-256, basicConstraints CA (pathlen 0), keyCertSign. Its own CA, not the CIs: an RSP
  certificate never authenticates a device on TLS, and a device certificate is never part of an RSP chain.
* **Device certificate** per EID: subject ``O=<org>, CN=IPA <EID>, serialNumber=<EID>`` (the EID where SGP.22
  puts it in an eUICC certificate), NIST P-256 key, extendedKeyUsage clientAuth, keyUsage digitalSignature,
  signed by the device CA, valid ``days`` (default 825). Written as ``<out>/<EID>.cert.pem`` and
  ``<out>/<EID>.key.pem`` (mode 0600); ``out`` defaults to ``tls/devices/`` of the lab PKI.

An operator with a real PKI issues the same shape from its own CA: only subject serialNumber = EID (exactly
one) and clientAuth (or no EKU) matter to the eIM.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rsp.errors import RspError
from rsp.pki.certs import is_valid_eid

ORG = "sgp32-stack lab"
CA_CERT = "tls/device-ca.cert.pem"
CA_KEY = "tls/device-ca.key.pem"


class DeviceTlsError(RspError):
    """A device CA or certificate cannot be made; says which step and why."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ski(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def make_device_ca(org: str = ORG) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, "Device CA")]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_device_certificate(
    eid: str,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    days: int = 825,
    org: str = ORG,
) -> x509.Certificate:
    """A TLS client certificate for the IPA of ``eid`` (module docstring)."""
    if not is_valid_eid(eid):
        raise DeviceTlsError(f"device certificate: {eid[:40]!r} is not a valid EID (32 digits, check digits)")
    if days < 1:
        raise DeviceTlsError("device certificate: days must be at least 1")
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, f"IPA {eid}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, eid),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def ensure_device_ca(pki_dir: str | os.PathLike[str]) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The device CA of a lab PKI directory, created on first use: ``(cert path, cert, key)``."""
    root = Path(pki_dir)
    cert_path, key_path = root / CA_CERT, root / CA_KEY
    try:
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise DeviceTlsError(f"{key_path}: not an EC private key")
            return cert_path, cert, key
        if not root.is_dir():
            raise DeviceTlsError(f"device CA: {root} is not a directory")
        cert, key = make_device_ca()
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert_path, cert, key
    except (OSError, ValueError) as exc:
        raise DeviceTlsError(f"device CA in {root}: {exc}") from None


def write_device_certificate(
    pki_dir: str | os.PathLike[str], eid: str, out: str | os.PathLike[str] | None = None, *, days: int = 825
) -> tuple[Path, Path, Path]:
    """Issue and write a device certificate for ``eid``: ``(cert path, key path, device CA cert path)``."""
    ca_path, ca_cert, ca_key = ensure_device_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_device_certificate(eid, key.public_key(), ca_cert, ca_key, days=days)
    out_dir = Path(out) if out is not None else Path(pki_dir) / "tls" / "devices"
    cert_path, key_path = out_dir / f"{eid}.cert.pem", out_dir / f"{eid}.key.pem"
    try:
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise DeviceTlsError(f"device certificate: cannot write to {out_dir}: {exc}") from None
    return cert_path, key_path, ca_path
