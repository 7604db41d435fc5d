"""Complete profile downloads against any ES9+ server, with concurrent clients: downloads/s, p50/p99 and the
server's CPU per download.

Each download is the whole SGP.22 v2.5 §3.1.2-§3.1.3 / §3.5 exchange an LPA makes with an SM-DP+ over ES9+
(JSON over HTTPS, §6.5): initiateAuthentication -> authenticateClient -> getBoundProfilePackage ->
handleNotification (the ProfileInstallationResult), with a software eUICC (``euicc.card.SoftEuicc``, a fresh one
per download, ES10 commands executed in the load process) doing the card side between the calls and the Bound
Profile Package loaded segment by segment into it. A download counts only when the card installed the profile and
the SM-DP+ accepted the notification.

Against any ES9+ server (the server must trust the eUICC's CI):

    python -m bench.es9_load --url https://smdp.example:8443 --ca-file ca.pem [--insecure]
        [--resolve smdp.example:8443:127.0.0.1] [--address smdp.example:8443]
        (--matching-id ID | --orders-api URL [--profile ts48]) (--pki DIR [--curve nist] | --card STATE.json)
        [--clients 16] [--procs 2] [--downloads 200] [--pid PID ...]

``--matching-id``: the same matchingId for every download (osmocom's osmo-smdpp serves any matchingId that names
one of its profile files, again and again); ``--orders-api``: this project's operator API (``POST /v1/orders``)
creates one one-time order per download before the timed window (as ES2+ DownloadOrder would). ``--pki``: cards
issued by a lab PKI (``rsp pki init``); ``--card``: copies of a software eUICC state (``euicc new ...``, e.g. an
imported SGP.26 identity for a server that trusts only the SGP.26 test CI). ``--pid``: the server's process (its
children count too) for the CPU per download.

With ``--serve 1,2`` the bench starts this project's SM-DP+ itself (``smdpp serve --workers N`` over HTTPS with a
fresh lab PKI), once per worker count, and runs interleaved rounds against each. The 10x bar of issue 18 is
against osmocom pySim's osmo-smdpp measured by this same client in the same run: give its URL with ``--url``; the
last figure measured for it on this machine kind (15-17 downloads/s, issue 18) is printed as context only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import PY, REPO, percentile
from bench.es9_client import CardMaker, DownloadError, Target, download

OSMO_BASELINE = "15-17 downloads/s (issue 18: osmo-smdpp, same client, same machine kind; context only)"


def _load_process(target: Target, maker: CardMaker, matching_ids: list[str], clients: int, start_at: float, out):
    """One load process: ``clients`` coroutines share its matchingIds; cards are made before the start."""
    cards = [maker() for _ in matching_ids]
    tls = target.ssl_context()

    async def main() -> tuple[list[float], list[str], float]:
        latencies: list[float] = []
        errors: list[str] = []
        queue = list(zip(matching_ids, cards, strict=True))

        async def client() -> None:
            while queue:
                mid, card = queue.pop()
                try:
                    latencies.append((await download(target, card, mid, tls)).seconds)
                except (DownloadError, OSError, TimeoutError, ValueError, KeyError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.time()  # later than start_at when making the cards took longer than planned
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors, began

    cpu = time.process_time()
    latencies, errors, began = asyncio.run(main())
    out.put((latencies, errors, time.time(), time.process_time() - cpu, began))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants, plus what its waited-for children used."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    pids, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in pids:
                pids.add(child)
                todo.append(child)
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if p == pid else 0)) / ticks
    return total


@dataclass
class RunFigures:
    downloads: int
    errors: list[str]
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None  # server CPU per completed download
    load_cpu_ms: float  # load-process CPU (cards, TLS, HTTP) per completed download


def run_load(
    target: Target,
    maker: CardMaker,
    matching_ids: list[str],
    *,
    clients: int = 16,
    procs: int = 2,
    server_pids: tuple[int, ...] = (),
) -> RunFigures:
    """Run the downloads (one per matchingId) from ``procs`` load processes with ``clients`` clients in all."""
    procs = max(1, min(procs, len(matching_ids)))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5 + len(matching_ids) / procs * 0.003  # after the cards are made
    shares = [matching_ids[i::procs] for i in range(procs)]
    workers = [
        ctx.Process(target=_load_process, args=(target, maker, share, max(1, clients // procs), start_at, out))
        for share in shares
    ]
    for w in workers:
        w.start()
    while time.time() < start_at - 0.05:
        time.sleep(0.01)
    cpu0 = sum(tree_cpu_seconds(p) for p in server_pids)
    results = [out.get(timeout=600) for _ in workers]
    end = max(r[2] for r in results)
    cpu1 = sum(tree_cpu_seconds(p) for p in server_pids)
    load_cpu = sum(r[3] for r in results)  # includes the asyncio start-up, not the cards made before
    for w in workers:
        w.join()
    latencies = [x for r in results for x in r[0]]
    errors = [x for r in results for x in r[1]]
    seconds = max(1e-9, end - min(r[4] for r in results))
    n = len(latencies)
    return RunFigures(
        downloads=n,
        errors=errors,
        seconds=seconds,
        per_s=n / seconds,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        server_cpu_ms=(cpu1 - cpu0) * 1000 / n if server_pids and n else None,
        load_cpu_ms=load_cpu * 1000 / n if n else 0.0,
    )


def create_orders(orders_api: str, target: Target, n: int, profile: str) -> list[str]:
    """``n`` one-time orders through this project's operator API (``POST /v1/orders``); their matchingIds."""
    import httpx

    verify: ssl.SSLContext | bool = target.ssl_context() or False
    mids = []
    with httpx.Client(base_url=orders_api, verify=verify, timeout=30) as http:
        for _ in range(n):
            r = http.post("/v1/orders", json={"profile": profile, "smdp_address": target.smdp_address})
            if r.status_code != 201:
                raise SystemExit(f"order create: HTTP {r.status_code}: {r.text[:200]}")
            mids.append(r.json()["matching_id"])
    return mids


