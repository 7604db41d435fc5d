"""Result verification in the eIM (docs/eim.md, "How results are verified"), attacked: each test performs an
attack found against the eIM, or breaks exactly one rule of result verification with a lying software eUICC
(``euicc.forgery.Forgery``), and checks what the store, the audit log, the metrics and the IPA's answer show.

Findings covered (security issue 13): a certificate of another EID learned and then trusted through a cache
keyed by certificate bytes; results, eUICC data responses and download results closing "the open operation of
this EID" without naming it; unsigned errors from anyone ending an operation.
"""

from __future__ import annotations

import os

import pytest

from eim.interfaces import RequestContext
from eim.metrics import Metrics
from eim.model import OpKind, OpStatus
from euicc.forgery import Forgery
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import EIM_ID, HTTP, Card, get_eim_package_request, make_env, provide_result, unwrap_package

EIDS = [lab_eid(i) for i in range(41, 45)]
UNDEFINED = bytes.fromhex("BF500302017F")  # provideEimPackageResultError undefinedError
EMPTY = bytes.fromhex("BF50023000")  # emptyResponse


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), eids=EIDS)


def refused(env, cause: str) -> float:
    return env.rp.metrics.registry.get_sample_value("eim_results_refused_total", {"cause": cause}) or 0.0


def metered(env):
    env.rp.metrics = Metrics()
    return env


async def ready_card(env, lab, eid: str) -> Card:
    """Associated, registered, certificates learned through an eUICC data request."""
    card = Card(lab, eid)
    await card.open()
    token = await card.associate(env.key, counter_value=1)
    await env.service.register_euicc(eid, association_token=token, counter_value=1)
    await env.service.create(eid, OpKind.EUICC_DATA, {})
    req = unwrap_package(await env.handle(get_eim_package_request(eid)))
    assert await env.handle(provide_result(eid, await card.euicc_data(req))) == EMPTY
    return card


async def psmo(env, card: Card):
    """A getRAT PSMO for ``card``, handed out: ``(operation, package bytes)``."""
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    return op, package


def data_response(txid: bytes | None, euicc_cert: bytes, eum_cert: bytes) -> bytes:
    """IpaEuiccDataResponse ``BF52 { A0 { A5 eum, A6 euicc, [87 txid] } }`` as an IPA (or an attacker) writes it."""
    body = tlv.encode(0xA5, tlv.parse_exact(eum_cert).value) + tlv.encode(0xA6, tlv.parse_exact(euicc_cert).value)
    if txid is not None:
        body += tlv.encode(0x87, txid)
    return tlv.encode(0xBF52, tlv.encode(0xA0, body))


def unsigned_error(txid: bytes | None, eim_id: str = EIM_ID) -> bytes:
    """EuiccPackageErrorUnsigned ``BF51 { A2 { 80 eimId, [82 txid] } }``: no signature, anyone can write it."""
    body = tlv.encode(0x80, eim_id.encode()) + (tlv.encode(0x82, txid) if txid is not None else b"")
    return tlv.encode(0xBF51, tlv.encode(0xA2, body))


def txid_of(package: bytes) -> bytes:
    return asn1.decode("EuiccPackageRequest", package)["euiccPackageSigned"]["eimTransactionId"]


