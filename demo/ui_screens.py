"""Screenshots of the operator dashboard for docs/eim.md: ``python -m demo.ui_screens [OUTDIR]`` (default
docs/images).

Starts the lab (eIM with an operators file, IPA, virtual modem with the software eUICC, lab SM-DP+), registers a
few silent eUICCs, runs work through the dashboard itself (a webhook subscription to a loopback port where nothing
listens, a profile download and a CSV batch on the lab's card, a label batch on the silent ones, then cancelled),
and takes 1200-pixel-wide PNGs of each page with Debian's Chromium (demo/browser.py), every request outside the
eIM aborted. The PNGs are written as 8-bit palette images when Pillow is installed (smaller), else as Chromium
writes them.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from demo.browser import browser_context
from demo.services import free_port
from demo.stack import LabStack
from eim.api import auth
from rsp.pki import lab_eid

SILENT = [lab_eid(900 + i) for i in range(5)]


def shoot(page: Any, out: Path, name: str, *, full: bool = False) -> Path:
    path = out / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=full)
    try:
        from PIL import Image

        Image.open(path).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, optimize=True)
    except ImportError:
        pass
    print(f"{path}  {path.stat().st_size // 1024} KB")
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eim-screens-") as tmp:
        stack = LabStack(workdir=Path(tmp), binding="http", poll_interval=0.3)
        stack.start()
        try:
            token = auth.generate_token()
            ops = Path(tmp) / "operators"
            ops.write_text(f"alice:operator:{auth.hash_token(token)}\n")
            os.chmod(ops, 0o600)
            cfg = Path(tmp) / "eim.toml"
            # webhooks to a loopback port where nothing listens, given up after one attempt: a failed delivery
            events = "[events]\nallow_loopback = true\nmax_attempts = 1\npoll_s = 0.3\n"
            cfg.write_text(cfg.read_text() + f'\n[api]\noperators_file = "{ops}"\n{events}')
            stack.restart_eim()
            headers = {"Authorization": f"Bearer {token}"}
            for i, eid in enumerate(SILENT):
                labels = {"site": "berlin" if i % 2 else "paris", "tier": "gold"}
                httpx.post(stack.eim_url + "/v1/euiccs", json={"eid": eid, "labels": labels}, headers=headers)
            order = stack.smdp_order("ts48")
            with browser_context(1200, 820) as context:
                page = context.new_page()
                page.route(
                    "**/*",
                    lambda r: r.continue_() if r.request.url.startswith(stack.eim_url + "/") else r.abort(),
                )
                page.on("dialog", lambda d: d.accept())
                page.goto(stack.eim_url + "/ui/login")
                shoot(page, out, "login")
                page.fill("#f-token", token)
                page.click("button[type=submit]")
                page.wait_for_url(re.compile(r".*/ui/$"))
                # a webhook subscription (its deliveries fail: nothing listens there)
                page.goto(stack.eim_url + "/ui/subscriptions")
                page.fill("#f-url", f"http://127.0.0.1:{free_port()}/hooks/eim")
                page.check('input[name=events][value="operation.done"]')
                page.check('input[name=events][value="operation.failed"]')
                page.fill("#f-description", "fleet dashboard of the NOC")
                page.click("form.stack button[type=submit]")
                page.wait_for_selector("code.secret")
                # a download through the form
                page.goto(stack.eim_url + f"/ui/operations/new?eid={stack.eid}&kind=download")
                page.fill("#f-params", "")
                page.fill("#f-activation_code", order["activation_code"])
                shoot(page, out, "new-operation")
                page.click("form.stack button[type=submit]")
                _wait_ended(page, 90)
                # a CSV batch of eUICC data requests
                csv = Path(tmp) / "batch.csv"
                csv.write_text(f"eid\n{stack.eid}\n{SILENT[0]}\n{lab_eid(999)}\n")
                page.goto(stack.eim_url + "/ui/batches/new")
                page.select_option("#f-kind", "euicc_data")
                page.check("#f-source-csv")
                page.set_input_files("#f-csv_file", str(csv))
                page.click("text=Preview")
                shoot(page, out, "batch-preview")
                page.click("#confirm")
                page.wait_for_url(re.compile(r".*/ui/batches/[0-9a-f-]{36}$"))
                page.wait_for_timeout(3000)
                shoot(page, out, "batch")
                # a label batch, cancelled
                page.goto(stack.eim_url + "/ui/batches/new")
                page.select_option("#f-kind", "psmo")
                page.fill("#f-params", '{"psmos": [{"listProfileInfo": {}}]}')
                page.check("#f-source-labels")
                page.fill("#f-labels", "tier=gold")
                page.click("text=Preview")
                page.click("#confirm")
                page.wait_for_url(re.compile(r".*/ui/batches/[0-9a-f-]{36}$"))
                page.click("text=Cancel the batch")
                page.wait_for_selector("text=operation(s) cancelled")
                page.goto(stack.eim_url + "/ui/")
                shoot(page, out, "fleet", full=True)  # down to the charts of the last 24 hours
                page.goto(stack.eim_url + "/ui/euiccs")
                shoot(page, out, "euiccs")
                page.goto(stack.eim_url + "/ui/operations")
                shoot(page, out, "operations")
                page.goto(stack.eim_url + f"/ui/euiccs/{stack.eid}")
                page.locator("#audit").scroll_into_view_if_needed()
                shoot(page, out, "euicc-audit")
                page.goto(stack.eim_url + "/ui/subscriptions")
                page.click("table.list a")
                for _ in range(40):  # until the deliverer has given up on the operation.done event
                    if page.locator("text=Re-send").count():
                        break
                    page.wait_for_timeout(500)
                    page.reload()
                shoot(page, out, "webhooks")
        finally:
            stack.stop()
    return 0


def _wait_ended(page: Any, seconds: int) -> None:
    """Reload an operation's page until it has ended (or ``seconds`` passed)."""
    for _ in range(seconds * 2):
        page.reload()
        if page.locator("table.kv .st").first.inner_text() in ("done", "failed", "expired", "cancelled"):
            return
        page.wait_for_timeout(500)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
