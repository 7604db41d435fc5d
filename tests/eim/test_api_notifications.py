"""The notification outbox in the operator API and CLI, on both stores: ``GET /v1/notifications`` (filters,
pages, the bytes as received), the ``eim_notification_queue`` gauge (no EID labels), OpenAPI; malformed query
strings (hypothesis) get a 4xx with a message and change nothing; ``eim notification list`` refuses bad command
lines with exit 2 and a message naming the step."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.cli import main
from eim.model import NotificationToSend
from eim.store import open_store
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.test_api import TOKEN, build
from tests.services import free_port

EID = lab_eid(71)
T = tlv.encode
CLOSED_PORT = free_port()  # nothing listens there


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def note(i: int) -> NotificationToSend:
    raw = T(0x30, T(0xBF2F, T(0x80, bytes([i])) + T(0x0C, b"smdp.example.com")))
    return NotificationToSend(raw, "smdp.example.com", "other", eid=EID, seq_number=i)


async def fill(store) -> tuple[int, int, int]:
    """Three notifications: two pending (one after a failed attempt), one failed."""
    rows = [r for r, _ in await store.enqueue_notifications([note(1), note(2), note(3)], who="ipa", now=1000.0)]
    a, b, c = (r.id for r in rows)
    claimed = await store.claim_notifications(now=1000.0, lease_s=60, owner="w", limit=2)
    assert [n.id for n in claimed] == [a, b]
    await store.notification_retry(
        a, next_attempt_at=2000.0, error="ES9+ handleNotification: down", now=1001, owner="w"
    )
    await store.notification_failed(b, reason="ES9+ handleNotification: Failed 8.1/6.1", now=1002, owner="w")
    return a, b, c


async def test_list_filter_page_and_bytes(store, lab):
    _env, c = build(store, lab)
    async with c:
        assert (await c.get("/v1/notifications")).json() == {"items": [], "next": None, "next_url": None}
        a, b, third = await fill(store)
        every = (await c.get("/v1/notifications")).json()
        assert [n["id"] for n in every["items"]] == [a, b, third] and every["next"] is None
        pending = (await c.get("/v1/notifications", params={"status": "pending"})).json()["items"]
        assert [n["id"] for n in pending] == [a, third]
        first = pending[0]
        assert (first["status"], first["attempts"], first["last_error"]) == (
            "pending",
            1,
            "ES9+ handleNotification: down",
        )
        assert first["next_attempt_at"] == "1970-01-01T00:33:20Z" and first["leased"] is False
        assert (first["eid"], first["kind"], first["seq_number"], first["address"]) == (
            EID,
            "other",
            1,
            "smdp.example.com",
        )
        assert base64.b64decode(first["notification"]) == note(1).notification
        [failed] = (await c.get("/v1/notifications", params={"status": "failed"})).json()["items"]
        assert (
            failed["id"] == b and failed["last_error"].endswith("Failed 8.1/6.1") and failed["next_attempt_at"] is None
        )
        page = (await c.get("/v1/notifications", params={"limit": 2})).json()
        assert [n["id"] for n in page["items"]] == [a, b] and page["next"]  # an opaque cursor
        rest = (await c.get("/v1/notifications", params={"limit": 2, "cursor": page["next"]})).json()
        assert [n["id"] for n in rest["items"]] == [third] and rest["next"] is None
        for params, words in (
            ({"status": "delivered"}, "status"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
        ):
            r = await c.get("/v1/notifications", params=params)
            assert r.status_code == 422 and words in r.json()["error"]["message"], (params, r.text)
        for params, field in (
            ({"cursor": "-1"}, "cursor"),
            ({"cursor": "x"}, "cursor"),
            ({"after": "1"}, "after"),  # the old parameter: unknown now, never silently ignored
        ):
            r = await c.get("/v1/notifications", params=params)
            assert r.status_code == 400 and r.json()["error"]["field"] == field, (params, r.text)
        c.headers.pop("Authorization")
        assert (await c.get("/v1/notifications")).status_code == 401


async def test_gauge_and_openapi(store, lab):
    _env, c = build(store, lab)
    async with c:
        await fill(store)
        text = (await c.get("/metrics")).text
        assert 'eim_notification_queue{status="pending"} 2.0' in text
        assert 'eim_notification_queue{status="failed"} 1.0' in text
        assert EID not in text and "smdp.example.com" not in text  # no EID (or address) labels
        spec = (await c.get("/openapi.json")).json()
        op = spec["paths"]["/v1/notifications"]["get"]
        assert {p["name"] for p in op["parameters"]} == {"status", "limit", "cursor"}
        assert "notifications" in op["tags"]


QUERY_KEYS = st.sampled_from(["status", "limit", "cursor", "eid", "kind"])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
VALUES = st.one_of(TEXT, st.integers(-(2**70), 2**70).map(str), st.sampled_from(["pending", "failed", "", "nan"]))


def test_garbage_queries_get_4xx_with_a_message_and_change_nothing(store_url, lab):
    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        _env, client = build(store, lab)
        runner.run(fill(store))
        before = runner.run(store.list_notifications(limit=1000))

        # "." and ".." are dot segments: the client resolves /v1/notifications/. to the collection itself (RFC 3986
        # §5.2.4), so they name no other resource
        suffixes = TEXT.filter(lambda t: quote(t, safe="") not in (".", ".."))

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(query=st.dictionaries(QUERY_KEYS, VALUES, max_size=4), suffix=st.one_of(st.none(), suffixes))
        def probe(query, suffix):
            path = "/v1/notifications" + ("" if suffix is None else "/" + (quote(suffix, safe="") or "x"))
            resp = runner.run(client.get(path, params=query))
            assert resp.status_code < 500, (path, query, resp.text)
            if resp.status_code >= 400:
                assert resp.json()["error"]["message"], resp.text
            else:
                assert suffix is None and isinstance(resp.json()["items"], list)

        probe()
        assert runner.run(store.list_notifications(limit=1000)) == before
        runner.run(client.aclose())
        runner.run(store.close())
    finally:
        runner.close()


# ------------------------------------------------------------------------------------------------ CLI
ARGS = st.lists(
    st.one_of(
        st.sampled_from(["--status", "--limit", "--json", "pending", "failed", "0", "-1", "x", "list", "--eid"]),
        TEXT,
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=ARGS)
def test_cli_bad_command_lines_exit_2_with_a_message(args):
    """Whatever follows ``eim notification``: a bad command line exits 2 with a message, a good one reaches for the
    eIM (here a closed port: exit 3, naming the step), never a traceback."""
    import contextlib
    import io

    url = f"http://127.0.0.1:{CLOSED_PORT}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["--url", url, "--token", TOKEN, "notification", *args])
        except SystemExit as exc:  # argparse
            code = exc.code
    assert code in (0, 2, 3), (args, code, err.getvalue())
    if code:
        assert err.getvalue().strip(), args
    if code == 3:
        assert "list notifications: cannot reach the eIM" in err.getvalue()
    assert code != 0 or "-h" in args or "--help" in args


def test_cli_exit_codes(capsys):
    assert main(["--url", f"http://127.0.0.1:{CLOSED_PORT}", "notification", "list", "--limit", "0"]) == 2
    assert "notification list: --limit must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["notification", "list", "--status", "delivered"])
    assert exc.value.code == 2 and "invalid choice: 'delivered'" in capsys.readouterr().err
    assert main(["--url", f"http://127.0.0.1:{CLOSED_PORT}", "--json", "notification", "list"]) == 3
    out, err = capsys.readouterr()
    assert '"exit":3' in out and "cannot reach the eIM" in err


def test_cli_euicc_list_state_is_validated_before_the_eim_is_asked(capsys):
    """``eim euicc list --state`` takes the states of ``GET /v1/euiccs?state=`` and nothing else: a usage error
    (exit 2) naming the option, without a request (the eIM's port is closed: reaching for it would be exit 3)."""
    with pytest.raises(SystemExit) as exc:
        main(["--url", f"http://127.0.0.1:{CLOSED_PORT}", "euicc", "list", "--state", "seen_2h"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--state" in err and "invalid choice: 'seen_2h'" in err
    assert main(["--url", f"http://127.0.0.1:{CLOSED_PORT}", "euicc", "list", "--state", "stale"]) == 3
    assert "list eUICCs: cannot reach the eIM" in capsys.readouterr().err
    from eim.api.fleet import STATES
    from eim.cli import EUICC_STATES

    assert EUICC_STATES == STATES  # the same choices as the API's filter