# ---------------------------------------------------------------------------------------------------- finding 1
async def test_certificate_of_another_eid_is_never_learned_nor_trusted(store, lab):
    """The attack: an anonymous client answers B's eUICC data request with A's certificates (already verified,
    and cached, for A). Then a result for B's PSMO signed with A's key. Neither may be accepted."""
    env = metered(make_env(store, lab))
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = Card(lab, EIDS[1])
    await card_b.open()
    token = await card_b.associate(env.key, counter_value=1)
    await env.service.register_euicc(card_b.eid, association_token=token, counter_value=1)
    learn = await env.service.create(card_b.eid, OpKind.EUICC_DATA, {})
    txid = asn1.decode("IpaEuiccDataRequest", unwrap_package(await env.handle(get_eim_package_request(card_b.eid))))[
        "eimTransactionId"
    ]
    a = await store.get_euicc(card_a.eid)
    forged = data_response(txid, a.euicc_certificate, a.eum_certificate)
    assert await env.handle(provide_result(card_b.eid, forged)) == UNDEFINED
    b = await store.get_euicc(card_b.eid)
    assert b.euicc_certificate is None and b.eum_certificate is None  # nothing learned
    assert (await env.service.get(learn.id)).status is OpStatus.IN_PROGRESS
    [entry] = [e for e in await store.list_audit(eid=card_b.eid) if e.action == "euicc_certificate"]
    assert entry.outcome == "eid_mismatch" and entry.operation_id == learn.id
    assert entry.detail["cause"] == "certificate_eid" and card_a.eid in entry.detail["reason"]
    assert refused(env, "certificate_eid") == 1
    # the genuine answer is still accepted afterwards
    genuine = data_response(txid, card_b.card.identity.euicc_cert_der, card_b.card.identity.eum_cert_der)
    assert await env.handle(provide_result(card_b.eid, genuine)) == EMPTY
    assert (await store.get_euicc(card_b.eid)).euicc_certificate == card_b.card.identity.euicc_cert_der


async def test_result_signed_with_another_cards_key_is_refused_even_with_a_poisoned_certificate(store, lab):
    """Second half of the attack: B's stored certificate is A's (a registry poisoned before this fix, or any
    other way in). The key is checked for B's EID on every use: a result for B signed with A's key is refused."""
    env = metered(make_env(store, lab))
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = await ready_card(env, lab, EIDS[1])
    a = await store.get_euicc(card_a.eid)
    await store.update_euicc(card_b.eid, euicc_certificate=a.euicc_certificate, eum_certificate=a.eum_certificate)
    op, package = await psmo(env, card_b)
    card_b.card.ctx.forgery = Forgery(signing_key=lab.euicc_key(card_a.eid, "nist"))
    epr = await card_b.load(package)
    assert await env.handle(provide_result(card_b.eid, epr)) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    entry = [e for e in await store.list_audit(operation_id=op.id) if e.action == "euicc_certificate"][-1]
    assert entry.outcome == "eid_mismatch"
    assert refused(env, "certificate_eid") == 1


# ---------------------------------------------------------------------------------------------------- each check
@pytest.mark.parametrize(
    ("lie", "cause"),
    [
        ("signature", "signature"),
        ("counter", "counter"),
        ("eim_id", "eim_id"),
    ],
)
async def test_a_lying_card_never_closes_the_operation(store, lab, lie, cause):
    """One rule broken at a time by the card itself: signed with another card's key, a counterValue that is not
    the package's, an eimId that is not the association's. The operation stays in progress, nothing is
    acknowledged, the refusal is audited and counted by cause; the package is handed out again."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[2])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = {
        "signature": Forgery(signing_key=lab.euicc_key(EIDS[3], "nist")),
        "counter": Forgery(counter_offset=1),
        "eim_id": Forgery(eim_id="eim.attacker.example"),
    }[lie]
    epr = await card.load(package)
    assert await env.handle(provide_result(card.eid, epr)) == UNDEFINED
    still = await env.service.get(op.id)
    assert still.status is OpStatus.IN_PROGRESS and still.result_code is None and still.error is None
    assert set(still.result or {}) <= {"refusals"}  # only the refusal is noted (it counts against max_handouts)
    assert still.result is None or still.result["refusals"]["count"] == 1
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.outcome == "refused"]
    assert entry.action == "result" and entry.detail["cause"] == cause
    assert refused(env, cause) == 1
    assert unwrap_package(await env.handle(get_eim_package_request(card.eid))) == package
    # the same card telling the truth about the same package (replayError: it already ran it) is accepted
    card.card.ctx.forgery = None
    assert asn1.decode("EuiccPackageResult", await card.load(package))[0] == "euiccPackageErrorSigned"


async def test_a_result_naming_another_transaction_closes_nothing(store, lab):
    """The card signs its result with an eimTransactionId the eIM never issued: the open operation is not
    closed by guessing (no "open operation of this EID" match); the genuine signature only makes it an orphan."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[2])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(eim_transaction_id=os.urandom(16))
    epr = await card.load(package)
    await env.handle(provide_result(card.eid, epr))
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    audit = await store.list_audit(eid=card.eid)
    assert [e.outcome for e in audit if e.action == "result" and e.operation_id is None] == ["orphan"]
    assert [e.outcome for e in audit if e.operation_id == op.id and e.action == "result"] == []


