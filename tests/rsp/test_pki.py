"""rsp.pki: chain verification by RSP role on the real SGP.26 test certificates and on generated lab PKIs
(cross-checked with `openssl verify`), with a specific reason for every refusal."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from rsp import crypto, pki
from rsp.pki import ChainError, LabPki, Role, create_lab_pki, issue_certificate, verify_chain
from rsp.pki_cli import main as pki_main
from tests.conftest import DATA
from tests.services import missing_service

SGP26 = DATA / "sgp26"
CI_NIST = SGP26 / "CertificateIssuer" / "CERT_CI_ECDSA_NIST.der"
CI_BRP = SGP26 / "CertificateIssuer" / "CERT_CI_ECDSA_BRP.der"
SGP26_CIS = [CI_NIST, CI_BRP]
# the SGP.26 DPauth/DPpb certificates are valid 2020-04-01 .. 2030-03-30; DPtls/valid-to-2030 likewise
IN_2027 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
OPENSSL = shutil.which("openssl")


# --- SGP.26: real certificates ----------------------------------------------------------------------------------


def test_sgp26_ci_key_ids_match_readme():
    assert pki.subject_key_id(CI_NIST).hex().upper() == "F54172BDF98A95D65CBEB88A38A1C11D800A85C3"
    assert pki.subject_key_id(CI_BRP).hex().upper() == "C0BC70BA36929D43B467FF57570530E57AB8FCD8"
    assert pki.role_of(crypto.load_certificate(CI_NIST)) is Role.CI


@pytest.mark.parametrize(
    ("path", "role", "ci"),
    [
        ("DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der", "dpauth", CI_NIST),
        ("DPauth/CERT_S_SM_DPauth_ECDSA_BRP.der", "dpauth", CI_BRP),
        ("DPauth/CERT_S_SM_DP2auth_ECDSA_NIST.der", "dpauth", CI_NIST),
        ("DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der", "dppb", CI_NIST),
        ("DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der", "dppb", CI_BRP),
        ("DPpb/CERT_S_SM_DP2pb_ECDSA_BRP.der", "dppb", CI_BRP),
        ("DPtls/valid-to-2030/CERT_S_SM_DP_TLS_NIST.der", "dptls", CI_NIST),
        ("DPtls/valid-to-2030/CERT_S_SM_DP_TLS_BRP.der", "dptls", CI_BRP),
    ],
)
def test_sgp26_certificates_verify_in_their_role(path, role, ci):
    chain = verify_chain(SGP26 / path, [], SGP26_CIS, role, at=IN_2027)
    assert chain.role is Role.parse(role)
    assert chain.ci_key_id == pki.subject_key_id(ci)
    assert [c.subject for c in chain.path] == [
        crypto.load_certificate(SGP26 / path).subject,
        crypto.load_certificate(ci).subject,
    ]
    # the key in the certificate is the published public key (PK_*.pem next to it)
    pk_file = SGP26 / path.replace("CERT_", "PK_").replace(".der", ".pem")
    if pk_file.exists() and "DPtls" not in path:
        assert crypto.public_point(chain.public_key) == crypto.public_point(crypto.load_public_key(pk_file))


@pytest.mark.parametrize(
    ("path", "wrong_role"),
    [
        ("DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der", "dppb"),
        ("DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der", "dpauth"),
        ("DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der", "dptls"),
        ("DPtls/valid-to-2030/CERT_S_SM_DP_TLS_NIST.der", "dpauth"),
        ("DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der", "euicc"),
        ("DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der", "eim"),
    ],
)
def test_sgp26_wrong_role_rejected(path, wrong_role):
    with pytest.raises(ChainError, match="is not a") as exc:
        verify_chain(SGP26 / path, [], SGP26_CIS, wrong_role, at=IN_2027)
    assert exc.value.reason == "wrong-role"
    assert Role.parse(wrong_role).policy_oid in str(exc.value)


def test_sgp26_tls_validity_periods():
    old = SGP26 / "DPtls" / "CERT_S_SM_DP_TLS_NIST.der"  # valid 2025-06-30 .. 2026-08-02
    verify_chain(old, [], SGP26_CIS, "dptls", at=dt.datetime(2026, 1, 1))
    with pytest.raises(ChainError, match="expired on 2026-08-02 13:14:38 UTC") as exc:
        verify_chain(old, [], SGP26_CIS, "dptls", at=IN_2027)
    assert exc.value.reason == "expired"
    with pytest.raises(ChainError, match=r"not yet valid \(valid from 2025-06-30") as exc:
        verify_chain(old, [], SGP26_CIS, "dptls", at=dt.datetime(2025, 1, 1))
    assert exc.value.reason == "not-yet-valid"
    with pytest.raises(ChainError, match="expired on 2030-03-30"):
        verify_chain(
            SGP26 / "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der", [], SGP26_CIS, "dpauth", at=dt.datetime(2031, 1, 1)
        )


def test_sgp26_selected_ci_and_untrusted_ci():
    leaf = SGP26 / "DPauth/CERT_S_SM_DPauth_ECDSA_BRP.der"
    with pytest.raises(ChainError, match="C0BC70BA36929D43B467FF57570530E57AB8FCD8") as exc:
        verify_chain(leaf, [], [CI_NIST], "dpauth", at=IN_2027)
    assert exc.value.reason == "untrusted-ci"
    assert exc.value.key_id.hex().upper() == "C0BC70BA36929D43B467FF57570530E57AB8FCD8"
    with pytest.raises(ChainError) as exc:
        verify_chain(leaf, [], SGP26_CIS, "dpauth", at=IN_2027, ci_key_id=pki.subject_key_id(CI_NIST))
    assert exc.value.reason == "wrong-ci"
    verify_chain(leaf, [], SGP26_CIS, "dpauth", at=IN_2027, ci_key_id=pki.subject_key_id(CI_BRP))


def test_sgp26_dpauth_signature_of_published_key_verifies():
    """The SGP.26 DPauth private key signs; the certificate's key verifies (r||s through rsp.crypto)."""
    sk = crypto.load_private_key(SGP26 / "DPauth" / "SK_S_SM_DPauth_ECDSA_BRP.pem")
    cert = crypto.load_certificate(SGP26 / "DPauth" / "CERT_S_SM_DPauth_ECDSA_BRP.der")
    crypto.verify(cert, b"serverSigned1", crypto.sign(sk, b"serverSigned1"))
    assert crypto.curve_name(cert) == "brainpool"


