"""The ``euicc`` command line: new / show / apdu / es10, exit codes and messages naming the failed step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from euicc.cli import main
from tests.envelope import json_result
from tests.euicc.conftest import LAB_EID, REAL_EID

SGP26_CI = Path(__file__).resolve().parent.parent / "data" / "sgp26" / "CertificateIssuer" / "CERT_CI_ECDSA_NIST.pem"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_new_show_apdu_es10(lab_pki, tmp_path, capsys):
    state = str(tmp_path / "card.json")
    code, out, _ = run(
        capsys,
        "new",
        "--pki",
        str(lab_pki.root),
        "--eid",
        REAL_EID,
        "--state",
        state,
        "--trust-ci",
        str(SGP26_CI),
        "--default-dp",
        "smdp.lab.example",
    )
    assert code == 0 and REAL_EID in out
    code, out, _ = run(capsys, "show", "--state", state, "--json")
    info = json_result(out)
    assert info["eid"] == REAL_EID and info["default_dp_address"] == "smdp.lab.example"
    assert "F54172BDF98A95D65CBEB88A38A1C11D800A85C3" in info["ci_key_ids_verification"]
    assert info["profiles"] == [] and info["eims"] == [] and info["pending_notifications"] == []
    code, out, _ = run(
        capsys,
        "apdu",
        "--state",
        state,
        "0070000001",
        "01A4040C10A0000005591010FFFFFFFF8900000100",
        "81E2910006BF3E035C015A",
        "81C0000015",
    )
    assert code == 0
    assert out.split() == ["019000", "9000", "6115", f"BF3E125A10{REAL_EID}9000"]
    set_dp = "BF65 12 80 10 " + b"new.smdp.example".hex(" ")
    code, out, _ = run(capsys, "es10", "--state", state, set_dp)
    assert code == 0 and out.strip() == "BF6503800100"
    code, out, _ = run(capsys, "show", "--state", state)
    assert code == 0 and "default SM-DP+: new.smdp.example" in out and REAL_EID in out
    code, out, _ = run(capsys, "es10", "--state", state, "BF2200", "--block-size", "7")
    assert code == 0 and out.startswith("BF22")


def test_errors_exit_2_naming_the_step(lab_pki, tmp_path, capsys):
    state = str(tmp_path / "card.json")
    code, _, err = run(
        capsys, "new", "--pki", str(lab_pki.root), "--eid", "89044045118427484800000000011627", "--state", state
    )
    assert code == 2 and "create card: EID" in err and "check-digit" in err
    code, _, err = run(capsys, "new", "--pki", str(tmp_path / "nope"), "--eid", LAB_EID, "--state", state)
    assert code == 2 and "create card: lab PKI" in err
    assert not os.path.exists(state)
    assert run(capsys, "new", "--pki", str(lab_pki.root), "--eid", LAB_EID, "--state", state)[0] == 0
    code, _, err = run(capsys, "new", "--pki", str(lab_pki.root), "--eid", LAB_EID, "--state", state)
    assert code == 2 and "exists" in err
    code, _, err = run(capsys, "apdu", "--state", state, "zz")
    assert code == 2 and "send APDU" in err and "not hexadecimal" in err
    code, _, err = run(capsys, "es10", "--state", state, "BF7F00")
    assert code == 1 and "send ES10 command" in err and "6A88" in err  # the card refused (docs/cli.md)
    code, _, err = run(capsys, "show", "--state", str(tmp_path / "missing.json"))
    assert code == 2 and "show card" in err


def test_console_script(lab_pki, tmp_path):
    script = shutil.which("euicc", path=str(Path(sys.executable).parent)) or shutil.which("euicc")
    assert script, "the euicc console script is not installed (pip install -e .)"
    state = str(tmp_path / "card.json")
    done = subprocess.run(
        [script, "new", "--pki", str(lab_pki.root), "--eid", LAB_EID, "--state", state, "--curve", "brainpool"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([script, "show", "--state", state, "--json"], capture_output=True, text=True, timeout=60)
    assert json_result(shown.stdout)["curve"] == "brainpool"
    bad = subprocess.run([script, "show"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2  # argparse usage error


def test_show_prints_iccids_as_digits(lab_pki, tmp_path, capsys):
    """Like every other tool: ``8944000000000000001``, not the EF.ICCID bytes ``9844000000000000...``."""
    from tests.euicc.conftest import Es10Driver, download, make_card, new_profile
    from tests.euicc.smdp_side import SmdpSide

    state = tmp_path / "card.json"
    card = make_card(lab_pki, state_path=state)
    download(Es10Driver(card), SmdpSide(lab_pki), new_profile(1, notifications=[((0,), "smdp.example")]))
    code, out, _ = run(capsys, "show", "--state", str(state))
    assert code == 0
    assert "ICCID 8944000000000000001 " in out and "98440000" not in out
    assert "install  smdp.example  ICCID 8944000000000000001" in out  # the pending PIR names it too
    code, out, _ = run(capsys, "show", "--state", str(state), "--json")
    profile = json_result(out)["profiles"][0]
    assert profile["iccid_digits"] == "8944000000000000001" and profile["iccid"] == "984400000000000000F1"