async def test_a_signed_result_without_transaction_id_needs_the_exact_counter(store, lab):
    """eimTransactionId is OPTIONAL in EuiccPackageResultDataSigned: a signed result without it is matched by
    EID + counterValue, exactly, and verified with that EID's key."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[2])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(drop_transaction_id=True, counter_offset=5)
    wrong = await card.load(package)
    await env.handle(provide_result(card.eid, wrong))
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    package2 = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    assert package2 == package
    card.card.ctx.forgery = Forgery(drop_transaction_id=True)
    card.card.ctx.state.eims[0].counter -= 1  # let the card run the same package again (a second card run)
    right = await card.load(package)
    assert "eimTransactionId" not in asn1.decode("EuiccPackageResult", right)[1]["euiccPackageResultDataSigned"]
    assert asn1.decode("ProvideEimPackageResultResponse", await env.handle(provide_result(card.eid, right)))[0] == (
        "eimAcknowledgements"
    )
    assert (await env.service.get(op.id)).status is OpStatus.DONE


async def test_a_result_for_another_euicc_is_refused(store, lab):
    """A genuine result of B posted with A's EID: the EID it came with is not the operation's."""
    env = metered(make_env(store, lab))
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = await ready_card(env, lab, EIDS[1])
    op, package = await psmo(env, card_b)
    epr = await card_b.load(package)
    assert await env.handle(provide_result(card_a.eid, epr)) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert refused(env, "eid") == 1
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.outcome == "refused"]
    assert (entry.eid, entry.who, entry.detail["cause"]) == (card_b.eid, "ipa", "eid")
    assert asn1.decode("ProvideEimPackageResultResponse", await env.handle(provide_result(card_b.eid, epr)))[0] == (
        "eimAcknowledgements"
    )
    assert (await env.service.get(op.id)).status is OpStatus.DONE


# ---------------------------------------------------------------------------------------------------- finding 2
async def test_euicc_data_response_must_name_its_request(store, lab):
    """An IpaEuiccDataResponse without (or with another) eimTransactionId does not close the eUICC's open data
    request: the eIM sends one in every request and matches only by it."""
    env = metered(make_env(store, lab))
    card = Card(lab, EIDS[3])
    await card.open()
    await env.service.register_euicc(card.eid)
    op = await env.service.create(card.eid, OpKind.EUICC_DATA, {})
    txid = asn1.decode("IpaEuiccDataRequest", unwrap_package(await env.handle(get_eim_package_request(card.eid))))[
        "eimTransactionId"
    ]
    ident = card.card.identity
    for bad in (None, os.urandom(16)):
        assert await env.handle(
            provide_result(card.eid, data_response(bad, ident.euicc_cert_der, ident.eum_cert_der))
        ) == (UNDEFINED)
        assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
        assert (await store.get_euicc(card.eid)).euicc_certificate is None
    assert refused(env, "no_operation") == 2
    assert await env.handle(
        provide_result(card.eid, data_response(txid, ident.euicc_cert_der, ident.eum_cert_der))
    ) == (EMPTY)
    assert (await env.service.get(op.id)).status is OpStatus.DONE


async def test_download_trigger_result_must_name_its_trigger(store, lab):
    env = make_env(store, lab)
    eid = EIDS[3]
    await env.service.register_euicc(eid)
    op = await env.service.create(eid, OpKind.DOWNLOAD, {"activationCode": "1$smdp.example.com$M", "mode": "direct"})
    txid = asn1.decode("ProfileDownloadTriggerRequest", unwrap_package(await env.handle(get_eim_package_request(eid))))[
        "eimTransactionId"
    ]

    def result(t):
        value = {"profileDownloadTriggerResultData": ("profileDownloadError", {"profileDownloadErrorReason": 127})}
        if t is not None:
            value["eimTransactionId"] = t
        return asn1.encode("ProfileDownloadTriggerResult", value)

    for bad in (None, os.urandom(16)):
        assert await env.handle(provide_result(eid, result(bad))) == UNDEFINED
        assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert await env.handle(provide_result(eid, result(txid))) == EMPTY
    assert (await env.service.get(op.id)).status is OpStatus.FAILED


# ---------------------------------------------------------------------------------------------------- finding 3
async def test_unsigned_error_from_an_anonymous_client_ends_nothing(store, lab):
    """``BF51 A2 {80 eimId, 82 txid}`` over HTTP without client authentication: audited as an unverified error,
    the operation stays in progress, the package is handed out again, the IPA hears undefinedError."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[0])
    op, package = await psmo(env, card)
    assert await env.handle(provide_result(card.eid, unsigned_error(txid_of(package)))) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.action == "result"][-1:]
    assert entry.outcome == "unverified_error" and entry.detail["cause"] == "unverified_error"
    assert refused(env, "unverified_error") == 1
    assert unwrap_package(await env.handle(get_eim_package_request(card.eid))) == package
    # the IPA-side error of the same kind, eimPackageResultResponseError, likewise
    ipa_error = tlv.encode(0xA0, tlv.encode(0x80, txid_of(package)) + bytes.fromhex("020102"))
    assert await env.handle(provide_result(card.eid, ipa_error)) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert refused(env, "unverified_error") == 2


