"""An SGP.32 v1.0 IPA (tests/eim/v10_ipa.py) against a real ``eim serve`` over HTTP on loopback, with the
project's software eUICC producing every signed byte: listProfileInfo, enable, disable, delete and an eUICC data
request complete; a refused result is answered so that the v1.0 IPA keeps it on the card; the eIM records the
eUICC as speaking v1.0 (``GET /v1/euiccs/{eid}`` ``sgp32_version``)."""

from __future__ import annotations

import httpx
import pytest

from eim.packages.common import integer_tlv
from euicc.state import PROFILE_DISABLED, PROFILE_ENABLED, Profile
from ipa import messages as m
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import Card
from tests.eim.servers import start_eim
from tests.eim.test_serve import key_of, queue, register
from tests.eim.v10_ipa import V10Ipa, http_post

EIDS = [lab_eid(i) for i in range(61, 63)]
ICCID = "89440000000000000017"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


async def v10_card(lab, eid: str) -> Card:
    card = Card(lab, eid)
    await card.open()
    card.token = await card.associate(key_of(lab), counter_value=1)
    card.card.state.profiles.append(
        Profile(
            iccid=m.iccid_to_bytes(ICCID),
            isdp_aid=bytes.fromhex("A0000005591010FFFFFFFF8900001001"),
            state=PROFILE_DISABLED,
            service_provider_name="Lab",
            profile_name="Profile 1",
        )
    )
    card.card.state.next_isdp = 2
    return card


async def operation(client: httpx.AsyncClient, url: str, op_id: str) -> dict:
    return (await client.get(f"{url}/v1/operations/{op_id}")).json()


async def euicc_record(client: httpx.AsyncClient, url: str, eid: str) -> dict:
    return (await client.get(f"{url}/v1/euiccs/{eid}")).json()


async def pending_results(card: Card) -> list[int]:
    await card.es10.ensure_open()
    return [e.seq_number for e in await card.es10.retrieve_euicc_package_results() if e.seq_number is not None]


async def test_v10_ipa_runs_psmos_and_an_euicc_data_request_over_http(store_url, lab, tmp_path):
    server = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root)
    try:
        card = await v10_card(lab, EIDS[0])
        register(server.url, card)
        async with httpx.AsyncClient(timeout=20) as client:
            ipa = V10Ipa(card, http_post(client, server.esipa))
            # the first PSMO makes the eIM queue an eUICC data request before it (it needs the certificate to
            # verify results): the v1.0 IpaEuiccData names no EID; the eIM takes it from the certificate, verified
            # to the lab CI
            first = queue(server.url, card.eid, {"psmos": [{"listProfileInfo": {}}]})
            ex = await ipa.step()
            assert tlv.children(tlv.parse_exact(ex.request))[0].tag == 0xBF52
            assert (ex.status, ex.answer) == (200, bytes.fromhex("BF5000"))
            record = await euicc_record(client, server.url, card.eid)
            assert record["certificate_known"] is True and record["sgp32_version"] == "1.0"
            assert record["info"]["defaultSmdpAddress"] == "smdp.v10.example"  # v1.0 tag 80
            assert "indirectRspServerCommunication" in record["ipa_capabilities"]["ipaFeatures"]
            steps = [
                ({"psmos": [{"listProfileInfo": {}}]}, None),
                ({"psmos": [{"enable": {"iccid": ICCID}}]}, PROFILE_ENABLED),
                ({"psmos": [{"disable": {"iccid": ICCID}}]}, PROFILE_DISABLED),
                ({"psmos": [{"delete": {"iccid": ICCID}}]}, "gone"),
            ]
            for params, state in steps:
                op_id = first if params == steps[0][0] else queue(server.url, card.eid, params)
                ex = await ipa.step()
                assert ex.status == 200 and not ex.kept, (ex.status, ex.answer)
                assert tlv.children(tlv.parse_exact(ex.request))[0].tag == 0x30  # the v1.0 envelope went out
                assert ex.answer == tlv.encode(0xBF50, tlv.encode(0xBF53, tlv.encode(0x80, bytes([ex.seq_number]))))
                assert ex.seq_number in ex.removed and ex.seq_number not in await pending_results(card)
                assert (await operation(client, server.url, op_id))["status"] == "done"
                profiles = card.card.state.profiles
                if state == "gone":
                    assert profiles == []
                elif state is not None:
                    assert profiles[0].state == state
            record = await euicc_record(client, server.url, card.eid)
            assert record["sgp32_version"] == "1.0"
            assert [p["iccid"] for p in record["profiles"]] == [ICCID]  # learned from the listProfileInfo result

            # the eIM now knows the IPA speaks v1.0: the tag list names the v1.0 tags (80, BF2B)
            tags = ["defaultSmdpAddress", "notificationsList", "euiccPackageResultList", "euiccCertificate"]
            op_id = queue(server.url, card.eid, {"tags": tags}, kind="euicc_data")
            request = await ipa.poll()
            assert asn1.decode("V10-IpaEuiccDataRequest", request)["tagList"] == bytes.fromhex("80BF2BA6")
            ex = await ipa.euicc_data(request)
            assert (ex.status, ex.answer) == (200, bytes.fromhex("BF5000"))
            assert (await operation(client, server.url, op_id))["status"] == "done"
            assert await ipa.step() is None
    finally:
        server.stop()


