"""``rsp pki device-cert``: TLS client certificates for IPAs (rsp.pki.device_tls)."""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rsp.pki import create_lab_pki, lab_eid
from rsp.pki_cli import main


def test_device_cert_cli(tmp_path, capsys):
    lab = create_lab_pki(tmp_path / "pki", curves=("nist",))
    eid = lab_eid(7)
    assert main(["device-cert", str(lab.root), "--eid", eid]) == 0
    cert_path = lab.root / "tls" / "devices" / f"{eid}.cert.pem"
    key_path = lab.root / "tls" / "devices" / f"{eid}.key.pem"
    ca_path = lab.root / "tls" / "device-ca.cert.pem"
    assert str(ca_path) in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)] == [eid]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(ca)
    assert key_path.stat().st_mode & 0o077 == 0
    # the key and certificate load into a TLS client context; a second device reuses the same CA
    ssl.create_default_context().load_cert_chain(str(cert_path), str(key_path))
    assert main(["device-cert", str(lab.root), "--eid", lab_eid(8), "--out", str(tmp_path / "out")]) == 0
    other = x509.load_pem_x509_certificate((tmp_path / "out" / f"{lab_eid(8)}.cert.pem").read_bytes())
    other.verify_directly_issued_by(ca)


def test_device_cert_cli_refuses_a_bad_eid_and_a_missing_directory(tmp_path, capsys):
    lab = create_lab_pki(tmp_path / "pki", curves=("nist",))
    assert main(["device-cert", str(lab.root), "--eid", "8999900000000000000000000000013"]) == 1
    assert "not a valid EID" in capsys.readouterr().err
    good = lab_eid(1)
    bad = good[:-2] + ("00" if good[-2:] != "00" else "01")  # wrong check digits
    assert main(["device-cert", str(lab.root), "--eid", bad]) == 1
    assert main(["device-cert", str(tmp_path / "nope"), "--eid", lab_eid(1)]) == 1
    assert "not a directory" in capsys.readouterr().err