@pytest.mark.parametrize("binding", ["coap", "mqtt"])
async def test_unsigned_error_from_the_authenticated_device_ends_its_operation(store, lab, binding):
    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[1])
    op, package = await psmo(env, card)
    ctx = RequestContext(binding, "peer", card.eid)
    if binding == "mqtt":  # the answer to a pushed package
        assert await env.handle(tlv.encode(0xBF4E, unsigned_error(txid_of(package))), ctx) is None
    else:
        assert await env.handle(provide_result(card.eid, unsigned_error(txid_of(package))), ctx) == EMPTY
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result["euiccPackageErrorUnsigned"] is True


@pytest.mark.parametrize("txid", ["none", "other"])
async def test_unsigned_error_must_name_its_operation_even_when_authenticated(store, lab, txid):
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[1])
    op, _package = await psmo(env, card)
    coaps = RequestContext("coap", "peer", card.eid)
    error = unsigned_error(None if txid == "none" else os.urandom(16))
    assert await env.handle(provide_result(card.eid, error), coaps) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    ipa_error = tlv.encode(0xA0, (b"" if txid == "none" else tlv.encode(0x80, os.urandom(16))) + b"\x02\x01\x02")
    assert await env.handle(provide_result(card.eid, ipa_error), coaps) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert refused(env, "unverified_error") == 2


async def test_unsigned_error_from_a_device_authenticated_as_another_euicc(store, lab):
    """A device authenticated as A (its own MQTT topic) reports an unsigned error naming B's operation."""
    env = make_env(store, lab)
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = await ready_card(env, lab, EIDS[1])
    op, package = await psmo(env, card_b)
    as_a = RequestContext("mqtt", f"esipa/{card_a.eid}/up", card_a.eid)
    assert await env.handle(tlv.encode(0xBF4E, unsigned_error(txid_of(package))), as_a) is None
    assert await env.handle(provide_result(None, unsigned_error(txid_of(package))), as_a) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    # TransferEimPackageResponse eimPackageError has no eimTransactionId: only the device of the pushed package
    assert await env.handle(bytes.fromhex("BF4E03020101"), as_a) is None
    assert await env.handle(bytes.fromhex("BF4E03020101"), HTTP) is None  # unauthenticated, from loopback
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    as_b = RequestContext("mqtt", f"esipa/{card_b.eid}/up", card_b.eid)
    assert await env.handle(bytes.fromhex("BF4E03020101"), as_b) is None
    assert (await env.service.get(op.id)).status is OpStatus.FAILED


