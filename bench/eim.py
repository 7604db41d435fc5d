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

from bench.common import PY, REPO, CpuAccount, Section, cpu_seconds, fmt, peak_rss_mb, rss_mb, versus

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


COLUMNS = (
    "eid",
    "eim_id",
    "association_token",
    "counter_value",
    "info",
    "labels",
    "created_at",
    "binding",
    "last_contact",
)


async def bulk_register(
    url: str, eids: list[str], *, binding: str | None = None, last_contact: float | None = None
) -> float:
    """Insert registry rows directly (one transaction, the driver's fastest path); returns seconds taken.
    ``binding``/``last_contact``: the rows of devices that have polled before (over that binding, at that time)."""
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
            f"INSERT INTO euiccs ({', '.join(COLUMNS)}) VALUES (?, ?, NULL, 0, '{{}}', '{{}}', ?, ?, ?)",
            ((e, EIM_ID, now, binding, last_contact) for e in eids),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.copy_records_to_table(
                "euiccs",
                records=((e, EIM_ID, None, 0, "{}", "{}", now, binding, last_contact) for e in eids),
                columns=list(COLUMNS),
            )
            await conn.execute("ANALYZE euiccs")
        finally:
            await conn.close()
    return time.perf_counter() - t


def reset_contacts(url: str, binding: str | None, at: float | None) -> None:
    """Every registered eUICC as a device that last polled over ``binding`` at ``at``: each measurement starts
    from the same state (else the first poll of every eUICC writes its new binding, and a cell run after another
    one on the same database finds that work already done)."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
        try:
            conn.execute("UPDATE euiccs SET binding = ?, last_contact = ?", (binding, at))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return

    async def pg() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE euiccs SET binding = $1, last_contact = $2", binding, at)
            await conn.execute("VACUUM ANALYZE euiccs")
        finally:
            await conn.close()

    asyncio.run(pg())


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
    store_options: dict[str, Any] | None = None,
) -> Iterator[dict]:
    """Start ``workers`` eIM processes serving ``binding``; yields {"ports", "pids"}.

    ``impl="serve"``: the real ``eim --config FILE serve`` (HTTP always on for the operator API, plus the CoAP or
    MQTT binding; several HTTP workers listen on one port each - the load spreads its connections over them, as a
    load balancer would). ``impl="bench"``: :mod:`bench.eim_server`, the same dispatcher without the operator API,
    metrics and sweeper, which can run the what-if store variants; its HTTP workers share one listening socket.
    ``store_options``: more ``[store]`` keys for ``eim serve`` (e.g. ``sqlite_read_connection = false``)."""
    if variant != "default":
        impl = "bench"
    procs: list[subprocess.Popen] = []
    listener = None
    ports: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-eimcfg-"))
    try:
        if impl == "serve":
            extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (store_options or {}).items())
            coap_port = free_port(socket.SOCK_DGRAM)
            for w in range(workers):
                http_port = free_port()
                cfg = tmp / f"eim-{w}.toml"
                cfg.write_text(
                    f'[eim]\neim_id = "{EIM_ID}"\ndata_dir = "{tmp / f"data-{w}"}"\nlab_pki = "{pki_dir}"\n'
                    f'curve = "nist"\n[store]\nurl = "{url}"\n{extra}[http]\nport = {http_port}\n'
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


class PgWaits:
    """What the PostgreSQL backends of one database were doing: ``pg_stat_activity`` sampled every 0.1 s from a
    thread of its own. ``stop()`` returns the share of backend samples per state: *running*, *lock wait* (a row or
    transaction lock: something serialising the workers), *other wait* (I/O, LWLock...), *idle in transaction*
    (waiting for the worker's next statement), *idle* (no request)."""

    SQL = (
        "SELECT state, wait_event_type FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: dict[str, int] = {}
        self.result: dict[str, float] = {}

    def start(self) -> None:
        import threading

        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)
        self._thread.start()

    async def _sample(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            while not self._stop.is_set():
                for r in await conn.fetch(self.SQL):
                    state, wait = r["state"], r["wait_event_type"]
                    if state == "active":
                        key = "running" if wait is None else "lock wait" if wait == "Lock" else "other wait"
                    elif state == "idle in transaction":
                        key = "idle in transaction"
                    else:
                        key = "idle"
                    self.counts[key] = self.counts.get(key, 0) + 1
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        total = max(1, sum(self.counts.values()))
        self.result = {k: v / total for k, v in self.counts.items()}
        return self.result


def run_load(
    cfg: dict[str, Any], pids: list[int], *, pg_url: str | None = None, cpus: str | None = None
) -> dict[str, Any]:
    """Run the load process; measures the workers' CPU and RSS around it, and where the machine's CPU went during
    the measured window (``result["cpu"]``: cores per role, :class:`bench.common.CpuAccount`); with ``pg_url``
    also what PostgreSQL's backends were doing meanwhile (``result["pg"]``, :class:`PgWaits`); with ``cpus``
    the load process is pinned to those CPUs (``taskset -c``)."""
    import threading

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            (["taskset", "-c", cpus] if cpus else []) + [PY, "-m", "bench.eim_load", f.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        names = {proc.pid: "load generator"}
        names.update({p: f"eIM worker {i + 1}" for i, p in enumerate(pids)})
        acct = CpuAccount(names)
        waits = PgWaits(pg_url) if pg_url else None
        err: list[str] = []

        def watch() -> None:  # the load marks its measured window on stderr
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.strip() == "measure start":
                    acct.start()
                    if waits is not None:
                        waits.start()
                elif line.strip() == "measure stop":
                    acct.stop()
                    if waits is not None:
                        waits.stop()
                else:
                    err.append(line)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        timer = threading.Timer(cfg["duration"] + 120, proc.kill)  # a hung load is stopped
        timer.start()
        try:
            assert proc.stdout is not None
            stdout = proc.stdout.read()
            # the watcher reads "measure stop" and takes the window's last snapshot: until the load is reaped it
            # stays in /proc (a zombie, its CPU times kept), so the wait comes after the watcher is done (the
            # other order lost the load generator's figure now and then)
            watcher.join(30)
            proc.wait()
        finally:
            timer.cancel()
    finally:
        os.unlink(f.name)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"load process failed: {''.join(err)[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["cpu"] = acct.result
    if waits is not None:
        result["pg"] = waits.result
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
                        # every cell starts alike: devices that last polled over this binding an hour ago
                        reset_contacts(url, binding, time.time() - 3600)
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
                                pg_url=url if store == "postgresql" else None,
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
                                pg_url=url if store == "postgresql" else None,
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
    scaling_cpu(sec, figures, sizes[-1])
    q = [f for f in figures.values()]
    if q:
        rate = sum(f["queued"] for f in q) / max(1e-9, sum(f["queue_s"] for f in q))
        sec.add(
            f"- Queueing PSMOs through `OperationService.create_batch` (one batch per round over all cards): "
            f"{fmt(rate)} operations/s on average."
        )
    return sec


def _cores(cpu: dict[str, float], role: str) -> float:
    return sum(v for k, v in cpu.items() if k.startswith(role))


def scaling_cpu(sec: Section, figures: dict[str, Any], n: int) -> None:
    """Where the CPU went in the worker-scaling cells, and what it says about the 1.6× bar on this machine."""
    rows = []
    notes = []
    for b in ("http", "coap", "mqtt"):
        one = figures.get(f"{b}/postgresql/N={n}")
        two = figures.get(f"{b}/postgresql/N={n}/workers=2")
        if not (one and two):
            continue
        for mode in ("poll", "psmo"):
            cells = []
            for workers, f in ((1, one), (2, two)):
                r = f[mode]
                cpu = r.get("cpu") or {}
                if not cpu:
                    continue
                w = _cores(cpu, "eIM worker")
                own = sum(_cores(cpu, k) for k in ("load generator", "eIM worker", "postgresql", "mosquitto", "kernel"))
                own = min(own, cpu.get("busy", own))  # per-process ticks can add up to a little more than busy
                other = max(0.0, cpu.get("busy", 0.0) - own)  # incl. processes that came and went in the window
                reqs = r["requests"] / max(1e-9, r["elapsed"])
                cells.append((workers, r, cpu, own, w, reqs))
                rows.append(
                    [
                        b,
                        mode,
                        workers,
                        r["rate"],
                        _cores(cpu, "load generator"),
                        " + ".join(fmt(cpu[k]) for k in sorted(cpu) if k.startswith("eIM worker")),
                        _cores(cpu, "postgresql"),
                        _cores(cpu, "mosquitto"),
                        _cores(cpu, "kernel"),
                        other,
                        cpu.get("idle", 0.0),
                        w / max(1e-9, reqs) * 1e6,
                        (own - w) / max(1e-9, reqs) * 1e6,
                        " / ".join(
                            f"{(r.get('pg') or {}).get(k, 0.0) * 100:.0f}"
                            for k in ("running", "lock wait", "other wait", "idle in transaction", "idle")
                        ),
                    ]
                )
            if len(cells) != 2:
                continue
            (_, r1, cpu1, own1, w1, q1), (_, r2, _, own2, w2, q2) = cells
            measured = r2["rate"] / max(1e-9, r1["rate"])
            c1, c2 = own1 / max(1e-9, q1), own2 / max(1e-9, q2)  # cores of the benchmark per request/s
            per_req1, per_req2 = w1 / max(1e-9, q1), w2 / max(1e-9, q2)
            dedicated = 2.0 * per_req1 / max(1e-12, per_req2)  # a core per worker, each worker saturating it
            need = 1.0 - 2.0 / (1.6 * max(1e-9, own1))  # the drop in CPU per request 1.6x would need on 2 cores
            rest = (own1 - w1) / max(1e-9, q1)
            notes.append(
                f"- {b.upper()} {mode}: measured {measured:.2f}× = cores the benchmark's processes used, "
                f"{own2:.2f} / {own1:.2f} ({own2 / max(1e-9, own1):.2f}×: the one-worker cell left "
                f"{cpu1.get('idle', 0.0):.2f} core idle), × CPU per request, {c1 * 1e6:.0f} → {c2 * 1e6:.0f} µs "
                f"({c1 / max(1e-12, c2):.2f}×; "
                + (
                    "less CPU per request once no core idles: each wake-up serves more requests"
                    if c1 >= c2
                    else "more CPU per request with two workers: more processes share the 2 cores"
                )
                + "). With "
                f"{own1:.2f} of the 2 cores already busy, 1.6× would need the CPU per request to fall by "
                f"{max(0.0, need) * 100:.0f} %. Worker CPU per request {per_req1 * 1e6:.0f} µs with one worker, "
                f"{per_req2 * 1e6:.0f} µs with two: with a core per worker (PostgreSQL, broker and load elsewhere, "
                f"{rest * 1e6:.0f} µs per request of theirs) two workers would give 2 × {per_req1 * 1e6:.0f} / "
                f"{per_req2 * 1e6:.0f} = **{dedicated:.2f}×** one saturated worker."
            )
    if not rows:
        return
    sec.add("")
    sec.add(
        f"Where the machine's CPU went in the worker-scaling cells (PostgreSQL, N = {n:,}), in cores (2 = the "
        "whole machine), over the load's measured window: every process's user + system time from /proc, the "
        "kernel's softirq time (loopback TCP/UDP) and idle time from /proc/stat; *other* is the rest of the busy "
        "time: everything else running on the machine meanwhile (other users' work). *worker µs/req* = worker "
        "CPU per ESipa request; *rest µs/req* = the CPU of PostgreSQL, the broker, the load generator and the "
        "kernel per request. The last column: the workers' PostgreSQL backends sampled every 0.1 s "
        "(`pg_stat_activity`); *lock wait* would show the workers serialised on a row or a lock, *idle in tx* a "
        "transaction waiting for its worker's next statement."
    )
    sec.add("")
    sec.table(
        [
            "binding",
            "mode",
            "workers",
            "rate/s",
            "load generator",
            "eIM workers",
            "PostgreSQL",
            "Mosquitto",
            "kernel softirq",
            "other",
            "idle",
            "worker µs/req",
            "rest µs/req",
            "PostgreSQL backends: running / lock wait / other wait / idle in tx / idle %",
        ],
        rows,
    )
    for line in notes:
        sec.add(line)


def fleet_scale(
    quick: bool = False,
    *,
    size: int = 1_000_000,
    baseline: int = 1_000,
    duration: float | None = None,
    concurrency: int = 8,
    polled: int = 1_000,
    many: int = 20_000,
    repeats: int | None = None,
) -> Section:
    """N registered eUICCs (bulk insert): eIM RSS and no-work poll latency against a 1,000-eUICC registry.

    Like with like: at both sizes the load polls ``polled`` distinct eUICCs drawn at random from the registry
    (devices that last polled over HTTP an hour ago), so the registry size is the only difference; one more cell
    polls ``many`` distinct eUICCs of the large registry (each poll then records a new ``last_contact``, the
    write load of a large active fleet). 8 concurrent IPAs (not 64): the latency of a poll, not the queue in front
    of a saturated server. Every cell starts from a copy of the same database file and is repeated ``repeats``
    times, interleaved (1,000 / 1,000,000 / ... / again), because p99 on a shared 2-core VM moves from run to run.
    The *one connection* cell runs ``eim serve`` with ``[store] sqlite_read_connection = false`` (reads and polls
    queued on the writer's thread, as before that connection existed)."""
    import random
    import shutil
    import statistics

    from rsp.pki import create_lab_pki

    sec = Section("fleet", "2. Fleet scale")
    duration = duration or (2.0 if quick else 5.0)
    repeats = repeats or (1 if quick else 5)
    polled = min(polled, baseline)
    many = min(many, size)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmpd:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        dbs: dict[int, dict[str, Any]] = {}
        for n in (baseline, size):
            url = f"sqlite:///{tmp}/fleet-{n}.db"
            eids = eids_for(n, start=1)
            reg_s = asyncio.run(bulk_register(url, eids, binding="http", last_contact=time.time() - 3600))
            rnd = random.Random(n)
            dbs[n] = {
                "path": Path(url.split("sqlite:///", 1)[1]),
                "register_s": reg_s,
                "db_mb": os.path.getsize(url.split("sqlite:///", 1)[1]) / 1024 / 1024,
                "samples": {k: rnd.sample(eids, k) for k in {polled, many} if k <= n},
            }
            del eids
        cells = [
            (baseline, polled, "eim serve"),
            (size, polled, "eim serve"),
            (size, many, "eim serve"),
            (size, many, "one connection"),
        ]
        for r in range(repeats):
            for n, k, server in cells:
                db = dbs[n]
                work = tmp / "work.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{work}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(db["path"], work)
                opts = {"sqlite_read_connection": False} if server == "one connection" else None
                with eim_workers("http", f"sqlite:///{work}", pki.root, store_options=opts) as w:
                    rss_start = rss_mb(w["pids"][0])
                    poll = run_load(
                        {
                            "binding": "http",
                            "ports": w["ports"],
                            "mode": "poll",
                            "eids": db["samples"][k],
                            "concurrency": concurrency,
                            "duration": duration,
                        },
                        w["pids"],
                    )
                key = f"{n}/{k}/{server}"
                figures.setdefault(key, {"runs": [], "register_s": db["register_s"], "db_mb": db["db_mb"]})
                figures[key]["runs"].append({**poll, "rss_start_mb": rss_start})
                print(
                    f"  fleet N={n} polled={k} {server} run {r + 1}: RSS {rss_start:.0f}->"
                    f"{poll['server_peak_rss_mb']:.0f} MB, polls {poll['rate']:.0f}/s p99 {poll['p99_ms']:.1f} ms "
                    f"p99.9 {poll['p999_ms']:.1f} ms max {poll['max_ms']:.0f} ms",
                    flush=True,
                )
    rows = []
    for n, k, server in cells:
        f = figures[f"{n}/{k}/{server}"]
        runs = f["runs"]
        p99s = [x["p99_ms"] for x in runs]
        f.update(
            p99_ms=statistics.median(p99s),
            p99_min_ms=min(p99s),
            p99_max_ms=max(p99s),
            p50_ms=statistics.median(x["p50_ms"] for x in runs),
            p999_ms=statistics.median(x["p999_ms"] for x in runs),
            max_ms=max(x["max_ms"] for x in runs),
            rate=statistics.median(x["rate"] for x in runs),
            rss_start_mb=statistics.median(x["rss_start_mb"] for x in runs),
            server_peak_rss_mb=max(x["server_peak_rss_mb"] for x in runs),
            errors=sum(x["errors"] for x in runs),
        )
        rows.append(
            [
                n,
                k,
                server,
                f["register_s"],
                f["db_mb"],
                f["rss_start_mb"],
                f["server_peak_rss_mb"],
                f["rate"],
                f["p50_ms"],
                f["p99_ms"],
                " / ".join(fmt(x) for x in p99s),
                f["p999_ms"],
                f["max_ms"],
                f["errors"],
            ]
        )
    sec.figures = figures
    sec.add(
        f"SQLite store, HTTP, one `eim serve` worker; the registry is bulk-inserted with one `executemany` "
        f"transaction as devices that last polled over HTTP an hour ago. The load polls *polled* distinct EIDs drawn "
        f"at random from the registry ({concurrency} concurrent IPAs - fewer than in section 1, so that p99 is a "
        f"poll's latency rather than the queue in front of a saturated worker - {duration:.0f} s after a 1 s "
        f"warm-up). {polled:,} distinct EIDs at both sizes compare like with like (the registry size is the only "
        f"difference); {many:,} distinct EIDs is the write load of a large active fleet (nearly every poll records "
        f"a new `last_contact`, written in batches once a second). *one connection*: `[store] "
        f"sqlite_read_connection = false` - reads and polls queue on the writer's thread, as before the read "
        f"connection existed. Each cell starts from a copy of the same database file; {repeats} runs per cell, "
        "interleaved; polls/s, p50, p99, p99.9 and RSS at start are medians over the runs, peak RSS and max the "
        "highest."
    )
    sec.add("")
    sec.table(
        [
            "registered eUICCs",
            "polled",
            "eIM",
            "bulk insert s",
            "DB MB",
            "RSS at start MB",
            "peak RSS MB",
            "polls/s",
            "p50 ms",
            "p99 ms",
            "p99 of each run ms",
            "p99.9 ms",
            "max ms",
            "errors",
        ],
        rows,
    )

    def bar(k: int, server: str) -> tuple[float, str]:
        base, big = figures[f"{baseline}/{polled}/{server}"], figures[f"{size}/{k}/{server}"]
        ratio = big["p99_ms"] / max(1e-9, base["p99_ms"])
        per_run = [b["p99_ms"] / max(1e-9, a["p99_ms"]) for a, b in zip(base["runs"], big["runs"], strict=True)]
        spread = f"{min(per_run):.2f}-{max(per_run):.2f}× run by run" if len(per_run) > 1 else ""
        return ratio, (
            f"{fmt(big['p99_ms'])} ms vs {fmt(base['p99_ms'])} ms = {ratio:.2f}×" + (f" ({spread})" if spread else "")
        )

    ratio, text = bar(polled, "eim serve")
    sec.add(
        f"- Bar, poll p99 with {size:,} vs {baseline:,} registered (`eim serve`, {polled:,} distinct EIDs polled at "
        f"both sizes, median of {repeats} runs): {text} → {versus(ratio, 1.0, higher_is_better=False)} "
        "(p99 ratios within ~±10 % are noise on this VM)."
    )
    _, text = bar(many, "eim serve")
    sec.add(f"- {size:,} registered with {many:,} distinct EIDs polled vs the {baseline:,}-eUICC cell: {text}.")
    one, served = figures[f"{size}/{many}/one connection"], figures[f"{size}/{many}/eim serve"]
    sec.add(
        f"- {size:,} registered, {many:,} distinct EIDs polled, one connection (`sqlite_read_connection = false`, "
        f"polls queued behind the writer) vs `eim serve`: p99.9 {fmt(one['p999_ms'])} vs {fmt(served['p999_ms'])} "
        f"ms, max {fmt(one['max_ms'])} vs {fmt(served['max_ms'])} ms, p99 {fmt(one['p99_ms'])} vs "
        f"{fmt(served['p99_ms'])} ms."
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
    variants: tuple[str, ...] = ("default", "one-connection", "normal-sync"),
) -> Section:
    """The shipped SQLite store against one connection for everything and the fsync-free what-if
    (:mod:`bench.whatif`)."""
    from rsp.pki import create_lab_pki

    sec = Section("variants", "1b. SQLite store: the read connection and the cost of fsync (HTTP, one worker)")
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
            asyncio.run(bulk_register(url, fleet_eids, binding="http", last_contact=time.time() - 3600))
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
        f"N = {n:,} registered, {duration:.0f} s per cell, 64 concurrent IPAs, served by `bench/eim_server.py` "
        "(the same dispatcher as `eim serve`, no operator API). *default* = the shipped "
        "`eim.store.sqlite.SqliteStore`: WAL, `synchronous = FULL`; write transactions that queue up while the "
        "store thread is busy share one COMMIT (group commit, each in its own SAVEPOINT, every caller answered "
        "only after the COMMIT); `last_contact` batched in memory and written once a second; reads, and polls "
        "with nothing to hand out, on a second connection on their own thread. *one-connection* = the same with "
        "`[store] sqlite_read_connection = false`: reads and polls queue on the writer's thread. *normal-sync* "
        "= the default with `synchronous = NORMAL` (`bench/whatif.py`; no fsync per commit: NOT acceptable, a "
        "power cut could lose a used counter value - it only measures what the fsyncs cost)."
    )
    sec.add("")
    sec.table(
        ["store", "polls/s", "p50 ms", "p99 ms", "CPU µs/req", "PSMO rt/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
        rows,
    )
    return sec
