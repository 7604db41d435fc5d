"""Dispatcher flows beyond the PSMO round trip, on both stores: eCO lists, brainpool keys, direct and indirect
downloads (the relay replaced by a recorder that answers like an SM-DP+ would), eUICC data errors, IPA package
errors, answers to pushed packages, a replayed re-handed package, late results."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization

from eim.interfaces import EsipaRejected
from eim.model import OpKind, OpStatus
from eim.operations import OperationSettings
from rsp import asn1, crypto, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import (
    Card,
    get_eim_package_request,
    make_env,
    provide_result,
    unwrap_package,
)

EIDS = [lab_eid(i) for i in range(21, 25)]
SMDP = "smdp.example.com"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist", "brainpool"), eids=EIDS)


class RecordingRelay:
    """A DownloadRelay that records its calls and answers with canned SM-DP+ answers."""

    def __init__(self, lab) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.transaction_id = os.urandom(16)
        cert = lab.dpauth_cert("nist").public_bytes(serialization.Encoding.DER)
        self.ia_answer = asn1.encode(
            "InitiateAuthenticationResponseEsipa",
            (
                "initiateAuthenticationOkEsipa",
                {
                    "transactionId": self.transaction_id,
                    "serverSigned1": {
                        "transactionId": self.transaction_id,
                        "euiccChallenge": bytes(16),
                        "serverAddress": SMDP,
                        "serverChallenge": bytes(range(16)),
                    },
                    "serverSignature1": bytes(64),
                    "euiccCiPKIdentifierToBeUsed": lab.ci_key_id("nist"),
                    "serverCertificate": asn1.certificate_from_der(cert),
                },
            ),
        )

    async def initiate_authentication(self, eid, request):
        self.calls.append(("initiateAuthentication", eid, request))
        return self.ia_answer

    async def authenticate_client(self, eid, request):
        self.calls.append(("authenticateClient", eid, request))
        return bytes.fromhex("BF3B03820108")  # noEligibleProfile, as an SM-DP+ might answer

    async def get_bound_profile_package(self, eid, request):
        self.calls.append(("getBoundProfilePackage", eid, request))
        return bytes.fromhex("BF3A038101") + b"\x06"

    async def cancel_session(self, eid, request):
        self.calls.append(("cancelSession", eid, request))
        return bytes.fromhex("BF4102A000")

    async def forward_notification(self, eid, pending_notification):
        self.calls.append(("forward", eid, pending_notification))


def make_pir(lab, eid: str, transaction_id: bytes, *, ok: bool = True, seq: int = 9, curve: str = "nist") -> bytes:
    """A ProfileInstallationResult signed by the eUICC's lab key over the BF27 TLV (SGP.22 §5.7.x)."""
    final = (
        ("successResult", {"aid": bytes.fromhex("A0000005591010FFFFFFFF8900001100"), "simaResponse": b"\x30\x00"})
        if ok
        else ("errorResult", {"bppCommandId": 5, "errorReason": 10})
    )
    data = asn1.encode(
        "ProfileInstallationResultData",
        {
            "transactionId": transaction_id,
            "notificationMetadata": {
                "seqNumber": seq,
                "profileManagementOperation": (b"\x80", 1),
                "notificationAddress": SMDP,
            },
            "smdpOid": "2.999.32.10",
            "finalResult": final,
        },
    )
    sig = crypto.sign(lab.euicc_key(eid, curve), data)
    return tlv.encode(0xBF37, data + tlv.encode(0x5F37, sig))


async def ready_card(env, lab, eid, curve="nist"):
    """Associated, registered, certificates learned."""
    card = Card(lab, eid, curve)
    await card.open()
    token = await card.associate(env.key, counter_value=1)
    await env.service.register_euicc(eid, association_token=token, counter_value=1)
    await env.service.create(eid, OpKind.EUICC_DATA, {})
    req = unwrap_package(await env.handle(get_eim_package_request(eid)))
    assert await env.handle(provide_result(eid, await card.euicc_data(req))) == bytes.fromhex("BF50023000")
    return card