def start_own_server(pki_dir: Path, data_dir: Path, workers: int, curve: str) -> tuple[subprocess.Popen, Target]:
    """``smdpp serve --workers N`` over HTTPS on a free port with its own data directory."""
    from demo.services import free_port, wait_port

    port = free_port()
    argv = [PY, "-m", "smdpp", "serve", "--pki", str(pki_dir), "--data", str(data_dir), "--port", str(port)]
    argv += ["--curve", curve, "--workers", str(workers)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(port, 30):
        proc.kill()
        raise SystemExit(f"smdpp serve --workers {workers} did not listen on port {port}")
    time.sleep(0.5 * workers)  # every worker up (the first one listening is not all of them)
    return proc, Target(url=f"https://127.0.0.1:{port}", ca_file=str(pki_dir / "ca-bundle.pem"))


def _line(label: str, f: RunFigures) -> str:
    cpu = f"{f.server_cpu_ms:.2f}" if f.server_cpu_ms is not None else "-"
    return (
        f"{label:<22} {f.downloads:>5} {len(f.errors):>4} {f.per_s:>8.1f} {f.p50_ms:>8.1f} {f.p99_ms:>8.1f} "
        f"{cpu:>9} {f.load_cpu_ms:>8.2f}"
    )


HEADER = (
    f"{'server':<22} {'done':>5} {'errs':>4} {'dl/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'srv CPU ms':>9} {'load ms':>8}"
)


def compare_own(
    worker_counts: tuple[int, ...], *, rounds: int, downloads: int, clients: int, procs: int, curve: str, profile: str
) -> dict[int, list[RunFigures]]:
    """Start ``smdpp serve --workers N`` for each N, then ``rounds`` interleaved rounds of ``downloads`` each."""
    from rsp.pki import create_lab_pki

    results: dict[int, list[RunFigures]] = {n: [] for n in worker_counts}
    with tempfile.TemporaryDirectory() as tmp:
        pki = create_lab_pki(Path(tmp) / "pki", curves=(curve,))
        maker = CardMaker(str(pki.root), curve)
        servers = {n: start_own_server(pki.root, Path(tmp) / f"data{n}", n, curve) for n in worker_counts}
        try:
            for _proc, target in servers.values():  # warm-up: imports, caches, TLS session set-up
                run_load(target, maker, create_orders(target.url, target, 4, profile), clients=2, procs=1)
            print(HEADER, flush=True)
            for r in range(rounds):
                order = list(worker_counts) if r % 2 == 0 else list(reversed(worker_counts))
                for n in order:
                    proc, target = servers[n]
                    mids = create_orders(target.url, target, downloads, profile)
                    f = run_load(target, maker, mids, clients=clients, procs=procs, server_pids=(proc.pid,))
                    results[n].append(f)
                    print(_line(f"round {r + 1} workers={n}", f), flush=True)
                    for e in f.errors[:3]:
                        print(f"    error: {e}", flush=True)
        finally:
            for proc, _target in servers.values():
                proc.terminate()
            for proc, _target in servers.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return results


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="ES9+ base URL (https://host:port)")
    ap.add_argument("--ca-file", help="PEM bundle to verify the server's TLS certificate")
    ap.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    ap.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDR", help="connect there instead")
    ap.add_argument("--address", default="", help="SM-DP+ address sent in initiateAuthentication (default host:port)")
    ap.add_argument("--matching-id", help="the same matchingId for every download")
    ap.add_argument("--orders-api", help="create one order per download with POST <URL>/v1/orders")
    ap.add_argument("--profile", default="ts48", help="profile of the created orders (default ts48)")
    ap.add_argument("--pki", help="lab PKI directory of the cards (rsp pki init)")
    ap.add_argument("--card", help="software eUICC state file to copy for every download (euicc new ...)")
    ap.add_argument("--curve", default="nist", choices=("nist", "brainpool"))
    ap.add_argument("--clients", type=int, default=16, help="concurrent downloads in all (default 16)")
    ap.add_argument("--procs", type=int, default=2, help="load processes (default 2)")
    ap.add_argument("--downloads", type=int, default=200, help="downloads per run (default 200)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds with --serve (default 3)")
    ap.add_argument("--pid", type=int, action="append", default=[], help="server process (with its children)")
    ap.add_argument("--serve", help="start this project's SM-DP+ with these worker counts, e.g. 1,2")
    args = ap.parse_args(argv)

    if args.serve:
        counts = tuple(int(x) for x in args.serve.split(","))
        print(
            f"lab SM-DP+ (smdpp serve --workers N, HTTPS, SQLite), {args.downloads} downloads of {args.profile} per "
            f"round, {args.clients} clients in {args.procs} load processes, curve {args.curve}, {os.cpu_count()} CPUs"
        )
        res = compare_own(
            counts,
            rounds=args.rounds,
            downloads=args.downloads,
            clients=args.clients,
            procs=args.procs,
            curve=args.curve,
            profile=args.profile,
        )
        print("\nmedians over the rounds:")
        base = _median([f.per_s for f in res[counts[0]]])
        for n, fs in res.items():
            rate = _median([f.per_s for f in fs])
            cpu = _median([f.server_cpu_ms or 0.0 for f in fs])
            print(
                f"  workers={n}: {rate:.1f} downloads/s ({rate / base:.2f}x of workers={counts[0]}), "
                f"server CPU {cpu:.2f} ms per download ({cpu / 6.0:.2f}x of the 6 ms bar), "
                f"p50 {_median([f.p50_ms for f in fs]):.0f} ms, p99 {_median([f.p99_ms for f in fs]):.0f} ms"
            )
        print(f"  10x bar (issue 18) against osmo-smdpp: needs an osmo-smdpp URL: --url. Last known: {OSMO_BASELINE}")
        return 0

    if not args.url:
        ap.error("give --url (an ES9+ server) or --serve 1,2")
    if not (args.matching_id or args.orders_api):
        ap.error("give --matching-id or --orders-api")
    if not (args.pki or args.card):
        ap.error("give --pki or --card (the cards' identity)")
    resolve = []
    for item in args.resolve:
        host, port, addr = item.rsplit(":", 2)
        resolve.append((host, int(port), addr))
    target = Target(args.url, args.ca_file, args.insecure, tuple(resolve), args.address)
    maker = CardMaker(args.pki, args.curve, args.card)
    if args.orders_api:
        mids = create_orders(args.orders_api, target, args.downloads, args.profile)
    else:
        mids = [args.matching_id] * args.downloads
    f = run_load(target, maker, mids, clients=args.clients, procs=args.procs, server_pids=tuple(args.pid))
    print(HEADER)
    print(_line(target.url[:22], f))
    for e in f.errors[:5]:
        print(f"    error: {e}")
    print(f"  10x bar (issue 18): run this client against osmo-smdpp too (--url). Last known: {OSMO_BASELINE}")
    return 0 if f.downloads else 1


