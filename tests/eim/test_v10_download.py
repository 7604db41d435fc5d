"""An SGP.32 v1.0 IPA's indirect profile download through the eIM: the real dispatcher, the real ES9+ relay and the
real lab SM-DP+ over HTTPS on loopback, the eUICC's answers forwarded unchanged (``tests/smdpp/sim.py``).

v1.0's InitiateAuthenticationRequestEsipa has no eimTransactionId: the eIM binds it to the one open download of the
EID the binding authenticated (``RequestContext.eid_hint``: the CoAPS PSK identity, the MQTT topic). Everything after
it (AuthenticateClient, GetBoundProfilePackage, the PIR in HandleNotification) is the same in both versions."""

from __future__ import annotations

from eim.interfaces import RequestContext
from eim.model import OpKind, OpStatus
from eim.relay import Es9Relay
from rsp import tlv
from tests.eim.helpers import get_eim_package_request, make_env, unwrap_package
from tests.eim.test_relay import EID_B, Ipa, client, new_order, pki, smdp  # noqa: F401 (fixtures)
from tests.smdpp.sim import SimEuicc

T = tlv.encode


async def test_v10_indirect_download_with_the_authenticated_eid(smdp, client, pki, store):  # noqa: F811
    order = new_order(smdp)
    env = make_env(store, pki, relay=Es9Relay(store, client))
    await env.service.register_euicc(EID_B, association_token=1)
    op = await env.service.create(EID_B, OpKind.DOWNLOAD, {"activationCode": f"1${smdp.address}${order.matching_id}"})
    coaps = RequestContext("coap", "127.0.0.1", eid_hint=EID_B)
    trigger = unwrap_package(await env.handle(get_eim_package_request(EID_B), coaps))
    assert trigger[:2] == b"\xbf\x54"

    card = SimEuicc(pki, "nist", eid=EID_B)
    v10_bf39 = T(0xBF39, T(0x81, card.get_challenge()) + T(0x83, smdp.address.encode()) + card.euicc_info1())
    assert tlv.find(v10_bf39, 0x82) is None  # the v1.0 form
    # over a binding that authenticates no EID (plain HTTP) nothing names the eUICC: 52, nothing relayed
    http = RequestContext("http", "127.0.0.1", peer_ip="127.0.0.1")
    assert await env.handle(v10_bf39, http) == bytes.fromhex("BF3903810134")
    assert (await env.service.get(op.id)).smdp_transaction_id is None

    # the IPA side of the download (answers of the card forwarded unchanged), through the dispatcher
    class ThroughTheEim:
        async def initiate_authentication(self, eid, request):
            assert tlv.find(request, 0x82) is None  # v1.0: 81 euiccChallenge, 83 smdpAddress, BF20 euiccInfo1
            sent.append(request)
            return await env.handle(request, coaps)

        async def authenticate_client(self, eid, request):
            return await env.handle(request, coaps)

        async def get_bound_profile_package(self, eid, request):
            return await env.handle(request, coaps)

    sent: list[bytes] = []
    ipa = Ipa(ThroughTheEim(), card)
    auth = ipa.auth_json(await ipa.initiate(smdp.address))
    assert (await env.service.get(op.id)).smdp_transaction_id == ipa.txid
    client_json = ipa.client_json(await ipa.authenticate(auth, order.matching_id))
    pir = card.load_bpp(ipa.bpp(await ipa.get_bpp(client_json)))
    assert await env.handle(T(0xBF3D, T(0xA0, pir)), coaps) is None
    done = await env.service.get(op.id)
    assert done.status is OpStatus.DONE and done.result["profileInstallationResult"]["verified"] is True
    assert order.iccid in card.profiles
    assert [d.outcome for d in await env.rp.outbox.deliver_due()] == ["delivered"]
    assert smdp.ctx.store.get(order.matching_id).state == "installed"


async def test_v10_initiate_authentication_needs_exactly_one_open_download(smdp, client, pki, store):  # noqa: F811
    """No open download for the authenticated EID (the one there was is finished): 52, the relay is not called."""
    env = make_env(store, pki, relay=Es9Relay(store, client))
    await env.service.register_euicc(EID_B, association_token=1)
    op = await env.service.create(EID_B, OpKind.DOWNLOAD, {"activationCode": f"1${smdp.address}$NONE"})
    coaps = RequestContext("coap", "127.0.0.1", eid_hint=EID_B)
    await env.handle(get_eim_package_request(EID_B), coaps)
    await env.service.cancel(op.id)
    card = SimEuicc(pki, "nist", eid=EID_B)
    v10_bf39 = T(0xBF39, T(0x81, card.get_challenge()) + T(0x83, smdp.address.encode()) + card.euicc_info1())
    assert await env.handle(v10_bf39, coaps) == bytes.fromhex("BF3903810134")
    assert await store.list_notifications() == []