async def test_eco_list_and_brainpool(store, lab):
    env = make_env(store, lab, curve="brainpool")
    card = await ready_card(env, lab, EIDS[0], curve="brainpool")
    op = await env.service.create(card.eid, OpKind.ECO, {"ecos": [{"listEim": {}}]})
    package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    epr = await card.load(package)
    assert asn1.decode("ProvideEimPackageResultResponse", await env.handle(provide_result(card.eid, epr)))[0] == (
        "eimAcknowledgements"
    )
    done = await env.service.get(op.id)
    assert done.status is OpStatus.DONE
    assert done.result["results"] == [{"type": "listEimResult", "eims": [{"eimId": "eim.lab.test"}]}]


async def test_failed_psmo_carries_the_euicc_result_code(store, lab):
    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[1])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"enable": {"iccid": "89000123456789012341"}}]})
    epr = await card.load(unwrap_package(await env.handle(get_eim_package_request(card.eid))))
    await env.handle(provide_result(card.eid, epr))
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result_code == 1  # iccidOrAidNotFound
    assert failed.error == "eUICC result enableResult=iccidOrAidNotFound"


async def test_replayed_rehanded_package_holds_the_operation(store, lab):
    """The IPA lost the first result and fetched the package again: the eUICC answers replayError; the eIM keeps
    the operation open (on hold) until the first result arrives, and then accepts it."""
    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[2])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    first = await card.load(package)  # result lost on the way
    again = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    assert again == package
    replay = await card.load(again)
    assert asn1.decode("EuiccPackageResult", replay)[0] == "euiccPackageErrorSigned"
    assert await env.handle(provide_result(card.eid, replay)) == bytes.fromhex("BF50023000")
    held = await env.service.get(op.id)
    assert held.status is OpStatus.IN_PROGRESS and held.result["hold"] is True
    assert await env.handle(get_eim_package_request(card.eid)) == bytes.fromhex("BF4F03020101")  # not again
    await env.handle(provide_result(card.eid, first))
    assert (await env.service.get(op.id)).status is OpStatus.DONE


async def test_direct_download_result(store, lab):
    env = make_env(store, lab)
    await env.service.register_euicc(EIDS[0])
    op = await env.service.create(EIDS[0], OpKind.DOWNLOAD, {"activationCode": f"1${SMDP}$MATCH-1", "mode": "direct"})
    trigger = unwrap_package(await env.handle(get_eim_package_request(EIDS[0])))
    value = asn1.decode("ProfileDownloadTriggerRequest", trigger)
    assert value["profileDownloadData"] == ("activationCode", f"1${SMDP}$MATCH-1")
    txid = value["eimTransactionId"]
    result = asn1.encode(
        "ProfileDownloadTriggerResult",
        {
            "eimTransactionId": txid,
            "profileDownloadTriggerResultData": ("profileDownloadError", {"profileDownloadErrorReason": 127}),
        },
    )
    assert await env.handle(provide_result(EIDS[0], result)) == bytes.fromhex("BF50023000")
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result_code == 127


async def test_explicit_indirect_download_keeps_the_download_data_at_the_eim(store, lab):
    """mode=indirect asked by the operator: the trigger goes out without profileDownloadData (the eIM holds the
    data, eimDownloadDataHandling); mode=direct and the default carry the activation code."""
    env = make_env(store, lab)
    eid = EIDS[2]
    await env.service.register_euicc(eid)
    held = await env.service.create(eid, OpKind.DOWNLOAD, {"activationCode": f"1${SMDP}$MATCH-H", "mode": "indirect"})
    assert held.params["eimHoldsData"] is True and held.params["smdpAddress"] == SMDP
    value = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(eid))))
    assert "profileDownloadData" not in value and len(value["eimTransactionId"]) == 16
    await env.service.cancel(held.id)
    for params in ({"activationCode": f"1${SMDP}$MATCH-D", "mode": "direct"}, {"activationCode": f"1${SMDP}$MATCH-X"}):
        op = await env.service.create(eid, OpKind.DOWNLOAD, params)
        assert "eimHoldsData" not in op.params
        value = asn1.decode(
            "ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(eid)))
        )
        assert value["profileDownloadData"] == ("activationCode", params["activationCode"])
        await env.service.cancel(op.id)


