"""The notification outbox and its forwarder (``eim.relay.outbox``) on both stores, against the real lab SM-DP+
over HTTPS on loopback: an SM-DP+ that is down gets the notification once it is up (exactly once, the row gone),
a permanent ES9+ refusal ends as failed with the reason in the audit trail, attempts back off and end; what can
never be forwarded (unverified, no usable address, an address this eIM does not send to) is refused before
anything is stored. The retry policy's delays are checked as a function."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eim.interfaces import NotificationQueue, NotificationRefused
from eim.model import NotificationStatus
from eim.packages.notification import VerifiedNotification
from eim.relay import Es9PlusClient, Es9Relay, tls_context
from eim.relay.errors import Es9BadResponse, Es9Failed, Es9Unreachable, InvalidSmdpAddress, NotForwardable
from eim.relay.outbox import NotificationOutbox, RetryPolicy, permanent
from rsp import tlv
from rsp.errors import DecodeError
from rsp.pki import create_lab_pki, lab_eid
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.helpers import lab_admission, verified
from tests.eim.test_bindings_common import pir
from tests.services import free_port
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID = lab_eid(31)
FAST = RetryPolicy(initial_s=0.05, max_s=0.2, jitter=0.5, max_attempts=0, poll_s=0.1, lease_s=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("outbox-pki"), curves=("nist",), eids=(EID,))


@pytest.fixture
async def client(pki):
    c = Es9PlusClient(tls_context([pki.ca_bundle_path]), timeout=10)
    yield c
    await c.aclose()


def vpir(address: str, seq: int) -> VerifiedNotification:
    """A PIR as the outbox receives it from ``eim.esipa.results`` once its signature verified (the forwarder's
    behaviour does not depend on the signature, which the lab SM-DP+ does not need to accept here)."""
    return VerifiedNotification(pir(address=address, seq=seq), "pir", EID, seq, address, bytes(16))


def outbox_for(store, relay, policy, allowed=(), **kw) -> NotificationOutbox:
    return NotificationOutbox(store, relay, policy, admission=lab_admission(allowed), **kw)


def smdp_at(pki, tmp_path, port: int):
    return running_server(SmdppConfig(data_dir=tmp_path / f"smdp-{port}", pki_dir=pki.root, port=port))


def received(smdp, seq: int) -> list:
    return [n for n in smdp.ctx.store.notifications(limit=1000) if n.seq_number == seq]


async def eventually(what: str, predicate, deadline_s: float = 20.0):
    deadline = time.monotonic() + deadline_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- the retry policy
@given(
    initial=st.floats(0.01, 100),
    factor=st.floats(1, 1000),
    jitter=st.floats(0, 1),
    attempts=st.integers(1, 10_000),
    r=st.floats(0, 1),
)
def test_delays_grow_are_capped_and_jittered(initial, factor, jitter, attempts, r):
    p = RetryPolicy(initial_s=initial, max_s=initial * factor, jitter=jitter)
    d = p.delay(attempts, lambda: r)
    base = p.max_s if attempts > 60 else min(p.max_s, initial * 2.0 ** (attempts - 1))  # factor < 2**60
    assert 0 <= d <= p.max_s
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9
    if jitter == 0:
        assert d == pytest.approx(base)


def test_policy_bounds_and_classification():
    p = RetryPolicy(initial_s=1, max_s=60, jitter=0, max_attempts=3)
    assert [p.delay(n) for n in (1, 2, 3, 6, 7, 50)] == [1, 2, 4, 32, 60, 60]
    assert [p.gives_up(n) for n in (2, 3)] == [False, True]
    assert not RetryPolicy(max_attempts=0).gives_up(10**9)
    for bad in ({"initial_s": 0}, {"initial_s": 10, "max_s": 5}, {"jitter": 1.5}, {"max_attempts": -1}):
        with pytest.raises(ValueError, match="notification retry"):
            RetryPolicy(**bad)
    assert permanent(Es9Failed("handleNotification", "1.2", "2.1"))
    assert permanent(InvalidSmdpAddress("handleNotification", "not allowed"))
    assert permanent(NotForwardable("handleNotification", "compact"))
    assert permanent(DecodeError("PendingNotification", "bad"))
    assert not permanent(Es9Unreachable("handleNotification", "refused"))
    assert not permanent(Es9Unreachable("handleNotification", "cert", tls=True))
    assert not permanent(Es9BadResponse("handleNotification", "HTTP 503"))


# ---------------------------------------------------------------- taking responsibility
async def test_what_cannot_be_forwarded_is_refused_and_nothing_stored(store, client, pki):
    outbox = outbox_for(store, Es9Relay(store, client), FAST, allowed=["smdp.allowed.example"])
    assert isinstance(outbox, NotificationQueue)
    card = SimEuicc(pki, "nist", eid=EID)
    for note, cause, reason in (
        (card.other_notification(1, "8949449999999990920", "smdp.allowed.example"), "unverified", "only verified"),
        (vpir("a/b", 1), "unforwardable", "is not an SM-DP+ address"),
        (vpir("smdp.other.example", 2), "address", "not an SM-DP+ of this eIM"),
        (vpir("169.254.169.254", 3), "address", "never an SM-DP+"),
        (vpir("10.0.0.7:443", 4), "address", "private or reserved"),
    ):
        with pytest.raises(NotificationRefused, match=re.escape(reason)) as exc:
            await outbox.accept(note)
        assert exc.value.cause == cause
        if cause == "unforwardable":
            assert exc.value.reason.startswith("ES9+ handleNotification: ")
    assert await store.list_notifications() == [] and await store.count_notifications_by_status() == {}


# ---------------------------------------------------------------- delivering
async def test_smdp_down_then_up_gets_it_exactly_once(store, client, pki, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="eim.relay")
    port = free_port()
    address = f"127.0.0.1:{port}"
    card = SimEuicc(pki, "nist", eid=EID)
    note = card.other_notification(1, "8949449999999990920", address)  # enable, signed by the card
    outbox = outbox_for(store, Es9Relay(store, client), FAST, allowed=[address])
    row = await outbox.accept(verified(pki, note, EID))
    assert row.notification == note and row.address == address and row.seq_number == card.seq
    # nobody listens: the attempt fails, the row stays pending with the reason and a later next attempt
    [d] = await outbox.deliver_due()
    assert d.outcome == "retry" and "127.0.0.1" in d.reason and 0 < d.retry_in_s <= FAST.max_s
    [kept] = await store.list_notifications()
    assert (kept.status, kept.attempts, kept.last_error) == (NotificationStatus.PENDING, 1, d.reason)
    assert kept.next_attempt_at > kept.updated_at and kept.leased_by is None
    with smdp_at(pki, tmp_path, port) as smdp:

        async def delivered():
            await outbox.deliver_due()
            return await store.list_notifications() == []

        await eventually("the notification delivered", delivered)
        [got] = received(smdp, card.seq)
        assert got.kind == "other" and got.verified and got.eid == EID  # the card's signature held: same bytes
        await outbox.deliver_due()
        assert len(received(smdp, card.seq)) == 1
        # the relay's log names the EID of the row it forwarded
        forwarded = [r for r in caplog.records if r.getMessage() == "notification forwarded"]
        assert [(r.eid, r.address) for r in forwarded] == [(EID, address)]
        await client.aclose()  # no idle keep-alive connection for the SM-DP+ to wait for when it stops
    audit = [(a.outcome, a.detail) for a in await store.list_audit(eid=EID) if a.action == "notification"]
    assert [o for o, _ in audit] == ["queued", "delivered"] and audit[1][1]["attempts"] >= 2


async def test_permanent_refusal_ends_as_failed_with_the_reason(store, client, pki, tmp_path):
    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=pki.root, port=0)) as smdp:
        # an otherSignedNotification without signature and certificates: the SM-DP+ refuses it (1.2 / 2.1). The
        # eIM never takes such a thing from an IPA; it stands for any notification an SM-DP+ refuses for good
        bad = T(0x30, T(0xBF2F, T(0x80, b"\x2a") + T(0x0C, smdp.address.encode())))
        outbox = outbox_for(store, Es9Relay(store, client), FAST, allowed=[smdp.address])
        await outbox.accept(VerifiedNotification(bad, "other", EID, 42, smdp.address))
        [d] = await outbox.deliver_due()
        assert d.outcome == "failed" and "Failed 1.2/2.1" in d.reason, d
        assert await outbox.deliver_due() == []  # not tried again
        await client.aclose()
    [failed] = await store.list_notifications(status="failed")
    assert failed.notification == bad and failed.last_error == d.reason and failed.attempts == 1
    [entry] = [a for a in await store.list_audit(eid=EID) if a.outcome == "failed"]
    assert entry.action == "notification" and entry.who == "eim" and entry.detail["reason"] == d.reason
    assert await store.count_notifications_by_status() == {"failed": 1}


async def test_not_allowed_address_fails_and_attempts_run_out(store, client, pki):
    relay = Es9Relay(store, client, allowed_smdp_addresses=["smdp.allowed.example"])
    outbox = outbox_for(store, relay, FAST, allowed=["smdp.other.example"])  # the relay's list disagrees
    await outbox.accept(vpir("smdp.other.example", 3))
    [d] = await outbox.deliver_due()
    assert d.outcome == "failed" and "not an allowed SM-DP+" in d.reason
    # an SM-DP+ that never answers: after max_attempts the notification ends as failed, "gave up"
    limited = RetryPolicy(initial_s=0.01, max_s=0.01, jitter=0, max_attempts=2, poll_s=0.1, lease_s=30)
    closed = f"127.0.0.1:{free_port()}"
    outbox = outbox_for(store, Es9Relay(store, client), limited, allowed=[closed])
    await outbox.accept(vpir(closed, 4))

    async def ended():
        outcomes = [x.outcome for x in await outbox.deliver_due()]
        return "failed" in outcomes

    await eventually("the attempts to run out", ended)
    failed = [n for n in await store.list_notifications(status="failed") if n.address == closed]
    assert failed[0].attempts == 2 and failed[0].last_error.startswith("gave up after 2 attempts: ES9+")


async def test_forwarder_task_delivers_what_is_accepted_and_releases_on_close(store, client, pki, tmp_path):
    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=pki.root, port=0)) as smdp:
        card = SimEuicc(pki, "nist", eid=EID)
        outbox = outbox_for(store, Es9Relay(store, client), RetryPolicy(poll_s=30, lease_s=60), [smdp.address])
        task = outbox.start()
        try:
            note = card.other_notification(2, "8949449999999990920", smdp.address)  # disable
            await outbox.accept(verified(pki, note, EID))  # wakes the forwarder: no poll interval to wait for

            async def arrived():
                return received(smdp, card.seq) and await store.list_notifications() == []

            await eventually("the forwarder to deliver", arrived)
        finally:
            await outbox.aclose()
        assert task.done() and len(received(smdp, card.seq)) == 1
        await client.aclose()
    # a lease held at close time is given back: the notification is due again at once for the next worker
    outbox2 = outbox_for(store, Es9Relay(store, client), FAST, ["smdp.example.com"], owner="closing")
    await outbox2.accept(vpir("smdp.example.com", 8))
    await store.claim_notifications(now=time.time(), lease_s=600, owner="closing")
    await outbox2.aclose()
    [free] = await store.list_notifications()
    assert free.leased_by is None and free.lease_until is None


async def test_a_notification_is_queued_at_the_outboxs_clock_by_the_ipa(store, client, pki):
    from eim.metrics import Metrics

    metrics = Metrics()
    outbox = outbox_for(
        store, Es9Relay(store, client), FAST, allowed=["smdp.allowed.example"], clock=lambda: 1.5e9, metrics=metrics
    )
    row = await outbox.accept(vpir("smdp.allowed.example", 7))
    assert row.created_at == row.next_attempt_at == 1.5e9
    sample = metrics.registry.get_sample_value
    assert sample("eim_notifications_forwarded_total", {"outcome": "queued"}) == 1
    assert await outbox.accept(vpir("smdp.allowed.example", 7)) == row  # the same bytes: queued once
    assert sample("eim_notifications_forwarded_total", {"outcome": "queued"}) == 1
    [entry] = [a for a in await store.list_audit(eid=EID) if a.action == "notification"]
    assert (entry.outcome, entry.who) == ("queued", "ipa")
