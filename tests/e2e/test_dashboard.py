"""The dashboard in a real headless browser (Debian's Chromium through Playwright, demo/browser.py) against the
whole lab as real processes (eIM with an operators file, IPA, virtual modem with the software eUICC, lab SM-DP+):
log in, see the fleet, upload a CSV batch and watch it complete, cancel a second batch, open an eUICC's audit
trail, stay logged in across an eIM restart - with every request that does not go to the eIM aborted, and none
made."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.services import ServiceUnavailable
from demo.stack import LabStack
from eim.api import auth
from rsp.pki import lab_eid
from tests.e2e.conftest import start_stack, stop_stack
from tests.services import missing_service

SILENT = [lab_eid(900 + i) for i in range(3)]  # registered, never polling: their operations stay open


def enable_operators(stack: LabStack) -> dict[str, str]:
    """Restart the lab's eIM with an operators file: an operator and a read-only one."""
    tokens = {"alice": auth.generate_token(), "viewer": auth.generate_token()}
    path = stack.workdir / "operators"
    path.write_text(
        f"alice:operator:{auth.hash_token(tokens['alice'])}\nviewer:read-only:{auth.hash_token(tokens['viewer'])}\n"
    )
    os.chmod(path, 0o600)
    cfg = stack.workdir / "eim.toml"
    cfg.write_text(cfg.read_text() + f'\n[api]\noperators_file = "{path}"\n')
    stack.restart_eim()
    return tokens


@pytest.fixture(scope="module")
def dash_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabStack, dict[str, str]]]:
    stack = start_stack(tmp_path_factory.mktemp("dash-lab"), "http")
    try:
        tokens = enable_operators(stack)
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        for eid in SILENT:
            r = httpx.post(stack.eim_url + "/v1/euiccs", json={"eid": eid, "labels": {"site": "lab"}}, headers=headers)
            assert r.status_code == 201, r.text
        # the card's poll is in the store's counts (the SQLite store writes contacts up to a second later)
        for _ in range(100):
            fleet = httpx.get(stack.eim_url + "/v1/fleet", headers=headers).json()
            if fleet["euiccs"]["never_seen"] == len(SILENT):
                break
            time.sleep(0.2)
        yield stack, tokens
    finally:
        stop_stack(stack)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from demo.browser import browser_context

    try:
        cm = browser_context()
        context = cm.__enter__()
    except ServiceUnavailable as exc:
        missing_service(exc.what, exc.install)
    try:
        yield context
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def page(browser: Any, dash_lab: tuple[LabStack, dict[str, str]]) -> Iterator[Any]:
    """A page whose every request outside the eIM is aborted (the dashboard must not need the network)."""
    stack, _ = dash_lab
    seen: list[str] = []
    foreign: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        seen.append(url)
        if url.startswith(stack.eim_url + "/"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    browser.clear_cookies()
    p = browser.new_page()
    p.route("**/*", guard)
    p.on("dialog", lambda d: d.accept())  # the Cancel buttons ask first
    p.seen, p.foreign = seen, foreign  # type: ignore[attr-defined]
    yield p
    p.close()
    assert foreign == [], f"requests left the eIM: {foreign}"
    assert seen and all(u.startswith(stack.eim_url) for u in seen)


def log_in(page: Any, stack: LabStack, token: str) -> None:
    page.goto(stack.eim_url + "/")
    assert "/ui/login" in page.url
    page.fill("#f-token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/$"))


def test_operator_runs_a_csv_batch_cancels_another_and_reads_the_audit(page: Any, dash_lab: Any, tmp_path: Path):
    stack, tokens = dash_lab
    page.goto(stack.eim_url + "/ui/login")
    page.fill("#f-token", "eim_wrong")
    page.click("button[type=submit]")
    assert "token not accepted" in page.inner_text("main")
    log_in(page, stack, tokens["alice"])

    # the fleet: 4 registered (the lab's card, polling, and 3 silent ones)
    assert page.inner_text('.card[data-key="registered"] .n') == "4"
    assert page.inner_text('.card[data-key="never_seen"] .n') == "3"
    assert "alice" in page.inner_text("header")

    # a CSV batch of eUICC data requests for the lab's card: preview, confirm, watch it complete
    csv = tmp_path / "batch.csv"
    csv.write_text(f"eid\n{stack.eid}\n")
    page.goto(stack.eim_url + "/ui/batches/new")
    page.select_option("#f-kind", "euicc_data")
    page.check("#f-source-csv")
    page.set_input_files("#f-csv_file", str(csv))
    page.click("text=Preview")
    assert "1 operation(s)" in page.inner_text("#preview-summary")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/ui/batches/[0-9a-f-]{36}$"))
    page.wait_for_selector('#batch [data-state="ended"]', timeout=60000)  # updated by polling, no reload
    assert "done 1" in page.inner_text("#batch .counts")
    assert page.get_attribute('#batch [role="progressbar"]', "aria-valuenow") == "100"

    # a second batch (the silent eUICCs, by label): it stays open; cancel it from its page
    page.goto(stack.eim_url + "/ui/batches/new")
    page.select_option("#f-kind", "euicc_data")
    page.check("#f-source-labels")
    page.fill("#f-labels", "site=lab")
    page.click("text=Preview")
    assert "3 operation(s)" in page.inner_text("#preview-summary")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/ui/batches/[0-9a-f-]{36}$"))
    batch_id = page.url.rsplit("/", 1)[1]
    page.click("text=Cancel the batch")
    page.wait_for_selector("text=3 operation(s) cancelled")
    assert "cancelled 3" in page.inner_text("#batch .counts")
    r = httpx.get(f"{stack.eim_url}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert r.json()["summary"] == {"cancelled": 3}

    # the lab card's page: its audit trail names alice and the IPA's result
    page.goto(stack.eim_url + "/ui/euiccs")
    page.click(f"text={stack.eid}")
    audit = page.inner_text("#audit + table")
    assert "operator:alice" in audit and "hand_out" in audit and "done" in audit
    assert "http" in page.inner_text("table.kv")  # the binding of its last contact


def test_read_only_operator_sees_no_buttons(page: Any, dash_lab: Any):
    stack, tokens = dash_lab
    log_in(page, stack, tokens["viewer"])
    assert "read-only" in page.inner_text("header")
    page.goto(stack.eim_url + "/ui/batches")
    assert page.locator("text=New batch").count() == 0
    page.goto(stack.eim_url + f"/ui/euiccs/{SILENT[0]}")
    assert page.locator("text=Relabel").count() == 0
    page.goto(stack.eim_url + "/ui/")
    page.wait_for_event("request", lambda r: r.url.endswith("/ui/fleet/live"), timeout=20000)  # live refresh


def test_a_session_outlives_an_eim_restart(page: Any, dash_lab: Any):
    """The session is a row of the store: ``eim serve`` stopped and started again, the browser is still logged in
    and its forms still carry a valid CSRF token (before migration 0006 a restart logged everybody out)."""
    stack, tokens = dash_lab
    log_in(page, stack, tokens["alice"])
    stack.restart_eim()
    page.goto(stack.eim_url + "/ui/euiccs/new")
    assert "/ui/login" not in page.url and "alice" in page.inner_text("header")
    eid = lab_eid(950)
    page.fill("#f-eid", eid)
    page.fill("#f-labels", "site=after-restart")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(rf".*/ui/euiccs/{eid}$"))
    r = httpx.get(f"{stack.eim_url}/v1/euiccs/{eid}", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert r.json()["labels"] == {"site": "after-restart"}