async def test_indirect_download_through_the_relay(store, lab):
    relay = RecordingRelay(lab)
    env = make_env(store, lab, relay=relay)
    eid = EIDS[3]
    await env.service.register_euicc(eid)
    op = await env.service.create(eid, OpKind.DOWNLOAD, {"activationCode": f"1${SMDP}$MATCH-2"})
    txid = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(eid))))[
        "eimTransactionId"
    ]
    # BF39 has no EID: it comes from the operation that handed out the eimTransactionId
    ia = asn1.encode(
        "EsipaMessageFromIpaToEim",
        (
            "initiateAuthenticationRequestEsipa",
            {"euiccChallenge": bytes(16), "smdpAddress": SMDP, "eimTransactionId": txid},
        ),
    )
    assert await env.handle(ia) == relay.ia_answer
    assert relay.calls[-1] == ("initiateAuthentication", eid, ia)
    # unknown eimTransactionId / none at all: invalidEimTransactionId(52), the relay is not called
    unknown = asn1.encode(
        "EsipaMessageFromIpaToEim",
        ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16), "eimTransactionId": os.urandom(16)}),
    )
    assert await env.handle(unknown) == bytes.fromhex("BF3903810134")
    bare = asn1.encode(
        "EsipaMessageFromIpaToEim", ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16)})
    )
    assert await env.handle(bare) == bytes.fromhex("BF3903810134")
    assert len(relay.calls) == 1

    # BF3B carries the ES9+ transactionId the relay's answer named
    def auth_client(transaction_id):
        return asn1.encode(
            "EsipaMessageFromIpaToEim",
            (
                "authenticateClientRequestEsipa",
                {
                    "transactionId": transaction_id,
                    "authenticateServerResponse": (
                        "authenticateResponseError",
                        {"transactionId": transaction_id, "authenticateErrorCode": 1},
                    ),
                },
            ),
        )

    auth = auth_client(relay.transaction_id)
    answer = await env.handle(auth)
    assert relay.calls[-1][:2] == ("authenticateClient", eid) and answer == bytes.fromhex("BF3B03820108")
    stranger = auth_client(os.urandom(16))
    assert await env.handle(stranger) == bytes.fromhex("BF3B0382010A")  # invalidTransactionId, relay not called
    assert relay.calls[-1][0] == "authenticateClient" and len(relay.calls) == 2
    # the PIR comes with HandleNotification. It is verified with the eUICC's certificate: unknown here (a
    # recording relay learns none in AuthenticateClient), so the PIR is refused and changes nothing
    pir = make_pir(lab, eid, relay.transaction_id)
    note = tlv.encode(0xBF3D, tlv.encode(0xA0, pir))
    with pytest.raises(EsipaRejected) as exc:
        await env.handle(note)
    assert exc.value.http_status == 403 and "(certificate)" in exc.value.message
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS and await store.list_notifications() == []
    # the real relay stores the certificates of a successful AuthenticateClient: then the operation is done and
    # the PIR goes to the SM-DP+
    euicc_cert = lab.euicc_cert(eid, "nist").public_bytes(serialization.Encoding.DER)
    await store.set_euicc_certificates(eid, euicc_cert, lab.eum_cert("nist").public_bytes(serialization.Encoding.DER))
    assert await env.handle(note) is None
    done = await env.service.get(op.id)
    assert done.status is OpStatus.DONE and done.result["profileInstallationResult"]["verified"] is True
    # before the answer, the PIR was written to the outbox, linked to its operation; the forwarder sends it
    [queued] = await store.list_notifications()
    assert (queued.notification, queued.operation_id, queued.kind, queued.eid) == (pir, op.id, "pir", eid)
    assert relay.calls[-1][0] == "authenticateClient"
    assert [d.outcome for d in await env.rp.outbox.deliver_due()] == ["delivered"]
    assert relay.calls[-1] == ("forward", eid, pir)
    assert await store.list_notifications() == []


