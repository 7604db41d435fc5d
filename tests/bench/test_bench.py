"""Smoke tests of the benchmark suite: every benchmark runs in a tiny configuration and reports figures with the
right keys. No timing is asserted (house rule 6): only that the figures exist, are numbers, and that the work was
really done (requests answered without errors, downloads installed, bytes counted)."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOAD_KEYS = {
    "count",
    "elapsed",
    "rate",
    "p50_ms",
    "p99_ms",
    "requests",
    "errors",
    "server_cpu_s",
    "server_cpu_per_req_us",
    "server_rss_mb",
    "server_peak_rss_mb",
}


def _numbers(d: dict, keys: set[str]) -> None:
    missing = keys - d.keys()
    assert not missing, f"missing figures {missing}"
    for k in keys:
        assert isinstance(d[k], int | float) and math.isfinite(d[k]), (k, d[k])


@pytest.mark.parametrize("binding", ["http", "coap", "mqtt"])
def test_eim_throughput_tiny_sqlite(binding):
    from bench.eim import throughput

    sec = throughput(
        True, stores=("sqlite",), bindings=(binding,), sizes=(5,), duration=1.0, active=2, per_card=2, concurrency=2
    )
    fig = sec.figures[f"{binding}/sqlite/N=5"]
    for mode in ("poll", "psmo"):
        _numbers(fig[mode], LOAD_KEYS)
        assert fig[mode]["errors"] == 0, fig[mode]["first_error"]
        assert fig[mode]["count"] > 0
    assert fig["queued"] == 4
    assert "| " + binding + " | sqlite | 5 |" in sec.markdown()


def test_eim_throughput_tiny_postgresql_two_workers():
    from bench.eim import throughput

    sec = throughput(
        True, stores=("postgresql",), bindings=("http",), sizes=(5,), duration=1.0, active=2, per_card=2, concurrency=2
    )
    for key in ("http/postgresql/N=5", "http/postgresql/N=5/workers=2"):
        for mode in ("poll", "psmo"):
            fig = sec.figures[key][mode]
            _numbers(fig, LOAD_KEYS)
            assert fig["errors"] == 0, fig["first_error"]
            # where the CPU went over the measured window, and what PostgreSQL's backends were doing
            workers = [k for k in fig["cpu"] if k.startswith("eIM worker")]
            assert len(workers) == (2 if key.endswith("workers=2") else 1)
            _numbers(fig["cpu"], {"load generator", "kernel softirq", "idle", "busy", *workers})
            assert fig["cpu"]["busy"] > 0 and fig["cpu"]["load generator"] > 0
            assert fig["pg"] and abs(sum(fig["pg"].values()) - 1.0) < 1e-6
    text = sec.markdown()
    assert "two workers on PostgreSQL vs one" in text
    assert "Where the machine's CPU went" in text and "would need the CPU per request to fall by" in text


def test_store_variants_tiny():
    from bench.eim import store_variants

    sec = store_variants(True, n=6, duration=1.0, active=2, per_card=2, concurrency=2)
    for variant in ("default", "one-connection", "normal-sync"):
        for mode in ("poll", "psmo"):
            _numbers(sec.figures[variant][mode], LOAD_KEYS)
            assert sec.figures[variant][mode]["errors"] == 0, sec.figures[variant][mode]["first_error"]
            assert sec.figures[variant][mode]["count"] > 0


def test_fleet_tiny():
    from bench.eim import fleet_scale

    sec = fleet_scale(True, size=50, baseline=10, duration=1.0, concurrency=2, polled=10, many=50, repeats=2)
    for key in ("10/10/eim serve", "50/10/eim serve", "50/50/eim serve", "50/50/one connection"):
        fig = sec.figures[key]
        assert len(fig["runs"]) == 2
        for run in fig["runs"]:
            _numbers(run, LOAD_KEYS | {"rss_start_mb", "p999_ms", "max_ms"})
        _numbers(fig, {"p99_ms", "p99_min_ms", "p99_max_ms", "rate", "register_s", "db_mb", "errors"})
        assert fig["errors"] == 0
        assert fig["p99_min_ms"] <= fig["p99_ms"] <= fig["p99_max_ms"]
    assert "Bar, poll p99 with 50 vs 10 registered" in sec.markdown()


def test_fleet_summary_tiny():
    from bench.fleet_summary import run

    sec = run(True, size=500)
    f = sec.figures
    _numbers(f, {"fleet_ms", "label_page_ms", "ops_by_status_ms", "contact_batch_ms", "contact_batch_no_index_ms"})
    assert f["counts"]["registered"] == 500 and f["counts"]["seen_1h"] > 0 and f["counts"]["stale"] > 0
    assert "COVERING INDEX euiccs_contact" in f["plans"]["seen"]  # counted from the index, not the table
    assert "euiccs_poll_override" in f["plans"]["stale_own"] and "euiccs_poll_override" in f["plans"]["own_silent"]
    _numbers(f, {"contacts_ms", "tallies_ms", "hourly_ms", "by_binding_ms", "recount_s"})
    assert "operations_ended" in f["plans"]["ended"] and "operations_created" in f["plans"]["created"]
    assert sum(f["counts"]["by_sgp32_version"].values()) == 500 and f["counts"]["hourly_created"] > 0
    if isinstance(f["postgresql"], dict):  # PostgreSQL started by the benchmark (else a message why not)
        pg = f["postgresql"]["counts"]  # the same registry: the counts that do not move with the clock agree
        assert [pg[k] for k in ("registered", "by_sgp32_version", "smdps", "unknown_smdp")] == [
            f["counts"][k] for k in ("registered", "by_sgp32_version", "smdps", "unknown_smdp")
        ]
        assert "Index Only Scan using operations_ended" in f["postgresql"]["plans"]["ended"]
    assert "Bar, the whole fleet overview" in sec.markdown()


def test_serial_download_tiny():
    from bench.serial_download import run

    sec = run(True, baud=2_000_000, profiles=("ts48",), routes=("csim", "cgla"), blocks=(255,))
    for key in ("ts48/csim/255", "ts48/cgla/255"):
        f = sec.figures[key]
        _numbers(
            f, {"bpp_bytes", "es10_s", "apdus", "line_bytes", "payload_bytes", "lower_bound_s", "ratio", "line_ratio"}
        )
        assert f["bpp_bytes"] > 10_000 and f["apdus"] > f["bpp_bytes"] // 255
        assert f["line_bytes"] > 2 * f["payload_bytes"]  # hex on the line


def test_air_bytes():
    from bench.air import run

    sec = run(True)
    for binding in ("http", "coap", "mqtt"):
        for op in ("PSMO (getRAT)", "eUICC data request", "no-work poll"):
            f = sec.figures[f"{binding}/{op}"]
            _numbers(f, {"up", "down", "der_up", "der_down", "chunks", "connections"})
            assert f["up"] >= f["der_up"] and f["down"] >= f["der_down"]


def test_air_indirect_download_http():
    from bench.air_download import run

    sec = run(True, bindings=("http",))
    f = sec.figures["http"]
    _numbers(f, {"up", "down", "der_up", "der_down", "messages", "idle_polls_removed"})
    assert f["der_down"] > 12_000  # the bound profile package crossed
    assert f["up"] > f["der_up"] and f["down"] > f["der_down"]


def test_ipa_footprint_tiny():
    from bench.ipa_footprint import run

    sec = run(True, window=1.0)
    _numbers(
        sec.figures,
        {
            "rss_mb",
            "peak_rss_mb",
            "uss_mb",
            "polls",
            "cpu_per_poll_s",
            "import_s",
            "first_poll_s",
            "run_imports_s",
            "run_modules",
        },
    )
    assert sec.figures["polls"] > 0


def test_ipa_commands_tiny():
    """`ipa chip info` (--card and through the virtual modem) against the floor, one round; the report has the
    bar against the issue's 0.30 s."""
    from bench.ipa_commands import run

    sec = run(True, rounds=1)
    _numbers(sec.figures, {"floor_s", "card_s", "card_cpu_s", "modem_s", "modem_cpu_s", "card_no_bytecode_cache_s"})
    assert any(line.startswith("- Bar, `ipa --json --card STATE chip info`") for line in sec.lines)
    # the line time of the modem command, from the virtual modem's byte counters: a real exchange took place
    assert 0 < sec.figures["line_s"] < sec.figures["modem_s"]
    assert any(line.startswith("- The line itself, chip info, modem:") for line in sec.lines)