async def test_euicc_data_and_trigger_results_posted_with_another_eid_are_refused(store, lab):
    """B's eUICC data response and B's download result, posted with A's eidValue (A is registered too)."""
    env = metered(make_env(store, lab))
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = Card(lab, EIDS[1])
    await card_b.open()
    await env.service.register_euicc(card_b.eid)
    learn = await env.service.create(card_b.eid, OpKind.EUICC_DATA, {})
    txid = asn1.decode("IpaEuiccDataRequest", unwrap_package(await env.handle(get_eim_package_request(card_b.eid))))[
        "eimTransactionId"
    ]
    ident = card_b.card.identity
    response = data_response(txid, ident.euicc_cert_der, ident.eum_cert_der)
    assert await env.handle(provide_result(card_a.eid, response)) == UNDEFINED
    assert (await env.service.get(learn.id)).status is OpStatus.IN_PROGRESS
    assert (await store.get_euicc(card_b.eid)).euicc_certificate is None
    assert await env.handle(provide_result(card_b.eid, response)) == EMPTY
    download = await env.service.create(card_b.eid, OpKind.DOWNLOAD, {"activationCode": "1$smdp.example.com$M"})
    trigger = unwrap_package(await env.handle(get_eim_package_request(card_b.eid)))
    result = asn1.encode(
        "ProfileDownloadTriggerResult",
        {
            "eimTransactionId": asn1.decode("ProfileDownloadTriggerRequest", trigger)["eimTransactionId"],
            "profileDownloadTriggerResultData": ("profileDownloadError", {"profileDownloadErrorReason": 127}),
        },
    )
    assert await env.handle(provide_result(card_a.eid, result)) == UNDEFINED
    assert (await env.service.get(download.id)).status is OpStatus.IN_PROGRESS
    assert refused(env, "eid") == 2


# ---------------------------------------------------------------------------------------------------- matching
async def test_a_result_matched_by_counter_never_takes_another_euiccs_operation(store, lab):
    """A and B each have a PSMO with the same counterValue; B's signed result without eimTransactionId closes
    B's operation (the match is by B's EID and the counter), never A's, and is then ambiguous for nobody."""
    env = metered(make_env(store, lab))
    card_a = await ready_card(env, lab, EIDS[0])
    card_b = await ready_card(env, lab, EIDS[1])
    op_a, _ = await psmo(env, card_a)
    op_b, package_b = await psmo(env, card_b)
    op_a, op_b = await env.service.get(op_a.id), await env.service.get(op_b.id)
    assert op_a.counter_value == op_b.counter_value is not None
    card_b.card.ctx.forgery = Forgery(drop_transaction_id=True)
    epr = await card_b.load(package_b)
    answer = await env.handle(provide_result(card_b.eid, epr))
    assert asn1.decode("ProvideEimPackageResultResponse", answer)[0] == "eimAcknowledgements"
    assert (await env.service.get(op_b.id)).status is OpStatus.DONE
    assert (await env.service.get(op_a.id)).status is OpStatus.IN_PROGRESS


async def test_a_genuine_result_matching_no_counter_is_an_orphan(store, lab):
    """A signed result without eimTransactionId whose counterValue is no operation's: nothing closes, the
    genuine signature makes it an acknowledged orphan, audited with its counter and seqNumber."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(drop_transaction_id=True, counter_offset=7)
    epr = await card.load(package)
    outcome = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]
    answer = await env.handle(provide_result(card.eid, epr))
    assert asn1.decode("ProvideEimPackageResultResponse", answer) == (
        "eimAcknowledgements",
        [outcome["seqNumber"]],
    )
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    [orphan] = [e for e in await store.list_audit(eid=card.eid) if e.outcome == "orphan"]
    assert orphan.operation_id is None and orphan.eid == card.eid
    assert orphan.detail == {"counter_value": outcome["counterValue"], "seqNumber": outcome["seqNumber"]}
    # the same genuine result under another registered EID: refused (B's key does not verify A's signature)
    other = await ready_card(env, lab, EIDS[2])
    assert await env.handle(provide_result(other.eid, epr)) == UNDEFINED
    assert [e for e in await store.list_audit(eid=other.eid) if e.outcome == "orphan"] == []
    assert refused(env, "signature") + refused(env, "certificate_eid") + refused(env, "certificate") == 1
    [entry] = [e for e in await store.list_audit(eid=other.eid) if e.action == "result" and e.outcome == "refused"]
    assert entry.detail["cause"] in ("signature", "certificate_eid", "certificate") and entry.who == "ipa"


async def test_a_signed_result_without_an_eid_or_transaction_closes_nothing(store, lab):
    """No eidValue, an anonymous binding, no eimTransactionId: nothing names an eUICC, nothing is audited."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(drop_transaction_id=True)
    epr = await card.load(package)
    n = len(await store.list_audit())
    answer = await env.handle(provide_result(None, epr))
    assert answer[:4] == bytes.fromhex("BF500302")  # provideEimPackageResultError, no acknowledgement
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert refused(env, "no_operation") == 1
    assert len(await store.list_audit()) == n