async def test_indirect_download_cancelled(store, lab):
    relay = RecordingRelay(lab)
    env = make_env(store, lab, relay=relay)
    eid = EIDS[2]
    await env.service.register_euicc(eid)
    op = await env.service.create(eid, OpKind.DOWNLOAD, {"activationCode": f"1${SMDP}$M3"})
    txid = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(eid))))[
        "eimTransactionId"
    ]
    ia = asn1.encode(
        "EsipaMessageFromIpaToEim",
        ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16), "eimTransactionId": txid}),
    )
    await env.handle(ia)
    signed = asn1.encode(
        "EuiccCancelSessionSigned", {"transactionId": relay.transaction_id, "smdpOid": "2.999.32.10", "reason": 1}
    )
    cancel = asn1.encode(
        "EsipaMessageFromIpaToEim",
        (
            "cancelSessionRequestEsipa",
            {
                "transactionId": relay.transaction_id,
                "cancelSessionResponse": (
                    "cancelSessionResponseOk",
                    {
                        "euiccCancelSessionSigned": asn1.decode("EuiccCancelSessionSigned", signed),
                        "euiccCancelSessionSignature": bytes(64),
                    },
                ),
            },
        ),
    )
    assert await env.handle(cancel) == bytes.fromhex("BF4102A000")
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result_code == 1 and "postponed" in failed.error
    # the session is gone: a second cancel is an invalidTransactionId
    assert await env.handle(cancel) == bytes.fromhex("BF4103810101")


