"""Smoke test of bench/dashboard.py: it runs with a tiny registry through the real ``eim serve`` and reports its
figures (the overview and every other page). No timing is asserted (house rule 6): only that the figures exist,
are numbers, and that the pages were really served for a logged-in operator with the registry's count / the rows
asked for on them (the benchmark checks that before it measures)."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_dashboard_tiny():
    from bench.dashboard import run

    sec = run(True, size=300)
    f = sec.figures
    for key in ("overview_ms", "overview_max_ms", "live_ms", "api_fleet_ms", "static_ms", "store_counts_ms"):
        assert isinstance(f[key], float) and math.isfinite(f[key]) and f[key] > 0, key
    assert f["euiccs"] == 300 and f["page_bytes"] > 1000
    assert any(line.startswith("- Bar, dashboard overview with 300 eUICCs") for line in sec.lines)
    pages = f["pages"]
    assert len(pages) >= 20 and any(p["what"].startswith("batch page") for p in pages)
    for p in pages:  # each page was checked for its content before it was timed
        key = "page_" + "".join(ch if ch.isalnum() else "_" for ch in p["what"].lower()).strip("_") + "_ms"
        assert isinstance(f[key], float) and math.isfinite(f[key]) and f[key] > 0, key
    assert any(line.startswith("- Bar, slowest other dashboard page with 300 eUICCs") for line in sec.lines)
