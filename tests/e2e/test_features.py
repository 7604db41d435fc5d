"""Fallback (set/unset the attribute with PSMOs, the IPA executing and leaving the fallback mechanism after losing
the eIM), immediate enable after a download (PSMO configureImmediateEnable + ipa.immediate_enable) and eUICC memory
reset (ES10b.EuiccMemoryReset through the modem), all on one stack, in this order: one test (``make test`` runs
under pytest-xdist, which may hand tests of one module to different workers), one step function per feature."""

from __future__ import annotations

import asyncio

import pytest

from demo.stack import LabStack
from rsp.pki import LAB_SMDP_OID
from tests.e2e.conftest import (
    assert_codes,
    assert_counters_agree,
    done,
    eim_euicc,
    start_stack,
    stop_stack,
    wait_until,
)


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory):
    s = start_stack(tmp_path_factory.mktemp("features"), "http")
    yield s
    stop_stack(s)


def test_fallback_immediate_enable_memory_reset(stack: LabStack) -> None:
    two = two_profiles(stack)
    step_fallback_attribute_set_unset(stack, two)
    step_fallback_executed_when_the_eim_is_gone_and_returned(stack, two)
    step_immediate_enable_after_download(stack, two)
    step_euicc_memory_reset(stack)


def two_profiles(stack: LabStack) -> dict[str, str]:
    """Two profiles: "main" enabled, "spare" disabled."""
    out = {}
    for name in ("main", "spare"):
        order = stack.smdp_order("ts48")
        done(stack, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
        out[name] = order["iccid"]
    done(stack, "psmo", {"psmos": [{"enable": {"iccid": out["main"]}}]})
    assert stack.card_profiles() == {out["main"]: "enabled", out["spare"]: "disabled"}
    return out


def fallback_flags(stack: LabStack) -> dict[str, bool]:
    from demo.stack import iccid_from_card

    return {iccid_from_card(p["iccid"]): p["fallback"] for p in stack.card()["profiles"]}


def last_state_change(stack: LabStack) -> str | None:
    """The stateChangeCause of the last notifyStateChange the eIM recorded for the eUICC."""
    return ((eim_euicc(stack).get("info") or {}).get("lastStateChange") or {}).get("cause")


def restart_ipa(stack: LabStack, **env: str) -> None:
    stack.services["ipa"].stop()
    stack.start_ipa(env=env)


def step_fallback_attribute_set_unset(stack: LabStack, profiles: dict[str, str]) -> None:
    main, spare = profiles["main"], profiles["spare"]
    op = done(stack, "psmo", {"psmos": [{"setFallbackAttribute": {"iccid": spare}}, {"listProfileInfo": {}}]})
    assert op["result"]["results"][0] == {"type": "setFallbackAttributeResult", "code": 0, "name": "ok"}
    listed = {p["iccid"]: p["fallbackAttribute"] for p in op["result"]["results"][1]["profiles"]}
    assert listed == fallback_flags(stack) == {main: False, spare: True}

    op = done(stack, "psmo", {"psmos": [{"unsetFallbackAttribute": {}}]})
    assert_codes(op, ("unsetFallbackAttributeResult", 0))
    assert fallback_flags(stack) == {main: False, spare: False}

    # unset again: noFallbackAttribute(2), the operation fails, the card unchanged
    op = stack.run_op("psmo", {"psmos": [{"unsetFallbackAttribute": {}}]})
    assert (op["status"], op["result_code"]) == ("failed", 2), op
    assert fallback_flags(stack) == {main: False, spare: False}

    op = done(stack, "psmo", {"psmos": [{"setFallbackAttribute": {"iccid": spare}}]})
    assert fallback_flags(stack) == {main: False, spare: True}
    assert_counters_agree(stack)


def step_fallback_executed_when_the_eim_is_gone_and_returned(stack: LabStack, profiles: dict[str, str]) -> None:
    main, spare = profiles["main"], profiles["spare"]
    assert fallback_flags(stack)[spare] is True
    restart_ipa(stack, IPA_POLL_FALLBACK_AFTER="1.0")
    done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})  # the IPA has had contact

    stack.services["eim"].stop()  # the eIM is unreachable: after 1 s the IPA executes the fallback mechanism
    wait_until("the fallback profile enabled", lambda: stack.card()["fallback_active"], timeout=30)
    assert stack.card_profiles() == {main: "disabled", spare: "enabled"}

    stack.restart_eim()  # the next GetEimPackage carries notifyStateChange, cause fallback
    wait_until("the eIM told of the fallback", lambda: last_state_change(stack) == "fallback")
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    assert {p["iccid"]: p["state"] for p in op["result"]["results"][0]["profiles"]} == stack.card_profiles()

    # return from fallback (0.5 s in fallback): the profile enabled before comes back
    restart_ipa(stack, IPA_POLL_RETURN_FROM_FALLBACK_AFTER="0.5")
    wait_until("return from fallback", lambda: not stack.card()["fallback_active"], timeout=30)
    assert stack.card_profiles() == {main: "enabled", spare: "disabled"}
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    assert {p["iccid"]: p["state"] for p in op["result"]["results"][0]["profiles"]} == stack.card_profiles()
    assert_counters_agree(stack)


