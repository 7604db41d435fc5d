"""What happens to a download operation when the relayed ES9+ step fails, with the real lab SM-DP+ over HTTPS on
loopback, the eIM's dispatcher, relay and store (SQLite and PostgreSQL), and an rsp test eUICC playing the IPA.

Before: an SM-DP+ that was down for a moment ended the operation for good (the IPA got undefinedError(127) and
reported a final profileDownloadError), and an SM-DP+ refusal ended it as "download cancelled by the eUICC/IPA:
undefinedReason", its subjectCode and reasonCode only in a log line.
"""

from __future__ import annotations

import pytest

from eim.interfaces import EsipaRejected
from eim.model import OpKind, OpStatus
from eim.relay import Es9PlusClient, Es9Relay, tls_context
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.helpers import get_eim_package_request, make_env, unwrap_package
from tests.eim.test_relay import Ipa, esipa
from tests.services import free_port
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EIDS = [lab_eid(i) for i in range(51, 54)]
NO_PACKAGE = bytes.fromhex("BF4F03020101")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


class ThroughDispatcher:
    """The ESipa side of :class:`tests.eim.test_relay.Ipa`: every request goes to the eIM's dispatcher."""

    def __init__(self, env) -> None:
        self.env = env

    async def initiate_authentication(self, eid, request):
        return await self.env.handle(request)

    authenticate_client = get_bound_profile_package = cancel_session = initiate_authentication

    async def forward_notification(self, eid, pending_notification):
        await self.env.handle(T(0xBF3D, T(0xA0, pending_notification)))


def smdp_config(lab, tmp_path, port: int) -> SmdppConfig:
    return SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=lab.root, port=port, curves=("nist",))


async def download_operation(env, eid: str, activation_code: str):
    await env.service.register_euicc(eid)
    op = await env.service.create(eid, OpKind.DOWNLOAD, {"activationCode": activation_code, "mode": "indirect"})
    trigger = unwrap_package(await env.handle(get_eim_package_request(eid)))
    return op, trigger, tlv.find(trigger, 0x82).value


async def test_smdp_down_then_up_is_tried_again_not_failed(store, lab, tmp_path):
    port = free_port()
    config = smdp_config(lab, tmp_path, port)
    with running_server(config) as smdp:  # the order exists; then the SM-DP+ goes away
        order = orders.create_order(smdp.ctx.store, profile="ts48", smdp_address=smdp.address)
        ca, address = smdp.ca_bundle, smdp.address
    now = [1000.0]
    client = Es9PlusClient(tls_context([ca]), timeout=10)
    env = make_env(store, lab, relay=Es9Relay(store, client), clock=lambda: now[0])
    try:
        op, trigger, eim_txid = await download_operation(env, EIDS[0], order.activation_code)
        ipa = Ipa(ThroughDispatcher(env), SimEuicc(lab, "nist", eid=EIDS[0]))
        with pytest.raises(EsipaRejected) as down:  # connection refused: "come back later", no ESipa error
            await ipa.initiate(address, eim_txid)
        assert down.value.http_status == 503
        waiting = await env.service.get(op.id)
        assert waiting.status is OpStatus.IN_PROGRESS
        assert waiting.result["retry"]["count"] == 1 and waiting.result["retry"]["at"] == 1005.0
        assert waiting.result["retry"]["function"] == "initiateAuthentication"
        assert "All connection attempts failed" in waiting.result["retry"]["reason"]
        assert await env.handle(get_eim_package_request(EIDS[0])) == NO_PACKAGE  # not before the backoff
        now[0] += 5.5
        assert unwrap_package(await env.handle(get_eim_package_request(EIDS[0]))) == trigger  # the same trigger
        with pytest.raises(EsipaRejected):  # still down: the next wait is twice as long
            await ipa.initiate(address, eim_txid)
        assert (await env.service.get(op.id)).result["retry"]["at"] == now[0] + 10
        now[0] += 11
        assert unwrap_package(await env.handle(get_eim_package_request(EIDS[0]))) == trigger
        with running_server(config):  # back on the same port
            pir = await ipa.download(address, order.matching_id, eim_txid)
            assert pir[:2] == b"\xbf\x37"
        done = await env.service.get(op.id)
        assert done.status is OpStatus.DONE and done.attempts == 3
        actions = [a.action for a in await store.list_audit(operation_id=op.id, limit=100)]
        assert actions.count("relay_retry") == 2 and "pir" in actions
    finally:
        await client.aclose()


