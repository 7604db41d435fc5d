"""Notification forgery and SSRF through the eIM (security issue 13), as an attacker does it: HandleNotification
(ESipa BF3D) with an otherSignedNotification carrying 64 random bytes as its signature and an address of the
attacker's choice. Before the fix it was answered 204, written to the outbox and sent there (with retries).

Now: nothing unverified reaches the outbox (store rows) or the network (a TCP listener counts connections while
the forwarder runs), a genuine notification of the project's software eUICC still reaches the lab SM-DP+, another
eUICC's notification is refused, SM-DP+ addresses of operations are checked, and every eUICC has a cap and a rate.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from eim.app import create_app, operation_settings
from eim.config import Config
from eim.interfaces import EsipaRejected, NotificationRefused, RequestContext
from eim.metrics import Metrics
from eim.model import OpKind
from eim.operations import OperationService
from eim.packages import PackageFactory
from eim.relay import Es9PlusClient, Es9Relay, tls_context
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.helpers import get_eim_package_request as gep
from tests.eim.helpers import lab_admission, make_env, provide_result, unwrap_package
from tests.eim.test_dispatcher_flows import RecordingRelay, make_pir, ready_card
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID_A = lab_eid(131)
EID_B = lab_eid(132)
EID_C = lab_eid(133)
ICCID = "8949449999999990920"
FAST_POLL = 0.05


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("forgery-pki"), curves=("nist",), eids=(EID_A, EID_B, EID_C))


@pytest.fixture
async def client(lab):
    c = Es9PlusClient(tls_context([lab.ca_bundle_path]), timeout=5)
    yield c
    await c.aclose()


class Listener:
    """A TCP listener on loopback that counts the connections made to it (the attacker's target)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def on_connect(reader, writer):
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def forged(lab, eid: str, address: str, *, seq: int = 7) -> bytes:
    """An otherSignedNotification as an attacker writes it: the victim card's public certificates (they travel in
    every notification it ever sent), metadata of the attacker's choice, and 64 random bytes as the signature."""
    card = SimEuicc(lab, "nist", eid=eid)
    meta = T(0xBF2F, T(0x80, bytes([seq])) + T(0x81, b"\x06\x40") + T(0x0C, address.encode()))
    return T(0x30, meta + T(0x5F37, os.urandom(64)) + card.cert_der + card.eum_der)


def handle(note: bytes) -> bytes:
    return T(0xBF3D, T(0xA0, note))


async def run_forwarder(outbox, store, polls: int = 4) -> None:
    """Run the forwarder task until it has looked for due notifications ``polls`` times (no time assertion:
    the condition is the number of store polls)."""
    seen = 0
    original = store.claim_notifications

    async def counting(**kw):
        nonlocal seen
        seen += 1
        return await original(**kw)

    store.claim_notifications = counting
    task = outbox.start()
    try:
        deadline = time.monotonic() + 20
        while seen < polls:
            assert time.monotonic() < deadline, "the forwarder did not poll"
            await asyncio.sleep(FAST_POLL)
    finally:
        await outbox.aclose()
        store.claim_notifications = original
    assert task.done()


def refused_audit(entries):
    return [a.detail["cause"] for a in entries if a.action == "notification" and a.outcome == "refused"]


# ---------------------------------------------------------------- the attack of the finding
async def test_forged_notification_never_reaches_the_outbox_or_the_network(store, lab, client):
    from eim.relay.outbox import RetryPolicy

    policy = RetryPolicy(initial_s=0.05, max_s=0.1, jitter=0, poll_s=FAST_POLL, lease_s=30)
    env = make_env(store, lab, relay=Es9Relay(store, client), policy=policy)
    metrics = Metrics()
    env.rp.metrics = metrics
    card = await ready_card(env, lab, EID_A)  # the victim: a registered eUICC with a known certificate
    async with Listener() as target:
        for _ in range(5):
            with pytest.raises(EsipaRejected) as exc:
                await env.handle(handle(forged(lab, card.eid, target.address)))
            assert exc.value.http_status == 403 and "(signature)" in exc.value.message
        # the same with the binding vouching for the victim (MQTT topic / DTLS PSK identity)
        mqtt = RequestContext("mqtt", f"esipa/{card.eid}/up", card.eid)
        with pytest.raises(EsipaRejected):
            await env.dispatcher.handle(handle(forged(lab, card.eid, target.address)), mqtt)
        # a genuine notification of the card naming the attacker's address: acknowledged and dropped, never sent
        genuine = SimEuicc(lab, "nist", eid=card.eid, seq=30).other_notification(2, ICCID, target.address)
        assert await env.handle(handle(genuine)) is None
        assert await store.list_notifications() == []
        assert await env.rp.outbox.deliver_due() == []
        await run_forwarder(env.rp.outbox, store)
        assert target.connections == 0
    audit = await store.list_audit(limit=100)
    assert refused_audit(audit) == ["signature"] * 6
    [dropped] = [a for a in audit if a.action == "notification" and a.outcome == "dropped"]
    assert dropped.eid == card.eid and dropped.detail["cause"] == "address"
    text = metrics.render().decode()
    assert 'eim_notifications_refused_total{cause="signature"} 6.0' in text
    assert 'eim_notifications_refused_total{cause="address"} 1.0' in text and card.eid not in text


async def test_rows_queued_before_the_fix_are_not_sent(store, lab, client):
    """An attacker's row already in the outbox (queued by the old code) fails at its next attempt: the address
    is checked again before every connection."""
    from eim.model import NotificationToSend

    env = make_env(store, lab, relay=Es9Relay(store, client))
    async with Listener() as target:
        note = forged(lab, EID_A, target.address)
        item = NotificationToSend(notification=note, address=target.address, kind="other", eid=EID_A)
        await store.enqueue_notifications([item], who="ipa")
        [d] = await env.rp.outbox.deliver_due()
        assert d.outcome == "failed" and "not an SM-DP+ of this eIM" in d.reason
        assert target.connections == 0


# ---------------------------------------------------------------- the genuine path still works
async def test_genuine_notification_of_the_software_euicc_is_forwarded(store, lab, client, tmp_path):
    from euicc import notifications as card_notifications
    from euicc.state import EVENT_DISABLE

    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=lab.root, port=0)) as smdp:
        env = make_env(store, lab, relay=Es9Relay(store, client))
        card = await ready_card(env, lab, EID_A)
        # this eIM's download operation names the SM-DP+: its address is one the eIM forwards to
        await env.service.create(card.eid, OpKind.DOWNLOAD, {"activationCode": f"1${smdp.address}$M-1"})
        # the software eUICC emits a disable notification for that SM-DP+; the IPA reads it with ES10b
        card_notifications.other_signed(card.card.ctx, EVENT_DISABLE, smdp.address, bytes.fromhex("98" * 10))
        [pending] = [n for n in await card.es10.retrieve_notifications_list() if n.raw[:1] == b"\x30"]
        assert await env.handle(handle(pending.raw)) is None  # HTTP 204
        [row] = await store.list_notifications()
        assert (row.notification, row.eid, row.address) == (pending.raw, card.eid, smdp.address)
        [d] = await env.rp.outbox.deliver_due()
        assert d.outcome == "delivered", d
        [got] = [n for n in smdp.ctx.store.notifications() if n.kind == "other"]
        assert got.verified and got.eid == card.eid and got.seq_number == row.seq_number  # its signature held
        await client.aclose()


