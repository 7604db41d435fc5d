"""Events on both stores, delivered to a real HTTP receiver on loopback: subscriptions over the API (URL checks,
the secret shown once), signed deliveries carrying the event id, retries with backoff, failed deliveries listed
and re-sent, state changes reported in GetEimPackage, eUICCs going stale; the URL checks under hypothesis."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.app import create_app
from eim.config import Config
from eim.events import signing
from eim.events.deliverer import EventDeliverer, EventSettings, backoff
from eim.events.webhook_url import UrlPolicy, WebhookUrlError, check_url, host_class
from eim.model import Euicc
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import make_env
from tests.eim.webhook_receiver import Receiver

TOKEN = "events-token"
EID, EID2 = lab_eid(61), lab_eid(62)
LAB = UrlPolicy(allow_loopback=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


class Clock:
    """Real time plus what the test skipped ahead (``clock.now += 60``)."""

    def __init__(self) -> None:
        self.offset = 0.0

    @property
    def now(self) -> float:
        return time.time() + self.offset

    @now.setter
    def now(self, value: float) -> None:
        self.offset = value - time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rig(store, lab):
    env = make_env(store, lab)
    cfg = Config()
    cfg.api.token = TOKEN
    cfg.events.allow_loopback = True
    clock = Clock()
    deliverer = EventDeliverer(
        store,
        EventSettings(url_policy=LAB, retry_initial_s=10, retry_max_s=100, max_attempts=3, settle_s=0.0),
        clock=clock,
        owner="test-worker",
    )
    app = create_app(cfg, store, env.dispatcher, service=env.service)
    receiver = await Receiver().start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://eim", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        yield env, c, deliverer, receiver, clock
    await deliverer.aclose()
    await receiver.stop()


async def subscribe(c, url: str, events: list[str]) -> dict:
    r = await c.post("/v1/subscriptions", json={"url": url, "events": events, "description": "ops team"})
    assert r.status_code == 201, r.text
    return r.json()


def signed_by(secret: str, got) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    return got.headers["x-eim-signature"] == expected


async def test_operation_end_is_delivered_signed_with_its_event_id(rig, store):
    _env, c, deliverer, receiver, _ = rig
    sub = await subscribe(c, receiver.url, ["operation.cancelled", "operation.done"])
    assert sub["secret"].startswith("whsec_")
    listed = (await c.get("/v1/subscriptions")).json()["items"]
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]  # shown once only
    assert "secret" not in (await c.get(f"/v1/subscriptions/{sub['id']}")).json()
    await c.post("/v1/euiccs", json={"eid": EID})
    op = (await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data"})).json()["operation"]
    await c.post(f"/v1/operations/{op['id']}/cancel")
    assert await deliverer.tick() == 1
    [got] = receiver.received
    body = json.loads(got.body)
    assert body["type"] == "operation.cancelled" and body["operation_id"] == op["id"] and body["eid"] == EID
    assert got.headers["x-eim-event"] == "operation.cancelled" and got.headers["x-eim-event-id"] == body["id"]
    assert signed_by(sub["secret"], got) and signing.verify(sub["secret"], got.body, got.headers["x-eim-signature"])
    assert not signing.verify("whsec_other", got.body, got.headers["x-eim-signature"])
    [d] = (await c.get(f"/v1/subscriptions/{sub['id']}/deliveries")).json()["items"]
    assert d["status"] == "delivered" and d["attempts"] == 1 and d["last_status"] == 200
    assert await deliverer.tick() == 0 and len(receiver.received) == 1  # delivered once


async def test_failed_deliveries_back_off_end_failed_are_listed_and_resent(rig, store):
    _env, c, deliverer, receiver, clock = rig
    sub = await subscribe(c, receiver.url, ["operation.cancelled"])
    receiver.status = 503
    await c.post("/v1/euiccs", json={"eid": EID})
    op = (await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data"})).json()["operation"]
    await c.post(f"/v1/operations/{op['id']}/cancel")
    assert await deliverer.tick() == 1
    [d] = (await c.get(f"/v1/subscriptions/{sub['id']}/deliveries", params={"status": "pending"})).json()["items"]
    assert d["attempts"] == 1 and d["last_status"] == 503 and d["last_error"] == "HTTP 503"
    assert await deliverer.tick() == 0  # not due before its backoff
    clock.now += 10 * 1.2 + 1
    assert await deliverer.tick() == 1
    clock.now += 20 * 1.2 + 1
    assert await deliverer.tick() == 1  # the third attempt: max_attempts
    failed = (await c.get(f"/v1/subscriptions/{sub['id']}/deliveries", params={"status": "failed"})).json()["items"]
    assert [f["id"] for f in failed] == [d["id"]] and failed[0]["attempts"] == 3
    assert len(receiver.received) == 3 and len({r.headers["x-eim-event-id"] for r in receiver.received}) == 1
    clock.now += 1000
    assert await deliverer.tick() == 0  # failed stays failed
    receiver.status = 200
    r = await c.post(f"/v1/subscriptions/{sub['id']}/deliveries/{d['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert await deliverer.tick() == 1
    assert (await c.get(f"/v1/subscriptions/{sub['id']}/deliveries")).json()["items"][0]["status"] == "delivered"
    assert len({r.headers["x-eim-event-id"] for r in receiver.received}) == 1  # the same event, again
    for bad in ("x", "99999", "-1"):
        assert (await c.post(f"/v1/subscriptions/{sub['id']}/deliveries/{bad}/retry")).status_code == 404
    bad = await c.get(f"/v1/subscriptions/{sub['id']}/deliveries", params={"status": "lost"})
    assert bad.status_code == 422 and "status" in bad.json()["error"]["message"]


async def test_state_change_from_get_eim_package_is_an_event_with_its_cause(rig, store):
    env, c, deliverer, receiver, _ = rig
    await subscribe(c, receiver.url, ["euicc.notification"])
    await c.post("/v1/euiccs", json={"eid": EID})
    # BF4F { 5A eid, 80 00 notifyStateChange, 81 01 05 stateChangeCause immediateEnableProfile, 82 03 rPLMN }
    body = tlv.encode(0x5A, bytes.fromhex(EID)) + b"\x80\x00" + b"\x81\x01\x05" + b"\x82\x03\x62\xf2\x10"
    answer = await env.handle(tlv.encode(0xBF4F, body))
    assert answer is not None
    assert await deliverer.tick() == 1
    event = json.loads(receiver.received[0].body)
    assert event["type"] == "euicc.notification" and event["eid"] == EID
    assert event["data"] == {"source": "state_change", "stateChangeCause": "immediateEnableProfile", "rPLMN": "62F210"}


async def test_an_euicc_going_silent_is_a_stale_event_once(rig, store):
    _env, c, deliverer, receiver, clock = rig
    await subscribe(c, receiver.url, ["euicc.stale"])
    await c.post("/v1/euiccs", json={"eid": EID})
    await c.post("/v1/euiccs", json={"eid": EID2})
    await c.patch(f"/v1/euiccs/{EID2}", json={"poll_interval_s": 600})
    deliverer.settings = EventSettings(
        url_policy=LAB, default_poll_interval_s=3600, stale_check_s=1, settle_s=0.0, retry_initial_s=1
    )
    await store.update_euicc(EID, last_contact=clock.now - 100)
    await store.update_euicc(EID2, last_contact=clock.now - 100)
    await deliverer.tick()  # the first scan only sets where scanning starts
    clock.now += 600
    await deliverer.tick()
    assert [json.loads(r.body)["eid"] for r in receiver.received] == [EID2]  # its own 10 min interval
    clock.now += 3000
    await deliverer.tick()
    clock.now += 5
    await deliverer.tick()
    events = [json.loads(r.body) for r in receiver.received]
    assert [e["eid"] for e in events] == [EID2, EID] and {e["type"] for e in events} == {"euicc.stale"}
    assert events[1]["data"]["poll_interval_s"] == 3600


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[::ffff:169.254.169.254]/x", "link-local"),
        ("https://metadata.google.internal/computeMetadata", "metadata"),
        ("https://0.0.0.0/x", "link-local"),
        ("https://10.1.2.3/x", "private"),
        ("https://user:pw@hooks.example.com/x", "user info"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https:///x", "no host"),
        ("ftp://hooks.example.com/x", "https"),
        ("https://hooks.example.com:99999/x", "URL"),
        ("https://hooks.example.com/a b", "white space"),
    ],
)
async def test_subscription_url_checks(store, lab, url, why):
    env = make_env(store, lab)
    cfg = Config()
    cfg.api.token = TOKEN
    app = create_app(cfg, store, env.dispatcher, service=env.service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://eim", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        r = await c.post("/v1/subscriptions", json={"url": url, "events": ["operation.done"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "url", r.text
        assert why in r.json()["error"]["message"], r.text
        # loopback only with [events] allow_loopback (not set here)
        r = await c.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/x", "events": ["operation.done"]})
        assert r.status_code == 400 and "loopback" in r.json()["error"]["message"]
        r = await c.post("/v1/subscriptions", json={"url": "https://hooks.example.com/x", "events": ["op.done"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "events"
        assert (await c.get("/v1/subscriptions")).json()["items"] == []
        ok = await c.post("/v1/subscriptions", json={"url": "https://hooks.example.com/x", "events": ["euicc.stale"]})
        assert ok.status_code == 201


async def test_a_host_name_resolving_inside_is_not_contacted(store, monkeypatch):
    """A public-looking name whose DNS answer is the metadata service or a private address: the deliverer resolves
    before it connects, refuses, and sends nothing (the resolver is the only stand-in here)."""
    import asyncio
    import socket

    from eim.store.events import Subscription

    answers = {"hooks.example.com": "169.254.169.254", "intranet.example.com": "10.0.0.5"}

    async def fake_getaddrinfo(host, port, **_kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    sent = []

    def handler(request):
        sent.append(request)
        return httpx.Response(200)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    d = EventDeliverer(store, EventSettings(settle_s=0.0), transport=httpx.MockTransport(handler), owner="w")
    for n, (host, words) in enumerate((("hooks.example.com", "link-local"), ("intranet.example.com", "private"))):
        sid = f"00000000-0000-4000-8000-00000000000{n}"
        await store.add_subscription(Subscription(sid, f"https://{host}/x", ("euicc.stale",), "s", "", 0.0, "t"))
        why = await d._refusal(f"https://{host}/x")
        assert why is not None and words in why
    await d.aclose()
    assert sent == []


def test_backoff_is_exponential_capped_and_jittered():
    s = EventSettings(retry_initial_s=5, retry_max_s=60, jitter=0.2)
    assert [backoff(n, s, rand=lambda: 0.5) for n in (1, 2, 3, 4, 5, 50)] == [5, 10, 20, 40, 60, 60]
    assert backoff(1, s, rand=lambda: 0.0) == pytest.approx(4.0) and backoff(1, s, rand=lambda: 1.0) == 6.0


URL_CHARS = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=60)


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["https", "http", "HTTPS", "ftp", "", "javascript"]),
    host=st.one_of(
        URL_CHARS,
        st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
        st.sampled_from(["localhost", "169.254.169.254", "2130706433", "0x7f.1", "127.1", "metadata", "[::1]"]),
    ),
    rest=URL_CHARS,
    loopback=st.booleans(),
    private=st.booleans(),
)
def test_url_parser_never_lets_a_forbidden_host_through(scheme, host, rest, loopback, private):
    from urllib.parse import urlsplit

    url = f"{scheme}://{host}{rest}"
    policy = UrlPolicy(allow_loopback=loopback, allow_private=private)
    try:
        ok = check_url(url, policy)
    except WebhookUrlError as exc:
        assert exc.reason
        return
    parts = urlsplit(ok)
    kind = host_class(parts.hostname or "")
    assert kind != "never"
    assert parts.scheme.lower() == "https" or (kind == "loopback" and loopback)
    assert kind != "loopback" or loopback
    assert kind != "private" or private
    assert parts.username is None and not parts.fragment


async def test_a_notification_taken_for_an_smdp_is_an_event(rig, store):
    """The eIM took a verified notification into its outbox (its audit row): subscribers hear of it."""
    from eim.model import NotificationToSend

    _env, c, deliverer, receiver, _ = rig
    await subscribe(c, receiver.url, ["euicc.notification"])
    await c.post("/v1/euiccs", json={"eid": EID})
    note = NotificationToSend(b"\x30\x03\x02\x01\x07", "smdp.example.com", "other", eid=EID, seq_number=7)
    [(_row, created)] = await store.enqueue_notifications([note], who="ipa")
    assert created
    assert await deliverer.tick() == 1
    event = json.loads(receiver.received[0].body)
    assert (event["type"], event["eid"]) == ("euicc.notification", EID)
    assert event["data"] == {"source": "notification", "kind": "other", "seq_number": 7, "address": "smdp.example.com"}
    await store.enqueue_notifications([note], who="ipa")  # the same bytes again: not queued, no second event
    assert await deliverer.tick() == 0 and len(receiver.received) == 1


async def test_a_receiver_that_never_answers_is_a_failed_attempt_within_the_timeout(store):
    """A subscriber that accepts the connection and then sends its headers a byte at a time, forever: the attempt
    ends after timeout_s for the whole exchange, the delivery is pending with the reason."""
    import asyncio

    from eim.store.events import Subscription

    async def drip(reader, writer):
        await reader.readline()
        try:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            while True:
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"X")
        except (ConnectionError, asyncio.CancelledError):
            pass

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sid = "00000000-0000-4000-8000-0000000000d1"
    await store.add_subscription(Subscription(sid, f"http://127.0.0.1:{port}/x", ("euicc.stale",), "s", "", 0, "t"))
    await store.add_euicc(Euicc(eid=EID, eim_id="e", association_token=None, counter_value=0), who="t")
    d = EventDeliverer(store, EventSettings(url_policy=LAB, timeout_s=0.5, settle_s=0.0, default_poll_interval_s=60))
    await d.tick()  # the first stale scan sets the cursor
    await store.update_euicc(EID, last_contact=time.time() - 30)
    d._last_stale = 0.0
    d.clock = lambda: time.time() + 60
    assert await d.tick() == 1  # returns: the deadline ended the attempt, not the (endless) drip
    [row] = await store.list_deliveries(sid)
    assert row.status == "pending" and row.last_error == "no answer within 0.5 s"
    await d.aclose()
    server.close()
