"""The dashboard's pages with a large registry (SQLite), end to end: the real ``eim --config
FILE serve`` process (uvicorn, the operator API's front, the dashboard) on a free loopback port, a browser-like
client logged in with an operator token (a session in the store), and the time from sending the request to having
the whole page. Bar: 200 ms with 1,000,000 eUICCs (issue 15).

The registry is bulk-inserted (``bench.eim.bulk_register``) and spread like ``bench.fleet_summary`` (a third seen
within the hour, a third within the day, a third silent for days, 5 % never seen, 1 % with their own poll interval;
20,000 operations). Each figure is the median of ``runs`` requests on one kept-alive connection (the first
answer is dropped); the same for the pieces of the page, to see where the time goes: the summary ``GET /v1/fleet``
with the bearer token (what the page calls in-process), the page's 5-second refresh (``/ui/fleet/live``), a
static file through the same session-less path (the HTTP floor), and the store's ``fleet_counts`` alone.

Every other page is timed the same way on the same registry, given an operations history (``history``): 200,000
operations over the fleet in every status and kind, one eUICC with a long history (2,000 operations, 4,000 audit
rows), a 10,000-item batch, 200,000 audit rows, 20,000 notification outbox rows and a subscription with 50,000
webhook deliveries; 10 % of the eUICCs carry ``site=berlin`` and 0.01 % (100) the rare ``rack=r7``. Each page's
REST twin (what the page calls in-process, over HTTP with the bearer token) is timed next to it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Section, eim_serve, versus, wait_healthz
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


HISTORY_OPS = 200_000
LONG_OPS = 2_000
BATCH_ITEMS = 10_000
RARE = ("rack", "r7")


def history(path: str, eids: list[str], now: float, n_ops: int = HISTORY_OPS) -> dict[str, Any]:
    """The operations history of a fleet that has been run for a while, written straight into the SQLite file
    (one transaction; the store's own writes would take minutes): ``n_ops`` operations round-robin over the fleet
    (4 in 5 done, the rest failed / expired / cancelled / queued; every kind), one audit row per operation, one
    eUICC (``eids[7]``) with :data:`LONG_OPS` operations and twice as many audit rows, a batch of
    :data:`BATCH_ITEMS` items (queued, a tenth done), 20,000 outbox rows and a subscription with 50,000 deliveries;
    the rare label on every 10,000th eUICC. Returns the ids the pages are opened with."""
    import json
    import random
    import sqlite3
    import uuid

    rnd = random.Random(15)
    n = len(eids)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rare = [(json.dumps({"site": "paris", RARE[0]: RARE[1]}), i + 1) for i in range(3, n, 10_000)]
    conn.executemany("UPDATE euiccs SET labels = ? WHERE rowid = ?", rare)
    statuses = ["done"] * 16 + ["failed", "expired", "cancelled", "queued"]
    kinds = ["psmo", "eco", "download", "euicc_data"]
    long_eid = eids[7 % n]
    batch_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    conn.execute(
        "INSERT INTO batches (id, created_at, created_by, kind, params) VALUES (?, ?, 'bench', 'psmo', '{}')",
        (batch_id, now - 3600),
    )

    def ops() -> Any:
        for i in range(n_ops + LONG_OPS + BATCH_ITEMS):
            t = now - 30 * 86400 + 30 * 86400 * i / (n_ops + LONG_OPS + BATCH_ITEMS)
            if i < n_ops:
                eid, status, batch = eids[i % n], statuses[i % 20], None
            elif i < n_ops + LONG_OPS:
                eid, status, batch = long_eid, statuses[i % 20], None
            else:
                k = i - n_ops - LONG_OPS
                eid, status, batch = eids[(k * 97) % n], "done" if k % 10 == 0 else "queued", batch_id
            failed = status == "failed"
            yield (
                str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                eid,
                "psmo" if batch else kinds[(i // 20) % 4],
                "{}",
                status,
                t,
                t + 60,
                "bench",
                batch,
                3 if failed else None,
                "eUICC refused" if failed else None,
            )

    conn.executemany(
        "INSERT INTO operations (id, eid, kind, params, status, created_at, updated_at, created_by, batch_id,"
        " result_code, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ops(),
    )
    conn.execute(
        "INSERT INTO batch_items (batch_id, idx, eid, operation_id, error)"
        " SELECT batch_id, ROW_NUMBER() OVER (ORDER BY seq) - 1, eid, id, NULL FROM operations WHERE batch_id = ?",
        (batch_id,),
    )
    conn.execute(
        "INSERT INTO audit (at, who, action, eid, operation_id, outcome, detail)"
        " SELECT created_at, 'bench', 'operation.create', eid, id, 'created', '{}' FROM operations"
    )
    conn.execute(
        "INSERT INTO audit (at, who, action, eid, operation_id, outcome, detail)"
        " SELECT updated_at, 'bench', 'operation.result', eid, id, status, '{}' FROM operations WHERE eid = ?",
        (long_eid,),
    )
    conn.executemany(
        "INSERT INTO notification_outbox (digest, eid, operation_id, kind, seq_number, address, notification,"
        " status, created_at, updated_at, next_attempt_at, attempts) VALUES (?, ?, NULL, 'install', ?,"
        " 'smdp.example', X'00', ?, ?, ?, ?, 1)",
        (
            (f"d{i}", eids[i % n], i, "failed" if i % 50 == 0 else "pending", now - i, now - i, now + 60)
            for i in range(20_000)
        ),
    )
    sub_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    conn.execute(
        "INSERT INTO subscriptions (id, url, events, secret, description, created_at, created_by)"
        " VALUES (?, 'http://127.0.0.1:9/hook', '[\"operation.done\"]', 'k', 'bench', ?, 'bench')",
        (sub_id, now),
    )
    conn.executemany(
        "INSERT INTO event_deliveries (subscription_id, event_id, event_type, body, status, created_at,"
        " updated_at, next_attempt_at, attempts) VALUES (?, ?, 'operation.done', '{}', ?, ?, ?, ?, 1)",
        (
            (sub_id, f"e{i}", "failed" if i % 100 == 0 else "delivered", now - i, now - i, now - i)
            for i in range(50_000)
        ),
    )
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "euicc_labels" in tables:  # migration 0007's maintained label table, rebuilt like the migration does
        conn.execute("DELETE FROM euicc_labels")
        conn.execute(
            "INSERT INTO euicc_labels (key, value, eid)"
            " SELECT j.key, j.value, e.eid FROM euiccs e, json_each(e.labels) j"
        )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"long_eid": long_eid, "batch_id": batch_id, "sub_id": sub_id}


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


def pages_of(eids: list[str], ids: dict[str, Any]) -> list[tuple[str, str, str | None, str]]:
    """``(what, dashboard path, REST twin path or None, text the page must show)`` for every page timed."""
    long_eid, batch, sub = ids["long_eid"], ids["batch_id"], ids["sub_id"]
    from eim.api.paging import encode_cursor

    mid = eids[len(eids) // 2][:26]
    cursor = encode_cursor("euiccs", mid)
    return [
        ("eUICC list", "/ui/euiccs", "/v1/euiccs?limit=500", "/ui/euiccs/"),
        ("eUICC list, EID prefix", f"/ui/euiccs?eid={mid}", f"/v1/euiccs?limit=500&cursor={cursor}", mid),
        (
            "eUICC list, label site=berlin (10 %)",
            "/ui/euiccs?label=site%3Dberlin",
            "/v1/euiccs?label=site%3Dberlin",
            "berlin",
        ),
        ("eUICC list, label rack=r7 (0.01 %)", "/ui/euiccs?label=rack%3Dr7", "/v1/euiccs?label=rack%3Dr7", "r7"),
        (
            "eUICC list, two labels",
            "/ui/euiccs?label=rack%3Dr7&label=site%3Dparis",
            "/v1/euiccs?label=rack%3Dr7&label=site%3Dparis",
            "r7",
        ),
        ("eUICC list, never seen", "/ui/euiccs?state=never_seen", None, "never_seen"),
        ("eUICC list, seen 1 h", "/ui/euiccs?state=seen_1h", None, "seen_1h"),
        ("eUICC list, seen 24 h", "/ui/euiccs?state=seen_24h", None, "seen_24h"),
        ("eUICC list, stale", "/ui/euiccs?state=stale", None, "stale"),
        ("eUICC list, label + state", "/ui/euiccs?label=rack%3Dr7&state=stale", None, "r7"),
        (f"eUICC page, {LONG_OPS:,} operations", f"/ui/euiccs/{long_eid}", f"/v1/euiccs/{long_eid}", long_eid),
        ("operations", "/ui/operations", "/v1/operations?limit=100", "/ui/operations/"),
        (
            "operations, status failed",
            "/ui/operations?status=failed",
            "/v1/operations?status=failed&limit=100",
            "failed",
        ),
        ("operations, kind eco", "/ui/operations?kind=eco", "/v1/operations?kind=eco&limit=100", "eco"),
        ("operations, EID", f"/ui/operations?eid={long_eid}", f"/v1/operations?eid={long_eid}&limit=100", long_eid),
        (
            "operations, batch",
            f"/ui/operations?batch_id={batch}",
            f"/v1/operations?batch_id={batch}&limit=100",
            batch[:8],
        ),
        (
            "operations, batch + status done",
            f"/ui/operations?batch_id={batch}&status=done",
            f"/v1/operations?batch_id={batch}&status=done&limit=100",
            batch[:8],
        ),
        (
            "operations, kind + status",
            "/ui/operations?kind=eco&status=failed",
            "/v1/operations?kind=eco&status=failed&limit=100",
            "eco",
        ),
        (f"batch page, {BATCH_ITEMS:,} items", f"/ui/batches/{batch}", f"/v1/batches/{batch}?limit=100", batch),
        ("batch list", "/ui/batches", "/v1/batches", batch[:8]),
        ("notification outbox", "/ui/notifications", "/v1/notifications?limit=100", "smdp.example"),
        (
            "notification outbox, failed",
            "/ui/notifications?status=failed",
            "/v1/notifications?status=failed&limit=100",
            "smdp.example",
        ),
        (
            "webhook deliveries",
            f"/ui/subscriptions/{sub}",
            f"/v1/subscriptions/{sub}/deliveries?limit=100",
            "operation.done",
        ),
        (
            "webhook deliveries, failed",
            f"/ui/subscriptions/{sub}?status=failed",
            f"/v1/subscriptions/{sub}/deliveries?status=failed&limit=100",
            "operation.done",
        ),
    ]


def _time_pages(
    c: Any, auth: dict[str, str], pages: list[tuple[str, str, str | None, str]], runs: int
) -> list[dict[str, Any]]:
    """Each page (after checking it shows what it must) and its REST twin: median and slowest of ``runs``."""
    out = []
    for what, ui, api, must in pages:
        first = c.get(ui)
        if first.status_code != 200 or must not in first.text:
            raise RuntimeError(f"{what}: {ui} answered {first.status_code} without {must!r}: {first.text[-400:]}")

        def page(path: str = ui) -> None:
            if c.get(path).status_code != 200:
                raise RuntimeError(path)

        def rest(path: str | None = api) -> None:
            if c.get(path, headers=auth).status_code != 200:
                raise RuntimeError(path)

        ms, slowest = _median_ms(page, runs)
        api_ms = _median_ms(rest, runs)[0] if api else None
        out.append(
            {
                "what": what,
                "path": ui,
                "ms": ms,
                "max_ms": slowest,
                "api": api,
                "api_ms": api_ms,
                "bytes": len(first.content),
            }
        )
    return out


def measure(tmp: Path, n: int, runs: int, with_history: bool = True) -> dict[str, Any]:
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
    ids = history(str(path), eids, now, n_ops=min(HISTORY_OPS, 2 * n)) if with_history else {}
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
    with eim_serve(cfg, log) as proc:
        wait_healthz(port, proc, log, timeout=120)
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
            pages = _time_pages(c, auth, pages_of(eids, ids), runs) if ids else []
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
            "pages": pages,
        }


def store_pg(n: int, runs: int) -> dict[str, float] | None:
    """The dashboard's filtered lists and batch page in the PostgreSQL store alone (no HTTP): a private cluster
    (``demo.services.run_postgres``), ``n`` eUICCs spread like :func:`bench.fleet_summary._spread` with the same
    labels, 210,000 operations and a 10,000-item batch, ``ANALYZE``d; median of ``runs`` calls (more than five, so
    that PostgreSQL's generic plans of the prepared statements are what is timed). Then the contacts are made
    rare (0.1 % never seen, 0.05 % stale) and the state lists timed again (the sorted path). ``None`` without the
    PostgreSQL binaries."""
    import json
    import random
    import uuid

    from demo.services import ServiceUnavailable, run_postgres
    from eim.store import open_store
    from eim.store.fleet import StateFilter

    async def go(dsn: str) -> dict[str, float]:
        import asyncpg

        s = open_store(dsn)
        await s.open()  # migrations
        await s.close()
        eids = eids_for(n)
        now = time.time()
        rnd = random.Random(32)

        def euiccs() -> Any:
            for i, e in enumerate(eids):
                r = rnd.random()
                if r < 0.05:
                    contact = None
                elif r < 0.37:
                    contact = now - rnd.uniform(0, 3600)
                elif r < 0.69:
                    contact = now - rnd.uniform(3600, 86400)
                else:
                    contact = now - rnd.uniform(86400, 30 * 86400)
                labels = {"site": "berlin" if i % 10 == 0 else "paris"}
                if i % 10_000 == 3:
                    labels[RARE[0]] = RARE[1]
                interval = 600.0 if rnd.random() < 0.01 else None
                yield (e, "eim.bench", 0, "{}", json.dumps(labels), now, contact, interval)

        c = await asyncpg.connect(dsn)
        try:
            cols = ["eid", "eim_id", "counter_value", "info", "labels", "created_at", "last_contact", "poll_interval_s"]
            await c.copy_records_to_table("euiccs", records=euiccs(), columns=cols)
            await c.execute(
                "INSERT INTO euicc_labels (eid, key, value)"
                " SELECT e.eid, j.key, j.value FROM euiccs e, jsonb_each_text(e.labels::jsonb) AS j"
            )
            batch = str(uuid.uuid4())
            await c.execute(
                "INSERT INTO batches (id, created_at, created_by, kind, params) VALUES ($1, $2, 'b', 'psmo', '{}')",
                batch,
                now,
            )
            statuses = ["done"] * 16 + ["failed", "expired", "cancelled", "queued"]
            kinds = ["psmo", "eco", "download", "euicc_data"]

            def ops() -> Any:
                for i in range(HISTORY_OPS + BATCH_ITEMS):
                    b = i >= HISTORY_OPS
                    status = ("queued" if i % 10 else "done") if b else statuses[i % 20]
                    kind = "psmo" if b else kinds[(i // 20) % 4]
                    eid = eids[(i * 97) % n]
                    yield (str(uuid.uuid4()), eid, kind, "{}", status, now, now, "b", batch if b else None)

            cols = ["id", "eid", "kind", "params", "status", "created_at", "updated_at", "created_by", "batch_id"]
            await c.copy_records_to_table("operations", records=ops(), columns=cols)
            await c.execute(
                "INSERT INTO batch_items (batch_id, idx, eid, operation_id) SELECT batch_id,"
                " (ROW_NUMBER() OVER (ORDER BY seq) - 1)::int, eid, id FROM operations WHERE batch_id = $1",
                batch,
            )
            await c.execute("ANALYZE")
        finally:
            await c.close()

        out: dict[str, float] = {}
        s = open_store(dsn)
        await s.open()
        try:

            async def timed(name: str, call: Any) -> None:
                took = []
                for _ in range(runs + 1):
                    t = time.perf_counter()
                    await call()
                    took.append((time.perf_counter() - t) * 1000)
                out[name] = statistics.median(took[1:])

            t0 = time.time()
            await timed("label site=berlin", lambda: s.find_euiccs(labels=[("site", "berlin")], limit=50))
            await timed(f"label {RARE[0]}={RARE[1]}", lambda: s.find_euiccs(labels=[RARE], limit=50))
            both = [("site", "paris"), RARE]
            await timed("two labels", lambda: s.find_euiccs(labels=both, limit=50))
            for st in ("never_seen", "seen_1h", "seen_24h", "stale"):
                await timed(f"state {st}", lambda st=st: s.find_euiccs(state=StateFilter(st, t0), limit=50))
            rare_stale = StateFilter("stale", t0)
            await timed("label + state", lambda: s.find_euiccs(labels=[RARE], state=rare_stale, limit=50))
            await timed("batch page (counts + 100 items)", lambda: s.batch_page(batch, limit=100))
            await timed("batch + status done", lambda: s.list_operations(batch_id=batch, status="done", limit=100))
            await timed("kind eco", lambda: s.list_operations(kind="eco", limit=100))
            c = await asyncpg.connect(dsn)
            try:  # rare states: 0.1 % never seen, 0.05 % stale, the rest seen a minute ago
                await c.execute(
                    "UPDATE euiccs SET poll_interval_s = NULL, last_contact = CASE"
                    " WHEN abs(hashtext(eid)) % 2000 < 2 THEN NULL WHEN abs(hashtext(eid)) % 2000 = 2 THEN $2::float8"
                    " ELSE $1::float8 END",
                    t0 - 60,
                    t0 - 5 * 86400,
                )
                await c.execute("ANALYZE euiccs")
            finally:
                await c.close()
            for st in ("never_seen", "stale"):
                await timed(f"rare state {st}", lambda st=st: s.find_euiccs(state=StateFilter(st, t0), limit=50))
        finally:
            await s.close()
        return out

    try:
        with run_postgres() as pg:
            return asyncio.run(go(pg.dsn))
    except ServiceUnavailable:
        return None


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
    if f["pages"]:
        _pages_table(sec, f)
    if not quick:  # the store alone on PostgreSQL (about 2 minutes at 1,000,000 eUICCs)
        pg = store_pg(n, 12)
        sec.add("")
        if pg is None:
            sec.add("PostgreSQL store: not measured (no PostgreSQL server binaries on this machine).")
        else:
            sec.add(
                f"The same lists in the PostgreSQL store alone ({n:,} eUICCs, {HISTORY_OPS + BATCH_ITEMS:,} "
                "operations, `bench.dashboard.store_pg`), median of 12 calls after one:"
            )
            sec.add("")
            sec.table(["PostgreSQL store call (first page)", "ms"], [[k, v] for k, v in pg.items()])
            for k, v in pg.items():
                sec.figures[f"pg_{_slug(k)}_ms"] = v
    return sec


def _slug(what: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in what.lower()).strip("_")


def _pages_table(sec: Section, f: dict[str, Any]) -> None:
    """Every other page against the bar; each page's figures also as ``page_<what>_ms`` / ``api_<what>_ms``."""
    sec.add("")
    sec.add(
        "Every other page on the same registry with its operations history (`bench.dashboard.history`), median of "
        "the same number of requests; *REST twin* = what the page reads in-process, over HTTP with the bearer token."
    )
    sec.add("")
    rows = []
    for p in f["pages"]:
        sec.figures[f"page_{_slug(p['what'])}_ms"] = p["ms"]
        if p["api_ms"] is not None:
            sec.figures[f"api_{_slug(p['what'])}_ms"] = p["api_ms"]
        rows.append(
            [
                p["what"],
                f"`{p['path']}`",
                p["ms"],
                p["max_ms"],
                "-" if p["api_ms"] is None else p["api_ms"],
                f"{p['ms'] / BAR_MS:.2f}×",
            ]
        )
    sec.table(["page", "path", "ms", "slowest ms", "REST twin ms", "vs bar (200 ms)"], rows)
    worst = max(f["pages"], key=lambda p: p["ms"])
    sec.add(
        f"- Bar, slowest other dashboard page with {f['euiccs']:,} eUICCs ({worst['what']}): {worst['ms']:.1f} ms → "
        + versus(worst["ms"], BAR_MS, higher_is_better=False)
    )


if __name__ == "__main__":  # pragma: no cover - python -m bench --only dashboard is the way
    import sys

    print(run(quick="--quick" in sys.argv).markdown())
