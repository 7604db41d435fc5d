"""Profile download: direct (ES9+ to the lab SM-DP+ over HTTPS) and indirect (ES9+ relayed by the eIM over ESipa),
triggered by the eIM; failure paths end with CancelSession with the right reason."""

from __future__ import annotations

import pytest

from ipa import messages as m
from ipa.codes import CancelSessionReason
from ipa.procedures import direct_profile_download
from ipa.procedures.profile_download import DownloadFailed, parse_activation_code
from rsp import asn1, tlv
from smdpp.orders import create_order
from tests.ipa.downloads import direct_only, install_directly, new_ac, order_state, relayed, trigger


@pytest.mark.parametrize(("binding", "device"), [("http", "modem"), ("mqtt", "local"), ("coap", "modem")])
async def test_direct_download_triggered_by_eim(make_rig, smdp, binding, device):
    rig = await make_rig(binding, profiles=False, device=device)
    direct_only(rig, smdp)
    async with rig.started() as agent:
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac))
        r = await agent.poll_once()
        assert r.package == "profileDownloadTriggerRequest"
        assert [m.iccid_to_str(p.iccid) for p in rig.card.state.profiles] == ["8949000013000000011"]
        # PIR accepted (signature verified) by the SM-DP+, order done
        notes = smdp.ctx.store.notifications()
        assert [(n.kind, n.verified) for n in notes] == [("pir", True)]
        assert order_state(smdp, ac) == "installed"
        # the eIM got profileDownloadTriggerResult with the PIR and the eIM transaction id
        v = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.results[-1])[1]
        kind, res = v["eimPackageResult"]
        assert kind == "profileDownloadTriggerResult" and res["eimTransactionId"] == b"\x11\x22"
        assert res["profileDownloadTriggerResultData"][0] == "profileInstallationResult"
        assert rig.card.state.notifications == []  # PIR removed after delivery


async def test_a_real_shape_ts48_package_installs_through_the_virtual_modem(make_rig, smdp):
    """Interop issue 14: a TS.48 generic test profile (ProfileHeader ICCID in plain digits, the published PE order)
    served by the lab SM-DP+ from a file, downloaded directly by the IPA through a Quectel-model virtual modem
    (which starts with AT+CMEE=0, bare ERROR), installs on the software eUICC byte for byte."""
    from tests.euicc.upp_sample import ts48_upp

    package = ts48_upp("8949449999999990007")
    rig = await install_directly(make_rig, smdp, package)  # order installed, PIR verified by the SM-DP+
    [installed] = rig.card.state.profiles
    assert m.iccid_to_str(installed.iccid) == "8949449999999990007"
    assert installed.elements == package and installed.service_provider_name == "GSMA"


@pytest.mark.parametrize(
    ("binding", "device"), [("http", "modem"), ("coap", "local"), ("coaps", "modem"), ("mqtt", "modem")]
)
async def test_indirect_download_relayed_by_eim(make_rig, smdp, binding, device):
    rig = await make_rig(binding, profiles=False, device=device)
    async with relayed(rig, smdp) as (agent, relay):
        ac = new_ac(smdp)
        rig.config.ipa.direct_download = False
        rig.peer.queue(trigger(ac, b"\x33"))
        await agent.poll_once()
        names = [r.name for r in rig.peer.received]
        assert names[names.index("initiateAuthenticationRequestEsipa") :][:4] == [
            "initiateAuthenticationRequestEsipa",
            "authenticateClientRequestEsipa",
            "getBoundProfilePackageRequestEsipa",
            "handleNotificationEsipa",
        ]
        init = next(r for r in rig.peer.received if r.name == "initiateAuthenticationRequestEsipa").value
        assert init["eimTransactionId"] == b"\x33" and init["smdpAddress"] == smdp.address
        assert [m.iccid_to_str(p.iccid) for p in rig.card.state.profiles] == ["8949000013000000011"]
        pir = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.notifications[-1])[1]
        assert pir[0] == "pendingNotification" and pir[1][0] == "profileInstallationResult"
        assert rig.card.state.notifications == []
        assert relay.calls == ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage"]


async def test_trigger_without_download_data_is_relayed_with_the_eims_matching_id(make_rig, smdp):
    """eimDownloadDataHandling: a trigger without profileDownloadData means the eIM holds the download data; the
    IPA goes indirect even though it could download directly, sends no SM-DP+ address, and builds ctxParams1 with
    the matchingId the eIM returns in InitiateAuthenticationOkEsipa."""
    rig = await make_rig("http", profiles=False)
    assert rig.config.ipa.direct_download  # it could go direct, but the trigger says otherwise
    async with relayed(rig, smdp) as (agent, relay):
        order = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address)
        relay.download_data = (smdp.address, order.matching_id)
        rig.peer.queue(tlv.encode(0xBF54, tlv.encode(0x82, b"\x44")))
        await agent.poll_once()
        init = next(r for r in rig.peer.received if r.name == "initiateAuthenticationRequestEsipa").value
        assert "smdpAddress" not in init and init["eimTransactionId"] == b"\x44"
        assert relay.calls[:3] == ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage"]
        assert [m.iccid_to_str(p.iccid) for p in rig.card.state.profiles] == ["8949000013000000011"]
        pir = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.notifications[-1])[1]
        assert pir[0] == "pendingNotification" and pir[1][0] == "profileInstallationResult"
        assert order_state(smdp, order.activation_code) == "downloaded"  # the eIM forwards the PIR, not the IPA


