"""Resilience as real processes: the eIM killed and restarted in the middle of a download, the IPA killed (-9) after
the card ran a package but before the result reached the eIM, a modem that resets the SIM after every enable, and
the MQTT broker restarting. Every operation ends done, with the card and the eIM agreeing. The first two tests
share a stack (per xdist worker) but do not depend on each other's order."""

from __future__ import annotations

import time

import pytest

from demo.stack import LabStack
from tests.e2e.conftest import (
    assert_codes,
    assert_counters_agree,
    done,
    start_stack,
    stop_stack,
    wait_smdp_event,
    wait_until,
)
from tests.services import run_mosquitto


def listed(op: dict) -> dict[str, str]:
    return {p["iccid"]: p["state"] for p in op["result"]["results"][0]["profiles"]}


def agree(stack: LabStack) -> None:
    """The profiles the eIM reads from the card (listProfileInfo) are the card's, and the counters match."""
    op = done(stack, "psmo", {"psmos": [{"listProfileInfo": {}}]})
    assert listed(op) == stack.card_profiles()
    assert_counters_agree(stack)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # slow=0.01: every APDU answered after 10 ms, so a download takes long enough to be interrupted;
    # refresh-reset=2: after an enable the modem resets the SIM, which stays busy for 2 s
    s = start_stack(tmp_path_factory.mktemp("resilience"), "http", quirks="slow=0.01,refresh-reset=2")
    s.services["ipa"].stop()
    s.start_ipa(verbose=True)  # INFO logs: the test watches the IPA's steps
    yield s
    stop_stack(s)


def test_eim_killed_and_restarted_mid_download(stack: LabStack) -> None:
    order = stack.smdp_order("ts48")
    before = stack.log_count("eim", "ES9+ session started")
    op = stack.operation("download", {"activationCode": order["activation_code"], "mode": "indirect"})
    wait_until("the eIM relaying ES9+", lambda: stack.log_count("eim", "ES9+ session started") > before, 30, 0.01)
    stack.services["eim"].kill()  # SIGKILL in the middle of the relayed download
    stack.restart_eim()
    final = stack.wait_operation(op["id"], timeout=90)
    assert final["status"] == "done", final
    assert order["iccid"] in str(final["result"])
    assert stack.card_profiles()[order["iccid"]] == "disabled"
    wait_smdp_event(stack, "install", order["iccid"])
    agree(stack)


def test_ipa_killed_after_the_card_ran_the_package_before_reporting(stack: LabStack) -> None:
    order = stack.smdp_order("ts48")
    done(stack, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
    iccid = order["iccid"]
    ipa_log = stack.log("ipa")
    seen = ipa_log.read_text().count("EuiccPackageResult")
    op = stack.operation("psmo", {"psmos": [{"enable": {"iccid": iccid}}]})
    # the card answered; the modem now resets the SIM (busy 2 s) and the IPA waits for it before reporting
    wait_until("the card's result", lambda: ipa_log.read_text().count("EuiccPackageResult") > seen, 30, 0.01)
    stack.services["ipa"].kill()  # kill -9: the package ran on the card, its result neither queued nor reported
    assert stack.card_profiles()[iccid] == "enabled"
    assert stack.api("GET", f"/v1/operations/{op['id']}")["status"] == "in_progress"  # the eIM does not know yet
    stack.start_ipa(verbose=True)  # finds the package in flight, reads its result from the card, reports it
    final = stack.wait_operation(op["id"], timeout=60)
    assert final["status"] == "done", final
    assert_codes(final, ("enableResult", 0))
    assert stack.log_count("ipa", "recovered the result of the interrupted package from the eUICC") == 1
    assert stack.card_profiles()[iccid] == "enabled"
    wait_smdp_event(stack, "enable", iccid)
    agree(stack)
    # the eIM received the result exactly once
    assert stack.log_count("eim", f'"operation": "{op["id"]}"') == 1


def test_sim_reset_by_the_modem_after_enable(lab) -> None:
    stack = lab("http", quirks="refresh-reset=0.3")
    orders = [stack.smdp_order("ts48") for _ in range(2)]
    for order in orders:
        done(stack, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
    a, b = (o["iccid"] for o in orders)
    assert_codes(done(stack, "psmo", {"psmos": [{"enable": {"iccid": a}}]}), ("enableResult", 0))
    assert stack.card_profiles() == {a: "enabled", b: "disabled"}
    assert_codes(done(stack, "psmo", {"psmos": [{"enable": {"iccid": b}}]}), ("enableResult", 0))
    assert stack.card_profiles() == {a: "disabled", b: "enabled"}
    assert_codes(done(stack, "psmo", {"psmos": [{"disable": {"iccid": b}}]}), ("disableResult", 0))
    assert stack.card_profiles() == {a: "disabled", b: "disabled"}
    # the modem really reset the SIM after each enable/disable and the IPA re-opened its channel each time
    wait_until("three SIM resets seen by the IPA", lambda: stack.log_count("ipa", "SIM reset URC") == 3)
    agree(stack)


def test_mqtt_broker_restarts(lab) -> None:
    with run_mosquitto() as broker:
        stack = lab("mqtt", mosquitto=broker)
        # a request published while the eIM is not yet subscribed again is lost with the broker's state (no
        # persistence): the IPA publishes it again after its reconnect, on a PUBACK "no matching subscribers" and
        # every mqtt.retransmit_interval (tests/ipa/test_mqtt_resilience.py); the short eim.timeout only bounds
        # a step that still goes unanswered
        stack.services["ipa"].stop()
        stack.start_ipa(env={"IPA_EIM_TIMEOUT": "3"})
        order = stack.smdp_order("ts48")
        done(stack, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
        iccid = order["iccid"]

        broker.start_again()  # both the eIM and the IPA lose their connection and must come back
        assert_codes(done(stack, "psmo", {"psmos": [{"enable": {"iccid": iccid}}]}), ("enableResult", 0))
        assert stack.card_profiles() == {iccid: "enabled"}

        # an operation queued while the broker is down is done once it is back
        broker.stop()
        op = stack.operation("psmo", {"psmos": [{"disable": {"iccid": iccid}}]})
        time.sleep(1.0)
        assert stack.api("GET", f"/v1/operations/{op['id']}")["status"] in ("queued", "in_progress")
        broker.start_again()
        final = stack.wait_operation(op["id"], timeout=60)
        assert final["status"] == "done", final
        assert_codes(final, ("disableResult", 0))
        assert stack.card_profiles() == {iccid: "disabled"}
        agree(stack)
        stack.stop()
