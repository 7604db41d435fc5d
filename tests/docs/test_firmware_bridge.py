"""docs/firmware_bridge.md: ``fwbridge probe`` on the virtual modem set up as the doc says, output compared."""

from __future__ import annotations

from pathlib import Path

from demo.procs import wait_path
from tests.docs.doccmds import BIN, doc_cmd, run_together, stop

PROBE = doc_cmd("firmware_bridge.md", "fwbridge probe --port /tmp/cap/ttyVM0")
ECHO = doc_cmd("firmware_bridge.md", "echo $?")


def test_probe_output_as_shown(tmp_path: Path) -> None:
    import subprocess

    eid = "89999000000000000000000000000130"
    subprocess.run([BIN / "rsp", "pki", "init", "pki", "--eid", eid], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(
        [BIN / "euicc", "new", "--pki", "pki", "--eid", eid, "--state", "euicc.state"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    link = tmp_path / "ttyVM0"
    # the setup the doc names in its prose: a SIM7600G-H whose command line stops at 250 hex characters
    setup = ["--card", "euicc.state", "--link", str(link), "--model", "SIM7600G-H", "--quirks", "csim-limit=250"]
    modem = subprocess.Popen(
        [BIN / "fwbridge", "virtual-modem", *setup],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_path(link, proc=modem)
        out = run_together([PROBE, ECHO], tmp_path, {"/tmp/cap/ttyVM0": str(link)})
        shown = [line.replace("/tmp/cap/ttyVM0", str(link)) for line in (*PROBE.output, *ECHO.output)]
        assert out.splitlines() == shown
    finally:
        stop(modem)