# --- lab PKI ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LabPki:
    eids = (pki.lab_eid(1), "89049032123451234512345678901235")
    return create_lab_pki(
        tmp_path_factory.mktemp("labpki"),
        curves=("nist", "brainpool"),
        eids=eids,
        hosts=("localhost", "smdp.lab.example"),
    )


def test_lab_layout_and_manifest(lab):
    root = lab.root
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["curves"] == ["nist", "brainpool"]
    assert manifest["eids"] == [pki.lab_eid(1), "89049032123451234512345678901235"]
    for label, entry in manifest["files"].items():
        cert_pem = (root / entry["cert"]).read_bytes()
        cert_der = (root / entry["cert_der"]).read_bytes()
        assert x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER) == cert_der, label
        assert stat.S_IMODE((root / entry["key"]).stat().st_mode) == 0o600, label
        key = crypto.load_private_key(root / entry["key"])
        assert crypto.public_point(key) == crypto.public_point(x509.load_der_x509_certificate(cert_der)), label
    bundle = pki.load_certificates(root / "ca-bundle.pem")
    assert [pki.subject_key_id(c) for c in bundle] == [lab.ci_key_id("nist"), lab.ci_key_id("brainpool")]
    assert manifest["ci_key_ids"]["nist"] == lab.ci_key_id("nist").hex().upper()
    assert pki.is_valid_eid(pki.DEFAULT_EID)


def test_lab_certificate_contents(lab):
    for curve in lab.curves:
        ci = lab.ci_cert(curve)
        assert ci.issuer == ci.subject and crypto.curve_name(ci) == curve
        assert pki.authority_key_id(lab.eum_cert(curve)) == pki.subject_key_id(ci) == lab.ci_key_id(curve)
        for eid in lab.eids:
            cert = lab.euicc_cert(eid, curve)
            assert pki.eid_of(cert) == eid
            assert pki.authority_key_id(cert) == pki.subject_key_id(lab.eum_cert(curve))
            assert pki.role_of(cert) is Role.EUICC
        assert pki.role_of(lab.eim_cert(curve)) is Role.EIM
        assert pki.LAB_EIM_POLICY in pki.policies_of(lab.eim_cert(curve))
    tls = lab.dptls_cert()
    assert crypto.curve_name(tls) == "nist"
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "smdp.lab.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert pki.role_of(lab.eimtls_cert()) is Role.EIM_TLS
    dpauth_san = lab.dpauth_cert().extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [o.dotted_string for o in dpauth_san.get_values_for_type(x509.RegisteredID)] == [lab.smdp_oid]


