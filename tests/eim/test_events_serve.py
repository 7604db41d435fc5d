"""Events and logs of a real ``eim serve`` process: a webhook delivery that failed before the eIM was killed
(SIGKILL) is delivered after the restart, with the same event id and a valid signature; the process's stderr (JSON
log lines) carries no ANSI colour codes; a failed operation is logged at warning with its EID, id and reason;
``eim op list`` pages through every operation unless ``--limit`` caps it, and says when it stopped early."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from eim.model import Operation, OpKind, OpStatus
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.servers import run_cli, start_eim
from tests.eim.webhook_receiver import ThreadedReceiver
from tests.envelope import json_items

EID = lab_eid(71)
EVENTS = """
[events]
allow_loopback = true
poll_s = 0.2
retry_initial_s = 0.3
retry_max_s = 0.5
timeout_s = 2
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def wait_for(what: str, predicate, server=None, deadline_s: float = 30.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{server.log_text()[-3000:]}" if server else ""))


def test_a_delivery_survives_a_killed_eim(lab, tmp_path):
    receiver = ThreadedReceiver(status=503)
    store_url = f"sqlite:///{tmp_path}/eim.db"
    server = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root, extra_config=EVENTS)
    try:
        api = httpx.Client(base_url=server.url, timeout=10)
        sub = api.post("/v1/subscriptions", json={"url": receiver.url, "events": ["operation.cancelled"]}).json()
        assert api.post("/v1/euiccs", json={"eid": EID}).status_code == 201
        op = api.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data"}).json()["operation"]
        assert api.post(f"/v1/operations/{op['id']}/cancel").status_code == 200

        def failed_once():
            items = api.get(f"/v1/subscriptions/{sub['id']}/deliveries").json()["items"]
            return items if items and items[0]["attempts"] >= 1 and items[0]["last_status"] == 503 else None

        [pending] = wait_for("a failed attempt", failed_once, server)
        assert pending["status"] == "pending" and receiver.received
        first_id = receiver.received[0].headers["x-eim-event-id"]
        server.kill()  # SIGKILL: nothing of the worker's memory survives
        receiver.set_status(200)
        answered = len(receiver.received)
        server = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root, port=server.port, extra_config=EVENTS)
        api = httpx.Client(base_url=server.url, timeout=10)
        wait_for("the delivery after the restart", lambda: len(receiver.received) > answered, server)
        got = receiver.received[-1]
        body = json.loads(got.body)
        assert body["id"] == first_id == got.headers["x-eim-event-id"]
        assert body["type"] == "operation.cancelled" and body["operation_id"] == op["id"]
        expected = "sha256=" + hmac.new(sub["secret"].encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["x-eim-signature"] == expected
        delivered = wait_for(
            "delivered status",
            lambda: api.get(f"/v1/subscriptions/{sub['id']}/deliveries", params={"status": "delivered"}).json()[
                "items"
            ],
            server,
        )
        assert delivered[0]["id"] == pending["id"]
    finally:
        server.stop()
        receiver.close()
    log = server.log_text()
    # uvicorn's coloured copies of its messages (color_message) never reach the JSON lines, raw or JSON-escaped
    assert "\x1b" not in log and "\\u001b" not in log
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert lines and all(json.loads(ln)["logger"] for ln in lines)


def test_op_list_pages_through_everything_unless_limited(lab, tmp_path):
    server = start_eim(tmp_path, store_url=f"sqlite:///{tmp_path}/eim.db", lab_pki=lab.root)
    try:
        api = httpx.Client(base_url=server.url, timeout=10)
        api.post("/v1/euiccs", json={"eid": EID})
        r = api.post("/v1/batches", json={"kind": "euicc_data", "eids": [EID] * 1})
        assert r.status_code == 202
        for _ in range(104):
            api.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data"})
        every = run_cli(server, "op", "list")
        assert every.returncode == 0, every.stderr
        assert len(every.stdout.splitlines()) == 105 and "stopped" not in every.stderr  # the old CLI stopped at 100
        capped = run_cli(server, "op", "list", "--limit", "7")
        assert capped.returncode == 0 and len(capped.stdout.splitlines()) == 7
        assert "stopped after 7 operations (--limit 7); there are more" in capped.stderr
        exact = run_cli(server, "op", "list", "--limit", "105")
        assert len(exact.stdout.splitlines()) == 105 and "stopped" not in exact.stderr
        cancelled = run_cli(server, "batch", "cancel", r.json()["id"])
        assert cancelled.returncode == 0 and "cancelled 1 open operation" in cancelled.stdout, cancelled.stderr
        labelled = run_cli(server, "euicc", "label", EID, "site=berlin", "rack=3")
        assert labelled.returncode == 0 and '"site": "berlin"' in labelled.stdout, labelled.stderr
        run_cli(server, "euicc", "label", EID, "--unset", "rack")
        listed = run_cli(server, "--json", "euicc", "list", "--label", "site=berlin")
        assert [e["labels"] for e in json_items(listed.stdout)] == [{"site": "berlin"}]  # the envelope of cli.md
        assert json_items(run_cli(server, "--json", "euicc", "list", "--label", "site=paris").stdout) == []
        refused = run_cli(server, "euicc", "remove", EID)
        assert refused.returncode == 1 and "104 open operation(s)" in refused.stderr
        assert api.get(f"/v1/euiccs/{EID}").status_code == 200
        removed = run_cli(server, "euicc", "remove", EID, "--force")
        assert removed.returncode == 0 and "cancelled 104 operation(s)" in removed.stdout, removed.stderr
        assert api.get(f"/v1/euiccs/{EID}").status_code == 404
    finally:
        server.stop()


async def test_a_failed_operation_is_logged_at_warning_with_eid_and_reason(store, lab, caplog):
    """An operation whose package can no longer be built (its parameters were broken behind the API's back) fails
    when it is claimed: one warning naming the EID, the operation and why."""
    import logging

    from tests.eim.helpers import get_eim_package_request, make_env

    env = make_env(store, lab)
    await env.service.register_euicc(EID)
    now = time.time()
    bad = Operation(
        id="00000000-0000-4000-8000-0000000000aa",
        eid=EID,
        kind=OpKind.PSMO,
        params={"psmo": "not a list"},
        status=OpStatus.QUEUED,
        created_at=now,
        updated_at=now,
    )
    await store.add_operations([bad], who="test")
    with caplog.at_level(logging.INFO, logger="eim"):
        await env.handle(get_eim_package_request(EID))
    [rec] = [r for r in caplog.records if r.getMessage() == "operation failed"]
    assert rec.levelno == logging.WARNING
    assert (rec.eid, rec.operation) == (EID, bad.id) and rec.reason.startswith("build:")
    assert (await store.get_operation(bad.id)).status is OpStatus.FAILED
