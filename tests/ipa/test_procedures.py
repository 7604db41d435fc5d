"""Each SGP.32 procedure of the IPA against the software eUICC and the scripted eIM, over HTTP, CoAP, CoAPS (DTLS
PSK) and MQTT."""

from __future__ import annotations

import pytest

from ipa import messages as m
from ipa.procedures.eim_package_retrieval import Outcome
from rsp import asn1, tlv
from tests.ipa.conftest import EID, ICCID_A, ICCID_B

# every binding through the virtual modem on a real pseudo-terminal, and HTTP also in-process
SETUPS = [("http", "local"), ("http", "modem"), ("coap", "modem"), ("coaps", "modem"), ("mqtt", "modem")]


async def started(rig):
    agent = rig.agent()
    await agent.start()
    return agent


def profile_states(card) -> dict[str, int]:
    return {m.iccid_to_str(p.iccid): p.state for p in card.state.profiles}


@pytest.mark.parametrize(("binding", "device"), SETUPS)
async def test_bootstrap_poll_idle_then_enable_with_notifications(make_rig, binding, device):
    rig = await make_rig(binding, device=device)
    agent = await started(rig)
    try:
        assert [e.eim_id for e in await agent.es10.get_eim_configuration_data()] == ["lab-eim"]
        assert agent.store.state.association_tokens == {"lab-eim": 1}
        r = await agent.poll_once()
        assert r.outcome is Outcome.IDLE
        assert rig.peer.received[-1].name == "getEimPackageRequest"
        assert rig.peer.received[-1].value == {"eidValue": EID}

        rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
        r = await agent.poll_once()
        assert r.outcome is Outcome.WORK and r.package == "euiccPackageRequest"
        assert profile_states(rig.card) == {ICCID_A: 0, ICCID_B: 1}
        # the result and the disable/enable notifications it produced travel together, signature intact
        assert rig.peer.result_kinds() == ["ePRAndNotifications"]
        assert rig.peer.epr_verified == [True]
        v = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.results[0])[1]
        epr, notifs = v["eimPackageResult"][1]["euiccPackageResult"], v["eimPackageResult"][1]["notificationList"]
        assert epr[0] == "euiccPackageResultSigned" and len(notifs) == 2
        # every acknowledged sequence number is gone from the card, no result left queued
        assert rig.card.state.notifications == []
        assert agent.store.state.results == [] and agent.store.state.inflight is None
        # the channel was re-opened after the REFRESH the enable raised
        assert agent.es10.reopens >= 1
        assert (await agent.poll_once()).outcome is Outcome.IDLE
    finally:
        await agent.close()


@pytest.mark.parametrize(("binding", "device"), SETUPS)
async def test_euicc_data_request_every_tag(make_rig, binding, device):
    rig = await make_rig(binding, device=device)
    agent = await started(rig)
    try:
        tags = bytes.fromhex("A081A2BF20BF228384A5A6A8A9")
        rig.peer.queue(tlv.encode(0xBF52, tlv.encode(0x5C, tags) + tlv.encode(0x83, b"\x42")))
        r = await agent.poll_once()
        assert r.package == "ipaEuiccDataRequest"
        v = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.results[-1])[1]
        kind, (alt, data) = v["eimPackageResult"]
        assert kind == "ipaEuiccDataResponse" and alt == "ipaEuiccData"
        assert set(data) >= {
            "notificationsList",
            "euiccPackageResultList",
            "euiccInfo1",
            "euiccInfo2",
            "rootSmdsAddress",
            "associationToken",
            "eumCertificate",
            "euiccCertificate",
            "ipaCapabilities",
            "deviceInfo",
            "eimTransactionId",
        }
        assert data["associationToken"] == 1 and data["eimTransactionId"] == b"\x42"
        assert data["deviceInfo"]["tac"] == bytes.fromhex("35290611")
        assert asn1.certificate_der(data["euiccCertificate"]) == rig.card.state.euicc_cert
        assert data["ipaCapabilities"]["ipaFeatures"][0][0] & 0xE0 == 0xE0  # direct, indirect, eimDownloadDataHandling
        # an unknown tag -> incorrectTagList(1)
        rig.peer.queue(tlv.encode(0xBF52, tlv.encode(0x5C, b"\x99") + tlv.encode(0x83, b"\x43")))
        await agent.poll_once()
        v = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.results[-1])[1]
        assert v["eimPackageResult"][1] == (
            "ipaEuiccDataResponseError",
            {"eimTransactionId": b"\x43", "ipaEuiccDataErrorCode": 1},
        )
    finally:
        await agent.close()


@pytest.mark.parametrize(("binding", "device"), SETUPS)
async def test_malformed_and_unknown_packages_get_errors_and_agent_keeps_running(make_rig, binding, device):
    rig = await make_rig(binding, device=device)
    agent = await started(rig)
    try:
        rig.peer.queue(tlv.encode(0xBF51, b"\x30\x03\x80\x01"))  # truncated inside: malformed
        r = await agent.poll_once()
        assert r.outcome is Outcome.WORK
        rig.peer.queue(tlv.encode(0xBF54, tlv.encode(0xA0, tlv.encode(0x85, b"?")) + tlv.encode(0x82, b"\x07")))
        await agent.poll_once()
        errs = [asn1.decode("EsipaMessageFromIpaToEim", d)[1]["eimPackageResult"] for d in rig.peer.results]
        assert errs[0] == ("eimPackageResultResponseError", {"eimPackageResultErrorCode": 1})
        assert errs[1] == (
            "eimPackageResultResponseError",
            {"eimTransactionId": b"\x07", "eimPackageResultErrorCode": 2},
        )
        # still serving: a real package after the bad ones runs
        rig.peer.queue(rig.peer.psmo(rig.peer.list_profiles()))
        assert (await agent.poll_once()).package == "euiccPackageRequest"
        assert rig.peer.epr_verified == [True]
    finally:
        await agent.close()