# ---------------------------------------------------------------- another eUICC's notification
async def test_notification_of_card_a_as_card_b_is_refused(store, lab, client):
    smdp = "smdp.example.com"
    env = make_env(store, lab, relay=Es9Relay(store, client), admission=lab_admission([smdp]))
    card_a = await ready_card(env, lab, EID_A)
    card_b = await ready_card(env, lab, EID_B)
    of_a = SimEuicc(lab, "nist", eid=card_a.eid, seq=50).other_notification(1, ICCID, smdp)
    # HandleNotification over a binding that authenticated B (MQTT topic of B)
    as_b = RequestContext("mqtt", f"esipa/{card_b.eid}/up", card_b.eid)
    with pytest.raises(EsipaRejected) as exc:
        await env.dispatcher.handle(handle(of_a), as_b)
    assert exc.value.http_status == 403 and "eid_mismatch" in exc.value.message
    # inside B's ePRAndNotifications (B's EuiccPackageResult verifies, A's notification rides along)
    b_op = await env.service.create(card_b.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card_b.load(unwrap_package(await env.handle(gep(card_b.eid))))
    epr_seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    answer = await env.handle(provide_result(card_b.eid, T(0x30, epr + T(0xA0, of_a))))
    assert asn1.decode("ProvideEimPackageResultResponse", answer) == ("eimAcknowledgements", [epr_seq])
    assert (await env.service.get(b_op.id)).status.value == "done"
    assert await store.list_notifications() == []
    assert refused_audit(await store.list_audit(limit=200)) == ["eid_mismatch", "eid_mismatch"]
    # the same notification with A's own binding is taken
    as_a = RequestContext("mqtt", f"esipa/{card_a.eid}/up", card_a.eid)
    assert await env.dispatcher.handle(handle(of_a), as_a) is None
    [row] = await store.list_notifications()
    assert row.eid == card_a.eid


async def test_pir_of_card_a_with_the_binding_of_card_b_is_refused(store, lab):
    relay = RecordingRelay(lab)
    env = make_env(store, lab, relay=relay)
    card_a = await ready_card(env, lab, EID_A)
    await ready_card(env, lab, EID_B)
    op = await env.service.create(card_a.eid, OpKind.DOWNLOAD, {"activationCode": "1$smdp.example.com$M4"})
    txid = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(gep(card_a.eid))))[
        "eimTransactionId"
    ]
    ia = asn1.encode(
        "EsipaMessageFromIpaToEim",
        ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16), "eimTransactionId": txid}),
    )
    await env.handle(ia)
    pir = make_pir(lab, card_a.eid, relay.transaction_id)  # genuine, A's
    with pytest.raises(EsipaRejected) as exc:
        await env.dispatcher.handle(handle(pir), RequestContext("coap", "[::1]:1", EID_B))
    assert exc.value.http_status == 403 and "eid_mismatch" in exc.value.message
    assert (await env.service.get(op.id)).status.value == "in_progress"
    assert await store.list_notifications() == []


