"""``fwbridge probe`` and ``fwbridge virtual-modem`` as a user runs them: exit codes, JSON, the failing command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tty
from pathlib import Path

import pytest

from euicc.card import SoftEuicc
from firmware_bridge.probe import EXIT_NO_AT, EXIT_NO_ISDR, EXIT_OK, EXIT_PORT, EXIT_USAGE, format_report, probe
from firmware_bridge.virtual_modem import Quirks
from rsp.pki import create_lab_pki, lab_eid
from tests.firmware_bridge.conftest import engine_for
from tests.firmware_bridge.minicard import MiniCard

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
FWBRIDGE = str(Path(sys.executable).parent / "fwbridge")
EID = lab_eid(31)
ISDR = "A0000005591010FFFFFFFF8900000100"


@pytest.fixture(scope="module")
def state_template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=(EID,))
    SoftEuicc.create(pki.root, EID, tmp / "state")
    return (tmp / "state").read_bytes()


@pytest.fixture
def card(state_template, tmp_path):
    path = tmp_path / "euicc.state"
    path.write_bytes(state_template)
    return SoftEuicc.load(path)


def run_probe(port: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([FWBRIDGE, "probe", "--port", port, *extra], capture_output=True, text=True, timeout=60)


def report_of(stdout: str) -> dict:
    """The probe report: the data of the one envelope line ``--json`` prints (docs/cli.md)."""
    (line,) = stdout.splitlines()
    obj = json.loads(line)
    assert obj["type"] == "lpa" and obj["payload"]["code"] in (0, -1)
    return obj["payload"]["data"]


def test_probe_json_on_a_good_modem(modem_factory, card):
    vm = modem_factory(card)
    done = run_probe(vm.path, "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = report_of(done.stdout)
    assert report["eid"] == EID and report["isdr_reachable"] is True
    assert report["routes"]["cgla"]["works"] and report["routes"]["csim"]["works"]
    assert report["routes"]["cgla"]["eid"] == report["routes"]["csim"]["eid"] == EID
    assert report["route"] == "cgla" and report["profile"] == "generic"
    assert report["recommended_block_size"] == 120
    assert report["block_sizes_accepted"] == {"255": True, "120": True}
    assert report["test_commands"] == {c: "OK" for c in ("AT+CSIM=?", "AT+CCHO=?", "AT+CGLA=?", "AT+CCHC=?")}
    assert report["failures"] == []
    assert not card._channels.keys() - {0}  # the probe closed every channel it opened


def test_probe_reports_the_exact_failing_command_of_a_csim_only_modem(modem_factory, card):
    vm = modem_factory(card, "csim-limit=250", model="SIM7600G-H")
    done = run_probe(vm.path, "--json")
    assert done.returncode == EXIT_OK
    report = report_of(done.stdout)
    assert report["profile"] == "simcom" and report["profile_source"] == "ATI/AT+CGMM"
    assert report["route"] == "csim" and report["eid"] == EID
    cgla = report["routes"]["cgla"]
    assert not cgla["works"]
    assert cgla["failure"]["command"] == f'AT+CCHO="{ISDR}"' and cgla["failure"]["answer"] == ["ERROR"]
    assert report["block_sizes_accepted"] == {"255": False, "120": True}
    assert report["recommended_block_size"] == 120


def test_probe_on_a_fibocom_that_ignores_test_commands(modem_factory, card):
    vm = modem_factory(card, model="FM350-GL")
    done = run_probe(vm.path)
    assert done.returncode == EXIT_OK, done.stdout
    assert "profile       fibocom" in done.stdout
    assert "AT+CCHO=? no answer within 1 s" in done.stdout
    assert f"EID           {EID}" in done.stdout
    assert "ISD-R         reachable over cgla" in done.stdout


class NoIsdrCard(MiniCard):
    """A plain UICC: no ISD-R behind the modem."""

    def _select(self, cmd, ch):
        return b"\x6a\x82"


async def test_probe_without_isdr_lists_both_failures():
    from tests.firmware_bridge.conftest import running_modem

    with running_modem(NoIsdrCard()) as vm:
        report = await probe(vm.path, timeout=2.0)
    assert report.exit_code == EXIT_NO_ISDR and not report.isdr_reachable and report.eid is None
    by_step = {f.step: f for f in report.failures}
    assert by_step["route cgla"].command == f'AT+CCHO="{ISDR}"'
    assert by_step["route cgla"].answer == ["+CME ERROR: 13"]
    assert by_step["route csim"].command.startswith('AT+CSIM=42,"01A40400')  # SELECT on the opened channel 1
    assert by_step["route csim"].answer == ['+CSIM: 4,"6A82"', "OK"]
    text = format_report(report)
    assert "ISD-R         NOT reachable" in text and "answer   +CME ERROR: 13" in text


def test_probe_silent_modem_exit_4(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        done = run_probe(os.ttyname(slave), "--timeout", "0.5", "--json")
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == EXIT_NO_AT
    report = report_of(done.stdout)
    assert report["failures"][0]["command"] == "AT"
    assert report["failures"][0]["answer"] == ["<no final result within 0.5 s>"]


def test_probe_missing_port_exit_3():
    done = run_probe("/dev/does-not-exist-fwbridge", "--json")
    assert done.returncode == EXIT_PORT
    assert report_of(done.stdout)["failures"][0]["step"] == "open port"


async def test_probe_locked_port_exit_3(modem_factory):
    vm = modem_factory(MiniCard())
    async with engine_for(vm.path) as at:
        await at.command("AT")
        done = run_probe(vm.path)
    assert done.returncode == EXIT_PORT and "locked by another program" in done.stdout


def test_probe_usage_error_exit_2():
    done = subprocess.run([FWBRIDGE, "probe"], capture_output=True, text=True, timeout=30)
    assert done.returncode == EXIT_USAGE and "--port" in done.stderr


def test_virtual_modem_cli_link_counters_and_bad_input(tmp_path, state_template):
    state = tmp_path / "state"
    state.write_bytes(state_template)
    link = tmp_path / "modem"
    proc = subprocess.Popen(
        [
            FWBRIDGE,
            "virtual-modem",
            "--card",
            str(state),
            "--link",
            str(link),
            "--model",
            "EG25-G",
            "--quirks",
            "echo,urcs",
            "--baud",
            "9600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        path = proc.stdout.readline().strip()
        assert os.path.realpath(link) == path
        done = run_probe(str(link), "--json")
        report = report_of(done.stdout)
        assert done.returncode == EXIT_OK and report["profile"] == "quectel" and report["eid"] == EID
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "quirks echo,urcs" in err and "9600 baud" in err
    counters = out.strip().splitlines()[-1]
    assert counters.startswith("virtual modem stopped: bytes in ") and "s of line time at 9600 baud" in counters
    assert not link.exists()  # the link goes with the modem

    for args, message in (
        (["--quirks", "no-such-quirk"], "unknown quirk"),
        (["--quirks", "slow=fast"], "bad value"),
        (["--model", "Nokia 3310"], "unknown modem model"),
        (["--card-factory", "nomodule"], "MODULE:CALLABLE"),
    ):
        done = subprocess.run(
            [FWBRIDGE, "virtual-modem", "--card", str(state), *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == EXIT_USAGE and message in done.stderr, (args, done.stderr)
    done = subprocess.run(
        [FWBRIDGE, "virtual-modem", "--card", str(tmp_path / "missing")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1 and "cannot load the card" in done.stderr


def test_quirk_names_parse_and_describe():
    q = Quirks.parse("no-cgla,csim-limit=250,slow=0.5,refresh-reset,error-once-at=7")
    assert q.no_cgla and q.csim_limit == 250 and q.slow == 0.5 and q.refresh_reset == 0.0 and q.error_once_at == 7
    assert Quirks.parse(q.describe()) == q
    assert Quirks.parse(["echo", "urcs,hex-handles"]) == Quirks(echo=True, urcs=True, hex_handles=True)
    for bad in ("echo=1", "csim-limit", "csim-limit=x", "nope"):
        with pytest.raises(ValueError):
            Quirks.parse(bad)


def test_profiles_and_quirks_listing():
    done = subprocess.run([FWBRIDGE, "profiles"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "wavecom" in done.stdout and "sierra-em9191" in done.stdout
    done = subprocess.run([FWBRIDGE, "quirks"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "error-once-at" in done.stdout and "FM350-GL" in done.stdout