async def test_an_unsigned_error_naming_an_unknown_transaction_is_audited_for_its_eid(store, lab):
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, _ = await psmo(env, card)
    coaps = RequestContext("coap", "peer", card.eid)
    assert await env.handle(provide_result(card.eid, unsigned_error(os.urandom(16))), coaps) == UNDEFINED
    [entry] = [e for e in await store.list_audit(eid=card.eid) if e.outcome == "unverified_error"]
    assert entry.eid == card.eid and entry.operation_id is None
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS


@pytest.mark.parametrize("txid", ["none", "unknown"])
async def test_an_orphan_over_mqtt_is_verified_with_the_topics_euicc(store, lab, txid):
    """The same orphans without eidValue, over MQTT (the topic's EID, no prefetch): acknowledged only with the
    genuine signature of that EID's eUICC; from a topic of an EID that is not registered, refused unaudited."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, package = await psmo(env, card)
    if txid == "none":
        card.card.ctx.forgery = Forgery(drop_transaction_id=True, counter_offset=9)
    else:
        card.card.ctx.forgery = Forgery(eim_transaction_id=os.urandom(16))
    epr = await card.load(package)
    seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    mqtt = RequestContext("mqtt", f"esipa/{card.eid}/up", card.eid)
    answer = await env.handle(provide_result(None, epr), mqtt)
    assert asn1.decode("ProvideEimPackageResultResponse", answer) == ("eimAcknowledgements", [seq])
    assert [e.outcome for e in await store.list_audit(eid=card.eid) if e.outcome == "orphan"] == ["orphan"]
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    stranger = lab_eid(49)
    n = len(await store.list_audit())
    as_stranger = RequestContext("mqtt", f"esipa/{stranger}/up", stranger)
    assert await env.handle(provide_result(None, epr), as_stranger) != answer
    assert refused(env, "no_operation") == 1 and len(await store.list_audit()) == n


async def test_an_undecodable_result_is_refused_as_such_and_changes_nothing(store, lab):
    """A BF51 whose signed part does not decode (the dispatcher's outer decoding lets the EuiccPackageResult
    through as received): cause ``undecodable``, nothing audited, the operation stays."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, _package = await psmo(env, card)
    garbage = tlv.encode(0xBF51, tlv.encode(0xA0, tlv.encode(0x30, tlv.encode(0x80, b"\xff\xfe"))))
    n = len(await store.list_audit())
    handled = await env.rp.euicc_package_result(garbage, card.eid)
    assert handled.refused and "undecodable" in handled.refused and handled.acks == []
    assert refused(env, "undecodable") == 1 and len(await store.list_audit()) == n
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS


async def test_a_result_naming_the_transaction_of_another_kind_of_operation_closes_nothing(store, lab):
    """The card signs a PSMO result with the eimTransactionId of its eUICC data request: that operation is not
    an eUICC package, so nothing closes; refused (no_operation), audited on that operation."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[3])
    [data_op] = await store.list_operations(eid=card.eid, kind=OpKind.EUICC_DATA)
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(eim_transaction_id=data_op.eim_transaction_id)
    assert await env.handle(provide_result(card.eid, await card.load(package))) == UNDEFINED
    assert refused(env, "no_operation") == 1
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    assert (await env.service.get(data_op.id)).status is OpStatus.DONE
    [entry] = [e for e in await store.list_audit(operation_id=data_op.id) if e.outcome == "refused"]
    assert entry.who == "ipa" and entry.detail["cause"] == "no_operation" and entry.eid == card.eid


class Forgetful:
    """The store, but ``get_euicc`` finds nothing once ``forget`` is set (the eUICC deleted meanwhile)."""

    def __init__(self, inner) -> None:
        self.inner, self.forget = inner, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def get_euicc(self, eid):
        return None if self.forget else await self.inner.get_euicc(eid)


async def result_of_a_forgotten_euicc(store, lab):
    """A PSMO's signed result without its transaction id (so matched by counter: the eUICC is read again), its
    eUICC forgotten by the store before the result is handled: ``(forgetful, env, card, op, epr)``."""
    forgetful = Forgetful(store)
    env = metered(make_env(forgetful, lab))
    card = await ready_card(env, lab, EIDS[3])
    op, package = await psmo(env, card)
    card.card.ctx.forgery = Forgery(drop_transaction_id=True)
    epr = await card.load(package)
    forgetful.forget = True
    return forgetful, env, card, op, epr


async def test_a_result_for_an_euicc_no_longer_registered_closes_nothing(store, lab):
    """The operation's eUICC is gone from the store by the time its result arrives (matched by counter, over
    MQTT): refused (no_operation) and audited on the operation, never verified with a key from elsewhere."""
    forgetful, env, card, op, epr = await result_of_a_forgotten_euicc(store, lab)
    mqtt = RequestContext("mqtt", f"esipa/{card.eid}/up", card.eid)
    assert await env.handle(provide_result(None, epr), mqtt) == UNDEFINED
    assert refused(env, "no_operation") == 1
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.outcome == "refused"]
    assert (entry.who, entry.detail["cause"]) == ("ipa", "no_operation")
    forgetful.forget = False
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS


async def test_an_authenticated_unsigned_error_with_a_wrong_echo_ends_nothing(store, lab):
    """The device is authenticated as the operation's eUICC, but its unsigned error names another eimId: the
    echo does not hold, audited as an unverified error on the operation, which stays open."""
    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[2])
    op, package = await psmo(env, card)
    coaps = RequestContext("coap", "peer", card.eid)
    error = unsigned_error(txid_of(package), eim_id="eim.somebody.else")
    assert await env.handle(provide_result(card.eid, error), coaps) == UNDEFINED
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.outcome == "unverified_error"]
    assert entry.eid == card.eid and entry.detail["eimId"] == "eim.somebody.else"
    assert entry.detail["eimTransactionId"] == txid_of(package).hex().upper()


# ------------------------------------------------------------------------------------------- who, what comes back
WHO = "ipa-under-test"  # whoever the caller says delivered the result: the audit names it on every path


async def test_every_refusal_is_audited_as_from_whoever_delivered_the_result(store, lab):
    """``euicc_package_result(..., who)``: a refusal for another kind of operation, for another EID, one whose
    signed echo fails and a genuine orphan checked under the wrong EID are each audited with that ``who``."""
    env = metered(make_env(store, lab))
    cards = [await ready_card(env, lab, eid) for eid in EIDS[:4]]
    ops = [(await psmo(env, c)) for c in cards]
    # card 0: signs its result with the eimTransactionId of its eUICC data request (not an eUICC package)
    [data_op] = await store.list_operations(eid=cards[0].eid, kind=OpKind.EUICC_DATA)
    cards[0].card.ctx.forgery = Forgery(eim_transaction_id=data_op.eim_transaction_id)
    kind = await env.rp.euicc_package_result(await cards[0].load(ops[0][1]), cards[0].eid, WHO)
    # card 1: its genuine result arriving with card 2's EID
    for_other = await env.rp.euicc_package_result(await cards[1].load(ops[1][1]), cards[2].eid, WHO)
    # card 2: a counterValue the package did not carry (the signature covers the lie)
    cards[2].card.ctx.forgery = Forgery(counter_offset=1)
    lying = await env.rp.euicc_package_result(await cards[2].load(ops[2][1]), cards[2].eid, WHO)
    # card 3: a genuine orphan (no eimTransactionId, no operation's counter) under card 2's EID and key
    cards[3].card.ctx.forgery = Forgery(drop_transaction_id=True, counter_offset=11)
    wrong_key = await env.rp.euicc_package_result(await cards[3].load(ops[3][1]), cards[2].eid, WHO)
    assert all(h.refused for h in (kind, for_other, lying, wrong_key))
    refusals = [e for e in await store.list_audit() if e.outcome in ("refused", "eid_mismatch")]
    assert {(e.operation_id, e.detail["cause"]) for e in refusals if e.operation_id} == {
        (data_op.id, "no_operation"),
        (ops[1][0].id, "eid"),
        (ops[2][0].id, "counter"),
    }
    [orphan] = [e for e in refusals if e.operation_id is None]
    assert orphan.eid == cards[2].eid and orphan.detail["cause"] in ("signature", "certificate_eid", "certificate")
    assert len(refusals) == 4 and {e.who for e in refusals} == {WHO}
    for op, _ in ops:
        assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS


async def test_a_result_for_an_euicc_no_longer_registered_is_audited_as_from_whoever_delivered_it(store, lab):
    _forgetful, env, card, op, epr = await result_of_a_forgotten_euicc(store, lab)
    handled = await env.rp.euicc_package_result(epr, card.eid, WHO)
    assert handled.refused == "eUICC no longer registered"
    [entry] = [e for e in await store.list_audit(operation_id=op.id) if e.outcome == "refused"]
    assert (entry.who, entry.detail["cause"]) == (WHO, "no_operation")


async def test_the_operation_a_result_closed_comes_back_to_the_caller_also_on_a_replay(store, lab):
    """The ESipa functions attribute the notifications that came with a result to the operation's eUICC
    (``Handled.operation``), also when the result arrived without an EID and when it is a replay."""
    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[1])
    op, package = await psmo(env, card)
    epr = await card.load(package)
    first = await env.rp.euicc_package_result(epr, None)
    assert first.refused is None and first.operation is not None
    assert (first.operation.id, first.operation.status) == (op.id, OpStatus.DONE)
    again = await env.rp.euicc_package_result(epr, None)  # a replay: changes nothing, acknowledged again
    assert again.refused is None and again.acks == first.acks
    assert again.operation is not None and again.operation.id == op.id


async def test_an_authenticated_unsigned_error_ends_its_operation_without_the_euiccs_key(store, lab):
    """An unsigned error is checked by its echo alone; the eUICC's key is not needed, so an error from the device
    authenticated as the operation's eUICC ends the operation even when its certificate cannot be verified now
    (here no CI is trusted any more)."""
    from eim.packages.euicc_package import EuiccKeys

    env = make_env(store, lab)
    card = await ready_card(env, lab, EIDS[0])
    op, package = await psmo(env, card)
    env.rp.keys = EuiccKeys([])
    coaps = RequestContext("coap", "peer", card.eid)
    assert await env.handle(provide_result(card.eid, unsigned_error(txid_of(package))), coaps) == EMPTY
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result["euiccPackageErrorUnsigned"] is True


async def test_a_genuine_signed_error_matching_nothing_is_an_orphan_with_nothing_to_acknowledge(store, lab):
    """EuiccPackageErrorSigned carries no seqNumber: a genuine one for no operation (no eimTransactionId, a
    counterValue no operation has) is audited as an orphan and acknowledged with no sequence number."""
    from eim.packages.common import association_token_tlv
    from rsp import crypto

    env = metered(make_env(store, lab))
    card = await ready_card(env, lab, EIDS[2])
    op, _package = await psmo(env, card)
    token = (await store.get_euicc(card.eid)).association_token
    data = asn1.encode(
        "EuiccPackageErrorDataSigned", {"eimId": EIM_ID, "counterValue": 977, "euiccPackageErrorCode": 4}
    )
    sig = crypto.sign(lab.euicc_key(card.eid), data + association_token_tlv(token))
    error = tlv.encode(0xBF51, tlv.encode(0xA1, data + tlv.encode(0x5F37, sig)))
    handled = await env.rp.euicc_package_result(error, card.eid)
    assert handled.refused is None and handled.acks == []
    [orphan] = [e for e in await store.list_audit(eid=card.eid) if e.outcome == "orphan"]
    assert orphan.detail == {"counter_value": 977, "seqNumber": None} and orphan.operation_id is None
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
