"""The IPA restarted in the middle of an indirect download over MQTT, as real processes (real Mosquitto, ``eim
serve``, ``ipa run``, the lab SM-DP+, the virtual modem): the download completes, and the eIM never answers
``invalidEimTransactionId`` (52).

The soak that filed issue 14 saw 52s to InitiateAuthentication right after IPA and modem restarts over MQTT. The
cause: the same download trigger reached the IPA twice. The IPA's MQTT session is persistent (so a sleeping device
gets its pushes), and a pushed package without an answer is pushed again after ``[operations] push_retry_s``; both
copies wait in the session while the IPA is down (or busy re-opening a reset modem). After the restart the IPA
polls, is handed the same in-progress download again, and completes it; then it takes the stale pushes from its
session and runs the download once more: its InitiateAuthentication names an operation that is done -> 52, and the
IPA reports the failure of a download that succeeded. Before the fix this test saw three 52s (as the soak did);
now the IPA remembers the triggers whose outcome it reported and acknowledges a later copy without running it
(``ipa.procedures.profile_download``, "Each trigger once").
"""

from __future__ import annotations

import re

import httpx

from tests.e2e.conftest import start_stack, stop_stack, wait_until
from tests.services import run_mosquitto

CODE_52 = re.compile(r'eim_esipa_error_answers_total\{[^}]*code="52"[^}]*\} ([0-9.]+)')
PUSHED = re.compile(r'eim_packages_pushed_total\{kind="download"\} ([0-9.]+)')


def metric(stack, pattern: re.Pattern[str]) -> float:
    text = httpx.get(stack.eim_url + "/metrics", timeout=10, verify=stack.verify).text
    return sum(float(v) for v in pattern.findall(text))


def test_ipa_restarted_mid_download_over_mqtt_completes_without_52(tmp_path_factory) -> None:
    # a broker of its own: the IPA's persistent session must hold only what this test's eIM pushed
    with run_mosquitto() as broker:
        stack = start_stack(tmp_path_factory.mktemp("mqtt-restart"), "mqtt", mosquitto=broker, quirks="slow=0.01")
        try:
            run(stack)
        finally:
            stop_stack(stack)


def run(stack) -> None:
    # pushes repeated every second while unanswered, as a soak with a short push_retry_s does
    stack.restart_eim(env={"EIM_OPERATIONS_PUSH_RETRY_S": "1", "EIM_OPERATIONS_SWEEP_INTERVAL_S": "0.5"})
    stack.services["ipa"].stop()
    stack.start_ipa(verbose=True)
    stack.wait_push_reachable()
    order = stack.smdp_order("ts48")
    before = stack.log_count("eim", "ES9+ session started")
    op = stack.operation("download", {"activationCode": order["activation_code"], "mode": "indirect"})
    wait_until("the eIM relaying ES9+", lambda: stack.log_count("eim", "ES9+ session started") > before, 30, 0.01)
    stack.services["ipa"].kill()  # SIGKILL in the middle of the download
    # while the IPA is down the eIM pushes the unanswered trigger again into its persistent session
    pushed = metric(stack, PUSHED)
    wait_until("a repeated push", lambda: metric(stack, PUSHED) >= pushed + 2, 30, 0.1)
    stack.start_ipa(verbose=True)
    final = stack.wait_operation(op["id"], timeout=90)
    assert final["status"] == "done", final
    assert order["iccid"] in stack.card_profiles()
    # the stale pushes were taken from the session, acknowledged and not run again
    wait_until("a stale push skipped", lambda: stack.log_count("ipa", "already handled") >= 1, 30, 0.05)
    wait_until("the IPA idle", lambda: stack.log_count("ipa", "poll: idle") >= 1, 30, 0.05)
    assert metric(stack, CODE_52) == 0, stack.services["ipa"].tail(60)
    assert stack.api("GET", f"/v1/operations/{op['id']}")["status"] == "done"
