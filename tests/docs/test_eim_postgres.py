"""docs/eim.md section 7 (two workers on one PostgreSQL) and the token example of section 3, run as shown on a
private PostgreSQL cluster (tests/services.py); ports replaced by free ones."""

from __future__ import annotations

import json
import time
from pathlib import Path

from demo.procs import free_port, wait_port
from tests.docs.doccmds import doc_cmd, run, start, stop

EID = "89999000000000000000000000000130"
CREATEDB = doc_cmd("eim.md", "createdb -h 127.0.0.1 -p 39211 -U postgres eim")
PKI = doc_cmd("eim.md", "rsp pki init --curve both pki")
CAT = doc_cmd("eim.md", "cat eim.toml")
WORKER1 = doc_cmd("eim.md", "EIM_HTTP_PORT=8081 eim --config eim.toml serve &")
WORKER2 = doc_cmd("eim.md", "EIM_HTTP_PORT=8082 eim --config eim.toml serve &")
REGISTER = doc_cmd("eim.md", f"eim --config eim.toml --token change-me euicc register {EID} --association-token 1")
QUEUE = doc_cmd(
    "eim.md",
    f"curl -s -H 'Authorization: Bearer change-me' -X POST http://127.0.0.1:8081/v1/euiccs/{EID}/operations "
    "-H 'Content-Type: application/json' "
    """-d '{"kind":"euicc_data","params":{"tags":["euiccInfo2","ipaCapabilities"]}}'""",
)
GET_DER = doc_cmd("eim.md", "printf 'BF4F125A10%s' 89999000000000000000000000000130 | xxd -r -p > get.der")
FETCH2 = doc_cmd(
    "eim.md",
    "curl -s --data-binary @get.der -H 'Content-Type: application/x-gsma-rsp-asn1' "
    "http://127.0.0.1:8082/gsma/rsp2/asn1 | xxd -p -c 256",
)
FETCH1 = doc_cmd(
    "eim.md",
    "curl -s --data-binary @get.der -H 'Content-Type: application/x-gsma-rsp-asn1' "
    "http://127.0.0.1:8081/gsma/rsp2/asn1 | xxd -p -c 256",
)
OP_LIST = doc_cmd("eim.md", "EIM_API_TOKEN=change-me eim --config eim.toml op list")
NO_TOKEN = doc_cmd("eim.md", "curl -s http://127.0.0.1:8081/v1/euiccs")


def test_two_workers_on_postgresql(tmp_path: Path, postgres) -> None:
    w1, w2 = free_port(), free_port()
    subs = {"39211": str(postgres.port), "8081": str(w1), "8082": str(w2)}
    run(CREATEDB, tmp_path, subs)
    run(PKI, tmp_path, subs)
    # eim.toml is what the doc's `cat eim.toml` shows
    (tmp_path / "eim.toml").write_text(
        "\n".join(CAT.output).replace("39211", str(postgres.port)).replace("8081", str(w1)) + "\n"
    )
    shown = run(CAT, tmp_path, subs).stdout
    assert shown == (tmp_path / "eim.toml").read_text()
    workers = []
    try:
        for cmd, port in ((WORKER1, w1), (WORKER2, w2)):
            workers.append(start(cmd, tmp_path, tmp_path / f"eim-{port}.log", subs))
            wait_port(port, proc=workers[-1])
        for port, proc in zip((w1, w2), workers, strict=True):
            line = f'"message": "HTTP listening", "host": "127.0.0.1", "port": {port}, "store": "postgresql"'
            deadline = time.monotonic() + 20  # the port may open just before the line is written
            while line not in (log := (tmp_path / f"eim-{port}.log").read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, log
                time.sleep(0.05)

        out = run(REGISTER, tmp_path, subs).stdout
        assert out.startswith(f"registered {EID}  eim=eim.lab  counter=0  cert=no  binding=-"), out
        queued = json.loads(run(QUEUE, tmp_path, subs).stdout)
        assert queued["status"] == "queued"
        run(GET_DER, tmp_path, subs)
        first = run(FETCH2, tmp_path, subs).stdout.strip()
        again = run(FETCH1, tmp_path, subs).stdout.strip()
        # BF4F { BF52 { 5C BF22 A8, 83 eimTransactionId } }, handed out again with the same bytes
        assert first.startswith("bf4f1abf52175c03bf22a88310") and len(first) == 58, first
        assert again == first
        rows = [line.split() for line in run(OP_LIST, tmp_path, subs).stdout.splitlines()]
        assert [r[1:] for r in rows] == [[EID, "euicc_data", "in_progress", "attempts=2"]]
        assert run(NO_TOKEN, tmp_path, subs).stdout.strip() == NO_TOKEN.output[0]
    finally:
        for proc in workers:
            stop(proc)
