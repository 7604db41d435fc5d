"""Benchmark "ceiling": the eIM against the bare server of each of its transports, in the same run (issue 18).

For each binding the contenders are the real ``eim --config FILE serve`` worker (SQLite store, N registered
eUICCs with empty queues, ``[http] allowed_hosts`` set so the Host check runs, the guarded uvicorn protocol, the
device policy, metrics: everything of production) and the bare servers of :mod:`bench.bare` (plain ASGI and
Starlette for HTTP, aiocoap for CoAP, an aiomqtt responder through the same Mosquitto for MQTT). All contenders
of a binding run at once (idle ones use no CPU) and get the same load one after the other, in rounds whose order
rotates, so that whatever else the shared machine does falls on all of them alike.

Pinning (with 2 or more CPUs): every server on CPU 0, the load generator and the broker on CPU 1.

The report gives, per binding and contender, the median rate and p99 over the rounds, and eIM / bare with its
spread (lowest-highest of the per-round ratios). ``before="COMMIT[,COMMIT...]"`` adds the eIM of each commit
(extracted with ``git archive``, run from there with this venv) as more contenders: an optimisation's
before/after pairs, interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, Section, eim_serve, fmt, stop_process
from bench.eim import EIM_ID, _readline, bulk_register, eids_for, free_port, reset_contacts, run_load

BARE = {"http": ("asgi", "starlette"), "coap": ("aiocoap",), "mqtt": ("aiomqtt",)}
REFERENCE = {"http": "starlette", "coap": "aiocoap", "mqtt": "aiomqtt"}  # the bars' denominators
BAR_RATE, BAR_P99 = 0.70, 2.0
BARE_MQTT_PREFIX = "bares"  # the bare responder's topics (same length as "esipa": same bytes on the wire)


def _cpus() -> tuple[str | None, str | None]:
    """(server CPU, load CPU) for taskset, or (None, None) on a 1-CPU machine."""
    n = os.cpu_count() or 1
    return ("0", "1") if n >= 2 and shutil.which("taskset") else (None, None)


def _pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


@contextlib.contextmanager
def _tree(commit: str) -> Iterator[Path]:
    """The source tree of ``commit`` in a temporary directory (``git archive``)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-before-"))
    try:
        archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _server(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        yield p
    finally:
        stop_process(p)


@contextlib.contextmanager
def _eim(
    binding: str, url: str, pki: Path, mqtt_port: int, cpu: str | None, tree: Path | None, prefix: str = "esipa"
) -> Iterator[dict]:
    """One ``eim serve`` worker (of this tree, or of ``tree``) for ``binding``; yields {"port", "pid", "prefix"}.
    ``prefix``: its MQTT topic prefix and shared group (each eIM its own, so they do not share the requests)."""
    from bench.eim import _wait_serving

    tmp = Path(tempfile.mkdtemp(prefix="bench-ceil-"))
    http_port, coap_port = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp / "eim.toml"
    cfg.write_text(
        f'[eim]\neim_id = "{EIM_ID}"\ndata_dir = "{tmp / "data"}"\nlab_pki = "{pki}"\ncurve = "nist"\n'
        f'[store]\nurl = "{url}"\n[http]\nport = {http_port}\nallowed_hosts = ["eim", "127.0.0.1"]\n'
        f"[coap]\nenabled = {'true' if binding == 'coap' else 'false'}\nport = {coap_port}\n"
        f"[mqtt]\nenabled = {'true' if binding == 'mqtt' else 'false'}\nport = {mqtt_port or 1883}\n"
        f'client_id = "eim-ceiling-{os.getpid()}-{prefix}"\nprefix = "{prefix}"\nshared_group = "{prefix}"\n'
        f'[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
    )
    try:
        with eim_serve(cfg, tmp / "eim-0.log", tree, prefix=_pinned([], cpu)) as p:
            port = {"http": http_port, "coap": coap_port, "mqtt": mqtt_port}[binding]
            if binding == "mqtt":
                asyncio.run(_wait_mqtt(port, prefix, p))
            else:
                asyncio.run(_wait_serving(binding, [port], [p], tmp))
            yield {"port": port, "pid": p.pid, "prefix": prefix}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _wait_mqtt(port: int, prefix: str, p: subprocess.Popen) -> None:
    """Until the eIM answers a GetEimPackage on its MQTT ``prefix``."""
    from bench.eim_load import LeanMqttPool, get_eim_package_request

    eid = "89999000000000000000000000000000"
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError("eim serve did not answer over MQTT")
        pool = LeanMqttPool("127.0.0.1", port, 1, prefix)
        try:
            await pool.start()
            await pool.request(eid, get_eim_package_request(eid), 0, 1.0)
            return
        except (OSError, TimeoutError, RuntimeError):
            await asyncio.sleep(0.2)
        finally:
            await pool.close()


@contextlib.contextmanager
def _bare(kind: str, mqtt_port: int, cpu: str | None) -> Iterator[dict]:
    port = mqtt_port if kind == "aiomqtt" else free_port(socket.SOCK_DGRAM if kind == "aiocoap" else socket.SOCK_STREAM)
    cmd = [PY, "-m", "bench.bare", kind, "--port", str(port)]
    if kind == "aiomqtt":
        cmd += ["--prefix", BARE_MQTT_PREFIX]
    with _server(_pinned(cmd, cpu), REPO) as p:
        line = _readline(p, 60)
        if line.strip() != "READY":
            raise RuntimeError(f"bare {kind} server did not start (said {line!r})")
        yield {"port": port, "pid": p.pid, "prefix": BARE_MQTT_PREFIX}


def run(
    quick: bool = False,
    *,
    bindings: tuple[str, ...] = ("http", "coap", "mqtt"),
    rounds: int | None = None,
    duration: float | None = None,
    n: int | None = None,
    concurrency: int = 64,
    before: str | None = None,
) -> Section:
    from demo.services import run_mosquitto
    from rsp.pki import create_lab_pki

    # 8 rounds: on this machine kind the eIM against an identical copy of itself gave 0.73-1.27 round by round
    rounds = rounds or (2 if quick else 8)
    duration = duration or (1.0 if quick else 3.0)
    n = n or (1_000 if quick else 10_000)
    server_cpu, load_cpu = _cpus()
    sec = Section("ceiling", "0. The eIM against its bare transports (no-work polls, same run)")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ceiling-")))
        trees = {c: stack.enter_context(_tree(c)) for c in (before.split(",") if before else [])}
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        url = f"sqlite:///{tmp}/ceiling.db"
        eids = eids_for(n, start=1_000_001)
        asyncio.run(bulk_register(url, eids))
        broker = stack.enter_context(run_mosquitto()) if "mqtt" in bindings else None
        if broker is not None and load_cpu is not None:
            os.sched_setaffinity(broker.process.pid, {int(load_cpu)})
        for binding in bindings:
            reset_contacts(url, binding, time.time() - 3600)
            mqtt_port = broker.port if broker is not None else 0
            with contextlib.ExitStack() as servers:
                contenders: dict[str, dict] = {}
                for kind in BARE[binding]:
                    contenders[kind] = servers.enter_context(_bare(kind, mqtt_port, server_cpu))
                contenders["eIM"] = servers.enter_context(_eim(binding, url, pki.root, mqtt_port, server_cpu, None))
                for i, (commit, tree) in enumerate(trees.items()):
                    contenders[f"eIM {commit}"] = servers.enter_context(
                        _eim(binding, url, pki.root, mqtt_port, server_cpu, tree, prefix=f"esip{i}")
                    )
                names = list(contenders)
                per: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
                for r in range(rounds):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        c = contenders[name]
                        cfg = {
                            "binding": binding,
                            "ports": [c["port"]],
                            "mode": "poll",
                            "eids": eids,
                            "concurrency": concurrency,
                            "duration": duration,
                            "warmup": 0.5,
                            "mqtt_prefix": c["prefix"],
                        }
                        res = run_load(cfg, [c["pid"]], cpus=load_cpu)
                        # the server's CPU over the measured window only (not the warm-up nor the load's start)
                        cores = res["cpu"].get("eIM worker 1", 0.0)
                        res["server_cpu_per_req_us"] = cores * res["elapsed"] / max(1, res["count"]) * 1e6
                        per[name].append(res)
                        print(
                            f"  ceiling {binding} round {r + 1} {name}: {res['rate']:.0f}/s p99 "
                            f"{res['p99_ms']:.1f} ms, {res['server_cpu_per_req_us']:.0f} µs/req, steal "
                            f"{res['cpu'].get('steal', 0.0):.2f} cores, errors "
                            f"{res['errors']} {res['first_error']}",
                            flush=True,
                        )
                results[binding] = per
    _report(sec, results, rounds=rounds, duration=duration, n=n, concurrency=concurrency, pinned=server_cpu)
    return sec


def _ratios(per: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(per[a], per[b], strict=True) if y[key]]


def _report(
    sec: Section,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    *,
    rounds: int,
    duration: float,
    n: int,
    concurrency: int,
    pinned: str | None,
) -> None:
    sec.add(
        f"No-work polls (GetEimPackage for registered eUICCs with empty queues; N = {n:,}, SQLite) against the bare "
        f"server of each transport (`bench/bare.py`: the same answer bytes, nothing else), {concurrency} clients, "
        f"{duration:.0f} s per cell after 0.5 s of warm-up, {rounds} rounds; in each round every contender gets "
        "the same load one after the other, the order rotating from round to round. "
        + (
            "Servers pinned to CPU 0, the load generator and Mosquitto to CPU 1 (`taskset`). "
            if pinned is not None
            else "Not pinned (one CPU). "
        )
        + "The eIM is the real `eim serve` (Host allowlist, guarded uvicorn protocol, device policy, metrics). "
        "*server CPU µs/req*: the server's CPU over the measured window / requests answered in it; bare / eIM of "
        "it is the rate ratio the eIM would reach if the server alone limited both (with the load generator "
        "on the other core, the load can be the limit: then the rate ratio is higher than this one). "
        "The figures were taken on a shared machine (other engineers' work ran meanwhile): compare the ratios "
        "within one run, not absolute rates between runs."
    )
    sec.add("")
    rows: list[list[Any]] = []
    for binding, per in results.items():
        for name, runs in per.items():
            rows.append(
                [
                    binding,
                    name,
                    statistics.median(r["rate"] for r in runs),
                    " / ".join(fmt(r["rate"]) for r in runs),
                    statistics.median(r["p99_ms"] for r in runs),
                    statistics.median(r["server_cpu_per_req_us"] for r in runs),
                    sum(r["errors"] for r in runs),
                ]
            )
    sec.table(
        [
            "binding",
            "server",
            "polls/s (median)",
            "polls/s per round",
            "p99 ms (median)",
            "server CPU µs/req",
            "errors",
        ],
        rows,
    )
    steal = [r["cpu"].get("steal", 0.0) for per in results.values() for runs in per.values() for r in runs]
    if steal:
        sec.add(
            f"- Steal (cores the hypervisor gave to other virtual machines during a cell, `/proc/stat`): median "
            f"{statistics.median(steal):.2f}, highest {max(steal):.2f}; cells with steal ran slower for reasons "
            "outside this machine, which is why the ratios are taken round by round."
        )
    sec.figures = {b: {k: [dict(r, cpu=None) for r in v] for k, v in per.items()} for b, per in results.items()}
    for binding, per in results.items():
        eims = [k for k in per if k.startswith("eIM")]
        for eim in eims:
            for bare in BARE[binding]:
                rate = _ratios(per, eim, bare, "rate")
                p99 = _ratios(per, eim, bare, "p99_ms")
                if not rate:
                    continue
                med, mp = statistics.median(rate), statistics.median(p99)
                line = (
                    f"{eim} / {bare} over {binding.upper()}: rate {med:.2f} ({min(rate):.2f}-{max(rate):.2f} over "
                    f"{len(rate)} rounds), p99 {mp:.2f}× ({min(p99):.2f}-{max(p99):.2f})"
                )
                cpu = [
                    y["server_cpu_per_req_us"] / x["server_cpu_per_req_us"]
                    for x, y in zip(per[eim], per[bare], strict=True)
                    if x["server_cpu_per_req_us"]
                ]
                if cpu:
                    line += f"; server CPU per request: bare / eIM {statistics.median(cpu):.2f}"
                if eim == "eIM" and bare == REFERENCE[binding]:
                    ok_r, ok_p = med >= BAR_RATE, mp <= BAR_P99
                    sec.add(
                        f"- Bar, {line} → rate bar {BAR_RATE:.2f} {'met' if ok_r else '**missed**'}, p99 bar "
                        f"{BAR_P99:.0f}× {'met' if ok_p else '**missed**'}"
                    )
                else:
                    sec.add(f"- {line}")
        # before/after pairs: each eIM against the next older one given, and the newest against the oldest
        pairs = list(itertools.pairwise(eims))
        if len(eims) > 2:
            pairs.append((eims[0], eims[-1]))
        for new, old in pairs:
            rate = _ratios(per, new, old, "rate")
            cpu = _ratios(per, old, new, "server_cpu_per_req_us")
            p99 = _ratios(per, old, new, "p99_ms")
            sec.add(
                f"- before/after over {binding.upper()}: {new} vs {old}: rate {statistics.median(rate):.2f}× "
                f"({min(rate):.2f}-{max(rate):.2f}), server CPU per request {statistics.median(cpu):.2f}× less "
                f"({min(cpu):.2f}-{max(cpu):.2f}), p99 {statistics.median(p99):.2f}× lower"
            )
