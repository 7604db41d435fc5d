"""Push over CoAP(S) and MQTT against the poll: latency, bytes on the air, and what observers cost one eIM worker.

``python -m bench.coap_push [--part latency,air,fanout,workers] [--ops N] [--poll-interval S] [--observers N]``

* ``latency``: ``make demo``'s lab as real processes (``eim serve`` on SQLite, virtual modem, ``ipa run``); a PSMO
  (getRAT) queued through the REST API, timed until the eIM has recorded its result (``GET /v1/operations/{id}``
  every 10 ms), each after a random pause of up to ``--poll-interval``. *push*: the IPA's poll interval is one hour,
  so only a push can start it. *poll*: push off on both sides (``IPA_EIM_PUSH=false``, ``EIM_COAP_PUSH=false``,
  ``EIM_MQTT_PUSH=false``) and a poll every ``--poll-interval`` seconds: the expected latency is half of it plus
  the same work.
* ``air``: the same lab with a counting UDP proxy (:mod:`bench.proxy`) between the IPA and the eIM's CoAP port:
  bytes per PSMO delivered by push (notification, GetEimPackage, result, the idle poll after it) against the same
  PSMO delivered by a poll, and the standing costs of each (a re-registration per ``eim.push_refresh``; an idle
  poll per poll interval). The alternative design - the notification carrying the TransferEimPackageRequest itself -
  is computed from the measured datagrams (see the printed formula), because it is not implemented.
* ``fanout``: one ``CoapBinding`` with a ``PushService`` in this process (the store is left out: every EID is
  "known", nothing "pending"); N devices in a separate process, one UDP socket each, register and acknowledge every
  notification. Memory per observer (tracemalloc, this process only) and the time to wake all N and have every
  notification acknowledged.
* ``workers``: two ``PgWakeBus`` + observer tables on a private PostgreSQL (as the tests start it): an operation
  queued through worker A's ``OperationService``, timed until the notification reaches a device observing at
  worker B.

Not run by ``make bench``; the figures are in docs/performance.md ("Push").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, machine, percentile

UDP_IP = 28  # IPv4 + UDP per datagram
PSMO = {"psmos": [{"getRAT": {}}]}


# ---------------------------------------------------------------------------------------------- the lab
def _lab(workdir: Path, binding: str, *, push: bool, poll: float, ipa_env: dict[str, str] | None = None):
    from demo.stack import LabStack

    stack = LabStack(workdir=workdir, binding=binding, poll_interval=poll)
    stack.start(with_ipa=False)
    eim_env = {} if push else {"EIM_COAP_PUSH": "false", "EIM_MQTT_PUSH": "false"}
    if eim_env:
        stack.restart_eim(env=eim_env)
    env = {"IPA_EIM_PUSH": "true" if push else "false", **(ipa_env or {})}
    stack.start_ipa(env=env)
    if push:
        stack.wait_push_reachable()
    return stack


def _op_latency(stack: Any) -> float:
    import httpx

    with httpx.Client(base_url=stack.eim_url, timeout=30) as c:
        t0 = time.perf_counter()
        r = c.post(f"/v1/euiccs/{stack.eid}/operations", json={"kind": "psmo", "params": PSMO})
        op_id = r.json()["id"]
        while True:
            status = c.get(f"/v1/operations/{op_id}").json()["status"]
            if status in ("done", "failed", "expired", "cancelled"):
                if status != "done":
                    raise RuntimeError(f"operation ended {status}")
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > 120:
                raise TimeoutError("operation not done in 120 s")
            time.sleep(0.01)


def latency(bindings: list[str], ops: int, poll: float) -> list[dict[str, Any]]:
    rows = []
    for binding in bindings:
        for mode in ("push", "poll"):
            with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
                stack = _lab(Path(tmp), binding, push=mode == "push", poll=3600.0 if mode == "push" else poll)
                try:
                    _op_latency(stack)  # warm-up (the eUICC data request queued in front of the first PSMO)
                    times = []
                    for _ in range(ops):  # a random phase against the poll timer, as an operator's call has
                        time.sleep(random.uniform(0, poll))
                        times.append(_op_latency(stack))
                finally:
                    stack.stop()
            rows.append(
                {
                    "binding": binding,
                    "mode": mode,
                    "poll interval s": 3600.0 if mode == "push" else poll,
                    "ops": ops,
                    "median ms": statistics.median(times) * 1000,
                    "p90 ms": percentile(times, 90) * 1000,
                    "max ms": max(times) * 1000,
                }
            )
            print(_fmt_row(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- bytes on air
def _quiet(proxy: Any, seconds: float = 0.6) -> None:
    """Wait until nothing crossed the proxy for ``seconds``."""
    last = (proxy.counts.up_chunks, proxy.counts.down_chunks)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < seconds:
        time.sleep(0.05)
        now = (proxy.counts.up_chunks, proxy.counts.down_chunks)
        if now != last:
            last, quiet_since = now, time.monotonic()


def _next_activity(proxy: Any) -> None:
    """Wait for the next datagram after a quiet spell (the IPA's next renewal), then for quiet again."""
    _quiet(proxy)
    seen = proxy.counts.up_chunks
    while proxy.counts.up_chunks == seen:
        time.sleep(0.01)
    _quiet(proxy, 0.3)


def _measure(proxy: Any, fn) -> Any:
    _quiet(proxy)
    before = proxy.counts.snapshot()
    fn()
    _quiet(proxy)
    return proxy.counts.snapshot().minus(before)


def air(bindings: list[str], refresh: float) -> list[dict[str, Any]]:
    from bench.proxy import CountingProxy

    rows = []
    for binding in [b for b in bindings if b in ("coap", "coaps")]:
        for mode in ("push", "poll"):
            with tempfile.TemporaryDirectory(prefix="bench-push-air-") as tmp:
                from demo.stack import LabStack

                stack = LabStack(workdir=Path(tmp), binding=binding, poll_interval=3600.0 if mode == "push" else 2.0)
                stack.start(with_ipa=False)
                if mode == "poll":
                    stack.restart_eim(env={"EIM_COAP_PUSH": "false"})
                with CountingProxy(
                    stack.ports["eim_coap"], udp=True, protocol="coap" if binding == "coap" else "x"
                ) as px:
                    env = {
                        "IPA_EIM_URL": f"{binding}://127.0.0.1:{px.port}",
                        "IPA_EIM_PUSH": "true" if mode == "push" else "false",
                        "IPA_EIM_PUSH_REFRESH": str(refresh),
                    }
                    try:
                        stack.start_ipa(env=env)
                        if mode == "push":
                            stack.wait_push_reachable()
                        stack.run_op("euicc_data", {})  # certificates learned: the PSMO below is alone
                        if mode == "push":
                            standing = _measure(px, lambda: time.sleep(2 * refresh + 0.2))
                            per = max(1, round(standing.up_chunks))  # one GET per registration
                            unit = (
                                standing.up + standing.down + UDP_IP * (standing.up_chunks + standing.down_chunks)
                            ) / per
                            _next_activity(px)  # a renewal just happened: the PSMO below runs between two
                            op = _measure(px, lambda s=stack: s.run_op("psmo", PSMO))
                            removed = 0
                        else:
                            idle = _measure(px, lambda: time.sleep(4.2))
                            polls = max(1, idle.up_chunks)
                            unit = (idle.up + idle.down + UDP_IP * (idle.up_chunks + idle.down_chunks)) / polls
                            op = _measure(px, lambda s=stack: s.run_op("psmo", PSMO))
                            removed = max(0, op.idle_polls - 1)  # the poll after the work is part of the flow
                        total = op.up + op.down + UDP_IP * (op.up_chunks + op.down_chunks) - removed * unit
                        rows.append(
                            {
                                "binding": binding,
                                "mode": mode,
                                "datagrams": op.up_chunks + op.down_chunks - removed * 2,
                                "bytes (UDP payload)": op.up + op.down - removed * (unit - 2 * UDP_IP),
                                "bytes with IPv4+UDP": total,
                                "standing unit bytes": unit,
                                "standing unit": "registration" if mode == "push" else "idle poll",
                                "per hour": unit * (3600 / 25.0 if mode == "push" else 60),
                            }
                        )
                        print(_fmt_row(rows[-1]), flush=True)
                    finally:
                        stack.stop()
    rows.append(_alternative(rows))
    print(_fmt_row(rows[-1]), flush=True)
    return rows


def _alternative(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The design not taken, computed: the notification carries ``BF4E <package>`` (+4-6 bytes of CoAP options and
    the same package), and the IPA answers TransferEimPackageResponse(eimPackageReceived) before the result; the
    GetEimPackage request and its answer's CoAP header disappear. Payload sizes from aiocoap's own encoder."""
    from aiocoap import Message
    from aiocoap.numbers.codes import Code
    from aiocoap.numbers.types import ACK, CON

    def enc(mtype, mid: int, code, **opts) -> int:
        m = Message(code=code, **opts)
        m.mtype, m.mid, m.token = mtype, mid, b"\x00\x01"
        return len(m.encode())

    asn1 = ("gsma", "rsp2", "asn1")
    get = enc(CON, 1, Code.POST, uri_path=asn1, content_format=42, payload=b"\xbf\x4f" + b"\x00" * 19)
    answer_header = enc(ACK, 1, Code.CHANGED, content_format=42)
    note_small = enc(CON, 2, Code.CONTENT, observe=7, payload=b"\x01")
    note_full_header = enc(CON, 2, Code.CONTENT, observe=7, content_format=42)
    received = enc(CON, 3, Code.POST, uri_path=asn1, content_format=42, payload=bytes.fromhex("bf4e028100"))
    changed = enc(ACK, 3, Code.CHANGED)
    package_tag = 4  # BF4E + length around the package the GetEimPackage answer carried (BF4F ... -> BF4E ...)
    # taken away from the measured flow: the GetEimPackage exchange (its request, its answer's header, one
    # datagram each way) and the small notification; added: the notification with the package, the
    # TransferEimPackageResponse exchange
    b_costs = get + answer_header + note_small + 2 * UDP_IP
    a_costs = note_full_header + package_tag + received + changed + 2 * UDP_IP
    coap_push = next((r for r in rows if r["binding"] == "coap" and r["mode"] == "push"), None)
    base = coap_push["bytes with IPv4+UDP"] if coap_push else 0.0
    return {
        "binding": "coap",
        "mode": "push, package in the notification (computed)",
        "datagrams": (coap_push["datagrams"] if coap_push else 0),
        "bytes (UDP payload)": (coap_push["bytes (UDP payload)"] if coap_push else 0) - b_costs + a_costs,
        "bytes with IPv4+UDP": base - b_costs + a_costs,
        "standing unit bytes": coap_push["standing unit bytes"] if coap_push else 0,
        "standing unit": "registration",
        "per hour": coap_push["per hour"] if coap_push else 0,
    }


# ---------------------------------------------------------------------------------------------- fan-out
_DEVICES = r"""
import selectors, socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
eids = [sys.stdin.readline().strip() for _ in range(n)]
server = ("127.0.0.1", port)
socks, regs = [], []
for i, eid in enumerate(eids):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.setblocking(False)
    opts = bytes([0x60, 0x55]) + b"esipa" + bytes([0x04]) + b"push" + bytes([0x0D, 32 - 13]) + eid.encode()
    regs.append(bytes([0x44, 0x01]) + struct.pack(">H", i % 65536) + struct.pack(">I", i) + opts)
    socks.append(s)
sel = selectors.DefaultSelector()
for i, s in enumerate(socks): sel.register(s, selectors.EVENT_READ, i)
answered, acked = set(), set()
last_send = 0.0
deadline = time.time() + 600
while time.time() < deadline:
    if len(answered) < n and time.time() - last_send > 1.0:  # (re)send unanswered registrations, in bursts
        for i in range(n):
            if i not in answered:
                socks[i].sendto(regs[i], server)
                if i % 100 == 99: time.sleep(0.005)
        last_send = time.time()
    for key, _ in sel.select(0.2):
        s, i = key.fileobj, key.data
        try:
            data = s.recv(2048)
        except BlockingIOError:
            continue
        kind = data[0] >> 4 & 3
        if kind == 2 and i not in answered:  # ACK carrying the registration answer
            answered.add(i)
            if len(answered) == n: print("registered", flush=True)
        elif kind == 0:  # CON notification: acknowledge it
            s.sendto(bytes([0x60, 0x00]) + data[2:4], server)
            if i not in acked:
                acked.add(i)
                if len(acked) == n: print("notified", flush=True)
"""


async def fanout(n: int) -> dict[str, Any]:
    from eim.bindings.coap import CoapBinding
    from eim.bindings.coap_observe import PushService
    from rsp.pki import lab_eid

    async def yes(_eid: str) -> bool:
        return True

    async def no(_eid: str) -> bool:
        return False

    class NoHandler:
        async def handle(self, message: bytes, ctx: Any) -> bytes | None:
            return None

    port = _free_udp()
    push = PushService(no, yes, max_observers=n + 10)
    binding = CoapBinding(NoHandler(), "127.0.0.1", port, push=push)
    await binding.start()
    eids = [lab_eid(100_000 + i) for i in range(n)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    proc = await asyncio.create_subprocess_exec(
        PY, "-c", _DEVICES, str(port), str(n), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(e + "\n" for e in eids).encode())
    await proc.stdin.drain()
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
        if line.strip() != b"registered":
            raise RuntimeError(f"devices: {line!r}")
        while len(push.table) < n:  # noqa: ASYNC110 - the table is filled by the binding
            await asyncio.sleep(0.05)
        per_observer = (tracemalloc.get_traced_memory()[0] - base) / n
        tracemalloc.stop()
        t0 = time.perf_counter()
        for eid in eids:
            push.wake(eid)
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
        elapsed = time.perf_counter() - t0
        if line.strip() != b"notified":
            raise RuntimeError(f"devices: {line!r}")
        row = {
            "observers": n,
            "bytes per observer (tracemalloc)": per_observer,
            "wake all -> all acknowledged s": elapsed,
            "notifications/s": n / elapsed,
            "still observing": len(push.table),
        }
        print(_fmt_row(row), flush=True)
        return row
    finally:
        proc.kill()
        await proc.wait()
        await binding.stop()


# ---------------------------------------------------------------------------------------------- two workers
async def workers(ops: int) -> dict[str, Any]:
    from demo.services import run_postgres
    from eim.bindings.coap import CoapBinding
    from eim.bindings.coap_observe import PushService
    from eim.push_bus import PgWakeBus

    with run_postgres() as pg:
        import asyncpg

        conn = await asyncpg.connect(pg.dsn)
        await conn.execute('CREATE DATABASE "bench_push"')
        await conn.close()
        dsn = pg.dsn.rsplit("/", 1)[0] + "/bench_push"
        hits: list[float] = []

        async def yes(_eid: str) -> bool:
            return True

        push_b = PushService(yes, yes)
        bus_a = PgWakeBus(dsn, [], worker="a")
        bus_b = PgWakeBus(dsn, [push_b], worker="b")
        await bus_a.start()
        await bus_b.start()
        from rsp.pki import lab_eid

        eid = lab_eid(4242)
        port = _free_udp()

        class NoHandler:
            async def handle(self, message: bytes, ctx: Any) -> bytes | None:
                return None

        binding = CoapBinding(NoHandler(), "127.0.0.1", port, push=push_b)
        await binding.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        opts = bytes([0x55]) + b"esipa" + bytes([0x04]) + b"push" + bytes([0x0D, 32 - 13]) + eid.encode()
        sock.sendto(bytes([0x41, 0x01, 0, 1, 0x77, 0x60]) + opts, ("127.0.0.1", port))
        await loop.sock_recv(sock, 2048)
        try:
            for _ in range(ops):
                t0 = time.perf_counter()
                bus_a.wake(eid)
                data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 10)
                hits.append(time.perf_counter() - t0)
                sock.sendto(bytes([0x60, 0x00]) + data[2:4], ("127.0.0.1", port))
                await asyncio.sleep(0.02)
        finally:
            sock.close()
            await binding.stop()
            await bus_a.stop()
            await bus_b.stop()
        row = {
            "wake-ups": ops,
            "worker A -> device at worker B, median ms": statistics.median(hits) * 1000,
            "p99 ms": percentile(hits, 99) * 1000,
            "max ms": max(hits) * 1000,
        }
        print(_fmt_row(row), flush=True)
        return row


# ---------------------------------------------------------------------------------------------- helpers
def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fmt_row(row: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    return "  ".join(f"{k}={f(v)}" for k, v in row.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.coap_push", description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="latency,air,fanout,workers")
    ap.add_argument("--bindings", default="coap,coaps,mqtt")
    ap.add_argument("--ops", type=int, default=10)
    ap.add_argument("--poll-interval", type=float, default=5.0)
    ap.add_argument("--refresh", type=float, default=6.0, help="eim.push_refresh for the air part (s)")
    ap.add_argument("--observers", type=int, default=10_000)
    args = ap.parse_args(argv)
    parts = set(args.part.split(","))
    bindings = args.bindings.split(",")
    os.chdir(REPO)
    print(machine(), flush=True)
    if "latency" in parts:
        print("\n# REST call -> result recorded (PSMO getRAT)")
        latency(bindings, args.ops, args.poll_interval)
    if "air" in parts:
        print("\n# bytes on the air per PSMO, push vs poll (CoAP, CoAPS)")
        air(bindings, args.refresh)
    if "fanout" in parts:
        print("\n# observers held by one worker")
        asyncio.run(fanout(args.observers))
    if "workers" in parts:
        print("\n# wake-up across workers (PostgreSQL LISTEN/NOTIFY)")
        asyncio.run(workers(args.ops * 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