if __name__ == "__main__":
    sys.exit(main())


def run(quick: bool = False, *, downloads: int | None = None, rounds: int | None = None):
    """Benchmark 6b for ``python -m bench``: this SM-DP+ with 1 and 2 worker processes over HTTPS, interleaved
    rounds of complete downloads by this client; CPU per download against the 6 ms bar of issue 18."""
    from bench.common import Section, fmt, versus

    n = downloads or (20 if quick else 300)
    k = rounds or (1 if quick else 5)
    sec = Section("smdpp_workers", "6b. Lab SM-DP+ over HTTPS: 1 and 2 worker processes")
    res = compare_own((1, 2), rounds=k, downloads=n, clients=16, procs=2, curve="nist", profile="ts48")
    rows = []
    med: dict[int, dict[str, float]] = {}
    for w, fs in res.items():
        for i, f in enumerate(fs):
            rows.append([f"round {i + 1}", w, f.downloads, len(f.errors), f.per_s, f.p50_ms, f.p99_ms])
            rows[-1] += [f.server_cpu_ms or 0.0, f.load_cpu_ms]
        med[w] = {
            "per_s": _median([f.per_s for f in fs]),
            "server_cpu_ms": _median([f.server_cpu_ms or 0.0 for f in fs]),
            "load_cpu_ms": _median([f.load_cpu_ms for f in fs]),
            "p50_ms": _median([f.p50_ms for f in fs]),
            "p99_ms": _median([f.p99_ms for f in fs]),
            "errors": sum(len(f.errors) for f in fs),
        }
    sec.figures = {f"workers_{w}": m for w, m in med.items()}
    sec.figures["scaling"] = med[2]["per_s"] / med[1]["per_s"] if med[1]["per_s"] else 0.0
    sec.add(
        "The lab SM-DP+ with `--workers` 1 and 2 (HTTPS, SQLite, curve nist, ts48 profile ~12.7 KB BPP) started "
        "by the bench, "
        f"{k} interleaved rounds of {n} complete downloads each (`bench/es9_load.py`: initiateAuthentication, "
        "authenticateClient, getBoundProfilePackage with the BPP loaded into a fresh software eUICC, "
        "handleNotification; one TLS connection per download), 16 concurrent downloads from 2 load processes, "
        "orders created through the operator API before each round. *server CPU ms* = CPU of the `serve` process "
        "and its workers over the round / downloads; *load ms* = the load processes' CPU (cards, TLS, HTTP) per "
        "download. Server and load share the machine's cores (no pinning): with 2 cores, the load's own CPU is "
        "the larger share, so downloads/s is bounded by the machine, not by one SM-DP+ process."
    )
    sec.add("")
    sec.table(
        ["round", "workers", "downloads", "errors", "downloads/s", "p50 ms", "p99 ms", "server CPU ms", "load ms"],
        rows,
    )
    for w, m in med.items():
        sec.add(
            f"- workers={w}: median {fmt(m['per_s'])} downloads/s, server CPU {m['server_cpu_ms']:.2f} ms per "
            f"download, load {m['load_cpu_ms']:.2f} ms, p50 {fmt(m['p50_ms'])} ms, p99 {fmt(m['p99_ms'])} ms"
        )
    sec.add(f"- 2 workers / 1 worker: {sec.figures['scaling']:.2f}× downloads/s (median of the rounds)")
    sec.add(
        f"- Bar, SM-DP+ server CPU per download (2 workers): {med[2]['server_cpu_ms']:.2f} ms → "
        + versus(med[2]["server_cpu_ms"], 6.0, higher_is_better=False)
    )
    sec.add(
        "- Bar, complete downloads/s ≥ 10× osmo-smdpp in the same run: **not measured** (needs an osmo-smdpp URL: "
        f"`python -m bench.es9_load --url ...`); last known: {OSMO_BASELINE}"
    )
    return sec