async def test_pir_that_cannot_be_verified_changes_nothing(store, lab):
    """A PIR for a download of an eUICC whose certificate the eIM does not hold: before, it closed the operation
    unverified and was queued for the SM-DP+; now it is refused and the operation stays open."""
    relay = RecordingRelay(lab)
    env = make_env(store, lab, relay=relay)
    await env.service.register_euicc(EID_C)
    op = await env.service.create(EID_C, OpKind.DOWNLOAD, {"activationCode": "1$smdp.example.com$M5"})
    txid = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(gep(EID_C))))[
        "eimTransactionId"
    ]
    ia = asn1.encode(
        "EsipaMessageFromIpaToEim",
        ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16), "eimTransactionId": txid}),
    )
    await env.handle(ia)
    with pytest.raises(EsipaRejected) as exc:
        await env.handle(handle(make_pir(lab, EID_C, relay.transaction_id)))
    assert exc.value.http_status == 403 and "(certificate)" in exc.value.message
    assert (await env.service.get(op.id)).status.value == "in_progress"
    assert await store.list_notifications() == []
    assert refused_audit(await store.list_audit(limit=100)) == ["certificate"]


# ---------------------------------------------------------------- SM-DP+ addresses of operations
@pytest.mark.parametrize(
    ("host", "address", "allow_private", "expected"),
    [
        ("0.0.0.0", "169.254.169.254", False, 400),
        ("127.0.0.1", "169.254.169.254", True, 400),  # link-local: never, not even for a lab
        ("0.0.0.0", "2852039166", True, 400),  # 169.254.169.254 written as one decimal number
        ("0.0.0.0", "127.0.0.1:8443", False, 400),
        ("0.0.0.0", "10.1.2.3", False, 400),
        ("0.0.0.0", "localhost:8443", False, 400),
        ("127.0.0.1", "127.0.0.1:8443", False, 202),  # a lab eIM on loopback: a lab SM-DP+ on loopback
        ("0.0.0.0", "10.1.2.3", True, 202),
        ("0.0.0.0", "smdp.example.com", False, 202),
    ],
)
async def test_operation_smdp_address_is_checked(store, lab, host, address, allow_private, expected):
    cfg = Config()
    cfg.http.host = host
    cfg.relay.allow_private_addresses = allow_private
    env = make_env(store, lab)
    service = OperationService(store, PackageFactory(env.key), operation_settings(cfg))
    app = create_app(cfg, store, env.dispatcher, service=service, metrics=Metrics())
    await service.register_euicc(EID_A)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://eim") as c:
        r = await c.post(
            f"/v1/euiccs/{EID_A}/operations",
            json={"kind": "download", "params": {"activationCode": f"1${address}$MATCH"}},
        )
        assert r.status_code == expected, r.text
        if expected == 400:
            error = r.json()["error"]
            assert error["field"] == "activationCode" and "SM-DP+ address refused" in error["message"]
            assert await store.list_operations(eid=EID_A) == []
        r = await c.post(
            "/v1/batches",
            json={"eids": [EID_A], "kind": "download", "params": {"activationCode": f"1${address}$MATCH"}},
        )
        assert (r.status_code == 400) == (expected == 400), r.text


