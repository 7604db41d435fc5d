"""Debian's Chromium driven by Playwright, for the dashboard's browser tests (tests/e2e/test_dashboard.py) and its
screenshots (``python -m demo.ui_screens``). Playwright's own browser downloads (``playwright install``) are never
used: the browser is the system package (``apt-get install chromium``, listed in deploy/install-system-deps.sh),
started headless with a fresh profile directory and with every background network feature off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from demo.services import ServiceUnavailable

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("EIM_CHROMIUM", CHROMIUM)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which("chromium")
        if found is None:
            raise ServiceUnavailable("chromium", "apt-get install -y chromium")
        path = found
    return path


@contextlib.contextmanager
def browser_context(width: int = 1200, height: int = 800) -> Iterator[Any]:
    """A Playwright browser context on Debian's Chromium with a fresh user-data-dir, closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ServiceUnavailable("playwright (Python package)", "pip install -e '.[dev]'") from None
    path = chromium_path()
    with tempfile.TemporaryDirectory(prefix="eim-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=path,
            args=ARGS,
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()
