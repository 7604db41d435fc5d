"""docs/eim.md section 1: one worker on SQLite, the operator commands and a real device, run as shown.

The doc's port 8080 and pty path are replaced by a free port and a path in the test's directory; the doc's
operation id by the id the run produced. Outputs are compared on their stable parts (not ids and times).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from demo.procs import free_port, wait_path, wait_port
from tests.docs.doccmds import doc_cmd, run, start, stop

EID = "89999000000000000000000000010121"
SERVE = doc_cmd("eim.md", "eim serve")
REGISTER = doc_cmd("eim.md", f"eim euicc register {EID} --association-token 1 --counter 0 --label site=berlin")
CURL_OP = doc_cmd(
    "eim.md",
    f"curl -s -X POST http://127.0.0.1:8080/v1/euiccs/{EID}/operations -H 'Content-Type: application/json' "
    """-d '{"kind": "psmo", "params": {"psmos": [{"listProfileInfo": {}}, {"getRAT": {}}]}, "validity_s": 86400}'""",
)
OP_LIST = doc_cmd("eim.md", f"eim op list --eid {EID}")
GET_DER = doc_cmd("eim.md", f"printf 'BF4F125A10%s' {EID} | xxd -r -p > get.der")
CURL_GET = doc_cmd(
    "eim.md",
    "curl -s --data-binary @get.der -H 'Content-Type: application/x-gsma-rsp-asn1' "
    "http://127.0.0.1:8080/gsma/rsp2/asn1 | xxd -p -c 256",
)
CARD = doc_cmd("eim.md", f"euicc new --pki eim-data/pki --eid {EID} --state card.cbor")
MODEM = doc_cmd("eim.md", "fwbridge virtual-modem --card card.cbor --link /tmp/eimdoc/modem &")
ADD_INITIAL = doc_cmd("eim.md", "ipa --json --port /tmp/eimdoc/modem eim add-initial provisioning.toml")
POLL = doc_cmd("eim.md", "IPA_EIM_URL=http://127.0.0.1:8080 ipa --json --port /tmp/eimdoc/modem poll --once")
OP_SHOW = doc_cmd("eim.md", "eim op show 1e3ed794-9fc0-4098-ba4d-7d2d31bfbe84")
EUICC_LIST = doc_cmd("eim.md", "eim euicc list")
DOWNLOAD = doc_cmd(
    "eim.md", f"eim --json op create {EID} download --activation-code '1$smdp.example.com$04386-AGYFT-A74Y8-3F815'"
)
REGISTER_SECOND = doc_cmd("eim.md", "eim euicc register 89999000000000000000000000010218")
BATCH = doc_cmd(
    "eim.md",
    f"eim batch create psmo --eid {EID} --eid 89999000000000000000000000010218 "
    """--eid 89999000000000000000000000019999 --params '{"psmos":[{"getRAT":{}}]}'""",
)
BAD_EID = doc_cmd(
    "eim.md",
    "curl -s -X POST http://127.0.0.1:8080/v1/euiccs -H 'Content-Type: application/json' "
    """-d '{"eid":"8999900000000000000000000001012"}'""",
)


def lpa_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_eim_guide_section_1(tmp_path: Path) -> None:
    port = free_port()
    subs = {"127.0.0.1:8080": f"127.0.0.1:{port}", "/tmp/eimdoc/modem": str(tmp_path / "modem")}
    env = {
        "EIM_HTTP_PORT": str(port),  # `eim serve` without a config listens on 8080: the doc's port, moved
        "EIM_API_URL": f"http://127.0.0.1:{port}",  # and the CLI's default --url with it
        "IPA_IPA_STATE_FILE": str(tmp_path / "ipa-state.cbor"),  # the default is /var/lib/ipa/state.cbor
    }
    eim = start(SERVE, tmp_path, tmp_path / "eim.log", subs, env)
    modem = None
    try:
        wait_port(port, proc=eim)
        # the doc's log lines, without their time stamps; the port may open just before the last line is written
        wanted = [f'"message": "{json.loads(shown)["message"]}"' for shown in SERVE.output]
        deadline = time.monotonic() + 20
        while not all(w in (log := (tmp_path / "eim.log").read_text()) for w in wanted):
            assert eim.poll() is None and time.monotonic() < deadline, ([w for w in wanted if w not in log], log)
            time.sleep(0.05)
        assert (tmp_path / "eim-data" / "pki").is_dir()

        out = run(REGISTER, tmp_path, subs, env).stdout
        assert out.startswith(f"registered {EID}  eim=eim.lab  counter=0  cert=no  binding=-"), out
        op = json.loads(run(CURL_OP, tmp_path, subs, env).stdout)
        assert op["status"] == "queued" and op["operation"]["kind"] == "psmo" and op["operation"]["eid"] == EID
        listed = run(OP_LIST, tmp_path, subs, env).stdout.splitlines()
        assert [(w[1], w[2], w[3]) for w in map(str.split, listed)] == [
            (EID, "euicc_data", "queued"),
            (EID, "psmo", "queued"),
        ], listed

        run(GET_DER, tmp_path, subs, env)
        answer = run(CURL_GET, tmp_path, subs, env).stdout.strip()  # one line, as the doc shows it
        # BF4F { BF52 IpaEuiccDataRequest { 5C A5 A6 A8 BF22 81, 83 eimTransactionId } }: the id differs per run
        assert answer.startswith("bf4f1dbf521a5c06a5a6a8bf22818310") and len(answer) == 64, answer

        # the real device: the provisioning file (docs/ipa.md format) names the eIM's signing certificate
        from rsp.pki import LabPki, Role

        eim_cert = LabPki.load(tmp_path / "eim-data" / "pki").cert_path(Role.EIM, "nist")
        (tmp_path / "provisioning.toml").write_text(
            f'[[eim]]\nid = "eim.lab"\nfqdn = "127.0.0.1:{port}"\nid_type = "fqdn"\ncounter_value = 0\n'
            f'certificate_pem = "{eim_cert}"\nprotocols = ["retrieveHttps"]\n'
        )
        run(CARD, tmp_path, subs, env)
        modem = start(MODEM, tmp_path, tmp_path / "modem.log", subs, env)
        wait_path(tmp_path / "modem", proc=modem)
        added = lpa_lines(run(ADD_INITIAL, tmp_path, subs, env).stdout)
        assert added[-1]["payload"]["data"]["associationToken"] == [1]
        outcomes = []
        for _ in range(3):  # "(three times)"
            last = lpa_lines(run(POLL, tmp_path, subs, env).stdout)[-1]["payload"]["data"]
            outcomes.append((last["outcome"], last["detail"]))
        assert outcomes == [
            ("work", "ipaEuiccDataRequest"),
            ("work", "euiccPackageRequest"),
            ("idle", "noEimPackageAvailable"),
        ]

        shown = run(OP_SHOW, tmp_path, {**subs, "1e3ed794-9fc0-4098-ba4d-7d2d31bfbe84": op["id"]}, env).stdout
        record = json.loads(shown)
        assert record["status"] == "done" and record["kind"] == "psmo" and record["counter_value"] == 1
        assert [r["type"] for r in record["result"]["results"]] == ["listProfileInfoResult", "getRATResult"]
        assert [a["action"] for a in record["audit"]] == ["create", "hand_out", "result"]
        euiccs = run(EUICC_LIST, tmp_path, subs, env).stdout
        assert f"{EID}  eim=eim.lab  counter=1  cert=yes  binding=http" in euiccs, euiccs

        created = json.loads(run(DOWNLOAD, tmp_path, subs, env).stdout)["payload"]["data"]
        assert created["status"] == "queued"
        # the device reported eimDownloadDataHandling in the data request above: the eIM keeps the download data
        assert created["params"].get("eimHoldsData") is True, created["params"]
        assert {k: created["params"].get(k) for k in ("activationCode", "mode", "smdpAddress")} == {
            "activationCode": "1$smdp.example.com$04386-AGYFT-A74Y8-3F815",
            "mode": "indirect",
            "smdpAddress": "smdp.example.com",
        }

        out = run(REGISTER_SECOND, tmp_path, subs, env).stdout
        assert out.startswith("registered 89999000000000000000000000010218  eim=eim.lab  counter=0"), out
        done = run(BATCH, tmp_path, subs, env, ok=False)
        assert done.returncode == 1 and "eim: create batch: 1 of 3 item(s) refused" in done.stderr, done.stderr
        batch = done.stdout.splitlines()
        assert "kind=psmo  queued=2 refused=1" in batch[0], batch
        rows = [line.split() for line in batch[1:]]
        assert [r[:3] for r in rows] == [
            ["0", EID, "queued"],
            ["1", "89999000000000000000000000010218", "queued"],
            ["2", "89999000000000000000000000019999", "refused"],
        ]
        assert "(check digits are wrong (int(EID) mod 97 must be 1))" in batch[3]

        assert run(BAD_EID, tmp_path, subs, env).stdout.strip() == BAD_EID.output[0]
    finally:
        if modem is not None:
            stop(modem)
        stop(eim)