# ---------------------------------------------------------------- cap and rate
async def test_pending_notifications_per_eid_are_capped(store, lab, client):
    env = make_env(
        store, lab, relay=Es9Relay(store, client), admission=lab_admission(["smdp.example.com"], max_pending_per_eid=2)
    )
    card = await ready_card(env, lab, EID_A)
    signer = SimEuicc(lab, "nist", eid=card.eid, seq=60)
    notes = [signer.other_notification(1, ICCID, "smdp.example.com") for _ in range(3)]
    assert await env.handle(handle(notes[0])) is None
    assert await env.handle(handle(notes[1])) is None
    with pytest.raises(EsipaRejected) as exc:
        await env.handle(handle(notes[2]))
    assert exc.value.http_status == 429 and "(cap)" in exc.value.message
    assert await env.handle(handle(notes[1])) is None  # sent again (our answer was lost): already ours
    assert [r.seq_number for r in await store.list_notifications()] == [61, 62]
    # in ePRAndNotifications the capped one is simply not acknowledged
    await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card.load(unwrap_package(await env.handle(gep(card.eid))))
    epr_seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    answer = await env.handle(provide_result(card.eid, T(0x30, epr + T(0xA0, notes[2] + notes[0]))))
    assert asn1.decode("ProvideEimPackageResultResponse", answer) == ("eimAcknowledgements", sorted([epr_seq, 61]))
    assert refused_audit(await store.list_audit(limit=200)) == ["cap", "cap"]