async def test_activation_code_goes_direct_even_when_the_eim_offers_indirect(make_rig, smdp):
    """An IPA handed an activation code contacts the SM-DP+ itself when it may (ipa.direct_download), whatever
    the eIM configuration's indirectProfileDownload says; nothing is relayed."""
    rig = await make_rig("http", profiles=False)
    rig.config.es9.ca_file = str(smdp.ca_bundle)
    async with relayed(rig, smdp) as (agent, relay):
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac, b"\x55"))
        await agent.poll_once()
        names = [r.name for r in rig.peer.received]
        assert "initiateAuthenticationRequestEsipa" not in names and relay.calls == []
        assert order_state(smdp, ac) == "installed"


async def test_indirect_download_eim_error_cancels_session(make_rig, smdp):
    rig = await make_rig("http", profiles=False)
    rig.config.ipa.direct_download = False
    async with relayed(rig, smdp) as (agent, relay):
        relay.fail["getBoundProfilePackage"] = 6  # downloadOrderExpired
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac))
        await agent.poll_once()
        cancel = next(r for r in rig.peer.received if r.name == "cancelSessionRequestEsipa")
        inner = tlv.find(cancel.der, 0xA1)
        signed = tlv.find(tlv.encode(0xBF41, inner.value), 0xA0, 0x30)
        assert tlv.find(signed, 0x82).value == bytes([CancelSessionReason.undefinedReason])  # reason [2]
        assert relay.calls[-1] == "cancelSession"
        assert rig.card.state.profiles == []


async def test_indirect_download_eim_unreachable_cancels_with_timeout(make_rig, smdp):
    rig = await make_rig("http", profiles=False)
    rig.peer.drop = lambda name, der: name == "getBoundProfilePackageRequestEsipa"
    rig.config.ipa.direct_download = False
    async with relayed(rig, smdp) as (agent, relay):
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac))
        await agent.poll_once()
        cancel = next(r for r in rig.peer.received if r.name == "cancelSessionRequestEsipa")
        signed = tlv.find(tlv.encode(0xBF41, tlv.find(cancel.der, 0xA1).value), 0xA0, 0x30)
        assert tlv.find(signed, 0x82).value == bytes([CancelSessionReason.timeout])
        assert relay.calls[-1] == "cancelSession" and rig.card.state.profiles == []


async def test_direct_download_missing_confirmation_code_postponed(make_rig, smdp):
    rig = await make_rig("http", profiles=False)
    rig.config.es9.ca_file = str(smdp.ca_bundle)
    async with rig.started() as agent:
        ac = new_ac(smdp, confirmation_code="1234")
        with pytest.raises(DownloadFailed) as err:
            await direct_profile_download.download(agent.ctx, parse_activation_code(ac))
        assert err.value.step == "PrepareDownload" and err.value.cancel_reason == CancelSessionReason.postponed
        assert rig.card.state.profiles == []
        # with the code it works
        ac2 = new_ac(smdp, confirmation_code="1234")
        pir = await direct_profile_download.download(agent.ctx, parse_activation_code(ac2), "1234")
        assert pir.success and order_state(smdp, ac2) == "installed"
        assert order_state(smdp, ac) != "installed"


async def test_direct_download_unreachable_smdp_names_the_step(make_rig):
    rig = await make_rig("http", profiles=False)
    async with rig.started() as agent:
        with pytest.raises(DownloadFailed) as err:
            await direct_profile_download.download(agent.ctx, parse_activation_code("1$127.0.0.1:1$X"))
        assert err.value.step == "initiateAuthentication"


async def test_immediate_enable_after_download_announced_with_cause_5(make_rig, smdp):
    rig = await make_rig("http", device="modem")
    direct_only(rig, smdp)
    rig.config.ipa.immediate_enable = True
    async with rig.started() as agent:
        # the eIM allows immediate enabling (PSMO configureImmediateEnable with the flag)
        rig.peer.queue(rig.peer.psmo(tlv.encode(0xA7, b"\x80\x00")))
        await agent.poll_once()
        rig.peer.queue(trigger(new_ac(smdp)))
        await agent.poll_once()
        new = next(p for p in rig.card.state.profiles if m.iccid_to_str(p.iccid) == "8949000013000000011")
        assert new.state == 1  # enabled right after the download
        assert agent.store.state.state_change == 5
        await agent.poll_once()  # the next GetEimPackage announces the local change
        assert agent.store.state.state_change is None
        req = [r for r in rig.peer.received if r.name == "getEimPackageRequest"][-1].value
        assert req["notifyStateChange"] is None and req["stateChangeCause"] == 5


async def test_failed_installation_reported_with_its_error_pir(make_rig, smdp):
    rig = await make_rig("http", profiles=False)
    from tests.ipa.conftest import seed_profiles

    seed_profiles(rig.card, enabled=None, others=("8949000013000000011",))  # the ICCID the order will carry
    direct_only(rig, smdp)
    async with rig.started() as agent:
        rig.peer.queue(trigger(new_ac(smdp), b"\x44"))
        await agent.poll_once()
        v = asn1.decode("EsipaMessageFromIpaToEim", rig.peer.results[-1])[1]
        kind, res = v["eimPackageResult"]
        assert kind == "profileDownloadTriggerResult" and res["eimTransactionId"] == b"\x44"
        alt, pir = res["profileDownloadTriggerResultData"]
        assert alt == "profileInstallationResult"
        final = pir["profileInstallationResultData"]["finalResult"]
        assert final[0] == "errorResult" and final[1]["errorReason"] == 9  # iccidAlreadyExistsOnEuicc
        assert [n.kind for n in smdp.ctx.store.notifications()] == ["pir"]  # the SM-DP+ got the error PIR too
        assert len(rig.card.state.profiles) == 1
