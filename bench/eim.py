"""Benchmarks 1 and 2: eIM ESipa throughput per binding and per store, worker scaling, and fleet scale.

Setup (this process): a lab PKI; a store (SQLite file, or a fresh database on a private PostgreSQL cluster) with
N registered eUICCs bulk-inserted; for the PSMO runs, software eUICCs associated with the eIM (AddInitialEim on
the card, association token and counter in the registry, certificates learned) and signed PSMOs queued through
``OperationService.create_batch`` (the operator path). Then an eIM worker process (:mod:`bench.eim_server`) and a
load process (:mod:`bench.eim_load`) that are measured from outside: requests/s, p50/p99, server CPU and RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, Section, cpu_seconds, fmt, peak_rss_mb, rss_mb, versus

EIM_ID = "eim.bench"
PSMO = {"psmos": [{"getRAT": {}}]}
BINDINGS = ("http", "coap", "mqtt")


def eids_for(n: int, start: int = 1) -> list[str]:
    from rsp.pki import lab_eid

    return [lab_eid(i) for i in range(start, start + n)]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ store setup
async def new_pg_database(dsn: str) -> str:
    import uuid

    import asyncpg

    name = "bench_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


COLUMNS = ("eid", "eim_id", "association_token", "counter_value", "info", "labels", "created_at")


async def bulk_register(url: str, eids: list[str]) -> float:
    """Insert registry rows directly (one transaction, the driver's fastest path); returns seconds taken."""
    from eim.store import open_store

    s = open_store(url)
    await s.open()  # migrations
    await s.close()
    now = time.time()
    t = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO euiccs ({', '.join(COLUMNS)}) VALUES (?, ?, NULL, 0, '{{}}', '{{}}', ?)",
            ((e, EIM_ID, now) for e in eids),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.copy_records_to_table(
                "euiccs", records=((e, EIM_ID, None, 0, "{}", "{}", now) for e in eids), columns=list(COLUMNS)
            )
            await conn.execute("ANALYZE euiccs")
        finally:
            await conn.close()
    return time.perf_counter() - t


class Fleet:
    """The software eUICCs of the PSMO runs (state files the load process loads) and the eIM objects."""

    def __init__(self, url: str, pki_dir: Path, cards_dir: Path) -> None:
        self.url = url
        self.pki_dir = pki_dir
        self.cards_dir = cards_dir
        self.cards: list[tuple[str, str]] = []

    async def associate(self, eids: list[str]) -> None:
        """Create cards, AddInitialEim with this eIM's key, register them with token/counter/certificates."""
        from euicc import state as state_mod
        from euicc.card import SoftEuicc
        from euicc.channel import LocalApduChannel
        from ipa.es10 import Es10Client
        from rsp import asn1
        from rsp.pki import LabPki

        lab = LabPki.load(self.pki_dir)
        env = await self._env()
        spki = asn1.decode("SubjectPublicKeyInfo", env["key"].public_key_spki())
        for eid in eids:
            card = SoftEuicc.create(lab.root, eid, None)
            es10 = Es10Client(LocalApduChannel(card))
            await es10.open()
            request = asn1.encode(
                "AddInitialEimRequest",
                {
                    "eimConfigurationDataList": [
                        {
                            "eimId": EIM_ID,
                            "eimFqdn": "127.0.0.1",
                            "counterValue": 1,
                            "associationToken": -1,
                            "eimPublicKeyData": ("eimPublicKey", spki),
                        }
                    ]
                },
            )
            alt, value = asn1.decode("AddInitialEimResponse", await es10.call(request, "AddInitialEim"))
            if alt != "addInitialEimOk":
                raise RuntimeError(f"AddInitialEim refused: {value}")
            token = value[0][1]
            certs = await es10.get_certs()
            await env["service"].register_euicc(eid, eim_id=EIM_ID, association_token=token, counter_value=1)
            await env["store"].set_euicc_certificates(eid, certs.euicc_certificate, certs.eum_certificate)
            path = self.cards_dir / f"{eid}.state"
            state_mod.save(card.state, path)
            self.cards.append((eid, str(path)))
        await env["store"].close()

    async def _env(self) -> dict[str, Any]:
        from eim.operations import OperationService, OperationSettings
        from eim.packages import EimKey, PackageFactory
        from eim.store import open_store
        from rsp.pki import LabPki

        lab = LabPki.load(self.pki_dir)
        store = open_store(self.url)
        await store.open()
        key = EimKey(EIM_ID, lab.eim_key("nist"), lab.eim_cert("nist"))
        return {
            "store": store,
            "key": key,
            "service": OperationService(store, PackageFactory(key), OperationSettings()),
        }

    async def queue(self, per_card: int) -> tuple[int, float]:
        """Queue ``per_card`` PSMOs for every card through the operator path; returns (count, seconds)."""
        env = await self._env()
        eids = [e for e, _ in self.cards]
        t = time.perf_counter()
        for _ in range(per_card):
            await env["service"].create_batch(eids, "psmo", PSMO)
        took = time.perf_counter() - t
        await env["store"].close()
        return per_card * len(eids), took


# ------------------------------------------------------------------------------------------------ processes
@contextlib.contextmanager
def eim_workers(
    binding: str,
    url: str,
    pki_dir: Path,
    *,
    workers: int = 1,
    mqtt_port: int = 0,
    variant: str = "default",
    impl: str = "serve",
) -> Iterator[dict]:
    """Start ``workers`` eIM processes serving ``binding``; yields {"ports", "pids"}.

    ``impl="serve"``: the real ``eim --config FILE serve`` (HTTP always on for the operator API, plus the CoAP or
    MQTT binding; several HTTP workers listen on one port each - the load spreads its connections over them, as a
    load balancer would). ``impl="bench"``: :mod:`bench.eim_server`, the same dispatcher without the operator API,
    metrics and sweeper, which can run the what-if store variants; its HTTP workers share one listening socket."""
    if variant != "default":
        impl = "bench"
    procs: list[subprocess.Popen] = []
    listener = None
    ports: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-eimcfg-"))
    try:
        if impl == "serve":
            coap_port = free_port(socket.SOCK_DGRAM)
            for w in range(workers):
                http_port = free_port()
                cfg = tmp / f"eim-{w}.toml"
                cfg.write_text(
                    f'[eim]\neim_id = "{EIM_ID}"\ndata_dir = "{tmp / f"data-{w}"}"\nlab_pki = "{pki_dir}"\n'
                    f'curve = "nist"\n[store]\nurl = "{url}"\n[http]\nport = {http_port}\n'
                    f"[coap]\nenabled = {'true' if binding == 'coap' else 'false'}\nport = {coap_port}\n"
                    f"[mqtt]\nenabled = {'true' if binding == 'mqtt' else 'false'}\nport = {mqtt_port or 1883}\n"
                    f'client_id = "eim-bench-{w}"\n[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
                )
                procs.append(
                    subprocess.Popen(
                        [PY, "-m", "eim.cli", "--config", str(cfg), "serve"],
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=open(tmp / f"eim-{w}.log", "wb"),
                    )
                )
                ports.append(http_port)
            if binding == "coap":
                ports = [coap_port]
            elif binding == "mqtt":
                ports = [mqtt_port]
            asyncio.run(_wait_serving(binding, ports, procs, tmp))
        else:
            common = [
                PY,
                "-m",
                "bench.eim_server",
                "--store",
                url,
                "--pki",
                str(pki_dir),
                "--binding",
                binding,
                "--store-variant",
                variant,
            ]
            if binding == "http":
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", 0))
                listener.listen(4096)
                listener.set_inheritable(True)
                ports = [listener.getsockname()[1]]
                for w in range(workers):
                    procs.append(
                        subprocess.Popen(
                            [*common, "--fd", str(listener.fileno()), "--worker", str(w)],
                            stdout=subprocess.PIPE,
                            cwd=REPO,
                            pass_fds=(listener.fileno(),),
                        )
                    )
            elif binding == "coap":
                ports = [free_port(socket.SOCK_DGRAM)]
                procs.append(subprocess.Popen([*common, "--port", str(ports[0])], stdout=subprocess.PIPE, cwd=REPO))
            else:
                ports = [mqtt_port]
                for w in range(workers):
                    procs.append(
                        subprocess.Popen(
                            [*common, "--mqtt-port", str(mqtt_port), "--worker", str(w)],
                            stdout=subprocess.PIPE,
                            cwd=REPO,
                        )
                    )
            for p in procs:
                line = _readline(p, 60)
                if line.strip() != "READY":
                    raise RuntimeError(f"eIM worker did not start (said {line!r})")
        yield {"ports": ports, "pids": [p.pid for p in procs], "impl": impl}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if listener is not None:
            listener.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _logs(tmp: Path) -> str:
    return " | ".join(f.read_text()[-800:] for f in sorted(tmp.glob("eim-*.log")))


async def _wait_serving(binding: str, ports: list[int], procs: list[subprocess.Popen], tmp: Path) -> None:
    """Until every worker answers a GetEimPackage for an unknown EID (eidNotFound) on ``binding``."""
    from bench.eim_load import CoapEndpoint, HttpClient, MqttPool, get_eim_package_request

    probe = get_eim_package_request("89999000000000000000000000000000")
    deadline = time.monotonic() + 60
    pending = list(ports) if binding == "http" else [ports[0]]
    while pending:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"eim serve did not start: {_logs(tmp)}")
        port = pending[0]
        try:
            if binding == "http":
                c = HttpClient("127.0.0.1", port)
                await c.connect()
                await c.request(probe)
                await c.close()
            elif binding == "coap":
                loop = asyncio.get_running_loop()
                transport, ep = await loop.create_datagram_endpoint(CoapEndpoint, remote_addr=("127.0.0.1", port))
                try:
                    await ep.request(probe, 0.5)
                finally:
                    transport.close()
            else:
                pool = MqttPool("127.0.0.1", port, 1)
                await pool.start()
                try:
                    for _ in range(len(procs) * 3):  # the shared subscription spreads the probes over the workers
                        await pool.request("89999000000000000000000000000000", probe, 0, 2.0)
                finally:
                    await pool.close()
            pending.pop(0)
        except (OSError, TimeoutError, RuntimeError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.1)
        except Exception:
            await asyncio.sleep(0.1)


