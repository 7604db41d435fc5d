"""A sleeping device: operations queued at the eIM while `ipa run` is down are executed when it comes back, in
order; an operation whose validity ran out meanwhile is expired by the eIM and never reaches the card."""

from __future__ import annotations

import contextlib

import pytest

from demo.stack import LabStack
from tests.e2e.conftest import assert_codes, assert_counters_agree, eim_euicc, require_done, wait_until
from tests.services import run_mosquitto


@pytest.mark.parametrize("binding", ["http", "mqtt"])
def test_queued_while_asleep_done_on_wake_expired_not(lab, binding: str) -> None:
    with run_mosquitto() if binding == "mqtt" else contextlib.nullcontext() as broker:
        stack: LabStack = lab(binding, mosquitto=broker)
        # the eIM has heard from the device (over MQTT it then pushes new packages to the device's session)
        wait_until("first contact", lambda: eim_euicc(stack)["binding"] == binding)
        stack.services["ipa"].stop()  # the device sleeps

        keep = stack.smdp_order("ts48")
        lapse = stack.smdp_order("ts48")
        download = stack.operation("download", {"activationCode": keep["activation_code"], "mode": "indirect"})
        expiring = stack.operation(
            "download", {"activationCode": lapse["activation_code"], "mode": "indirect"}, validity_s=1
        )
        enable = stack.operation("psmo", {"psmos": [{"enable": {"iccid": keep["iccid"]}}]}, validity_s=600)

        wait_until(
            "the short-lived operation expired",
            lambda: stack.api("GET", f"/v1/operations/{expiring['id']}")["status"] == "expired",
            timeout=20,
        )
        # queued (HTTP: waiting for a poll) or in progress (MQTT: pushed into the device's broker session)
        waiting = {"http": "queued", "mqtt": "in_progress"}[binding]
        assert stack.api("GET", f"/v1/operations/{download['id']}")["status"] == waiting
        assert stack.card_profiles() == {}

        stack.start_ipa()  # the device wakes up
        require_done(stack.wait_operation(download["id"], timeout=60))
        assert_codes(require_done(stack.wait_operation(enable["id"], timeout=60)), ("enableResult", 0))
        assert stack.card_profiles() == {keep["iccid"]: "enabled"}

        # the expired one stays expired and never reached the card nor the SM-DP+
        final = stack.api("GET", f"/v1/operations/{expiring['id']}")
        assert final["status"] == "expired" and final["attempts"] == 0, final
        assert lapse["iccid"] not in stack.card_profiles()
        assert stack.smdp_order_show(lapse["matching_id"])["state"] != "installed"
        assert stack.smdp_order_show(keep["matching_id"])["state"] == "installed"
        assert_counters_agree(stack)
        stack.stop()
