"""docs/ipa.md "Field-technician commands": the lab the doc names (lab PKI, software eUICC behind the virtual
modem on a real pty, the lab SM-DP+, ``eim serve``, a private Mosquitto), every shown command run in order.

Ports, the pty path and paths are replaced by the test's; the SM-DP+ order is created with the doc's matchingId.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from demo.procs import free_port, wait_path, wait_port
from tests.docs.doccmds import BIN, doc_cmd, run, start, stop, tool_env
from tests.envelope import json_result

EID = "89999000000000000000000000000130"
MATCHING_ID = "K6EMD-C40PE-48PEW-N8KDU"
EIM_SERVE = doc_cmd("ipa.md", "eim serve")
CHIP_INFO = doc_cmd("ipa.md", "ipa --json --port /tmp/doc/modem chip info")
ADD_INITIAL = doc_cmd("ipa.md", "ipa --json --port /tmp/doc/modem eim add-initial provisioning.toml")
EIM_LIST = doc_cmd("ipa.md", "ipa --json --port /tmp/doc/modem eim list")
DOWNLOAD = doc_cmd(
    "ipa.md",
    "IPA_ES9_CA_FILE=pki/ca-bundle.pem ipa --json --port /tmp/doc/modem download "
    f"-a 'LPA:1$127.0.0.1:8443${MATCHING_ID}'",
)
PROFILE_LIST = doc_cmd("ipa.md", "ipa --json --port /tmp/doc/modem profile list")
POLL = doc_cmd("ipa.md", "IPA_EIM_URL=http://127.0.0.1:8080 ipa --json --port /tmp/doc/modem poll --once")
OP_SHOW = doc_cmd("ipa.md", "eim op show")
RUN_HTTP = doc_cmd("ipa.md", "IPA_EIM_URL=http://127.0.0.1:8080 IPA_POLL_INTERVAL=2 ipa -v --port /tmp/doc/modem run")
RUN_MQTT = doc_cmd(
    "ipa.md", "IPA_EIM_URL=mqtt://127.0.0.1:18831 IPA_POLL_INTERVAL=120 ipa -v --port /tmp/doc/modem run"
)


def lpa(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def tool(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    """A setup step the doc describes in prose (not a shown command)."""
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True, env=tool_env(env))
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_done(cwd: Path, op_id: str, env: dict[str, str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = json.loads(tool(cwd, "eim", "--json", "op", "show", op_id, env=env).splitlines()[-1])["payload"]["data"]
        if op["status"] not in ("queued", "in_progress"):
            return op
        time.sleep(0.2)
    raise AssertionError(f"operation {op_id} not finished: {op}")


def sigterm(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def test_field_technician_commands(tmp_path: Path, mosquitto) -> None:
    eim_port, smdp_port = free_port(), free_port()
    mqtt = str(mosquitto.port)
    modem_link = tmp_path / "modem"
    subs = {
        "127.0.0.1:8080": f"127.0.0.1:{eim_port}",
        "127.0.0.1:8443": f"127.0.0.1:{smdp_port}",
        "127.0.0.1:18831": f"127.0.0.1:{mqtt}",
        "/tmp/doc/modem": str(modem_link),
    }
    env = {
        "EIM_HTTP_PORT": str(eim_port),
        "EIM_API_URL": f"http://127.0.0.1:{eim_port}",
        "EIM_EIM_LAB_PKI": str(tmp_path / "pki"),  # the lab's PKI, so the card trusts the eIM's signing key
        "EIM_MQTT_ENABLED": "true",  # "against eim serve with its CoAP and MQTT bindings enabled"
        "EIM_MQTT_PORT": mqtt,
        "EIM_OPERATIONS_SWEEP_INTERVAL_S": "0.5",
        "IPA_IPA_STATE_FILE": str(tmp_path / "ipa-state.cbor"),
    }
    procs: list[subprocess.Popen] = []
    try:
        # the lab: rsp pki init, euicc new, fwbridge virtual-modem, smdpp serve, eim serve
        tool(tmp_path, "rsp", "pki", "init", "pki", "--eid", EID)
        tool(tmp_path, "euicc", "new", "--pki", "pki", "--eid", EID, "--state", "card.cbor")
        procs.append(
            subprocess.Popen(
                [str(BIN / "fwbridge"), "virtual-modem", "--card", "card.cbor", "--link", str(modem_link)],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_path(modem_link, proc=procs[-1])
        smdp = ["smdpp", "serve", "--pki", "pki", "--data", "smdp", "--port", str(smdp_port)]
        procs.append(subprocess.Popen([str(BIN / smdp[0]), *smdp[1:]], cwd=tmp_path, stdout=subprocess.DEVNULL))
        wait_port(smdp_port, proc=procs[-1])
        procs.append(start(EIM_SERVE, tmp_path, tmp_path / "eim.log", subs, env))
        wait_port(eim_port, proc=procs[-1])

        info = lpa(run(CHIP_INFO, tmp_path, subs, env).stdout)[-1]["payload"]
        assert info["code"] == 0 and info["data"]["eidValue"] == EID
        assert info["data"]["EUICCInfo2"]["ipaMode"] == "ipad" and info["data"]["eimConfigurationData"] == []

        from rsp.pki import LabPki, Role

        eim_cert = LabPki.load(tmp_path / "pki").cert_path(Role.EIM, "nist")
        (tmp_path / "provisioning.toml").write_text(  # the doc's provisioning file, with the eIM's certificate
            f'[[eim]]\nid = "eim.lab"\nfqdn = "127.0.0.1:{eim_port}"\nid_type = "fqdn"\ncounter_value = 0\n'
            f'certificate_pem = "{eim_cert}"\nprotocols = ["retrieveHttps"]\n'
        )
        added = lpa(run(ADD_INITIAL, tmp_path, subs, env).stdout)
        assert [line["payload"]["message"] for line in added] == ["AddInitialEim", "success"]
        assert added[-1]["payload"]["data"]["associationToken"] == [1]
        eims = lpa(run(EIM_LIST, tmp_path, subs, env).stdout)[-1]["payload"]["data"]
        assert [(e["eimId"], e["eimFqdn"], e["counterValue"], e["associationToken"]) for e in eims] == [
            ("eim.lab", f"127.0.0.1:{eim_port}", 0, 1)
        ]
        assert eims[0]["eimSupportedProtocol"] == ["eimRetrieveHttps"]
        human = tool(tmp_path, "ipa", "--port", str(modem_link), "eim", "list", env=env)  # "Human mode (...)"
        assert human.split() == ["eim.lab", f"127.0.0.1:{eim_port}", "token=1"], human

        tool(
            tmp_path,
            *("smdpp", "order", "create", "--data", "smdp", "--profile", "small", "--matching-id", MATCHING_ID),
            *("--host", f"127.0.0.1:{smdp_port}"),
        )
        steps = lpa(run(DOWNLOAD, tmp_path, subs, env, timeout=120).stdout)
        messages = [s["payload"]["message"] for s in steps]
        for step in ("GetEUICCChallenge", "initiateAuthentication", "AuthenticateServer", "authenticateClient"):
            assert step in messages
        assert messages[-3:] == ["ProfileInstallationResult", "handleNotification", "success"], messages
        iccid = steps[-1]["payload"]["data"]["iccid"]
        assert steps[-3]["payload"]["data"]["result"] == "success"

        profiles = lpa(run(PROFILE_LIST, tmp_path, subs, env).stdout)[-1]["payload"]["data"]
        assert [(p["iccid"], p["profileState"], p["profileClass"]) for p in profiles] == [
            (iccid, "disabled", "operational")
        ]
        assert profiles[0]["serviceProviderName"] == "Lab Operator"
        human = tool(tmp_path, "ipa", "--port", str(modem_link), "profile", "list", env=env)  # "/ human mode"
        assert human.split()[:5] == [iccid, "disabled", "operational", "Lab", "Operator"], human

        # the doc's prose steps: register the eUICC and queue the enable
        tool(tmp_path, "eim", "euicc", "register", EID, "--eim-id", "eim.lab", "--association-token", "1", env=env)
        enable = {"psmos": [{"enable": {"iccid": iccid, "rollback": True}}]}
        created = tool(tmp_path, "eim", "--json", "op", "create", EID, "psmo", "--params", json.dumps(enable), env=env)
        op_id = json_result(created)["id"]
        outcomes = []
        for _ in range(3):
            last = lpa(run(POLL, tmp_path, subs, env).stdout)[-1]["payload"]["data"]
            outcomes.append((last["outcome"], last["detail"]))
        assert outcomes == [
            ("work", "ipaEuiccDataRequest"),
            ("work", "euiccPackageRequest"),
            ("idle", "noEimPackageAvailable"),
        ]
        op = json.loads(run(OP_SHOW, tmp_path, {"eim op show": f"eim op show {op_id}"}, env).stdout)
        assert op["status"] == "done"
        assert op["result"]["results"] == [{"code": 0, "name": "ok", "type": "enableResult"}]
        pending = lpa(tool(tmp_path, "ipa", "--json", "--port", str(modem_link), "notification", "list", env=env))
        assert pending[-1]["payload"]["data"] == []

        # ipa run over HTTP, one queued listProfileInfo, stopped with SIGTERM
        listing = {"psmos": [{"listProfileInfo": {}}]}
        created = tool(tmp_path, "eim", "--json", "op", "create", EID, "psmo", "--params", json.dumps(listing), env=env)
        ipa = start(RUN_HTTP, tmp_path, tmp_path / "ipa-http.log", subs, env)
        assert wait_done(tmp_path, json_result(created)["id"], env)["status"] == "done"
        assert sigterm(ipa) == 0
        log = (tmp_path / "ipa-http.log").read_text()
        for text in (
            f"ipa running: EID {EID}",
            f"ESipa over http to http://127.0.0.1:{eim_port}",
            "LoadEuiccPackage eimId=eim.lab counterValue=2 operations=['listProfileInfo']",
            "ipa.agent: stopping: state saved, 0 result(s) queued",
            "ipa stopped",
        ):
            assert text in log, log

        # ipa run over MQTT, idle with a long poll interval: an operation is pushed
        ipa = start(RUN_MQTT, tmp_path, tmp_path / "ipa-mqtt.log", subs, env)
        procs.append(ipa)
        deadline = time.monotonic() + 20
        while "poll: idle" not in (tmp_path / "ipa-mqtt.log").read_text():  # connected, first poll done: idle
            assert ipa.poll() is None and time.monotonic() < deadline, (tmp_path / "ipa-mqtt.log").read_text()
            time.sleep(0.1)
        disable = {"psmos": [{"disable": {"iccid": iccid}}]}
        created = tool(tmp_path, "eim", "--json", "op", "create", EID, "psmo", "--params", json.dumps(disable), env=env)
        assert wait_done(tmp_path, json_result(created)["id"], env, timeout=20)["status"] == "done"
        assert sigterm(ipa) == 0
        log = (tmp_path / "ipa-mqtt.log").read_text()
        for text in (
            f"as ipa-{EID} (persistent session), down topic esipa/{EID}/down",
            "pushed TransferEimPackageRequest",
            "operations=['disable']",
            "push: euiccPackageRequest",
        ):
            assert text in log, log
    finally:
        for proc in reversed(procs):
            stop(proc)