def _readline(p: subprocess.Popen, timeout: float) -> str:
    import select

    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            return p.stdout.readline().decode(errors="replace")
        if p.poll() is not None:
            return f"<exited {p.returncode}>"
    return "<timeout>"


def run_load(cfg: dict[str, Any], pids: list[int]) -> dict[str, Any]:
    """Run the load process; measures the workers' CPU and RSS around it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            [PY, "-m", "bench.eim_load", f.name],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=cfg["duration"] + 120,
        )
    finally:
        os.unlink(f.name)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"load process failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    result["server_cpu_s"] = cpu
    result["server_cpu_per_req_us"] = cpu / max(1, result["requests"]) * 1e6 if result["requests"] else 0.0
    result["server_rss_mb"] = sum(rss_mb(p) for p in pids)
    result["server_peak_rss_mb"] = sum(peak_rss_mb(p) for p in pids)
    result["wall_s"] = wall
    return result


# ------------------------------------------------------------------------------------------------ suite
def _store_url(kind: str, tmp: Path, pg: Any, tag: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/{tag}.db"
    return asyncio.run(new_pg_database(pg.dsn))


@contextlib.contextmanager
def services(stores: tuple[str, ...], bindings: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    from demo.services import run_mosquitto, run_postgres

    with contextlib.ExitStack() as stack:
        out: dict[str, Any] = {}
        if "postgresql" in stores:
            out["pg"] = stack.enter_context(run_postgres())
        if "mqtt" in bindings:
            out["broker"] = stack.enter_context(run_mosquitto())
        yield out


def throughput(
    quick: bool = False,
    *,
    stores=("sqlite", "postgresql"),
    bindings=BINDINGS,
    sizes=(100, 10_000),
    duration: float | None = None,
    active: int | None = None,
    per_card: int | None = None,
    concurrency: int = 64,
) -> Section:
    from rsp.pki import create_lab_pki

    sec = Section("eim", "1. eIM ESipa throughput (per binding, per store)")
    duration = duration or (2.0 if quick else 5.0)
    rows: list[list[Any]] = []
    figures: dict[str, Any] = {}
    active = active or (20 if quick else 100)
    per_card = per_card or (10 if quick else 30)
    with tempfile.TemporaryDirectory(prefix="bench-eim-") as tmpd, services(stores, bindings) as svc:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        for store in stores:
            for n in sizes:
                url = _store_url(store, tmp, svc.get("pg"), f"{store}-{n}")
                fleet_eids = eids_for(n, start=1_000_001)
                cards_dir = tmp / f"cards-{store}-{n}"
                cards_dir.mkdir()
                fleet = Fleet(url, pki.root, cards_dir)
                asyncio.run(fleet.associate(eids_for(max(1, min(active, n // 2)), start=1)))
                reg_s = asyncio.run(bulk_register(url, fleet_eids[: n - len(fleet.cards)]))
                # polls go to the eUICCs without queued work (the PSMO cards may still have some left)
                poll_eids = fleet_eids[: n - len(fleet.cards)]
                for binding in bindings:
                    mqtt_port = svc["broker"].port if binding == "mqtt" else 0
                    worker_counts = (
                        (1, 2) if (store == "postgresql" and binding in ("http", "mqtt") and n == sizes[-1]) else (1,)
                    )
                    for workers in worker_counts:
                        key = f"{binding}/{store}/N={n}" + (f"/workers={workers}" if workers > 1 else "")
                        with eim_workers(binding, url, pki.root, workers=workers, mqtt_port=mqtt_port) as w:
                            conc = concurrency
                            poll = run_load(
                                {
                                    "binding": binding,
                                    "ports": w["ports"],
                                    "mode": "poll",
                                    "eids": poll_eids,
                                    "concurrency": conc,
                                    "duration": duration,
                                },
                                w["pids"],
                            )
                            queued, q_s = asyncio.run(fleet.queue(per_card))
                            psmo = run_load(
                                {
                                    "binding": binding,
                                    "ports": w["ports"],
                                    "mode": "psmo",
                                    "cards": fleet.cards,
                                    "concurrency": min(conc, len(fleet.cards)),
                                    "duration": duration,
                                },
                                w["pids"],
                            )
                        figures[key] = {
                            "poll": poll,
                            "psmo": psmo,
                            "queued": queued,
                            "queue_s": q_s,
                            "register_s": reg_s,
                        }
                        rows.append(
                            [
                                binding,
                                store,
                                n,
                                workers,
                                poll["rate"],
                                poll["p50_ms"],
                                poll["p99_ms"],
                                poll["server_cpu_per_req_us"],
                                psmo["rate"],
                                psmo["p50_ms"],
                                psmo["p99_ms"],
                                psmo["server_cpu_per_req_us"],
                                poll["errors"] + psmo["errors"],
                                poll["server_peak_rss_mb"],
                            ]
                        )
                        print(
                            f"  eim {key}: poll {poll['rate']:.0f}/s p99 {poll['p99_ms']:.1f} ms; "
                            f"psmo {psmo['rate']:.0f}/s p99 {psmo['p99_ms']:.1f} ms; errors "
                            f"{poll['errors']}+{psmo['errors']} {poll['first_error'] or psmo['first_error']}",
                            flush=True,
                        )
    sec.figures = figures
    sec.add(
        "The eIM is the real `eim --config FILE serve` process (store migrations, ESipa dispatcher, operator "
        "API and metrics in the same worker, relay off), one per worker; two HTTP workers listen on a port each "
        "and the load spreads its connections over both (what a load balancer does); two MQTT workers share the "
        "`$share/eim/...` subscription. Store: SQLite file (WAL, synchronous FULL) or a fresh database on a "
        "private PostgreSQL cluster started like the tests' (`fsync=off`: PostgreSQL figures exclude the WAL "
        "flush that SQLite pays on every commit)."
    )
    sec.add("")
    sec.add(
        f"Each cell: {duration:.0f} s of load after a 1 s warm-up, 64 concurrent simulated IPAs in one separate "
        "process (HTTP: 64 keep-alive connections; CoAP: 64 raw-UDP endpoints; MQTT: 64 IPAs over 4 broker "
        "connections, QoS 1). *no-work poll*: GetEimPackage for registered eUICCs with an empty queue. "
        f"*PSMO round trip*: min({active}, N/2) software eUICCs with {per_card} more queued signed "
        "PSMOs (getRAT) each: GetEimPackage (claim + eIM signature) -> LoadEuiccPackage on the card -> "
        "ProvideEimPackageResult (signature verified with the eUICC certificate, result recorded) -> "
        "acknowledgement checked; the round-trip rate counts complete round trips (2 ESipa requests each; the "
        "card's work runs in the load process). Server CPU per request = eIM worker CPU / ESipa requests. "
        "With 64 IPAs in flight the p50/p99 of a saturated worker are mostly queueing (64 / rate); section 2 "
        "gives a poll's latency at light load."
    )
    sec.add("")
    sec.table(
        [
            "binding",
            "store",
            "N",
            "workers",
            "polls/s",
            "p50 ms",
            "p99 ms",
            "CPU µs/req",
            "PSMO rt/s",
            "p50 ms",
            "p99 ms",
            "CPU µs/req",
            "errors",
            "peak RSS MB",
        ],
        rows,
    )
    http = figures.get(f"http/sqlite/N={sizes[0]}")
    if http:
        sec.add(
            f"- Bar, no-work polls over HTTP + SQLite: {fmt(http['poll']['rate'])}/s → "
            f"{versus(http['poll']['rate'], 2000)}"
        )
        sec.add(
            f"- Bar, PSMO round trips over HTTP + SQLite: {fmt(http['psmo']['rate'])}/s → "
            f"{versus(http['psmo']['rate'], 500)}"
        )
    for b in ("http", "mqtt"):
        one = figures.get(f"{b}/postgresql/N={sizes[-1]}")
        two = figures.get(f"{b}/postgresql/N={sizes[-1]}/workers=2")
        if one and two:
            for mode in ("poll", "psmo"):
                r = two[mode]["rate"] / max(1e-9, one[mode]["rate"])
                sec.add(
                    f"- Bar, two workers on PostgreSQL vs one ({mode}, {b.upper()}, N={sizes[-1]:,}): "
                    f"{fmt(two[mode]['rate'])} / {fmt(one[mode]['rate'])} = {r:.2f}× → {versus(r, 1.6)}"
                )
    q = [f for f in figures.values()]
    if q:
        rate = sum(f["queued"] for f in q) / max(1e-9, sum(f["queue_s"] for f in q))
        sec.add(
            f"- Queueing PSMOs through `OperationService.create_batch` (one batch per round over all cards): "
            f"{fmt(rate)} operations/s on average."
        )
    return sec


def fleet_scale(
    quick: bool = False,
    *,
    size: int = 1_000_000,
    baseline: int = 1_000,
    duration: float | None = None,
    concurrency: int = 8,
    variants: tuple[str, ...] = ("contact-batch",),
) -> Section:
    """N registered eUICCs (bulk insert): eIM RSS and no-work poll p99 against a 1,000-eUICC registry.

    8 concurrent IPAs (not 64): the latency of a poll, not the queue in front of a saturated server. Each size is
    also run with the what-if store ``variants`` (:mod:`bench.whatif`, served by :mod:`bench.eim_server`)."""
    import random

    from rsp.pki import create_lab_pki

    sec = Section("fleet", "2. Fleet scale")
    duration = duration or (2.0 if quick else 5.0)
    rows = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmpd:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        for n in (baseline, size):
            url = f"sqlite:///{tmp}/fleet-{n}.db"
            t = time.perf_counter()
            eids = eids_for(n, start=1)
            gen_s = time.perf_counter() - t
            reg_s = asyncio.run(bulk_register(url, eids))
            sample = random.Random(n).sample(eids, min(len(eids), 20_000))
            del eids
            db_mb = os.path.getsize(url.split("sqlite:///", 1)[1]) / 1024 / 1024
            for variant in ("default", *variants):
                with eim_workers("http", url, pki.root, variant=variant) as w:
                    rss_start = rss_mb(w["pids"][0])
                    poll = run_load(
                        {
                            "binding": "http",
                            "ports": w["ports"],
                            "mode": "poll",
                            "eids": sample,
                            "concurrency": concurrency,
                            "duration": duration,
                        },
                        w["pids"],
                    )
                key = str(n) if variant == "default" else f"{n}/{variant}"
                server = "eim serve" if variant == "default" else f"what-if: {variant}"
                figures[key] = {
                    **poll,
                    "rss_start_mb": rss_start,
                    "register_s": reg_s,
                    "db_mb": db_mb,
                    "eid_gen_s": gen_s,
                }
                rows.append(
                    [
                        n,
                        server,
                        reg_s,
                        db_mb,
                        rss_start,
                        poll["server_peak_rss_mb"],
                        poll["rate"],
                        poll["p50_ms"],
                        poll["p99_ms"],
                        poll["errors"],
                    ]
                )
                print(
                    f"  fleet N={n} {variant}: insert {reg_s:.1f} s, RSS {rss_start:.0f}->"
                    f"{poll['server_peak_rss_mb']:.0f} MB, polls {poll['rate']:.0f}/s p99 {poll['p99_ms']:.1f} ms",
                    flush=True,
                )
    sec.figures = figures
    sec.add(
        f"SQLite store, HTTP, one eIM worker; the registry is bulk-inserted with one `executemany` "
        f"transaction; the load polls {min(size, 20_000):,} EIDs drawn at random from the registry "
        f"({concurrency} concurrent IPAs - fewer than in section 1, so that p99 is a poll's latency rather than "
        f"the queue in front of a saturated worker - {duration:.0f} s). The what-if rows run the store variant "
        "of section 1b in `bench/eim_server.py` (same dispatcher, no operator API)."
    )
    sec.add("")
    sec.table(
        [
            "registered eUICCs",
            "eIM",
            "bulk insert s",
            "DB MB",
            "RSS at start MB",
            "peak RSS MB",
            "polls/s",
            "p50 ms",
            "p99 ms",
            "errors",
        ],
        rows,
    )
    base, big = figures[str(baseline)], figures[str(size)]
    ratio = big["p99_ms"] / max(1e-9, base["p99_ms"])
    sec.add(
        f"- Bar, poll p99 with {size:,} vs {baseline:,} registered (`eim serve`): {fmt(big['p99_ms'])} ms vs "
        f"{fmt(base['p99_ms'])} ms = {ratio:.2f}× → {versus(ratio, 1.0, higher_is_better=False)} "
        "(p99 ratios within ~±10 % are noise on this VM)."
    )
    for variant in variants:
        b, g = figures[f"{baseline}/{variant}"], figures[f"{size}/{variant}"]
        r = g["p99_ms"] / max(1e-9, b["p99_ms"])
        sec.add(
            f"- The same with the what-if store *{variant}*: {fmt(g['p99_ms'])} ms vs {fmt(b['p99_ms'])} ms = "
            f"{r:.2f}× → {versus(r, 1.0, higher_is_better=False)}."
        )
    return sec


def store_variants(
    quick: bool = False,
    *,
    n: int = 10_000,
    duration: float | None = None,
    active: int | None = None,
    per_card: int | None = None,
    concurrency: int = 64,
    variants: tuple[str, ...] = (
        "default",
        "normal-sync",
        "group-commit",
        "contact-batch",
        "group-commit+contact-batch",
    ),
) -> Section:
    """Before/after for the SQLite misses: the shipped store against the what-if variants of :mod:`bench.whatif`."""
    from rsp.pki import create_lab_pki

    sec = Section("variants", "1b. SQLite store: the cause of the misses, before/after (HTTP, one worker)")
    duration = duration or (2.0 if quick else 5.0)
    active = active or (20 if quick else 100)
    per_card = per_card or (10 if quick else 30)
    rows = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmpd:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        for variant in variants:
            url = f"sqlite:///{tmp}/{variant}.db"
            (tmp / f"cards-{variant}").mkdir()
            fleet = Fleet(url, pki.root, tmp / f"cards-{variant}")
            asyncio.run(fleet.associate(eids_for(max(1, min(active, n // 2)), start=1)))
            fleet_eids = eids_for(n - len(fleet.cards), start=1_000_001)
            asyncio.run(bulk_register(url, fleet_eids))
            asyncio.run(fleet.queue(per_card))
            with eim_workers("http", url, pki.root, variant=variant) as w:
                poll = run_load(
                    {
                        "binding": "http",
                        "ports": w["ports"],
                        "mode": "poll",
                        "eids": fleet_eids,
                        "concurrency": concurrency,
                        "duration": duration,
                    },
                    w["pids"],
                )
                psmo = run_load(
                    {
                        "binding": "http",
                        "ports": w["ports"],
                        "mode": "psmo",
                        "cards": fleet.cards,
                        "concurrency": min(concurrency, len(fleet.cards)),
                        "duration": duration,
                    },
                    w["pids"],
                )
            figures[variant] = {"poll": poll, "psmo": psmo}
            rows.append(
                [
                    variant,
                    poll["rate"],
                    poll["p50_ms"],
                    poll["p99_ms"],
                    poll["server_cpu_per_req_us"],
                    psmo["rate"],
                    psmo["p50_ms"],
                    psmo["p99_ms"],
                    psmo["server_cpu_per_req_us"],
                    poll["errors"] + psmo["errors"],
                ]
            )
            print(
                f"  variant {variant}: poll {poll['rate']:.0f}/s p99 {poll['p99_ms']:.1f} ms; psmo "
                f"{psmo['rate']:.0f}/s p99 {psmo['p99_ms']:.1f} ms; errors {poll['errors']}+{psmo['errors']} "
                f"{poll['first_error'] or psmo['first_error']}",
                flush=True,
            )
    sec.figures = figures
    sec.add(
        f"N = {n:,} registered, {duration:.0f} s per cell, 64 concurrent IPAs. *default* = the shipped "
        "`eim.store.sqlite.SqliteStore` (WAL, `synchronous = FULL`, one transaction per store call on one "
        "thread); *normal-sync* = the same with `synchronous = NORMAL` (no fsync per commit: NOT acceptable, a "
        "power cut could lose a used counter value - it only measures what the fsyncs cost); *group-commit* = "
        "`bench/whatif.py`: still `synchronous = FULL`, but the write transactions waiting for the store thread "
        "run together in one transaction, each in its own SAVEPOINT, with one COMMIT (one fsync) for the group, "
        "and every caller is answered only after that COMMIT; *contact-batch* = a poll no longer writes "
        "`last_contact`/`binding` in its own transaction: contacts are batched in memory and written once a "
        "second, so a no-work poll writes nothing; *group-commit+contact-batch* = both."
    )
    sec.add("")
    sec.table(
        ["store", "polls/s", "p50 ms", "p99 ms", "CPU µs/req", "PSMO rt/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
        rows,
    )
    return sec