async def test_v10_ipa_keeps_a_refused_result_and_delivers_it_later(store_url, lab, tmp_path):
    """The eIM refuses a result whose eUICC signature does not verify: the answer is HTTP 400 with a text body,
    which the v1.0 IPA cannot read as a ProvideEimPackageResultResponse, so it removes nothing and the result stays
    on the card (the v1.2 error BF50 03 02 01 7F would have been read as success). The genuine result is then
    accepted."""
    server = start_eim(tmp_path, store_url=store_url, lab_pki=lab.root)
    try:
        card = await v10_card(lab, EIDS[1])
        register(server.url, card)
        async with httpx.AsyncClient(timeout=20) as client:
            ipa = V10Ipa(card, http_post(client, server.esipa))
            op_id = queue(server.url, card.eid, {"psmos": [{"getRAT": {}}]})
            assert (await ipa.step()).answer == bytes.fromhex("BF5000")  # the eUICC data request queued before it
            package = await ipa.poll()
            result = await card.load(package)
            seq = tlv.find(result, 0xA0, 0x30, 0x83).value[0]
            query = tlv.encode(0xBF2B, tlv.encode(0xA0, integer_tlv(0x80, seq)))
            notes = await card.es10.call(query, "RetrieveNotificationsList")
            forged = bytearray(result)
            forged[-5] ^= 0x01  # inside euiccSignEPR
            ex = await ipa.provide(tlv.encode(0xBF50, tlv.encode(0x30, bytes(forged) + notes)), seq)
            assert ex.status == 400 and ex.kept and ex.removed == []
            assert not ex.answer.startswith(b"\xbf\x50")  # a text body, not an ESipa message
            assert seq in await pending_results(card)
            assert (await operation(client, server.url, op_id))["status"] == "in_progress"

            ex = await ipa.provide(tlv.encode(0xBF50, tlv.encode(0x30, result + notes)), seq)
            assert ex.status == 200 and seq in ex.removed and seq not in await pending_results(card)
            assert (await operation(client, server.url, op_id))["status"] == "done"

            # InitiateAuthentication of the v1.0 form over plain HTTP: nothing names the eUICC -> 52, nothing relayed
            info1 = await card.es10.call(bytes.fromhex("BF2000"), "GetEuiccInfo1")
            r = await client.post(
                server.esipa,
                content=ipa.initiate_authentication(bytes(16), "smdp.example.com", info1),
                headers={"Content-Type": "application/x-gsma-rsp-asn1"},
            )
            assert (r.status_code, r.content) == (200, bytes.fromhex("BF3903810134"))
    finally:
        server.stop()
