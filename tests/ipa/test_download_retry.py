"""What the IPA does when the eIM asks it to come back during an indirect download (the SM-DP+ behind the eIM's
relay was down): the eIM answers InitiateAuthentication with the binding's "service unavailable" (HTTP 503,
CoAP 5.03, MQTT ``esipa-status`` 503) instead of an ESipa error code, because the IPA reports every
InitiateAuthentication error code as a final profileDownloadError. The eIM relies on this contract: on a
transport-level refusal the IPA reports nothing (the operation stays open at the eIM) and downloads when the eIM
hands the trigger out again."""

from __future__ import annotations

import pytest

from ipa import messages as m
from tests.ipa.downloads import new_ac, relayed, trigger


@pytest.mark.parametrize("binding", ["http", "coap"])
async def test_come_back_later_at_initiate_authentication_reports_nothing(make_rig, smdp, binding):
    rig = await make_rig(binding, profiles=False)
    refused = []

    def first_initiate_refused(name: str, der: bytes) -> bool:
        if name == "initiateAuthenticationRequestEsipa" and not refused:
            refused.append(der)
            return True
        return False

    rig.peer.drop = first_initiate_refused
    rig.config.ipa.direct_download = False
    async with relayed(rig, smdp) as (agent, relay):
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac, b"\x44"))
        await agent.poll_once()
        names = [r.name for r in rig.peer.received]
        assert refused and "provideEimPackageResult" not in " ".join(names)  # no final failure reported
        assert "cancelSessionRequestEsipa" not in names and rig.peer.results == []
        assert rig.card.state.profiles == [] and agent.store.state.results == []
        # the eIM hands the same trigger out again once the SM-DP+ is back
        rig.peer.queue(trigger(ac, b"\x44"))
        await agent.poll_once()
        assert [m.iccid_to_str(p.iccid) for p in rig.card.state.profiles] == ["8949000013000000011"]
        assert relay.calls == ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage"]


async def test_a_trigger_whose_outcome_was_reported_is_not_run_again(make_rig, smdp):
    """The same trigger twice (over MQTT: a repeated push waiting in the persistent session, after the IPA completed
    the download it was handed by a poll): the second copy is not run - no InitiateAuthentication naming a finished
    operation (the eIM would answer invalidEimTransactionId 52), no second report. The record survives a restart."""
    rig = await make_rig("http", profiles=False)
    rig.config.ipa.direct_download = False
    async with relayed(rig, smdp) as (agent, relay):
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac, b"\x45"))
        await agent.poll_once()
        assert len(rig.card.state.profiles) == 1
        assert agent.store.state.finished_downloads == [b"\x45"]
        before = [r.name for r in rig.peer.received]
        rig.peer.queue(trigger(ac, b"\x45"))
        await agent.poll_once()
        after = [r.name for r in rig.peer.received][len(before) :]
        assert "initiateAuthenticationRequestEsipa" not in after and "provideEimPackageResult" not in after
        assert relay.calls == ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage"]
    from ipa.state import StateStore

    assert StateStore(rig.config.ipa.state_file).load().finished_downloads == [b"\x45"]  # as after a restart


async def test_a_download_the_eim_deferred_is_not_recorded(make_rig, smdp):
    """Told to come back (503 at InitiateAuthentication): nothing reported, nothing recorded, so the same trigger
    handed out again runs (the test above this file's first one)."""
    rig = await make_rig("http", profiles=False)
    rig.peer.drop = lambda name, der: name == "initiateAuthenticationRequestEsipa"
    rig.config.ipa.direct_download = False
    async with relayed(rig, smdp) as (agent, _relay):
        ac = new_ac(smdp)
        rig.peer.queue(trigger(ac, b"\x46"))
        await agent.poll_once()
        assert agent.store.state.finished_downloads == []