def step_immediate_enable_after_download(stack: LabStack, profiles: dict[str, str]) -> None:
    op = done(
        stack,
        "psmo",
        {
            "psmos": [
                {
                    "configureImmediateEnable": {
                        "immediateEnableFlag": True,
                        "defaultSmdpOid": LAB_SMDP_OID,
                        "defaultSmdpAddress": stack.smdp_address,
                    }
                }
            ]
        },
    )
    assert_codes(op, ("configureImmediateEnableResult", 0))
    assert stack.card()["immediate_enable"] == {
        "enabled": True,
        "smdp_address": stack.smdp_address,
        "smdp_oid": LAB_SMDP_OID,
    }
    restart_ipa(stack, IPA_IPA_IMMEDIATE_ENABLE="true")
    order = stack.smdp_order("ts48")
    done(stack, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
    wait_until("the new profile enabled at once", lambda: stack.card_profiles().get(order["iccid"]) == "enabled")
    main, spare = profiles["main"], profiles["spare"]
    assert stack.card_profiles() == {main: "disabled", spare: "disabled", order["iccid"]: "enabled"}
    wait_until("the eIM told of the immediate enable", lambda: last_state_change(stack) == "immediateEnableProfile")
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    assert {p["iccid"]: p["state"] for p in op["result"]["results"][0]["profiles"]} == stack.card_profiles()


async def _memory_reset(stack: LabStack, options: set[int]) -> int:
    """ES10b.EuiccMemoryReset through the virtual modem's pty, as the IPA's ES10 client sends it."""
    from ipa.cli import make_channel
    from ipa.config import load_config
    from ipa.es10 import Es10Client

    config = load_config(str(stack.ipa_config()), env={})
    channel, engine = make_channel(config)
    await engine.open()
    es10 = Es10Client(channel, config.device.block_size)
    try:
        await es10.open()
        return await es10.euicc_memory_reset(options)
    finally:
        await es10.close()
        await engine.close()


def step_euicc_memory_reset(stack: LabStack) -> None:
    assert len(stack.card_profiles()) == 3 and stack.card()["immediate_enable"]["enabled"]
    stack.services["ipa"].stop()  # the modem has one AT port: the IPA lets go of it
    # deleteOperationalProfiles(0), resetDefaultSmdpAddress(2), resetImmediateEnableConfig(6)
    assert asyncio.run(_memory_reset(stack, {0, 2, 6})) == 0
    card = stack.card()
    assert card["profiles"] == [] and card["immediate_enable"]["enabled"] is False
    assert [e["eim_id"] for e in card["eims"]] == [stack.eim_id]  # the eIM configuration kept

    stack.start_ipa()
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    assert op["result"]["results"][0]["profiles"] == []
    assert_counters_agree(stack)

    # resetEimConfigData(5): the card forgets every eIM
    stack.services["ipa"].stop()
    assert asyncio.run(_memory_reset(stack, {5})) == 0
    assert stack.card()["eims"] == []
