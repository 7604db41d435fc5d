"""docs/esipa-bindings.md: curl, aiocoap-client and the Mosquitto clients against ``eim serve`` with all three
bindings enabled (the doc ran them against the test peer of tests/eim/test_bindings_common.py; the answers for an
eUICC with nothing queued are the same). Ports replaced by free ones, the broker is a private Mosquitto.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from demo.procs import free_port, wait_port
from tests.docs.doccmds import BIN, doc_cmd, run, start, stop, tool_env

EID = "89044045118427484800000000011628"
REQ = doc_cmd(
    "esipa-bindings.md",
    r"printf '\xbf\x4f\x12\x5a\x10\x89\x04\x40\x45\x11\x84\x27\x48\x48\x00\x00\x00\x00\x01\x16\x28' > req.der",
)
ASN1 = "http://127.0.0.1:18080/gsma/rsp2/asn1"
CURL_OK = doc_cmd(
    "esipa-bindings.md",
    f"curl -sS --data-binary @req.der -H 'Content-Type: application/x-gsma-rsp-asn1' {ASN1} | xxd -p",
)
CURL_415 = doc_cmd(
    "esipa-bindings.md", f"curl -sS -i --data-binary @req.der -H 'Content-Type: application/json' {ASN1}"
)
CURL_400 = doc_cmd(
    "esipa-bindings.md",
    f"curl -sS -i --data-binary 'garbage' -H 'Content-Type: application/x-gsma-rsp-asn1' {ASN1}",
)
COAP = "coap://127.0.0.1:56830/gsma/rsp2/asn1"
COAP_OK = doc_cmd("esipa-bindings.md", f"aiocoap-client -m POST --payload @req.der {COAP} | xxd -p")
COAP_400 = doc_cmd("esipa-bindings.md", f"aiocoap-client -m POST --payload 'garbage' {COAP}")
COAP_405 = doc_cmd("esipa-bindings.md", f"aiocoap-client {COAP}")
MQTT_SUB = doc_cmd("esipa-bindings.md", f"mosquitto_sub -V 5 -p 18884 -t esipa/{EID}/down -C 1 -F '%C %x' &")
MQTT_PUB = doc_cmd(
    "esipa-bindings.md",
    f"mosquitto_pub -V 5 -p 18884 -i ipa-{EID} -q 1 -t esipa/{EID}/up -f req.der "
    f"-D publish response-topic esipa/{EID}/down -D publish correlation-data 0102",
)
MQTT_RR = doc_cmd(
    "esipa-bindings.md",
    f"mosquitto_rr -V 5 -p 18884 -t esipa/{EID}/up -e esipa/{EID}/down -m garbage -F '%C %P %p'",
)
PASSWD = doc_cmd(
    "esipa-bindings.md",
    "mosquitto_passwd -b /etc/mosquitto/eim/passwd 89049032123451234512345678901235 <device password>",
)


def shown_head(lines: tuple[str, ...]) -> list[str]:
    """The shown lines up to the first one the doc cut with '...'."""
    return [line for line in lines if "..." not in line]


def test_esipa_over_http_coap_and_mqtt(tmp_path: Path, mosquitto) -> None:
    http, coap = free_port(), free_port()
    subs = {"18080": str(http), "56830": str(coap), "18884": str(mosquitto.port)}
    env = {
        "EIM_HTTP_PORT": str(http),
        "EIM_COAP_ENABLED": "true",
        "EIM_COAP_PORT": str(coap),
        "EIM_MQTT_ENABLED": "true",
        "EIM_MQTT_PORT": str(mosquitto.port),
    }
    log = (tmp_path / "eim.log").open("ab")
    eim = subprocess.Popen([str(BIN / "eim"), "serve"], cwd=tmp_path, env=tool_env(env), stdout=log, stderr=log)
    sub = None
    try:
        wait_port(http, proc=eim)
        wait_logged(tmp_path / "eim.log", "MQTT ESipa binding subscribed", eim)
        # the test peer knows this eUICC and has nothing queued for it: register it here (an unknown EID gets 02)
        reg = [str(BIN / "eim"), "--url", f"http://127.0.0.1:{http}", "euicc", "register", EID]
        subprocess.run([*reg, "--association-token", "1"], check=True, capture_output=True, env=tool_env())
        run(REQ, tmp_path)
        assert (tmp_path / "req.der").read_bytes().hex().upper() == f"BF4F125A10{EID}"

        assert run(CURL_OK, tmp_path, subs).stdout.strip() == CURL_OK.output[0]
        got = run(CURL_415, tmp_path, subs).stdout.replace("\r\n", "\n").splitlines()
        assert got[0].strip() == CURL_415.output[0]
        assert got[-1] == CURL_415.output[-1]
        for header in CURL_415.output[1:-1]:
            assert header in got
        got = run(CURL_400, tmp_path, subs).stdout.replace("\r\n", "\n").splitlines()
        assert got[0].strip() == CURL_400.output[0] and CURL_400.output[1] in got
        assert got[-1] == CURL_400.output[-1]

        assert run(COAP_OK, tmp_path, subs).stdout.strip() == COAP_OK.output[0]
        bad = run(COAP_400, tmp_path, subs, ok=False)
        out = (bad.stdout + bad.stderr).splitlines()
        assert COAP_400.output[0] in out
        assert any(line.startswith(COAP_400.output[1].removesuffix("...")) for line in out), out
        wrong = run(COAP_405, tmp_path, subs, ok=False)
        assert COAP_405.output[0] in (wrong.stdout + wrong.stderr).splitlines()

        sub = start(MQTT_SUB, tmp_path, tmp_path / "sub.out", subs)
        for _ in range(20):  # the shell's `&` does not wait for the subscription either: publish until answered
            run(MQTT_PUB, tmp_path, subs)
            try:
                sub.wait(1)
                break
            except subprocess.TimeoutExpired:
                continue
        assert sub.poll() == 0
        assert (tmp_path / "sub.out").read_text().strip() == MQTT_PUB.output[0]
        rr = run(MQTT_RR, tmp_path, subs, timeout=20).stdout.strip()
        assert rr.startswith(MQTT_RR.output[0].removesuffix("...").rstrip()), rr
    finally:
        if sub is not None:
            stop(sub)
        stop(eim)


def wait_logged(log: Path, text: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_mosquitto_passwd_device_account(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    pw.write_text("")
    run(PASSWD, tmp_path, {"/etc/mosquitto/eim/passwd": str(pw), "<device password>": "s3cret"})
    assert pw.read_text().startswith("89049032123451234512345678901235:$7$")
