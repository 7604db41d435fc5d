"""The `rsp` command: in-process (fast, many cases) and as the installed console script (real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rsp import asn1
from rsp.cli import main

ROOT = Path(__file__).resolve().parents[2]
RSP = ROOT / ".venv" / "bin" / "rsp"


def run_inprocess(capsys, *argv: str, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = [str(RSP)] if RSP.exists() else [sys.executable, "-m", "rsp"]
    return subprocess.run([*exe, *argv], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT)


# ---------------------------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------------------------
def test_decode_real_package_json_shape(capsys, vectors):
    hexdata = vectors["real_get_eim_package_response"]["hex"]
    code, out, err = run_inprocess(capsys, "decode", "--type", "GetEimPackageResponse", hexdata)
    assert code == 0, err
    doc = json.loads(out)
    signed = doc["euiccPackageRequest"]["euiccPackageSigned"]
    assert signed["eimId"] == "eIM"
    assert signed["counterValue"] == 1006
    assert signed["eidValue"] == "89044045118427484800000000011628"
    assert signed["euiccPackage"] == {"psmoList": [{"enable": {"iccid": "989444999999990920F3"}}]}
    assert len(doc["euiccPackageRequest"]["eimSignature"]) == 128


def test_decode_then_encode_is_identity(capsys, vectors):
    for hexdata, type_name in [
        (vectors["real_get_eim_package_response"]["hex"], "GetEimPackageResponse"),
        (vectors["real_euicc_package_result"]["hex"], "EuiccPackageResult"),
        (vectors["esipa_encodings"]["euicc_memory_reset_delete_operational"], "SGP32-EuiccMemoryResetRequest"),
        (vectors["esipa_encodings"]["ipa_capabilities_indirect_https_retrieve"], "IpaCapabilities"),
    ]:
        code, out, _ = run_inprocess(capsys, "decode", "--type", type_name, hexdata)
        assert code == 0
        code, out2, err = run_inprocess(capsys, "encode", "--type", type_name, out)
        assert code == 0, err
        assert out2.strip() == hexdata.upper()


def test_bit_string_json_shape(capsys):
    code, out, _ = run_inprocess(capsys, "decode", "--type", "SGP32-EuiccMemoryResetRequest", "BF640482020780")
    assert code == 0
    assert json.loads(out) == {"resetOptions": {"hex": "80", "bits": 1}}


def test_decode_reads_stdin_and_tolerates_spaces(capsys, monkeypatch):
    code, out, _ = run_inprocess(
        capsys, "decode", "--type", "GetEimPackageResponse", "-", stdin="BF4F 03\n02 01 01\n", monkeypatch=monkeypatch
    )
    assert code == 0
    assert json.loads(out) == {"eimPackageError": 1}


@pytest.mark.parametrize(
    ("hexdata", "expected_type", "expected_value"),
    [
        ("BF4F03020101", "GetEimPackageResponse", {"eimPackageError": 1}),
        ("BF3903810101", "InitiateAuthenticationResponseEsipa", {"initiateAuthenticationErrorEsipa": 1}),
        ("BF4102A000", "CancelSessionResponseEsipa", {"cancelSessionOk": {}}),
        ("BF5500", "GetEimConfigurationDataRequest", {}),
        ("BF5A03800100", "ImmediateEnableRequest", {"refreshFlag": False}),
        ("BF5A03800105", "ImmediateEnableResponse", {"immediateEnableResult": 5}),
        ("BF5006BF5303800114", "ProvideEimPackageResultResponse", {"eimAcknowledgements": [20]}),
    ],
)
def test_decode_auto(capsys, hexdata, expected_type, expected_value):
    code, out, err = run_inprocess(capsys, "decode", "--auto", hexdata)
    assert code == 0, err
    doc = json.loads(out)
    assert doc == {"type": expected_type, "value": expected_value}
    assert doc["type"] in asn1.guess_types(bytes.fromhex(hexdata))


def test_decode_auto_prefers_sgp32_form(capsys, vectors):
    """BF51 is both EuiccPackageRequest and EuiccPackageResult; the real result must come out as the result."""
    code, out, _ = run_inprocess(capsys, "decode", "--auto", vectors["real_euicc_package_result"]["hex"])
    assert code == 0
    assert json.loads(out)["type"] == "EuiccPackageResult"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["decode", "--type", "GetEimPackageResponse", "BF4F030201"], "rsp decode: GetEimPackageResponse at byte 3:"),
        (["decode", "--type", "GetEimPackageResponse", "BF4F0302010100"], "trailing byte"),
        (["decode", "--type", "GetEimPackageResponse", "zz"], "rsp decode: input is not hex"),
        (["decode", "--type", "NoSuchType", "3000"], "rsp decode: NoSuchType: unknown type name"),
        (["decode", "--auto", "0102"], "rsp decode --auto: no top-level"),
        (["decode", "--auto", "BF4F0301"], "rsp decode --auto: none of GetEimPackageRequest"),
        (["encode", "--type", "GetEimPackageRequest", "{"], "rsp encode: input is not JSON"),
        (["encode", "--type", "GetEimPackageRequest", '{"eidValue": "00"}'], "eidValue: Expected between 16"),
        (["encode", "--type", "GetEimPackageRequest", '{"eid": "00"}'], "unknown member(s) eid"),
        (["encode", "--type", "GetEimPackageResponse", '{"nope": 1}'], "unknown alternative 'nope'"),
        (["encode", "--type", "GetEimPackageResponse", '{"eimPackageError": "1"}'], "expected an integer"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_inprocess(capsys, *argv)
    assert code == 2
    assert out == ""
    assert needle in err
    assert err.count("\n") == 1


def test_encode_lenient_skips_constraints(capsys):
    code, out, _ = run_inprocess(capsys, "encode", "--lenient", "--type", "GetEimPackageRequest", '{"eidValue": "00"}')
    assert code == 0
    assert out.strip() == "BF4F035A0100"


def test_types_lists_every_top_level_type_with_tags(capsys):
    code, out, _ = run_inprocess(capsys, "types")
    assert code == 0
    listed = {line.split("\t")[0] for line in out.splitlines() if line and not line.startswith("#")}
    assert listed == set(asn1.TOP_LEVEL_TYPES)
    assert "GetEimPackageResponse\tBF4F" in out
    code, out, _ = run_inprocess(capsys, "types", "--all")
    assert "SGP32-EUICCInfo2" in out.split()
    assert not any(name.endswith("-Body") for name in out.split())


# ---------------------------------------------------------------------------------------------------------------
# the installed console script, as a real process
# ---------------------------------------------------------------------------------------------------------------
def test_script_decode_and_encode_roundtrip(vectors):
    hexdata = vectors["real_get_eim_package_response"]["hex"]
    dec = run_script("decode", "--type", "GetEimPackageResponse", hexdata)
    assert dec.returncode == 0, dec.stderr
    enc = run_script("encode", "--type", "GetEimPackageResponse", "-", stdin=dec.stdout)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout.strip() == hexdata.upper()


def test_script_decode_auto_from_stdin(vectors):
    proc = run_script("decode", "--auto", "-", stdin=vectors["esipa_encodings"]["cancel_session_ok"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"type": "CancelSessionResponseEsipa", "value": {"cancelSessionOk": {}}}


def test_script_error_exit_code_and_message():
    proc = run_script("decode", "--type", "EuiccPackageResult", "BF5105A003300100")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("rsp decode: EuiccPackageResult at byte ")
    assert proc.stderr.count("\n") == 1


def test_script_usage_error_is_exit_2():
    proc = run_script("decode")
    assert proc.returncode == 2
    assert "usage: rsp decode" in proc.stderr


def test_script_pki_is_dispatched():
    proc = run_script("pki", "--help")
    assert "rsp decode" not in proc.stdout
    # Either the PKI commands answer, or a clear one-line message says they are missing.
    if proc.returncode == 0:
        assert "init" in proc.stdout
    else:
        assert proc.returncode == 2
        assert proc.stderr.startswith("rsp pki:")


# ---------------------------------------------------------------------------------------------------------------
# SGP.32 v1.0 (tests/data/sgp32_v10_captures.json: onomondo-ipa, see PROVENANCE.md)
# ---------------------------------------------------------------------------------------------------------------
V10 = json.loads((ROOT / "tests" / "data" / "sgp32_v10_captures.json").read_text())["messages"]
V10_RESULTS = [m for m in V10 if m["name"].startswith("ProvideEimPackageResult ePRAndNotifications")]


@pytest.mark.parametrize("message", V10_RESULTS, ids=lambda m: m["name"].split()[-1])
def test_decode_auto_reads_a_v10_provide_eim_package_result_as_one(capsys, message):
    """BF50 is both ProvideEimPackageResult and its response: a v1.0 ePRAndNotifications (30 { BF51, BF2B }) used to
    be guessed as ProvideEimPackageResultResponse {"emptyResponse": {}} (its 30 read as the empty SEQUENCE)."""
    code, out, err = run_inprocess(capsys, "decode", "--auto", message["hex"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["type"] == "V10-ProvideEimPackageResult"
    epr = doc["value"]["ePRAndNotifications"]
    assert set(epr) == {"euiccPackageResult", "notificationList"}
    code, out2, err = run_inprocess(capsys, "encode", "--type", doc["type"], json.dumps(doc["value"]))
    assert code == 0 and out2.strip() == message["hex"], err  # the JSON gives back the received bytes


def test_decode_auto_still_names_v12_answers_by_their_v12_type(capsys):
    """Messages that read the same in both versions keep their v1.2 type (v1.0 types are listed last)."""
    for m in V10:
        code, out, err = run_inprocess(capsys, "decode", "--auto", m["hex"])
        assert code == 0, err
        if m["direction"] == "eim->ipa":
            assert not json.loads(out)["type"].startswith("V10-"), m["name"]


def test_script_decode_auto_v10_capture():
    r = run_script("decode", "--auto", V10_RESULTS[0]["hex"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["type"] == "V10-ProvideEimPackageResult"
