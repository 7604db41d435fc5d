"""The dashboard's overview page (``GET /ui/``) with a large registry (SQLite), end to end: the real ``eim --config
FILE serve`` process (uvicorn, the operator API's front, the dashboard) on a free loopback port, a browser-like
client logged in with an operator token (a session in the store), and the time from sending the request to having
the whole page. Bar: 200 ms with 1,000,000 eUICCs (issue 15).

The registry is bulk-inserted (``bench.eim.bulk_register``) and spread like ``bench.fleet_summary`` (a third seen
within the hour, a third within the day, a third silent for days, 5 % never seen, 1 % with their own poll interval;
20,000 operations). Each figure is the median of ``runs`` requests on one kept-alive connection (the first
answer is dropped); the same for the pieces of the page, to see where the time goes: the summary ``GET /v1/fleet``
with the bearer token (what the page calls in-process), the page's 5-second refresh (``/ui/fleet/live``), a
static file through the same session-less path (the HTTP floor), and the store's ``fleet_counts`` alone.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, Section, versus
from bench.eim import bulk_register, eids_for, free_port
from bench.fleet_summary import _spread

BAR_MS = 200.0


def _median_ms(call: Any, runs: int) -> tuple[float, float]:
    """(median, max) of ``runs`` calls in ms, after one warm-up call."""
    call()
    took = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        took.append((time.perf_counter() - t) * 1000)
    return statistics.median(took), max(took)


def _wait(port: int, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"eim serve stopped: {log.read_text()[-1500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"eim serve did not start: {log.read_text()[-1500:]}")


async def _operations(url: str, eids: list[str], count: int) -> None:
    """``count`` queued operations through the store, then the store's maintained fleet counters (if it keeps any)
    rebuilt, since the registry was written around the store."""
    from eim.model import Operation, OpKind, OpStatus
    from eim.store import open_store
    from eim.store.logic import new_id

    s = open_store(url)
    await s.open()
    try:
        now = time.time()
        ops = [
            Operation(new_id(), eids[i % len(eids)], OpKind.EUICC_DATA, {}, OpStatus.QUEUED, now, now)
            for i in range(count)
        ]
        for i in range(0, len(ops), 5000):
            await s.add_operations(ops[i : i + 5000], who="bench")
        recount = getattr(s, "recount_fleet_tallies", None)
        if recount is not None:
            await recount()
    finally:
        await s.close()


def _store_ms(url: str, runs: int) -> float:
    from eim.store import open_store

    async def go() -> float:
        s = open_store(url)
        await s.open()
        try:
            await s.fleet_counts(default_interval_s=86400.0)
            took = []
            for _ in range(runs):
                t = time.perf_counter()
                await s.fleet_counts(default_interval_s=86400.0)
                took.append((time.perf_counter() - t) * 1000)
            return statistics.median(took)
        finally:
            await s.close()

    return asyncio.run(go())


def measure(tmp: Path, n: int, runs: int) -> dict[str, Any]:
    import httpx

    from eim.api.auth import generate_token, hash_token
    from rsp.pki import create_lab_pki

    path = tmp / "eim.db"
    url = f"sqlite:///{path}"
    eids = eids_for(n)
    now = time.time()
    insert_s = asyncio.run(bulk_register(url, eids, binding="http", last_contact=now))
    _spread(str(path), n, now)
    n_ops = min(20_000, n)
    asyncio.run(_operations(url, eids, n_ops))
    store_ms = _store_ms(url, runs)
    pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=[])
    token = generate_token()
    operators = tmp / "operators"
    operators.write_text(f"bench:read-only:{hash_token(token)}\n")
    os.chmod(operators, 0o600)
    port = free_port()
    cfg = tmp / "eim.toml"
    cfg.write_text(
        f'[eim]\neim_id = "eim.bench"\ndata_dir = "{tmp / "data"}"\nlab_pki = "{pki.root}"\ncurve = "nist"\n'
        f'[store]\nurl = "{url}"\n[http]\nport = {port}\n[api]\noperators_file = "{operators}"\n'
        '[coap]\nenabled = false\n[mqtt]\nenabled = false\n[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
    )
    log = tmp / "eim.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [PY, "-m", "eim.cli", "--config", str(cfg), "serve"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        _wait(port, proc, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.post("/ui/login", data={"token": token, "next": "/ui/"})
            if r.status_code != 303 or "eim_session" not in c.cookies:
                raise RuntimeError(f"login refused: {r.status_code} {r.text[:200]}")
            page = c.get("/ui/")
            if page.status_code != 200 or f">{n}<" not in page.text:
                raise RuntimeError(f"overview page: {page.status_code} {page.text[:300]}")

            def get(path: str, **kw: Any):
                def call() -> None:
                    resp = c.get(path, **kw)
                    if resp.status_code != 200:
                        raise RuntimeError(f"{path}: {resp.status_code}")

                return call

            auth = {"Authorization": f"Bearer {token}"}
            overview, overview_max = _median_ms(get("/ui/"), runs)
            live, _ = _median_ms(get("/ui/fleet/live"), runs)
            api, _ = _median_ms(get("/v1/fleet", headers=auth), runs)
            static, _ = _median_ms(get("/ui/static/dash.css"), runs)
        return {
            "euiccs": n,
            "operations": n_ops,
            "insert_s": insert_s,
            "overview_ms": overview,
            "overview_max_ms": overview_max,
            "live_ms": live,
            "api_fleet_ms": api,
            "static_ms": static,
            "store_counts_ms": store_ms,
            "page_bytes": len(page.content),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(quick: bool = False, size: int | None = None) -> Section:
    n = size or (5_000 if quick else 1_000_000)
    runs = 5 if quick else 25
    sec = Section("dashboard", "2c. Dashboard overview page (GET /ui/) at scale")
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        f = measure(Path(tmp), n, runs)
    sec.figures = f
    sec.add(
        f"The real `eim serve` (SQLite, {n:,} registered eUICCs spread as in 2b, {f['operations']:,} operations), "
        "an operator logged in (a read-only session in the store); time from sending `GET /ui/` on a kept-alive "
        f"loopback connection to having the whole page ({f['page_bytes']:,} bytes), median of {runs} requests after "
        "one warm-up; the pieces of the page measured the same way."
    )
    sec.add("")
    sec.table(
        ["what", "ms"],
        [
            ["GET /ui/ (the overview page: session, GET /v1/fleet in-process, HTML and SVG charts)", f["overview_ms"]],
            ["GET /ui/ slowest of the runs", f["overview_max_ms"]],
            ["GET /ui/fleet/live (the part refreshed every 5 s)", f["live_ms"]],
            ["GET /v1/fleet with the bearer token (the summary alone, over HTTP)", f["api_fleet_ms"]],
            ["Store.fleet_counts alone (no HTTP)", f["store_counts_ms"]],
            ["GET /ui/static/dash.css (HTTP floor)", f["static_ms"]],
        ],
    )
    sec.add(
        f"- Bar, dashboard overview with {n:,} eUICCs: {f['overview_ms']:.1f} ms → "
        + versus(f["overview_ms"], BAR_MS, higher_is_better=False)
    )
    return sec


if __name__ == "__main__":  # pragma: no cover - python -m bench --only dashboard is the way
    import sys

    print(run(quick="--quick" in sys.argv).markdown())
