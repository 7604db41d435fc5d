"""A plain AT+CSIM client - only pyserial and raw strings, no project code on the client side - reads the EID from
``fwbridge virtual-modem`` running as a subprocess, by the conventions of docs/modems: CR LF, lower-case hex, quotes,
``AT`` then ``=?`` probes, ``0070000001`` channel open expecting exactly ``<ch>9000``, SELECT answering ``61xx``,
120-byte STORE DATA blocks, GET RESPONSE with CLA ``8x``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from euicc.card import SoftEuicc
from rsp.pki import create_lab_pki, lab_eid

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FWBRIDGE = Path(sys.executable).parent / "fwbridge"
EID = lab_eid(21)


class RawAt:
    """What a minimal third-party LPA does: write ``cmd\\r\\n``, read lines until OK/ERROR, keep the prefixed one."""

    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 115200, timeout=0.2)

    def cmd(self, command: str, prefix: str | None = None, deadline: float = 5.0) -> tuple[str, str | None]:
        self.ser.write(command.encode() + b"\r\n")
        answer, buf, end = None, b"", time.monotonic() + deadline
        while time.monotonic() < end:
            buf += self.ser.read(256)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode().strip()
                if text in ("OK", "ERROR") or text.startswith("+CME ERROR"):
                    return text, answer
                if prefix and text.startswith(prefix):
                    answer = text[len(prefix) :].strip()
        raise AssertionError(f"{command}: no final result")

    def csim(self, apdu_hex: str) -> str:
        final, answer = self.cmd(f'AT+CSIM={len(apdu_hex)},"{apdu_hex}"', "+CSIM:")
        assert final == "OK" and answer is not None, (apdu_hex, final)
        length, quoted = answer.split(",")
        hexstr = quoted.strip('"').lower()
        assert int(length) == len(hexstr)
        return hexstr


@pytest.fixture
def modem_process(tmp_path):
    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID,))
    state = tmp_path / "euicc.state"
    SoftEuicc.create(pki.root, EID, state)
    link = tmp_path / "ttyVM0"
    proc = subprocess.Popen(
        [str(FWBRIDGE), "virtual-modem", "--card", str(state), "--link", str(link), "--baud", "115200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), proc.stderr.read()
        assert os.path.realpath(link) == path
        yield proc, str(link)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def test_plain_pyserial_client_reads_the_eid(modem_process):
    proc, port = modem_process
    at = RawAt(port)
    assert at.cmd("AT") == ("OK", None)
    assert at.cmd("AT+CSIM=?")[0] == "OK"
    assert at.cmd("AT+CCHO=?")[0] == "OK"

    opened = at.csim("0070000001")
    assert len(opened) == 6 and opened[2:] == "9000"
    ch = int(opened[:2], 16)
    cla = f"{ch:02x}"
    sel = at.csim(f"{cla}a4040010a0000005591010ffffffff8900000100")
    if sel.startswith("61"):
        fci = at.csim(f"8{ch:x}c00000{sel[2:]}")
        assert fci.endswith("9000")
    else:
        assert sel == "9000"

    # GetEuiccData(EID): one STORE DATA block, answer through GET RESPONSE with CLA 8x.
    sw = at.csim(f"8{ch:x}e2910006bf3e035c015a")
    assert sw.startswith("61")
    resp = at.csim(f"8{ch:x}c00000{sw[2:]}")
    assert resp.endswith("9000")
    data = resp[:-4]
    assert data.startswith("bf3e125a10")
    assert data[10:].upper() == EID

    # A 339-byte GetProfilesInfo in 120-byte STORE DATA blocks (tag list 5A 4F 92 repeated).
    tag_list = "5a4f92" * 110
    inner = "5c82014a" + tag_list
    command = "bf2d82014e" + inner
    assert len(command) // 2 == 339
    blocks = [command[i : i + 240] for i in range(0, len(command), 240)]  # 120, 120 and 99 bytes
    for n, block in enumerate(blocks):
        p1 = "91" if n == len(blocks) - 1 else "11"
        answer = at.csim(f"8{ch:x}e2{p1}{n:02x}{len(block) // 2:02x}{block}")
        if p1 == "11":
            assert answer == "9000"
    assert answer.startswith("61")
    assert at.csim(f"8{ch:x}c00000{answer[2:]}") == "bf2d02a0009000"  # no profile on a new card

    assert at.csim(f"0070800{ch:x}00") == "9000"
    at.ser.close()

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert "bytes in" in out and "bytes out" in out and "115200 baud" in out
    assert proc.returncode == 0