def test_smdpp_tiny():
    from bench.smdpp_download import run

    sec = run(True, downloads=1)
    for profile in ("ts48", "ts48-ppk", "large"):
        _numbers(sec.figures[profile], {"bpp_bytes", "per_s", "server_ms", "card_ms", "server_only_per_s"})


def test_report_and_cli(tmp_path):
    from bench.__main__ import main

    out = tmp_path / "perf.md"
    assert main(["--only", "smdpp", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## How to run" in text and "nproc" in text and "## 6. Lab SM-DP+" in text


def test_merge_replaces_only_the_sections_re_run(tmp_path):
    from bench.__main__ import main

    out = tmp_path / "perf.md"
    assert main(["--only", "smdpp", "--quick", "--out", str(out)]) == 0
    first = out.read_text()
    old_smdpp = first[first.index("## 6. Lab SM-DP+") :]
    # an earlier report with one more section, kept as it is
    kept = "## 2. Fleet scale\n\nkept text\n\n- Bar, kept bar → 1.00× bar (1.00) met\n\n"
    out.write_text(
        first.replace("## 6. Lab SM-DP+", kept + "## 6. Lab SM-DP+")
        + "\n## Findings: old\n\nold findings\n\n## 2b. Placed after the findings\n\nlate text\n"
    )
    assert main(["--only", "smdpp", "--quick", "--merge", str(out)]) == 0
    text = out.read_text()
    assert text.count("## 6. Lab SM-DP+") == 1 and text.count("## Machine and run") == 1
    assert "kept text" in text and "- 2: kept bar" in text  # the other section and its bar at a glance
    assert "- re-run and merged: smdpp at" in text
    assert "old findings" not in text  # findings come from bench/findings.md (none in --quick)
    # a numbered section placed after the findings is kept, and sections come in their numbers' order
    assert "late text" in text
    assert text.index("## 2. Fleet") < text.index("## 2b. Placed") < text.index("## 6. Lab SM-DP+")
    assert text[text.index("## 6. Lab SM-DP+") :] != old_smdpp  # the re-run's own figures


def test_coap_push_fanout_and_workers_tiny():
    import asyncio

    from bench.coap_push import fanout, workers

    row = asyncio.run(fanout(20))
    assert row["observers"] == 20 and row["still observing"] == 20  # every notification acknowledged, none lost
    assert row["bytes per observer (tracemalloc)"] > 0 and row["notifications/s"] > 0
    row = asyncio.run(workers(3))
    assert row["wake-ups"] == 3 and row["max ms"] >= row["worker A -> device at worker B, median ms"] > 0


def test_coap_push_air_tiny():
    from bench.coap_push import air

    rows = air(["coap"], 2.0)
    push, poll, computed = rows
    assert (push["mode"], poll["mode"]) == ("push", "poll") and computed["mode"].startswith("push, package")
    # a push costs the notification and its acknowledgement on top of the poll-driven flow
    assert push["datagrams"] == poll["datagrams"] + 2
    assert push["standing unit bytes"] > 0 and poll["standing unit bytes"] > 0


@pytest.mark.parametrize("binding", ["http", "coap", "mqtt"])
def test_ceiling_tiny(binding):
    """The eIM and the bare servers of the binding all answer the same no-work polls; the report has the bar."""
    from bench.ceiling import BARE, run

    sec = run(True, bindings=(binding,), rounds=1, duration=0.5, n=5, concurrency=2)
    per = sec.figures[binding]
    assert set(per) == {*BARE[binding], "eIM"}
    for runs in per.values():
        assert len(runs) == 1 and runs[0]["count"] > 0 and runs[0]["errors"] == 0
        _numbers(runs[0], LOAD_KEYS)
    assert any(line.startswith("- Bar, eIM / ") for line in sec.lines)
    assert any(line.startswith("- Steal (cores the hypervisor gave") for line in sec.lines)


def test_psmo_tiny():
    """Signed PSMO round trips against `eim serve` on SQLite, this tree and HEAD interleaved: every contender
    completes round trips without errors on its own copy of the store, and the report has the bar."""
    from bench.psmo import run

    sec = run(True, before="HEAD", rounds=2, duration=0.5, cards=4, concurrency=2)
    per = sec.figures["per"]
    assert set(per) == {"eIM", "eIM HEAD"}
    for runs in per.values():
        assert len(runs) == 2 and all(r["count"] > 0 and r["errors"] == 0 for r in runs)
        assert all(r["server_us_rt"] > 0 for r in runs)
        assert all(0.0 <= r["steal_cores"] <= 2.0 for r in runs)  # the machine has 2 CPUs
    assert len(sec.figures["disk"]) == 2 and all(d["rate"] > 0 for d in sec.figures["disk"])
    assert any(line.startswith("- Bar, signed PSMO round trips") for line in sec.lines)
    assert any(line.startswith("- before/after: eIM vs eIM HEAD") for line in sec.lines)


def test_smdpp_workers_tiny():
    from bench.es9_load import run

    sec = run(True, downloads=2, rounds=1)
    for w in (1, 2):
        figures = sec.figures[f"workers_{w}"]
        _numbers(figures, {"per_s", "server_cpu_ms", "load_cpu_ms", "p50_ms", "p99_ms"})
        # the server's CPU is read from /proc in clock ticks (10 ms): two downloads may stay under one tick
        assert figures["errors"] == 0 and figures["per_s"] > 0 and figures["server_cpu_ms"] >= 0
    text = sec.markdown()
    assert "- Bar, SM-DP+ server CPU per download (2 workers):" in text
    assert "needs an osmo-smdpp URL" in text


def test_tree_cpu_counts_a_worker_process_below_the_server():
    """How the SM-DP+ bench charges a multi-process server: the CPU of a child (a worker) counts for its parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from bench.es9_load import tree_cpu_seconds

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(30)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_seconds(parent.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(parent.pid) >= 0.25  # the parent itself only waits for its child
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_es9_load_client_against_a_url(tmp_path):
    """The comparison client against a server it did not start: a URL, its CA, an address map, orders through
    the operator API; the server's pid for its CPU."""
    import os
    import subprocess
    import sys

    from rsp.pki import create_lab_pki
    from smdpp.config import SmdppConfig
    from smdpp.server import running_server

    pki = create_lab_pki(tmp_path / "pki", curves=("nist",))
    config = SmdppConfig(data_dir=tmp_path / "data", pki_dir=pki.root, port=0, curves=("nist",))
    with running_server(config) as srv:
        port = srv.config.port
        argv = [sys.executable, "-m", "bench.es9_load", "--url", f"https://localhost:{port}"]
        argv += ["--resolve", f"localhost:{port}:127.0.0.1", "--address", srv.address, "--ca-file"]
        argv += [str(pki.root / "ca-bundle.pem"), "--orders-api", f"https://localhost:{port}", "--pki", str(pki.root)]
        argv += ["--downloads", "3", "--clients", "2", "--procs", "1", "--pid", str(os.getpid())]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        states = [o.state for o in srv.ctx.store.list()]
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[1].split()
    assert line[1:3] == ["3", "0"]  # 3 downloads done, no error
    assert float(line[3]) > 0 and float(line[6]) > 0  # downloads/s, server CPU ms per download
    assert states == ["installed"] * 3
    assert "needs" not in r.stdout and "osmo-smdpp too (--url)" in r.stdout