async def test_smdp_refusal_ends_the_operation_with_its_codes(store, lab, tmp_path):
    with running_server(smdp_config(lab, tmp_path, 0)) as smdp:
        client = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=10)
        env = make_env(store, lab, relay=Es9Relay(store, client))
        try:
            order = orders.create_order(smdp.ctx.store, profile="ts48", smdp_address=smdp.address)
            op, _, eim_txid = await download_operation(env, EIDS[1], order.activation_code)
            ipa = Ipa(ThroughDispatcher(env), SimEuicc(lab, "nist", eid=EIDS[1]))
            auth = ipa.auth_json(await ipa.initiate(smdp.address, eim_txid))
            # the card authenticates with a matchingId the SM-DP+ does not know: 8.2.6 / 3.8
            answer = await ipa.authenticate(auth, "NO-SUCH-ORDER")
            assert esipa(answer) == ("authenticateClientErrorEsipa", 6)  # matchingIdRefused
            failed = await env.service.get(op.id)
            assert failed.status is OpStatus.FAILED and failed.result_code == 6
            assert failed.error.startswith("SM-DP+ refused authenticateClient: subjectCode 8.2.6, reasonCode 3.8")
            relay = failed.result["relay"]
            assert (relay["subjectCode"], relay["reasonCode"], relay["esipaCode"]) == ("8.2.6", "3.8", 6)
            # the IPA cancels its session (undefinedReason): the SM-DP+'s reason stays the operation's
            await ipa.cancel(reason=127)
            after = await env.service.get(op.id)
            assert after.error == failed.error and after.result == failed.result
            audit = [a for a in await store.list_audit(operation_id=op.id, limit=100) if a.action == "relay_failed"]
            assert len(audit) == 1 and audit[0].detail["error"] == failed.error
        finally:
            await client.aclose()


async def test_cancel_after_a_transient_failure_leaves_the_download_open(store, lab, tmp_path):
    """The SM-DP+ goes away after InitiateAuthentication: AuthenticateClient gets 503, the IPA cancels its session
    with reason timeout (it could not reach the eIM), and the operation waits for its next hand-out."""
    port = free_port()
    config = smdp_config(lab, tmp_path, port)
    now = [2000.0]
    with running_server(config) as smdp:
        order = orders.create_order(smdp.ctx.store, profile="ts48", smdp_address=smdp.address)
        client = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=10)
        env = make_env(store, lab, relay=Es9Relay(store, client), clock=lambda: now[0])
        op, _, eim_txid = await download_operation(env, EIDS[2], order.activation_code)
        ipa = Ipa(ThroughDispatcher(env), SimEuicc(lab, "nist", eid=EIDS[2]))
        auth = ipa.auth_json(await ipa.initiate(smdp.address, eim_txid))
        await client.aclose()  # no kept-alive connection survives the restart
    client = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=10)
    env.rp.relay.client = client
    try:
        with pytest.raises(EsipaRejected) as down:
            await ipa.authenticate(auth, order.matching_id)
        assert down.value.http_status == 503
        await ipa.cancel(reason=2)  # timeout
        waiting = await env.service.get(op.id)
        assert waiting.status is OpStatus.IN_PROGRESS and waiting.result["retry"]["function"] == "authenticateClient"
        now[0] += 6
        assert await env.handle(get_eim_package_request(EIDS[2])) != NO_PACKAGE  # handed out again
    finally:
        await client.aclose()


class ComeBackLater:
    """An ESipa handler that asks the IPA to come back (what the dispatcher does while the SM-DP+ is down)."""

    async def handle(self, message, ctx):
        raise EsipaRejected(503, "initiateAuthentication: the SM-DP+ cannot be reached now; try again later")


def test_come_back_later_is_503_over_http():
    import httpx

    from eim.bindings import ESIPA_CONTENT_TYPE, ESIPA_PATH
    from eim.bindings.http import EsipaHttpApp
    from tests.eim.test_bindings_http import serve

    with serve(EsipaHttpApp(ComeBackLater())) as base:
        r = httpx.post(base + ESIPA_PATH, content=T(0xBF39, b""), headers={"Content-Type": ESIPA_CONTENT_TYPE})
    assert r.status_code == 503 and "try again later" in r.text


def test_come_back_later_is_5_03_over_coap():
    from aiocoap import Code

    from tests.eim.test_bindings_coap import CoapLab

    coap = CoapLab(ComeBackLater())
    try:
        r = coap.request(T(0xBF39, b""))
        assert r.code == Code.SERVICE_UNAVAILABLE and b"try again later" in r.payload
    finally:
        coap.close()


async def test_relay_refusals_of_its_own_end_the_operation_with_the_reason(store, lab):
    """No SM-DP+ is called: the IPA names another SM-DP+ than the operation's activation code (smdpAddressMismatch).
    A late InitiateAuthentication for the failed operation is then answered invalidEimTransactionId, audited on it."""
    client = Es9PlusClient(tls_context(use_system_store=True), timeout=5)
    env = make_env(store, lab, relay=Es9Relay(store, client))
    try:
        op, _, eim_txid = await download_operation(env, EIDS[1], "1$smdp.example.com$MATCHING-1")
        ipa = Ipa(ThroughDispatcher(env), SimEuicc(lab, "nist", eid=EIDS[1]))
        answer = await ipa.initiate("other.example.com", eim_txid)
        assert esipa(answer) == ("initiateAuthenticationErrorEsipa", 50)
        failed = await env.service.get(op.id)
        assert failed.status is OpStatus.FAILED and failed.result_code == 50
        assert failed.error == (
            "relayed initiateAuthentication failed: the IPA named other.example.com, the operation smdp.example.com"
        )
        assert esipa(await ipa.initiate("smdp.example.com", eim_txid)) == ("initiateAuthenticationErrorEsipa", 52)
        audit = [
            a for a in await store.list_audit(operation_id=op.id, limit=100) if a.action == "initiate_authentication"
        ]
        assert [(a.outcome, a.detail["code"], a.detail["reason"]) for a in audit] == [
            ("rejected", 52, "the download operation is failed")
        ]
    finally:
        await client.aclose()
