"""docs/esipa-bindings.md, *Device authentication*: the lab session of mutual TLS and device secrets run as shown
against a real ``eim serve`` over HTTPS (the doc's port replaced by a free one), and the ``rsp pki device-cert``
synopsis checked against the program's ``--help``."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from demo.procs import free_port, wait_port
from rsp.pki import create_lab_pki
from tests.docs.doccmds import BIN, doc_cmd, run, stop, tool_env

DOC = "esipa-bindings.md"
EID = "89999000000000000000000000000130"
CERT = f"pki/tls/devices/{EID}.cert.pem"
KEY = f"pki/tls/devices/{EID}.key.pem"
URL = "https://127.0.0.1:8443/gsma/rsp2/asn1"
CT = "-H 'Content-Type: application/x-gsma-rsp-asn1'"
DEVICE_CERT = doc_cmd(DOC, f"rsp pki device-cert pki --eid {EID}")
REQ = doc_cmd(
    DOC,
    r"printf '\xbf\x4f\x12\x5a\x10\x89\x99\x90\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x30' > req.der",
)
WITH_CERT = doc_cmd(
    DOC,
    f"curl -sS --cacert pki/ca-bundle.pem --cert {CERT} --key {KEY} --data-binary @req.der {CT} {URL} | xxd -p",
)
WITHOUT = doc_cmd(DOC, f"curl -sS --cacert pki/ca-bundle.pem --data-binary @req.der {CT} {URL} | xxd -p")
SECRET_SET = doc_cmd(DOC, f"eim device-secret set {EID} --file device-secrets > device.token")
SECRET_LIST = doc_cmd(DOC, "eim device-secret list --file device-secrets")
WITH_SECRET = doc_cmd(
    DOC,
    'curl -sS --cacert pki/ca-bundle.pem -H "Authorization: Bearer $(cat device.token)" --data-binary @req.der '
    f"{CT} {URL} | xxd -p",
)
SECRET_REMOVE = doc_cmd(DOC, f"eim device-secret remove {EID} --file device-secrets")
SYNOPSIS = doc_cmd(DOC, "rsp pki device-cert DIR --eid EID [--out OUTDIR] [--days N]")


def test_mutual_tls_and_device_secrets_as_shown(tmp_path: Path) -> None:
    create_lab_pki(tmp_path / "pki", curves=("nist",), eids=[EID])
    assert run(DEVICE_CERT, tmp_path).stdout.splitlines() == list(DEVICE_CERT.output)
    run(REQ, tmp_path)
    made = run(SECRET_SET, tmp_path)
    assert made.stderr.strip() == SECRET_SET.output[0]
    assert run(SECRET_LIST, tmp_path).stdout.splitlines() == list(SECRET_LIST.output)

    port = free_port()
    env = {
        "EIM_EIM_LAB_PKI": "pki",
        "EIM_EIM_DATA_DIR": "data",
        "EIM_HTTP_PORT": str(port),
        "EIM_HTTP_TLS_CERT": "pki/tls/eimtls.cert.pem",
        "EIM_HTTP_TLS_KEY": "pki/tls/eimtls.key.pem",
        "EIM_RELAY_ENABLED": "false",
        "EIM_DEVICES_CLIENT_CA": "pki/tls/device-ca.cert.pem",
        "EIM_DEVICES_TRUSTED_NETWORKS": "",
        "EIM_DEVICES_SECRET_FILE": "device-secrets",
    }
    log_path = tmp_path / "eim.log"
    log = log_path.open("ab")
    eim = subprocess.Popen([str(BIN / "eim"), "serve"], cwd=tmp_path, env=tool_env(env), stdout=log, stderr=log)
    subs = {"8443": str(port)}
    try:
        wait_port(port, proc=eim)
        verify = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca-bundle.pem"))
        r = httpx.post(f"https://127.0.0.1:{port}/v1/euiccs", json={"eid": EID}, verify=verify)
        assert r.status_code == 201, r.text
        assert run(WITH_CERT, tmp_path, subs).stdout.strip() == WITH_CERT.output[0]
        assert run(WITHOUT, tmp_path, subs).stdout.strip() == WITHOUT.output[0]
        assert run(WITH_SECRET, tmp_path, subs).stdout.strip() == WITH_SECRET.output[0]
        assert run(SECRET_REMOVE, tmp_path).stderr.strip() == SECRET_REMOVE.output[0]
        deadline = time.monotonic() + 20
        while '"devices": 0' not in log_path.read_text():  # the running eIM re-read the file
            assert eim.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        token = (tmp_path / "device.token").read_text().strip()
        r = httpx.post(
            f"https://127.0.0.1:{port}/gsma/rsp2/asn1",
            content=(tmp_path / "req.der").read_bytes(),
            headers={"Content-Type": "application/x-gsma-rsp-asn1", "Authorization": f"Bearer {token}"},
            verify=verify,
        )
        assert r.status_code == 401
    finally:
        stop(eim)
    assert token.split(".")[1] not in log_path.read_text()  # the secret never reaches the log


def test_device_cert_synopsis_matches_the_program() -> None:
    proc = subprocess.run(
        [str(BIN / "rsp"), "pki", "device-cert", "--help"], capture_output=True, text=True, timeout=60, env=tool_env()
    )
    assert proc.returncode == 0, proc.stderr
    options = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", SYNOPSIS.text)
    assert options and all(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", proc.stdout) for o in options)
