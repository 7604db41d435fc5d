"""The ESipa dispatcher against a software eUICC, on SQLite and PostgreSQL: exact encodings, the whole PSMO
round trip, forged/altered/replayed results, eUICC data requests, error answers."""

from __future__ import annotations

import pytest

from eim.model import OpKind, OpStatus
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import (
    Card,
    get_eim_package_request,
    make_env,
    provide_result,
    unwrap_package,
    verify_eim_signature,
)

EIDS = [lab_eid(i) for i in range(1, 4)]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist", "brainpool"), eids=EIDS)


@pytest.fixture
async def env(store, lab):
    return make_env(store, lab)


async def associated(env, lab, eid=EIDS[0], curve="nist"):
    """A card associated with this eIM and registered in its registry."""
    card = Card(lab, eid, curve)
    await card.open()
    token = await card.associate(env.key, counter_value=5)
    e, created = await env.service.register_euicc(eid, association_token=token, counter_value=5)
    assert created and e.association_token == token
    return card


async def learn_certificates(env, card):
    """Serve the automatic eUICC data request in front of the first signed package."""
    answer = await env.handle(get_eim_package_request(card.eid))
    req = unwrap_package(answer)
    assert req[:2] == b"\xbf\x52"
    reply = await env.handle(provide_result(card.eid, await card.euicc_data(req)))
    assert reply == bytes.fromhex("BF50023000")  # emptyResponse: nothing to delete


async def test_nothing_to_do_is_exactly_bf4f03020101(env, lab):
    await env.service.register_euicc(EIDS[0])
    assert await env.handle(get_eim_package_request(EIDS[0])) == bytes.fromhex("BF4F03020101")
    # the brief's request encoding, byte for byte
    assert get_eim_package_request(EIDS[0]) == bytes.fromhex("BF4F125A10" + EIDS[0])


async def test_get_eim_package_errors(env):
    assert await env.handle(get_eim_package_request(EIDS[1])) == bytes.fromhex("BF4F03020102")  # eidNotFound
    bad = tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex("AB" * 16)))
    assert await env.handle(bad) == bytes.fromhex("BF4F03020103")  # invalidEid (not digits)
    short = tlv.encode(0xBF4F, tlv.encode(0x5A, b"\x89\x04"))
    assert await env.handle(short) == bytes.fromhex("BF4F03020103")  # invalidEid (length)
    assert await env.handle(bytes.fromhex("BF4F00")) == bytes.fromhex("BF4F03020104")  # missingEid


async def test_psmo_round_trip_with_a_software_euicc(env, lab, store):
    card = await associated(env, lab)
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"listProfileInfo": {}}, {"getRAT": {}}]})
    ops = await store.list_operations(eid=card.eid)
    assert [o.kind for o in ops] == [OpKind.EUICC_DATA, OpKind.PSMO]  # certificates first
    await learn_certificates(env, card)
    e = await store.get_euicc(card.eid)
    assert e.euicc_certificate is not None and e.ipa_capabilities["ipaFeatures"] == ["indirectRspServerCommunication"]

    answer = await env.handle(get_eim_package_request(card.eid))
    package = unwrap_package(answer)
    signed = asn1.decode("EuiccPackageRequest", package)["euiccPackageSigned"]
    assert signed["counterValue"] == 6 and signed["eimId"] == "eim.lab.test"
    verify_eim_signature(package, env.key, e.association_token)
    # the result never came: the same bytes again
    assert await env.handle(get_eim_package_request(card.eid)) == answer

    epr = await card.load(package)
    reply = await env.handle(provide_result(card.eid, epr))
    seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    assert reply == tlv.encode(0xBF50, tlv.encode(0xBF53, tlv.encode(0x80, bytes([seq]))))
    done = await env.service.get(op.id)
    assert done.status is OpStatus.DONE
    assert [r["type"] for r in done.result["results"]] == ["listProfileInfoResult", "getRATResult"]
    assert (await store.get_euicc(card.eid)).profiles == []  # a fresh card has no profiles
    assert await env.handle(get_eim_package_request(card.eid)) == bytes.fromhex("BF4F03020101")


async def test_forged_and_altered_results_are_refused_and_replays_change_nothing(env, lab, store):
    card = await associated(env, lab, EIDS[1])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    await learn_certificates(env, card)
    package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    epr = await card.load(package)

    # one bit flipped in the signed data (the seqNumber): the signature no longer verifies
    seq_tlv = tlv.require(epr, 0xA0, 0x30, 0x83)
    altered = bytearray(epr)
    altered[epr.index(seq_tlv.raw) + len(seq_tlv.raw) - 1] ^= 0x01
    assert await env.handle(provide_result(card.eid, bytes(altered))) == bytes.fromhex("BF500302017F")
    # a length byte changed so that a nested TLV runs past its parent: refused before decoding (no hang)
    broken = bytearray(epr)
    broken[epr.index(seq_tlv.raw) + 1] = 0x7F
    assert await env.handle(provide_result(card.eid, bytes(broken))) == bytes.fromhex("BF500302017F")
    # the signature replaced
    sig = tlv.require(epr, 0xA0, 0x5F37)
    forged = epr.replace(sig.raw, tlv.encode(0x5F37, bytes(64)))
    assert await env.handle(provide_result(card.eid, forged)) == bytes.fromhex("BF500302017F")
    assert (await env.service.get(op.id)).status is OpStatus.IN_PROGRESS
    audit = [a.outcome for a in await store.list_audit(operation_id=op.id)]
    assert audit.count("refused") == 2

    ok = await env.handle(provide_result(card.eid, epr))
    seq = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    assert asn1.decode("ProvideEimPackageResultResponse", ok) == ("eimAcknowledgements", [seq])
    after = await env.service.get(op.id)
    assert after.status is OpStatus.DONE
    # replay: the same acknowledgement, nothing changes
    assert await env.handle(provide_result(card.eid, epr)) == ok
    again = await env.service.get(op.id)
    assert again == after