async def test_notifications_per_eid_are_rate_limited(store, lab, client):
    now = [1_000_000.0]
    admission = lab_admission(["smdp.example.com"], max_pending_per_eid=0, rate_per_hour=3600, burst=2)
    env = make_env(store, lab, relay=Es9Relay(store, client), admission=admission, clock=lambda: now[0])
    card = await ready_card(env, lab, EID_A)
    other = await ready_card(env, lab, EID_B)
    signer = SimEuicc(lab, "nist", eid=card.eid, seq=70)
    notes = [signer.other_notification(1, ICCID, "smdp.example.com") for _ in range(4)]
    assert await env.handle(handle(notes[0])) is None
    assert await env.handle(handle(notes[1])) is None
    with pytest.raises(EsipaRejected) as exc:
        await env.handle(handle(notes[2]))
    assert exc.value.http_status == 429 and "(rate)" in exc.value.message
    # another eUICC has a bucket of its own
    assert (
        await env.handle(handle(SimEuicc(lab, "nist", eid=other.eid).other_notification(1, ICCID, "smdp.example.com")))
        is None
    )
    now[0] += 1.0  # one token back (3600 per hour)
    assert await env.handle(handle(notes[2])) is None
    with pytest.raises(EsipaRejected):
        await env.handle(handle(notes[3]))
    rows = await store.list_notifications()
    assert sorted((r.eid, r.seq_number) for r in rows) == sorted(
        [(card.eid, 71), (card.eid, 72), (card.eid, 73), (other.eid, 1)]
    )
    assert refused_audit(await store.list_audit(limit=200)) == ["rate", "rate"]


async def test_a_pir_may_go_to_the_smdp_of_the_session_this_eim_relayed(store, lab, client):
    """A download without an SM-DP+ address in its operation (the eUICC's default SM-DP+): the PIR's address is
    the SM-DP+ the relay ran the ES9+ session with, for that eUICC and transactionId - and only that."""
    from eim.packages.notification import VerifiedNotification
    from eim.relay import session_key
    from tests.eim.test_bindings_common import pir

    env = make_env(store, lab, relay=Es9Relay(store, client))
    txid = os.urandom(16)
    await store.put_download_session(session_key(txid), {"eid": EID_A, "smdp_address": "dp.example.net"})
    raw = pir(address="dp.example.net", transaction_id=txid, seq=3)
    outbox = env.rp.outbox
    for eid, address, tx in ((EID_B, "dp.example.net", txid), (EID_A, "dp.example.net", os.urandom(16))):
        with pytest.raises(NotificationRefused) as exc:
            await outbox.accept(VerifiedNotification(raw, "pir", eid, 3, address, tx))
        assert exc.value.cause == "address"
    await outbox.accept(VerifiedNotification(raw, "pir", EID_A, 3, "dp.example.net", txid))
    [row] = await store.list_notifications()
    assert (row.eid, row.address) == (EID_A, "dp.example.net")
    # the address is checked again before the attempt, with the PIR's own transactionId: it still goes there,
    # the same bytes, for A, and the row is deleted once the SM-DP+ took it
    from eim.relay.outbox import NotificationOutbox

    class Taken:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes]] = []

        async def forward_notification(self, eid, notification):
            self.sent.append((eid, notification))

    relay = Taken()
    [delivery] = await NotificationOutbox(store, relay, admission=outbox.admission).deliver_due()
    assert delivery.outcome == "delivered" and relay.sent == [(EID_A, raw)]
    assert await store.list_notifications() == []
    # once the session is gone, a queued PIR for that SM-DP+ is never sent
    await outbox.accept(VerifiedNotification(raw, "pir", EID_A, 3, "dp.example.net", txid))
    await store.delete_download_session(session_key(txid))
    [delivery] = await NotificationOutbox(store, relay, admission=outbox.admission).deliver_due()
    assert delivery.outcome == "failed" and "not an SM-DP+ of this eIM" in delivery.reason
    assert delivery.reason.startswith("ES9+ handleNotification: ")
    assert relay.sent == [(EID_A, raw)]