def test_lab_chains_verify_with_rsp(lab):
    seen = set()
    for _label, role, curve, eid in lab.entries():
        chain = lab.verify(role, curve or "nist", eid)
        assert chain.role is role
        assert chain.ci_key_id == lab.ci_key_id(curve or lab.curves[0])
        seen.add(role)
    assert seen == {Role.CI, Role.EUM, Role.EUICC, Role.DP_AUTH, Role.DP_PB, Role.DP_TLS, Role.EIM, Role.EIM_TLS}
    # keys sign and the certificates verify (what the SM-DP+ / eUICC / eIM will do)
    for curve in lab.curves:
        for role in (Role.EUICC, Role.DP_AUTH, Role.DP_PB, Role.EIM):
            sig = crypto.sign(lab.key(role, curve), b"data")
            crypto.verify(lab.cert(role, curve), b"data", sig)


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "verify", *args], capture_output=True, text=True, check=False)


def test_lab_chains_verify_with_openssl(lab):
    if OPENSSL is None:
        missing_service("the openssl command", "apt-get install openssl")
    root = lab.root
    count = 0
    for label, role, curve, eid in lab.entries():
        cert = str(lab.cert_path(role, curve or "nist", eid))
        args = ["-x509_strict", "-CAfile", str(root / "ca-bundle.pem")]
        if role is Role.EUICC:
            args += ["-untrusted", str(lab.cert_path(Role.EUM, curve))]
        elif role in (Role.DP_TLS, Role.EIM_TLS):
            args += ["-purpose", "sslserver", "-verify_hostname", "smdp.lab.example", "-verify_ip", "127.0.0.1"]
        elif role in (Role.DP_AUTH, Role.DP_PB, Role.EIM, Role.EUM):
            # certificates directly under the CI: also let OpenSSL's RFC 5280 policy processing check the role
            args += ["-policy", role.policy_oid, "-explicit_policy"]
        res = _openssl(*args, cert)
        if role is Role.EUICC:
            # The EUM's critical nameConstraints permit directoryName {O, serialNumber=<8-digit prefix>}; SGP.22
            # §4.5.2.2 matches the eUICC serialNumber with "starts with", RFC 5280 (OpenSSL) with equality, so
            # OpenSSL refuses every SGP.22-shaped eUICC chain - the GSMA SGP.26 EUM does the same (bc-java #564).
            assert res.returncode != 0 and "permitted subtree violation" in res.stdout + res.stderr, (label, res)
        else:
            assert res.returncode == 0 and res.stdout.strip().endswith(": OK"), (label, res.stdout, res.stderr)
        count += 1
    assert count == 2 * (1 + 1 + 2 + 3) + 2
    # and openssl refuses what it should: the eUICC without its EUM, a DPauth under the other curve's CI only,
    # a DPauth checked against the DPpb policy
    res = _openssl("-CAfile", str(lab.cert_path(Role.CI, "nist")), str(lab.cert_path(Role.EUICC, "nist")))
    assert res.returncode != 0
    res = _openssl("-CAfile", str(lab.cert_path(Role.CI, "brainpool")), str(lab.cert_path(Role.DP_AUTH, "nist")))
    assert res.returncode != 0
    res = _openssl(
        "-CAfile",
        str(root / "ca-bundle.pem"),
        "-policy",
        Role.DP_PB.policy_oid,
        "-explicit_policy",
        str(lab.cert_path(Role.DP_AUTH, "nist")),
    )
    assert res.returncode != 0