async def test_pir_with_a_known_certificate_must_verify(store, lab):
    relay = RecordingRelay(lab)
    env = make_env(store, lab, relay=relay)
    card = await ready_card(env, lab, EIDS[1])
    op = await env.service.create(card.eid, OpKind.DOWNLOAD, {"activationCode": f"1${SMDP}$M4"})
    txid = asn1.decode(
        "ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    )["eimTransactionId"]
    await env.handle(
        asn1.encode(
            "EsipaMessageFromIpaToEim",
            ("initiateAuthenticationRequestEsipa", {"euiccChallenge": bytes(16), "eimTransactionId": txid}),
        )
    )
    forged = make_pir(lab, EIDS[0], relay.transaction_id)  # signed by another eUICC's key
    with pytest.raises(EsipaRejected) as exc:  # not acknowledged: the IPA may not delete it as if it were handled
        await env.handle(tlv.encode(0xBF3D, tlv.encode(0xA0, forged)))
    assert exc.value.http_status == 403 and "(signature)" in exc.value.message
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert relay.calls[-1][0] == "initiateAuthentication"  # the forged PIR was not forwarded
    genuine = make_pir(lab, card.eid, relay.transaction_id, ok=False)
    await env.handle(tlv.encode(0xBF3D, tlv.encode(0xA0, genuine)))
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result_code == 10
    assert failed.result["profileInstallationResult"]["verified"] is True
    assert [n.notification for n in await store.list_notifications()] == [genuine]  # the forged one was not queued
    await env.rp.outbox.deliver_due()
    assert relay.calls[-1] == ("forward", card.eid, genuine)


async def test_euicc_data_error_and_ipa_package_error(store, lab):
    env = make_env(store, lab)
    await env.service.register_euicc(EIDS[0])
    op = await env.service.create(EIDS[0], OpKind.EUICC_DATA, {"tags": ["euiccInfo2"]})
    req = asn1.decode("IpaEuiccDataRequest", unwrap_package(await env.handle(get_eim_package_request(EIDS[0]))))
    assert req["tagList"] == b"\xbf\x22"
    err = asn1.encode(
        "IpaEuiccDataResponse",
        ("ipaEuiccDataResponseError", {"eimTransactionId": req["eimTransactionId"], "ipaEuiccDataErrorCode": 1}),
    )
    assert await env.handle(provide_result(EIDS[0], err)) == bytes.fromhex("BF50023000")
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.error == "eUICC data request refused: incorrectTagList"
    op2 = await env.service.create(EIDS[0], OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    # auto-learn queued a data request first; the IPA cannot use it
    req2 = asn1.decode("IpaEuiccDataRequest", unwrap_package(await env.handle(get_eim_package_request(EIDS[0]))))
    ipa_error = tlv.encode(0xA0, tlv.encode(0x80, req2["eimTransactionId"]) + bytes.fromhex("020102"))
    # unsigned: from an anonymous HTTP client it ends nothing (undefinedError); from the authenticated device it does
    assert await env.handle(provide_result(EIDS[0], ipa_error)) == bytes.fromhex("BF500302017F")
    learn = next(o for o in await store.list_operations(eid=EIDS[0]) if o.created_by == "eim")
    assert learn.status is OpStatus.IN_PROGRESS
    from eim.interfaces import RequestContext

    coaps = RequestContext("coap", "127.0.0.1", EIDS[0])  # the PSK identity authenticated this EID
    assert await env.handle(provide_result(EIDS[0], ipa_error), coaps) == bytes.fromhex("BF50023000")
    learn = await env.service.get(learn.id)
    assert learn.status is OpStatus.FAILED and learn.result_code == 2  # unknownPackage
    assert (await env.service.get(op2.id)).status is OpStatus.QUEUED


async def test_answers_to_pushed_packages(store, lab):
    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[3])
    pushed: list[tuple[str, bytes]] = []

    class Pusher:
        async def push(self, eid, message):
            pushed.append((eid, message))

    env.service.pusher = Pusher()
    await store.update_euicc(card.eid, binding="mqtt")
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    await env.service.drain()  # creating the operation pushed it at once (the eUICC is reached over MQTT)
    assert len(pushed) == 1
    eid, message = pushed[0]
    assert eid == card.eid and message[:2] == b"\xbf\x4e"
    package = tlv.children(message)[0].raw
    assert package[:2] == b"\xbf\x51"
    # not pushed again before push_retry_s; after it, the sweep pushes the same bytes again
    assert await env.service.push(card.eid) is False
    assert await env.service.push_pending() == 0
    env.service.settings = OperationSettings(push_retry_s=0.0)
    assert await env.service.push_pending() == 1
    assert pushed[-1] == pushed[0]
    env.service.settings = OperationSettings()
    from eim.interfaces import RequestContext

    mqtt = RequestContext("mqtt", f"esipa/{card.eid}/up", card.eid)
    assert await env.dispatcher.handle(bytes.fromhex("BF4E020500"), mqtt) is None  # eimPackageReceived
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    epr = await card.load(package)
    answer = await env.dispatcher.handle(tlv.encode(0xBF4E, epr), mqtt)
    seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    assert asn1.decode("TransferEimPackageRequest", answer) == ("eimAcknowledgements", [seq])
    assert (await env.service.get(op.id)).status is OpStatus.DONE
    # an eimPackageError for the next pushed package fails it
    op2 = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    # creating it pushed it (kick); wait for that push rather than racing it with a second one
    await env.service.drain()
    assert (await env.service.get(op2.id)).status is OpStatus.IN_PROGRESS
    assert tlv.children(pushed[-1][1])[0].raw != package  # op2's own package went out
    assert await env.dispatcher.handle(bytes.fromhex("BF4E03020101"), mqtt) is None
    assert (await env.service.get(op2.id)).status is OpStatus.FAILED


async def test_result_after_expiry_is_recorded(store, lab):
    now = [1_000_000.0]
    env = make_env(store, lab, clock=lambda: now[0], settings=OperationSettings(default_validity_s=60))
    card = await ready_card(env, lab, EIDS[0])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card.load(unwrap_package(await env.handle(get_eim_package_request(card.eid))))
    now[0] += 3600
    assert await env.service.expire() == 1
    assert (await env.service.get(op.id)).status is OpStatus.EXPIRED
    await env.handle(provide_result(card.eid, epr))
    late = await env.service.get(op.id)
    assert late.status is OpStatus.DONE
    assert (await store.list_audit(operation_id=op.id))[-1].detail == {"after": "expired"}
