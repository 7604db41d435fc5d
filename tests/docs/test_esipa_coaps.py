"""docs/esipa-bindings.md, CoAPS: ``eim psk`` and aiocoap-client's tinydtls client against ``eim serve`` with
``[coap] dtls = true`` (the doc's port replaced by a free one), run as shown; the ``eim psk`` synopsis checked
against the program's ``--help``."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from demo.procs import free_port, wait_port
from tests.docs.doccmds import BIN, ROOT, doc_cmd, run, stop, tool_env
from tests.services import require_dtls

DOC = "esipa-bindings.md"
EID = "89044045118427484800000000011628"
REQ = doc_cmd(
    DOC,
    r"printf '\xbf\x4f\x12\x5a\x10\x89\x04\x40\x45\x11\x84\x27\x48\x48\x00\x00\x00\x00\x01\x16\x28' > req.der",
)
PSK_SET = doc_cmd(DOC, f"eim psk set {EID} --generate --file coaps.psk > device.psk")
PSK_LIST = doc_cmd(DOC, "eim psk list --file coaps.psk")
CLIENT_JSON = doc_cmd(
    DOC,
    """printf '{"coaps://127.0.0.1:56840/*": {"dtls": {"psk": {"hex": "%s"}, "client-identity": {"ascii": "%s"}}}}' """
    f'"$(cat device.psk)" {EID} > client.json',
)
URI = "coaps://127.0.0.1:56840/gsma/rsp2/asn1"
COAPS_OK = doc_cmd(DOC, f"aiocoap-client --credentials client.json -m POST --payload @req.der {URI} | xxd -p")
PSK_REMOVE = doc_cmd(DOC, f"eim psk remove {EID} --file coaps.psk")
COAPS_REFUSED = doc_cmd(DOC, f"aiocoap-client --credentials client.json -m POST --payload @req.der {URI}")
SYNOPSES = [
    (doc_cmd(DOC, "eim psk set EID (--key HEX|- | --generate) [--file PSKFILE]"), ["set"]),
    (doc_cmd(DOC, "eim psk remove EID [--file PSKFILE]"), ["remove"]),
    (doc_cmd(DOC, "eim psk list [--file PSKFILE]"), ["list"]),
]


def wait_logged(log: Path, text: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def test_a_device_provisioned_over_coaps_as_shown(tmp_path: Path) -> None:
    require_dtls()
    run(REQ, tmp_path)
    made = run(PSK_SET, tmp_path)
    assert made.stderr.strip() == PSK_SET.output[0]
    assert re.fullmatch(r"[0-9a-f]{32}\n", (tmp_path / "device.psk").read_text())
    assert (tmp_path / "coaps.psk").stat().st_mode & 0o777 == 0o600
    assert run(PSK_LIST, tmp_path).stdout.splitlines() == list(PSK_LIST.output)

    http, coaps = free_port(), free_port(socket.SOCK_DGRAM)
    subs = {"56840": str(coaps)}
    env = {
        "EIM_HTTP_PORT": str(http),
        "EIM_COAP_ENABLED": "true",
        "EIM_COAP_PLAIN": "false",
        "EIM_COAP_DTLS": "true",
        "EIM_COAP_DTLS_PORT": str(coaps),
        "EIM_COAP_PSK_FILE": "coaps.psk",
    }
    log_path = tmp_path / "eim.log"
    log = log_path.open("ab")
    eim = subprocess.Popen([str(BIN / "eim"), "serve"], cwd=tmp_path, env=tool_env(env), stdout=log, stderr=log)
    try:
        wait_port(http, proc=eim)
        wait_logged(log_path, "CoAPS (DTLS PSK) binding listening", eim)
        reg = [str(BIN / "eim"), "--url", f"http://127.0.0.1:{http}", "euicc", "register", EID]
        subprocess.run([*reg, "--association-token", "1"], check=True, capture_output=True, env=tool_env())
        run(CLIENT_JSON, tmp_path, subs)
        assert (tmp_path / "client.json").read_text().count((tmp_path / "device.psk").read_text().strip()) == 1
        assert run(COAPS_OK, tmp_path, subs).stdout.strip() == COAPS_OK.output[0]

        assert run(PSK_REMOVE, tmp_path).stdout.splitlines() == list(PSK_REMOVE.output)
        wait_logged(log_path, '"message": "PSK file loaded", "path": "coaps.psk", "devices": 0', eim)  # re-read
        refused = run(COAPS_REFUSED, tmp_path, subs, ok=False)
        assert refused.returncode != 0
        assert COAPS_REFUSED.output[0] in (refused.stdout + refused.stderr).splitlines()
        wait_logged(log_path, "DTLS handshake with an unknown PSK identity", eim)
    finally:
        stop(eim)
    text = log_path.read_text()
    assert (tmp_path / "device.psk").read_text().strip() not in text  # the key never reaches the log


@pytest.mark.parametrize("cmd,sub", SYNOPSES, ids=[c.text.split()[2] for c, _ in SYNOPSES])
def test_psk_synopsis_matches_the_program(cmd, sub) -> None:
    proc = subprocess.run(
        [str(BIN / "eim"), "psk", *sub, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    options = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cmd.text)
    assert options and all(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", proc.stdout) for o in options)
