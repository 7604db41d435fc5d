"""Notifications that come with ProvideEimPackageResult (ePRAndNotifications) and HandleNotification, through the
dispatcher, on both stores: acknowledged only once they are in the outbox; a store that cannot take them makes
the whole answer an error (nothing acknowledged, the IPA keeps them and sends them again), and the second try
queues them once. A genuine notification that names no usable SM-DP+ address is acknowledged and dropped (the
IPA would otherwise send it forever)."""

from __future__ import annotations

import pytest

from eim.interfaces import EsipaRejected
from eim.model import OpKind, OpStatus
from eim.relay import Es9PlusClient, Es9Relay, tls_context
from eim.store import StoreError
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import get_eim_package_request, lab_admission, make_env, provide_result, unwrap_package
from tests.eim.test_dispatcher_flows import ready_card
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID = lab_eid(81)
SMDP = "smdp.example.com"
ICCID = "8949449999999990920"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=(EID,))


class FailingOutboxStore:
    """The real store, except that queuing notifications fails while ``broken`` (a disk full, a lost connection)."""

    def __init__(self, store) -> None:
        self._store = store
        self.broken = True

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def enqueue_notifications(self, items, **kw):
        if self.broken:
            raise StoreError("store commit failed: disk I/O error")
        return await self._store.enqueue_notifications(items, **kw)


@pytest.fixture
async def relay(lab, store):
    client = Es9PlusClient(tls_context([lab.ca_bundle_path]), timeout=5)
    yield Es9Relay(store, client)
    await client.aclose()


def acks_of(answer: bytes) -> list[int]:
    alt, value = asn1.decode("ProvideEimPackageResultResponse", answer)
    assert alt == "eimAcknowledgements", (alt, value)
    return sorted(value)


async def test_epr_and_notifications_acknowledged_once_stored(store, lab, relay):
    flaky = FailingOutboxStore(store)
    env = make_env(flaky, lab, relay=relay, admission=lab_admission([SMDP]))
    card = await ready_card(env, lab, EID)
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card.load(unwrap_package(await env.handle(get_eim_package_request(card.eid))))
    epr_seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    signer = SimEuicc(lab, "nist", eid=EID, seq=20)
    enable = signer.other_notification(1, ICCID, SMDP)
    nowhere = signer.other_notification(2, ICCID, "smdp.example.com/x")  # no SM-DP+ address: dropped
    request = provide_result(card.eid, T(0x30, epr + T(0xA0, enable + nowhere)))
    # the outbox cannot be written: an error answer, nothing acknowledged (the EPR is recorded all the same)
    answer = await env.handle(request)
    assert asn1.decode("ProvideEimPackageResultResponse", answer) == ("provideEimPackageResultError", 127)
    assert (await store.get_operation(op.id)).status is OpStatus.DONE
    assert await store.list_notifications() == []
    # the IPA sends the same again: the EPR is a replay (acknowledged again), the notification is queued now,
    # the one without an SM-DP+ address acknowledged and dropped (audited)
    flaky.broken = False
    assert acks_of(await env.handle(request)) == sorted([epr_seq, 21, 22])
    [row] = await store.list_notifications()
    assert (row.notification, row.seq_number, row.eid, row.address) == (enable, 21, EID, SMDP)
    assert acks_of(await env.handle(request)) == sorted([epr_seq, 21, 22])  # and again: still one row
    assert len(await store.list_notifications()) == 1
    dropped = [a for a in await store.list_audit(eid=EID, limit=100) if a.outcome == "dropped"]
    assert dropped and all(a.detail["cause"] == "unforwardable" for a in dropped)


async def test_handle_notification_is_not_answered_when_the_outbox_fails(store, lab, relay):
    flaky = FailingOutboxStore(store)
    env = make_env(flaky, lab, relay=relay, admission=lab_admission([SMDP]))
    await env.service.register_euicc(EID)
    note = SimEuicc(lab, "nist", eid=EID, seq=40).other_notification(2, ICCID, SMDP)
    request = T(0xBF3D, T(0xA0, note))
    with pytest.raises(EsipaRejected) as exc:  # HTTP 400 / CoAP 4.00: the IPA keeps the notification
        await env.handle(request)
    assert "disk I/O error" in exc.value.message
    assert await store.list_notifications() == []
    flaky.broken = False
    assert await env.handle(request) is None  # HTTP 204: the IPA may delete it now
    [row] = await store.list_notifications()
    assert row.notification == note and row.seq_number == 41
