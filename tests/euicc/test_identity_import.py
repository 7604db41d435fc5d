"""``euicc new --euicc-cert/--euicc-key/--eum-cert/--ci``: a card with an identity from another PKI.

The outside PKI is built here with ``cryptography`` alone (not with ``rsp.pki.lab``), shaped like the GSMA SGP.26
EUM (nameConstraints ``O = ..., serialNumber = 89049032``, bc-java PR 564) and with the SGP.23 test EID; its key
is written as SEC1 ``EC PRIVATE KEY`` PEM and its certificates as DER, the formats SGP.26 ships. The imported
card then downloads a profile from the lab SM-DP+ set up to trust that outside CI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from euicc import cli
from euicc.card import SoftEuicc
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.credentials import load_lab
from smdpp.server import running_server

EID = "89049032123451234512345678901235"  # SGP.23 #EID1
NOW = dt.datetime.now(dt.UTC)


def _name(o: str, cn: str, serial: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _ku(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False)


def _cert(subject, issuer, key, issuer_key, issuer_cert, *, policy: str, ca: bool, extra=()) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(_ku(ca), critical=True)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]), True)
    )
    if issuer_cert is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False
        )
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer_cert is None else 0), True)
    for e, crit in extra:
        b = b.add_extension(e, critical=crit)
    return b.sign(issuer_key, hashes.SHA256())


def outside_pki(directory, *, eum_prefix: str = "89049032", eid: str = EID, curve: str = "nist"):
    """CI -> EUM -> eUICC written to ``directory``; returns the file paths."""
    ec_curve = ec.SECP256R1() if curve == "nist" else ec.BrainpoolP256R1()
    ci_key, eum_key, euicc_key = (ec.generate_private_key(ec_curve) for _ in range(3))
    ci_name = _name("Outside Test", "Outside CI")
    ci = _cert(ci_name, ci_name, ci_key.public_key(), ci_key, None, policy="2.23.146.1.2.1.0", ca=True)
    nc = x509.NameConstraints(
        permitted_subtrees=[
            x509.DirectoryName(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Outside EUM"),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, eum_prefix),
                    ]
                )
            )
        ],
        excluded_subtrees=None,
    )
    eum_name = _name("Outside EUM", "Outside EUM")
    eum = _cert(
        eum_name, ci_name, eum_key.public_key(), ci_key, ci, policy="2.23.146.1.2.1.2", ca=True, extra=[(nc, True)]
    )
    euicc = _cert(
        _name("Outside EUM", "eUICC", eid),
        eum_name,
        euicc_key.public_key(),
        eum_key,
        eum,
        policy="2.23.146.1.2.1.1",
        ca=False,
    )
    files = {
        "euicc": directory / "CERT_EUICC_ECDSA_NIST.der",
        "key": directory / "SK_EUICC_ECDSA_NIST.pem",
        "eum": directory / "CERT_EUM_ECDSA_NIST.der",
        "ci": directory / "CERT_CI_ECDSA_NIST.pem",
    }
    directory.mkdir(parents=True, exist_ok=True)
    files["euicc"].write_bytes(euicc.public_bytes(serialization.Encoding.DER))
    files["eum"].write_bytes(eum.public_bytes(serialization.Encoding.DER))
    files["ci"].write_bytes(ci.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        (b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" if curve == "nist" else b"")
        + euicc_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return files, ci


def _new(files, state, *extra: str) -> list[str]:
    return [
        "new",
        "--euicc-cert",
        str(files["euicc"]),
        "--euicc-key",
        str(files["key"]),
        "--eum-cert",
        str(files["eum"]),
        "--ci",
        str(files["ci"]),
        "--state",
        str(state),
        *extra,
    ]


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
def test_imported_card_downloads_from_an_smdpp_that_trusts_its_ci(lab_pki, tmp_path, capsys, curve):
    from rsp import asn1, tlv
    from tests.euicc.conftest import Es10Driver
    from tests.euicc.smdp_side import segments
    from tests.euicc.test_with_lab_smdpp import Es9, b64, unb64

    T = tlv.encode
    files, outside_ci = outside_pki(tmp_path / "outside", curve=curve)
    state = tmp_path / "card.json"
    # the card trusts the outside CI (its own chain) and the lab CI (to verify the lab SM-DP+'s DPauth/DPpb)
    assert cli.main(_new(files, state, "--eid", EID, "--trust-ci", str(lab_pki.ca_bundle_path))) == 0
    assert f"created eUICC {EID} ({curve})" in capsys.readouterr().out
    card = SoftEuicc.load(state)
    assert card.state.euicc_cert == files["euicc"].read_bytes()  # kept as received
    assert card.state.eum_cert == files["eum"].read_bytes()

    creds = load_lab(lab_pki.root, curves=(curve,))
    outside_id = outside_ci.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    creds = dataclasses.replace(creds, trusted_cis={**creds.trusted_cis, outside_id: outside_ci})
    config = SmdppConfig(data_dir=tmp_path / "data", pki_dir=lab_pki.root, port=0, curves=(curve,))
    with running_server(config, creds) as srv:
        es9 = Es9(srv)
        order = orders.create_order(srv.ctx.store, profile="ts48", smdp_address=srv.address)
        driver = Es10Driver(card, block_size=255)
        challenge = tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value
        init = es9(
            "initiateAuthentication",
            euiccChallenge=b64(challenge),
            smdpAddress=srv.address,
            euiccInfo1=b64(driver.call(bytes.fromhex("BF2000"))),
        )
        assert unb64(init["euiccCiPKIdToBeUsed"]) == T(0x04, outside_id)
        device = T(0xA1, T(0x80, bytes.fromhex("35290611")) + T(0xA1, b""))
        auth = driver.call(
            T(
                0xBF38,
                unb64(init["serverSigned1"])
                + unb64(init["serverSignature1"])
                + unb64(init["euiccCiPKIdToBeUsed"])
                + unb64(init["serverCertificate"])
                + T(0xA0, T(0x80, order.matching_id.encode()) + device),
            )
        )
        client = es9("authenticateClient", transactionId=init["transactionId"], authenticateServerResponse=b64(auth))
        prepare = driver.call(
            T(0xBF21, unb64(client["smdpSigned2"]) + unb64(client["smdpSignature2"]) + unb64(client["smdpCertificate"]))
        )
        bpp = es9("getBoundProfilePackage", transactionId=init["transactionId"], prepareDownloadResponse=b64(prepare))
        answer = b""
        for seg in segments(unb64(bpp["boundProfilePackage"])):
            answer = driver.call(seg)
            if answer:
                break
        result = asn1.decode("ProfileInstallationResult", answer)["profileInstallationResultData"]["finalResult"]
        assert result[0] == "successResult"
        assert es9("handleNotification", pendingNotification=b64(answer)) is None
        stored = srv.ctx.store.get(order.matching_id)
        assert stored.state == "installed" and stored.bound_eid == EID
        es9.http.close()


def _fails(argv, capsys) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_each_refusal_names_the_file_and_the_step(tmp_path, capsys):
    files, _ = outside_pki(tmp_path / "a")
    other, _ = outside_pki(tmp_path / "b")
    state = tmp_path / "card.json"

    err = _fails(_new({**files, "key": other["key"]}, state), capsys)
    assert f"eUICC key {other['key']} (for certificate {files['euicc']}): the private key does not belong" in err

    err = _fails(_new({**files, "ci": other["ci"]}, state), capsys)
    assert (
        f"chain {files['euicc']} <- {files['eum']} <- CI {other['ci']}: certificate chain refused (untrusted-ci)" in err
    )

    err = _fails(_new(files, state, "--eid", "89049032123451234512345678901237"), capsys)
    assert f"EID of {files['euicc']}: --eid 89049032123451234512345678901237 differs from the EID {EID}" in err

    err = _fails(_new({**files, "eum": tmp_path / "missing.der"}, state), capsys)
    assert f"EUM certificate {tmp_path / 'missing.der'}: cannot read" in err

    (tmp_path / "two.pem").write_bytes(files["ci"].read_bytes() * 2)
    err = _fails(_new({**files, "eum": tmp_path / "two.pem"}, state), capsys)
    assert "holds 2 certificates, expected exactly one" in err

    err = _fails(["new", "--euicc-cert", str(files["euicc"]), "--state", str(state)], capsys)
    assert "missing --euicc-key, --eum-cert, --ci" in err

    err = _fails(["new", "--pki", str(tmp_path), *(_new(files, state)[1:])], capsys)
    assert "exclude each other" in err
    assert not state.exists()


def test_an_eum_outside_its_range_cannot_be_imported(tmp_path, capsys):
    files, _ = outside_pki(tmp_path / "a", eum_prefix="89049033")
    err = _fails(_new(files, tmp_path / "card.json"), capsys)
    assert "certificate chain refused (eid-range)" in err
    assert (
        f"EID {EID} is not within the permitted range of the EUM certificate (nameConstraints permit 89049033)" in err
    )
    assert not (tmp_path / "card.json").exists()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    return outside_pki(tmp_path_factory.mktemp("good"))[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["euicc", "key", "eum", "ci"]), data=st.binary(max_size=300))
def test_malformed_files_give_an_error_naming_the_file(good_files, tmp_path_factory, capsys, which, data):
    d = tmp_path_factory.mktemp("bad")
    bad = d / "bad.bin"
    bad.write_bytes(data)
    state = d / "card.json"
    rc = cli.main(_new({**good_files, which: bad}, state))
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and err.startswith("euicc: create card: ")
    assert not state.exists()


def test_lab_card_outside_the_lab_eum_range_is_refused_with_a_hint(tmp_path, capsys):
    from rsp.pki import Role, create_lab_pki, issue_certificate

    pki = create_lab_pki(tmp_path / "pki")
    state = tmp_path / "card.json"
    err = _fails(["new", "--pki", str(pki.root), "--eid", EID, "--state", str(state)], capsys)
    assert (
        f"EID {EID} is not within the permitted range of the EUM certificate (nameConstraints permit 89999000)" in err
    )
    assert f"rsp pki init --eid {EID}" in err and "--eid-prefix 89049032" in err
    # a PKI from before EUMs carried a range: same key, EUM certificate without nameConstraints/permittedEins
    old = issue_certificate(Role.EUM, pki.eum_key().public_key(), pki.ci_cert(), pki.ci_key(), eid_prefixes=())
    pki.cert_path(Role.EUM).write_bytes(old.public_bytes(serialization.Encoding.PEM))
    err = _fails(["new", "--pki", str(pki.root), "--eid", pki.eid, "--state", str(state)], capsys)
    assert "carries no permitted EID range" in err and "re-create the PKI with `rsp pki init`" in err
    assert not state.exists()
