"""Full-stack fixtures: the whole lab (demo.stack.LabStack) as real processes, stopped even when a test fails.

When a test fails, the tails of every running stack's component logs are attached to its report (shown by pytest
with the failure), so a CI failure can be read without the work directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.stack import LabStack

LIVE: list[LabStack] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for stack in LIVE:
            for name, svc in stack.services.items():
                rep.sections.append((f"{stack.workdir.name} {name} log ({svc.log})", svc.tail(40)))


def start_stack(workdir: Path, binding: str = "http", *, with_ipa: bool = True, **kw: Any) -> LabStack:
    """Start a LabStack; it is registered for failure logs; the caller stops it with :func:`stop_stack`."""
    kw.setdefault("poll_interval", 0.3)
    stack = LabStack(workdir=workdir, binding=binding, **kw)
    LIVE.append(stack)
    try:
        stack.start(with_ipa=with_ipa)
    except BaseException:
        for name, svc in stack.services.items():
            print(f"--- {name} ---\n{svc.tail(40)}")
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: LabStack) -> None:
    try:
        for name, svc in stack.services.items():  # extra services a test added (a second eIM ...) first:
            if name not in ("ipa", "eim", "modem", "smdpp"):  # they may hold connections to the SM-DP+
                svc.stop()
        stack.stop()
    finally:
        if stack in LIVE:
            LIVE.remove(stack)


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabStack]]:
    """Factory for function-scoped stacks: ``lab(binding="mqtt", mosquitto=broker, quirks=...)``."""
    started: list[LabStack] = []

    def make(binding: str = "http", **kw: Any) -> LabStack:
        stack = start_stack(tmp_path_factory.mktemp(f"lab-{binding}"), binding, **kw)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stop_stack(stack)


# ---------------------------------------------------------------- assertions shared by the tests
def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what} (last value {last!r})")


def require_done(op: dict[str, Any]) -> dict[str, Any]:
    assert op["status"] == "done", f"operation {op['id']} ({op['kind']}) ended {op['status']}: {json.dumps(op)}"
    assert op["error"] is None, op
    return op


def done(stack: LabStack, kind: str, params: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run one operation through the REST API; it must end ``done``; return its record."""
    return require_done(stack.run_op(kind, params, timeout=timeout))


def psmo_results(op: dict[str, Any]) -> list[dict[str, Any]]:
    return op["result"]["results"]


def assert_codes(op: dict[str, Any], *expected: tuple[str, int]) -> None:
    """The operation's results are exactly ``(type, code)`` pairs in order."""
    got = [(r["type"], r.get("code")) for r in psmo_results(op)]
    assert got == list(expected), f"operation {op['id']} results {op['result']}"


def eim_euicc(stack: LabStack) -> dict[str, Any]:
    return stack.api("GET", f"/v1/euiccs/{stack.eid}")


def card_eim(stack: LabStack, eim_id: str) -> dict[str, Any] | None:
    return next((e for e in stack.card()["eims"] if e["eim_id"] == eim_id), None)


def assert_counters_agree(stack: LabStack, eim_id: str | None = None) -> None:
    """The eIM's last counter value for this eUICC is the one the card has for it."""
    eim_id = eim_id or stack.eim_id
    on_card = card_eim(stack, eim_id)
    assert on_card is not None, f"{eim_id} not on the card: {stack.card()['eims']}"
    assert eim_euicc(stack)["counter_value"] == on_card["counter"]


def smdp_events(stack: LabStack) -> list[tuple[str, str]]:
    """(event, iccid) of every notification the SM-DP+ received and verified, oldest first."""
    return [(n["event"], n["iccid"]) for n in stack.smdp_notifications() if n["verified"]]


def wait_smdp_event(stack: LabStack, event: str, iccid: str, timeout: float = 20.0) -> None:
    wait_until(f"SM-DP+ notification {event} {iccid}", lambda: (event, iccid) in smdp_events(stack), timeout)
