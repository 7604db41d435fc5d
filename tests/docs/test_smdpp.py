"""docs/smdpp.md: the lab SM-DP+ walkthrough, run as shown (its port replaced by a free one)."""

from __future__ import annotations

import json
from pathlib import Path

from demo.procs import free_port, wait_port
from tests.docs.doccmds import doc_cmd, run, start, stop

INIT = doc_cmd("smdpp.md", "rsp pki init pki --curve both")
SERVE = doc_cmd("smdpp.md", "smdpp serve --pki pki --data data --port 8443 &")
ORDER = doc_cmd("smdpp.md", "smdpp order create --data data --profile ts48 --confirmation-code 1234 --expires 2h")
UPP_ORDER = doc_cmd("smdpp.md", "smdpp order create --data data --upp TS48V5-generic.der --service-provider GSMA")
UPP_IMPORT = doc_cmd("smdpp.md", "smdpp profile import TS48V5-generic.der --data data --name ts48-real")
UPP_BY_NAME = doc_cmd("smdpp.md", "smdpp order create --data data --profile ts48-real")
HEALTH = doc_cmd("smdpp.md", "curl -s --cacert pki/ca-bundle.pem https://127.0.0.1:8443/healthz")
REST_ORDER = doc_cmd(
    "smdpp.md",
    "curl -s --cacert pki/ca-bundle.pem -X POST https://127.0.0.1:8443/v1/orders "
    """-H 'Content-Type: application/json' -d '{"profile":"large","expires":"30m"}'""",
)
INIT_AUTH = doc_cmd(
    "smdpp.md",
    "curl -s --cacert pki/ca-bundle.pem -X POST https://127.0.0.1:8443/gsma/rsp2/es9plus/initiateAuthentication "
    "-H 'Content-Type: application/json' "
    """-d '{"header":{"functionRequesterIdentifier":"x","functionCallIdentifier":"1"},"""
    """ "euiccChallenge":"AAAA","euiccInfo1":"AAAA","smdpAddress":"127.0.0.1:8443"}'""",
)


def test_smdpp_walkthrough(tmp_path: Path) -> None:
    port = free_port()
    subs = {"8443": str(port)}
    out = run(INIT, tmp_path).stdout
    assert "lab PKI written to pki" in out and "brainpool CI key id" in out
    proc = start(SERVE, tmp_path, tmp_path / "smdpp.log", subs)
    try:
        wait_port(port, proc=proc)
        order = run(ORDER, tmp_path, subs).stdout
        assert "activation code: 1$127.0.0.1:" in order  # default --host is 127.0.0.1:8443, whatever serve uses
        for line in ("state: released", "profile: ts48", "cc_required: True"):
            assert line in order
        health = json.loads(run(HEALTH, tmp_path, subs).stdout)
        assert health["status"] == "ok" and health["address"] == f"127.0.0.1:{port}"
        assert health["curves"] == ["brainpool", "nist"]
        rest = json.loads(run(REST_ORDER, tmp_path, subs).stdout)
        assert rest["profile"] == "large" and rest["state"] == "released" and rest["eid"] is None
        assert rest["activation_code"] == f"1$127.0.0.1:{port}${rest['matching_id']}"
        status = json.loads(run(INIT_AUTH, tmp_path, subs).stdout)["header"]["functionExecutionStatus"]
        assert status["status"] == "Failed"
        assert status["statusCodeData"]["subjectCode"] == "1.2" and status["statusCodeData"]["reasonCode"] == "2.1"
        assert status["statusCodeData"]["message"] == "euiccChallenge must be 16 bytes, got 3"
    finally:
        stop(proc)


def test_serving_a_profile_package_file(tmp_path: Path) -> None:
    from tests.euicc.upp_sample import ts48_upp

    (tmp_path / "TS48V5-generic.der").write_bytes(ts48_upp("8949449999999990007"))
    out = run(UPP_ORDER, tmp_path).stdout
    assert "state: released" in out and "iccid: 8949449999999990007" in out and "profile: upp-" in out
    assert "ts48-real" in run(UPP_IMPORT, tmp_path).stdout
    out = run(UPP_BY_NAME, tmp_path).stdout
    assert "profile: ts48-real" in out and "iccid: 8949449999999990007" in out
