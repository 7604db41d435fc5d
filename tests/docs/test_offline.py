"""docs/asn1.md, docs/pki.md, docs/euicc.md: the commands that need no running service, run as shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.docs.doccmds import ROOT, DocCommand, doc_cmd, run

ASN1 = [
    doc_cmd(
        "asn1.md",
        "rsp decode --type GetEimPackageResponse BF4F8186BF518182303D800365494D5A108904404511842748480000000001162881"
        "0203EE8210F92B2FEE35632499E841CB754FDFD9F3A00EA30C5A0A989444999999990920F35F37408D5DE179B03A3FE13CD3A7E5A947"
        "FDDBB831ACC8F9AAFDC9777D314837CB0C805EE3029BF2445611C1580DC4470147DD6293ECA66987BC9A0A704CAB0031B223",
    ),
    doc_cmd("asn1.md", "rsp decode --auto BF4102A000"),
    doc_cmd("asn1.md", "rsp decode --auto BF5011300FBF5107A205800365696DBF2B02A000"),
    doc_cmd(
        "asn1.md",
        """rsp encode --type EuiccPackage '{"psmoList": [{"listProfileInfo": {}}, {"getRAT": {}}, """
        """{"configureImmediateEnable": {"immediateEnableFlag": null}}, """
        """{"setDefaultDpAddress": {"defaultDpAddress": "a.b"}}]}'""",
    ),
    doc_cmd("asn1.md", "rsp decode --type GetEimPackageResponse BF4F038F0101"),
    doc_cmd("asn1.md", 'rsp decode --type EuiccPackageResult BF5105A003300100; echo "exit $?"'),
    doc_cmd("asn1.md", "rsp types | head -4"),
]
ASN1_FAILS = doc_cmd("asn1.md", """rsp encode --type GetEimPackageRequest '{"eidValue": "00"}'""")


@pytest.mark.parametrize("cmd", ASN1, ids=lambda c: f"asn1.md:{c.line}")
def test_asn1_outputs_as_shown(cmd: DocCommand, tmp_path: Path) -> None:
    proc = run(cmd, tmp_path)
    out = proc.stderr + proc.stdout  # an error message comes before the shell's echo
    # every shown line is printed (JSON compared as data, the rest line by line)
    shown = "\n".join(cmd.output)
    if shown.lstrip().startswith("{"):
        assert json.loads(out) == json.loads(shown)
    else:
        assert out.splitlines() == list(cmd.output)


def test_asn1_encode_error_as_shown(tmp_path: Path) -> None:
    proc = run(ASN1_FAILS, tmp_path, ok=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ASN1_FAILS.output[0]


PKI_EID = [
    doc_cmd("pki.md", "rsp pki eid 890490321234512345123456789012"),
    doc_cmd("pki.md", "rsp pki eid --serial 7"),
]
PKI_OPENSSL = [
    doc_cmd("pki.md", "openssl verify -x509_strict -CAfile DIR/ca-bundle.pem DIR/nist/eum.cert.pem"),
    doc_cmd(
        "pki.md",
        "openssl verify -x509_strict -CAfile DIR/ca-bundle.pem -policy 2.23.146.1.2.1.4 -explicit_policy "
        "DIR/brainpool/dpauth.cert.pem",
    ),
    doc_cmd(
        "pki.md",
        "openssl verify -x509_strict -CAfile DIR/ca-bundle.pem -purpose sslserver -verify_hostname localhost "
        "-verify_ip 127.0.0.1 DIR/tls/dptls.cert.pem",
    ),
]
PKI_INIT = doc_cmd("pki.md", "rsp pki init DIR [--curve nist|brainpool|both] [--eid EID ...] [--host NAME ...]")
PKI_SHOW = doc_cmd("pki.md", "rsp pki show DIR [--json]")
PKI_VERIFY = doc_cmd(
    "pki.md", "rsp pki verify CERT --role ROLE --ca CI.pem [--untrusted EUM.pem] [--at 2027-01-01T00:00:00]"
)


def test_pki_eid_check_digits(tmp_path: Path) -> None:
    (a, b) = PKI_EID
    assert run(a, tmp_path).stdout.strip() == "89049032123451234512345678901235"
    assert run(b, tmp_path).stdout.strip() == "89999000000000000000000000000712"


def test_pki_init_show_verify_and_openssl(tmp_path: Path) -> None:
    eid = "89999000000000000000000000000130"
    concrete = {
        "DIR": "lab",
        "[--curve nist|brainpool|both]": "--curve both",
        "[--eid EID ...]": f"--eid {eid}",
        "[--host NAME ...]": "--host localhost",
        "[--json]": "--json",
        "CERT": f"lab/nist/euicc/{eid}.cert.pem",
        "--role ROLE": "--role euicc",
        "CI.pem": "lab/nist/ci.cert.pem",
        "[--untrusted EUM.pem]": "--untrusted lab/nist/eum.cert.pem",
        "[--at 2027-01-01T00:00:00]": "--at 2027-01-01T00:00:00",
        "<EID>": eid,
    }
    run(PKI_INIT, tmp_path, concrete)
    shown = run(PKI_SHOW, tmp_path, concrete).stdout
    assert eid in shown
    run(PKI_VERIFY, tmp_path, concrete)
    for cmd in PKI_OPENSSL:
        assert run(cmd, tmp_path, concrete).stdout.strip().endswith(": OK")


EUICC = [
    doc_cmd("euicc.md", "rsp pki init lab-pki --curve both --eid 89044045118427484800000000011628"),
    doc_cmd(
        "euicc.md",
        "euicc new --pki lab-pki --eid 89044045118427484800000000011628 --state card.json "
        "--trust-ci tests/data/sgp26/CertificateIssuer/CERT_CI_ECDSA_NIST.pem",
    ),
    doc_cmd("euicc.md", "euicc es10 --state card.json BF3E035C015A"),
    doc_cmd(
        "euicc.md", "euicc apdu --state card.json 0070000001 01A4040010A0000005591010FFFFFFFF8900000100 81C0000026"
    ),
    doc_cmd("euicc.md", "euicc es10 --state card.json BF650C800A736D64702E6C6F63616C"),
    doc_cmd("euicc.md", "euicc show --state card.json"),
]


def test_euicc_walkthrough(tmp_path: Path) -> None:
    subs = {"tests/data/": f"{ROOT}/tests/data/"}
    _pki, _new, get_eid, apdu, set_dp, show = (run(c, tmp_path, subs).stdout for c in EUICC)
    assert "BF3E125A1089044045118427484800000000011628" in get_eid.upper()
    words = apdu.upper().split()
    assert words[0] == "019000" and words[1] == "6126" and words[-1].endswith("9000"), apdu
    assert "A0000005591010FFFFFFFF8900000100" in apdu.upper()
    assert "BF6503800100" in set_dp.upper()
    assert "89044045118427484800000000011628" in show