def test_lab_tls_certificate_works_with_python_ssl(lab):
    """A real TLS handshake on loopback: the DPtls certificate is accepted by a client trusting ca-bundle.pem,
    for the host name and for 127.0.0.1."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(lab.dptls_cert_path, lab.dptls_key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve(n: int) -> None:
        for _ in range(n):
            conn, _addr = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(lab.ca_bundle_path))
        for name in ("smdp.lab.example", "127.0.0.1"):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=name) as tls,
            ):
                assert tls.recv(2) == b"ok"
                assert tls.getpeercert()["subject"]
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not errors


def test_cert_from_another_ci_rejected(lab, tmp_path):
    other = create_lab_pki(tmp_path / "other", curves=("nist",))
    with pytest.raises(ChainError) as exc:
        verify_chain(other.euicc_cert(), [other.eum_cert()], lab.ci_certs(), "euicc")
    assert exc.value.reason == "untrusted-ci"
    assert other.ci_key_id().hex().upper() in str(exc.value)
    assert "not a trusted CI" in str(exc.value)
    # a certificate whose AKI names our CI but that another CI key signed: bad signature
    forged = issue_certificate(Role.DP_AUTH, crypto.generate_key().public_key(), lab.ci_cert(), other.ci_key())
    with pytest.raises(ChainError, match="does not verify with the key of") as exc:
        verify_chain(forged, [], lab.ci_certs(), "dpauth")
    assert exc.value.reason == "bad-signature"
    # the other CI itself, offered as leaf: an untrusted root
    with pytest.raises(ChainError, match="not a trusted CI") as exc:
        verify_chain(other.ci_cert(), [], lab.ci_certs(), "ci")
    assert exc.value.reason == "untrusted-ci"


def test_expired_and_not_yet_valid_rejected(lab):
    now = dt.datetime.now(dt.UTC)
    key = crypto.generate_key()
    expired = issue_certificate(
        Role.EUICC,
        key.public_key(),
        lab.eum_cert(),
        lab.eum_key(),
        eid=lab.eid,
        not_before=now - dt.timedelta(minutes=50),
        not_after=now - dt.timedelta(minutes=5),
    )
    with pytest.raises(ChainError, match=r"eUICC '.*' expired on \d{4}-\d\d-\d\d") as exc:
        verify_chain(expired, [lab.eum_cert()], lab.ci_certs(), "euicc")
    assert exc.value.reason == "expired"
    assert (now - dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M") in str(exc.value)
    # valid at a time in its period (the lab CI and EUM are valid from one hour before their creation)
    verify_chain(expired, [lab.eum_cert()], lab.ci_certs(), "euicc", at=now - dt.timedelta(minutes=20))
    future = issue_certificate(
        Role.DP_PB, key.public_key(), lab.ci_cert(), lab.ci_key(), not_before=now + dt.timedelta(days=2)
    )
    with pytest.raises(ChainError, match="not yet valid") as exc:
        verify_chain(future, [], lab.ci_certs(), "dppb")
    assert exc.value.reason == "not-yet-valid"
    # an expired EUM makes its (valid) eUICC's chain fail, naming the EUM
    old_eum = issue_certificate(
        Role.EUM,
        lab.eum_key().public_key(),
        lab.ci_cert(),
        lab.ci_key(),
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    with pytest.raises(ChainError, match=r"EUM '.*' expired on"):
        verify_chain(lab.euicc_cert(), [old_eum], lab.ci_certs(), "euicc")


def test_wrong_role_rejected(lab):
    with pytest.raises(ChainError, match="is not a SM-DP\\+ authentication") as exc:
        verify_chain(lab.euicc_cert(), [lab.eum_cert()], lab.ci_certs(), "dpauth")
    assert exc.value.reason == "wrong-role"
    with pytest.raises(ChainError, match="not a eIM package signing"):
        verify_chain(lab.dpauth_cert(), [], lab.ci_certs(), "eim")
    # an eIM key certified with the DPauth policy is not an eIM certificate
    mislabelled = issue_certificate(
        Role.EIM, lab.eim_key().public_key(), lab.ci_cert(), lab.ci_key(), policy_oid=Role.DP_AUTH.policy_oid
    )
    with pytest.raises(ChainError) as exc:
        verify_chain(mislabelled, [], lab.ci_certs(), "eim")
    assert exc.value.reason == "wrong-role" and pki.LAB_EIM_POLICY in str(exc.value)
    # the TLS certificate is not a DPauth certificate, and the DPauth one is no TLS server certificate
    with pytest.raises(ChainError, match="wrong-role"):
        verify_chain(lab.dptls_cert(), [], lab.ci_certs(), "dpauth")
    with pytest.raises(ChainError, match="wrong-role"):
        verify_chain(lab.dpauth_cert(), [], lab.ci_certs(), "dptls")
    # an eUICC certificate issued directly by the CI (no EUM)
    direct = issue_certificate(Role.EUICC, crypto.generate_key().public_key(), lab.ci_cert(), lab.ci_key(), eid=lab.eid)
    with pytest.raises(ChainError, match="not issued by an EUM"):
        verify_chain(direct, [], lab.ci_certs(), "euicc")


def test_non_ca_issuer_and_missing_intermediate(lab):
    fake = issue_certificate(
        Role.EUICC, crypto.generate_key().public_key(), lab.dpauth_cert(), lab.dpauth_key(), eid=lab.eid
    )
    with pytest.raises(ChainError, match="is not a CA") as exc:
        verify_chain(fake, [lab.dpauth_cert()], lab.ci_certs(), "euicc")
    assert exc.value.reason == "not-a-ca"
    with pytest.raises(ChainError, match=r"not a trusted CI .* nor a given intermediate") as exc:
        verify_chain(lab.euicc_cert(), [], lab.ci_certs(), "euicc")
    assert exc.value.key_id == pki.subject_key_id(lab.eum_cert())
    # an EUM below an EUM breaks pathLenConstraint 0
    sub_key = crypto.generate_key()
    sub_eum = issue_certificate(Role.EUM, sub_key.public_key(), lab.eum_cert(), lab.eum_key())
    leaf = issue_certificate(Role.EUICC, crypto.generate_key().public_key(), sub_eum, sub_key, eid=lab.eid)
    with pytest.raises(ChainError, match="allows 0 CA") as exc:
        verify_chain(leaf, [sub_eum, lab.eum_cert()], lab.ci_certs(), "euicc")
    assert exc.value.reason == "path-length"


def test_tampered_certificate_signature_rejected(lab):
    original = lab.cert_path(Role.DP_PB, der=True).read_bytes()
    checked = 0
    for pos in range(3, 12):  # bytes inside the ECDSA signature value (DER INTEGER s) at the end
        der = bytearray(original)
        der[-pos] ^= 0x01
        try:
            tampered = x509.load_der_x509_certificate(bytes(der))
        except ValueError:
            continue  # this flip broke the DER framing; another position still tests the signature check
        with pytest.raises(ChainError) as exc:
            verify_chain(tampered, [], lab.ci_certs(), "dppb")
        assert exc.value.reason == "bad-signature"
        checked += 1
    assert checked >= 1


def test_curve_mix_uses_key_ids(lab):
    """With both CIs trusted, each certificate finds its own CI by key id."""
    assert lab.verify("dpauth", "brainpool").ci_key_id == lab.ci_key_id("brainpool")
    assert lab.verify("euicc", "brainpool", lab.eids[1]).ci_key_id == lab.ci_key_id("brainpool")
    with pytest.raises(ChainError, match="untrusted-ci"):
        verify_chain(lab.euicc_cert(curve="brainpool"), [lab.eum_cert("brainpool")], [lab.ci_cert("nist")], "euicc")


def test_eid_helpers():
    assert pki.is_valid_eid("89049032123451234512345678901235")
    assert pki.is_valid_eid("89044045118427484800000000011628")
    assert not pki.is_valid_eid("89049032123451234512345678901234")
    assert pki.eid_check_digits("890490321234512345123456789012") == "35"
    assert pki.lab_eid(7).startswith("89999") and pki.is_valid_eid(pki.lab_eid(7))
    with pytest.raises(ValueError):
        pki.eid_check_digits("123")


def test_eid_of_requires_serial_number(lab):
    with pytest.raises(ValueError, match="no serialNumber"):
        pki.eid_of(lab.dpauth_cert())


def test_create_lab_pki_argument_errors(tmp_path):
    with pytest.raises(pki.LabPkiError, match="check digits should be 35"):
        create_lab_pki(tmp_path, eids=("89049032123451234512345678901234",))
    with pytest.raises(pki.LabPkiError, match="unknown curve"):
        create_lab_pki(tmp_path, curves=("secp384r1",))
    with pytest.raises(pki.LabPkiError, match="invalid host"):
        create_lab_pki(tmp_path, hosts=("bad host",))
    with pytest.raises(pki.LabPkiError, match=r"no manifest\.json"):
        LabPki.load(tmp_path / "nothing")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(pki.LabPkiError, match="cannot read"):
        LabPki.load(tmp_path)


def test_lab_accessor_errors(lab):
    with pytest.raises(pki.LabPkiError, match="no nist/euicc/"):
        lab.euicc_cert("89999000000000000000000000009999")
    single = lab.root.parent / "single"
    p = create_lab_pki(single, curves=("brainpool",))
    assert p.eids == (pki.DEFAULT_EID,)
    with pytest.raises(pki.LabPkiError, match="has no nist curve"):
        p.ci_cert("nist")
    # TLS certificates exist with a NIST key, signed by the brainpool CI
    assert crypto.curve_name(p.dptls_cert()) == "nist"
    assert p.verify("dptls").ci_key_id == p.ci_key_id("brainpool")


@given(blob=st.binary(max_size=600))
def test_garbage_certificates_raise_only_chain_error(blob):
    try:
        verify_chain(blob, [], [CI_NIST], "dpauth", at=IN_2027)
    except ChainError as exc:
        assert exc.reason in pki.REASONS


@given(pos=st.integers(min_value=0, max_value=10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_real_certificate_is_refused(pos, bit):
    """(Checked exhaustively once for every bit of this certificate: all 4576 flips are refused.)"""
    der = bytearray((SGP26 / "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der").read_bytes())
    pos %= len(der)
    der[pos] ^= 1 << bit
    with pytest.raises(ChainError) as exc:
        verify_chain(bytes(der), [], SGP26_CIS, "dpauth", at=IN_2027)
    assert exc.value.reason in ("malformed", "bad-signature", "untrusted-ci")


# --- command line -----------------------------------------------------------------------------------------------


def test_cli_init_show_verify(tmp_path, capsys):
    d = tmp_path / "pki"
    assert (
        pki_main(
            [
                "init",
                str(d),
                "--curve",
                "both",
                "--eid",
                "89049032123451234512345678901235",
                "--host",
                "localhost",
                "eim.lab",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    p = LabPki.load(d)
    assert p.ci_key_id("brainpool").hex().upper() in out
    assert p.eids == ("89049032123451234512345678901235",) and p.hosts == ("localhost", "eim.lab")
    assert pki_main(["show", str(d), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["certificates"]) == 2 * 6 + 2
    assert all(c["status"].startswith("ok") for c in shown["certificates"])
    assert pki_main(["show", str(d)]) == 0
    assert "89049032123451234512345678901235" in capsys.readouterr().out
    euicc = str(p.cert_path("euicc", "nist"))
    assert (
        pki_main(
            [
                "verify",
                euicc,
                "--role",
                "euicc",
                "--ca",
                str(p.ca_bundle_path),
                "--untrusted",
                str(p.cert_path("eum", "nist")),
            ]
        )
        == 0
    )
    assert "EID 89049032123451234512345678901235" in capsys.readouterr().out
    assert (
        pki_main(
            [
                "verify",
                euicc,
                "--role",
                "dpauth",
                "--ca",
                str(p.ca_bundle_path),
                "--untrusted",
                str(p.cert_path("eum", "nist")),
            ]
        )
        == 1
    )
    assert "wrong-role" in capsys.readouterr().err
    assert pki_main(["verify", str(p.cert_path("dpauth", "nist")), "--role", "dpauth", "--ca", str(CI_NIST)]) == 1
    assert "untrusted-ci" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert pki_main(["init", str(tmp_path), "--eid", "123"]) == 1
    assert "rsp pki init: invalid EID" in capsys.readouterr().err
    assert pki_main(["show", str(tmp_path / "none")]) == 1
    assert "rsp pki show:" in capsys.readouterr().err
    assert pki_main(["init", str(tmp_path), "--curve", "p384"]) == 2
    assert pki_main([]) == 2
    assert pki_main(["eid", "890490321234512345123456789012"]) == 0
    assert capsys.readouterr().out.strip() == "89049032123451234512345678901235"
    assert pki_main(["eid", "89049032123451234512345678901234"]) == 1
    assert pki_main(["verify", str(tmp_path / "missing.pem"), "--role", "eim", "--ca", str(CI_NIST)]) == 1
    assert "loading certificates" in capsys.readouterr().err
    # a damaged lab PKI (deleted certificate) is reported by show
    d = tmp_path / "p"
    create_lab_pki(d)
    (d / "nist" / "dppb.cert.pem").unlink()
    assert pki_main(["show", str(d)]) == 1


def test_generation_writes_fresh_keys_each_time(tmp_path):
    a = create_lab_pki(tmp_path / "a")
    b = create_lab_pki(tmp_path / "b")
    assert a.ci_key_id() != b.ci_key_id()
    assert Path(a.root / "tls" / "dptls.cert.pem").exists()