async def test_relay_never_calls_a_link_local_smdp(store, lab, client):
    """InitiateAuthentication naming the cloud metadata address: invalidDpAddress, no connection attempted."""
    from eim.relay import initiate_authentication as ia
    from eim.smdp_addresses import SmdpAddressPolicy

    calls = []

    class NoNetwork:
        async def call(self, *a, **kw):
            calls.append(a)
            raise AssertionError("the relay must not connect")

    info1 = SimEuicc(lab, "nist", eid=EID_A).euicc_info1()
    for address, policy in (
        ("169.254.169.254", None),
        ("2852039166:80", SmdpAddressPolicy.of(allow_private=True)),
        ("127.0.0.1:8443", SmdpAddressPolicy.of()),
    ):
        relay = Es9Relay(store, NoNetwork(), address_policy=policy)
        request = asn1.encode(
            "InitiateAuthenticationRequestEsipa",
            {"euiccChallenge": bytes(16), "smdpAddress": address, "euiccInfo1": asn1.decode("EUICCInfo1", info1)},
        )
        assert await relay.initiate_authentication(EID_A, request) == ia.error_response(ia.INVALID_DP_ADDRESS)
    assert calls == []


async def test_the_smdp_of_another_euiccs_download_is_not_an_address_for_this_one(store, lab, client):
    """B has a download operation with dp-b.example.net; A's verified notification for dp-b.example.net is
    refused (the SM-DP+s a notification may go to are those of ITS eUICC's downloads), B's is taken. Neither
    another operation kind nor an address in upper case changes that."""
    from eim.packages.notification import VerifiedNotification

    env = make_env(store, lab, relay=Es9Relay(store, client))
    await env.service.register_euicc(EID_A)
    await env.service.register_euicc(EID_B)
    await env.service.create(EID_B, OpKind.DOWNLOAD, {"activationCode": "1$DP-B.example.net$M-B"})
    await env.service.create(EID_A, OpKind.EUICC_DATA, {})
    raw = bytes.fromhex("3000")
    outbox = env.rp.outbox
    with pytest.raises(NotificationRefused) as exc:
        await outbox.accept(VerifiedNotification(raw, "other", EID_A, 5, "dp-b.example.net"))
    assert exc.value.cause == "address"
    row = await outbox.accept(VerifiedNotification(raw, "other", EID_B, 5, "dp-b.example.net"))
    assert (row.eid, row.address) == (EID_B, "dp-b.example.net")
    row = await outbox.accept(VerifiedNotification(raw + b"\x00", "other", EID_B, 6, "DP-B.EXAMPLE.NET"))
    assert row.eid == EID_B


async def test_the_default_smdp_is_an_address_and_only_it(store):
    """``[relay] default_smdp_address`` (compared case-insensitively) admits that SM-DP+ for every eUICC, and
    nothing else; an ES9+ session's SM-DP+ is matched to its eUICC case-insensitively too."""
    import time

    from eim.relay import session_key
    from eim.relay.admission import Admission, AdmissionGate
    from eim.smdp_addresses import SmdpAddressPolicy

    gate = AdmissionGate(store, Admission(SmdpAddressPolicy.of(), default_smdp_address="Dp.Default.example"), time.time)
    assert await gate.address_refusal(EID_A, "dp.default.EXAMPLE") is None
    assert await gate.address_refusal(None, "DP.DEFAULT.EXAMPLE") is None
    for address in ("dp.other.example", "dp.default.example.evil", "default.example"):
        assert "not an SM-DP+ of this eIM" in (await gate.address_refusal(EID_A, address) or ""), address
    nodefault = AdmissionGate(store, Admission(SmdpAddressPolicy.of()), time.time)
    assert await nodefault.address_refusal(EID_A, "dp.default.example") is not None
    hexa, txid = "89abcdef" * 4, os.urandom(16)
    await store.put_download_session(session_key(txid), {"eid": hexa, "smdp_address": "Dp.Session.example"})
    assert await nodefault.address_refusal(hexa.upper(), "dp.session.EXAMPLE", txid) is None
    assert await nodefault.address_refusal(hexa, "dp.session.example", txid) is None
    assert await nodefault.address_refusal(EID_A, "dp.session.example", txid) is not None
