"""The demo's whole story over each ESipa binding, as real processes: after every step the card's state, the eIM's
operation record and what the SM-DP+ received (orders, notifications) are checked."""

from __future__ import annotations

import json

import httpx
import pytest

from demo.stack import BINDINGS, LabStack
from tests.e2e.conftest import (
    assert_codes,
    assert_counters_agree,
    card_eim,
    done,
    eim_euicc,
    smdp_events,
    start_stack,
    stop_stack,
    wait_smdp_event,
)
from tests.services import require_dtls


@pytest.fixture
def story_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LabStack:
    binding = request.param
    if binding == "coaps":
        require_dtls()
    broker = request.getfixturevalue("mosquitto") if binding == "mqtt" else None
    stack = start_stack(tmp_path_factory.mktemp(f"story-{binding}"), binding, mosquitto=broker)
    request.addfinalizer(lambda: stop_stack(stack))
    return stack


@pytest.mark.parametrize("story_stack", BINDINGS, indirect=True)
def test_demo_story(story_stack: LabStack) -> None:
    stack = story_stack
    # bootstrap: AddInitialEim through the modem, the eUICC registered at the eIM
    eims = stack.card()["eims"]
    assert [e["eim_id"] for e in eims] == [stack.eim_id]
    assert eims[0]["association_token"] == stack.association_token
    assert stack.card_profiles() == {}
    assert eim_euicc(stack)["eim_id"] == stack.eim_id
    if stack.binding == "https":  # trusted_networks = []: every step below is authenticated by the client cert
        poll = bytes.fromhex("BF4F125A10") + bytes.fromhex(stack.eid)
        r = httpx.post(
            stack.eim_url + "/gsma/rsp2/asn1",
            content=poll,
            headers={"Content-Type": "application/x-gsma-rsp-asn1"},
            verify=stack.verify,
        )
        assert (r.status_code, r.content) == (200, bytes.fromhex("BF4F0302017F"))  # no certificate: refused
    if stack.binding == "coaps":  # only coaps:// is served: every step below crosses DTLS
        assert stack.log_count("eim", "CoAPS (DTLS PSK) binding listening") == 1
        assert stack.log_count("eim", '"scheme": "coap"') == 0

    # download profile 1, indirect (the eIM relays ES9+)
    order1 = stack.smdp_order("ts48")
    iccid1 = order1["iccid"]
    sessions = stack.log_count("eim", "ES9+ session started")
    op = done(stack, "download", {"activationCode": order1["activation_code"], "mode": "indirect"})
    assert op["params"]["mode"] == "indirect"
    assert '"ok": true' in json.dumps(op["result"]) and iccid1 in json.dumps(op["result"])
    assert stack.card_profiles() == {iccid1: "disabled"}
    assert stack.log_count("eim", "ES9+ session started") == sessions + 1  # indirect: the eIM relayed ES9+
    assert stack.smdp_order_show(order1["matching_id"])["state"] == "installed"
    wait_smdp_event(stack, "install", iccid1)

    # enable profile 1 (rollback allowed)
    op = done(stack, "psmo", {"psmos": [{"enable": {"iccid": iccid1, "rollback": True}}]})
    assert_codes(op, ("enableResult", 0))
    assert stack.card_profiles() == {iccid1: "enabled"}
    wait_smdp_event(stack, "enable", iccid1)
    assert_counters_agree(stack)

    # listProfileInfo: what the eIM reports is what the card holds
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    (listed,) = op["result"]["results"]
    assert {p["iccid"]: p["state"] for p in listed["profiles"]} == stack.card_profiles() == {iccid1: "enabled"}

    # download profile 2, "direct"
    order2 = stack.smdp_order("ts48")
    iccid2 = order2["iccid"]
    sessions_before_direct = stack.log_count("eim", "ES9+ session started")
    op = done(stack, "download", {"activationCode": order2["activation_code"], "mode": "direct"})
    assert op["params"]["mode"] == "direct"
    assert iccid2 in json.dumps(op["result"])
    assert stack.card_profiles() == {iccid1: "enabled", iccid2: "disabled"}
    assert stack.smdp_order_show(order2["matching_id"])["state"] == "installed"
    wait_smdp_event(stack, "install", iccid2)
    # direct: the IPA talked ES9+ to the SM-DP+ itself, the eIM relayed nothing
    assert stack.log_count("eim", "ES9+ session started") == sessions_before_direct

    # switch to profile 2: profile 1 disabled by the same command
    op = done(stack, "psmo", {"psmos": [{"enable": {"iccid": iccid2}}]})
    assert_codes(op, ("enableResult", 0))
    assert stack.card_profiles() == {iccid1: "disabled", iccid2: "enabled"}
    wait_smdp_event(stack, "enable", iccid2)
    wait_smdp_event(stack, "disable", iccid1)

    # disable profile 2
    op = done(stack, "psmo", {"psmos": [{"disable": {"iccid": iccid2}}]})
    assert_codes(op, ("disableResult", 0))
    assert stack.card_profiles() == {iccid1: "disabled", iccid2: "disabled"}
    wait_smdp_event(stack, "disable", iccid2)

    # delete profile 1
    op = done(stack, "psmo", {"psmos": [{"delete": {"iccid": iccid1}}]})
    assert_codes(op, ("deleteResult", 0))
    assert stack.card_profiles() == {iccid2: "disabled"}
    wait_smdp_event(stack, "delete", iccid1)

    # eUICC data request: the eIM learns the certificates and the IPA's capabilities
    done(stack, "euicc_data", {})
    record = eim_euicc(stack)
    assert record["euicc_certificate"] and record["eum_certificate"]
    assert "indirectRspServerCommunication" in record["ipa_capabilities"]["ipaFeatures"]

    # the SM-DP+ saw every state change exactly once, each verified
    expected = [
        ("install", iccid1),
        ("enable", iccid1),
        ("install", iccid2),
        ("disable", iccid1),
        ("enable", iccid2),
        ("disable", iccid2),
        ("delete", iccid1),
    ]
    assert sorted(smdp_events(stack)) == sorted(expected)
    # nothing left pending on the card, and the eIM's counter is the card's
    assert stack.card()["pending_notifications"] == []
    assert_counters_agree(stack)
    ops = stack.api("GET", f"/v1/operations?eid={stack.eid}")["items"]
    assert [o["status"] for o in ops if o["created_by"] == "operator"] == ["done"] * 8
    assert {o["status"] for o in ops} == {"done"}  # the eIM's own requests (certificates) too
    assert card_eim(stack, stack.eim_id)["counter"] == max(o["counter_value"] or 0 for o in ops)
