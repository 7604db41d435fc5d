"""What a CoAPS (DTLS 1.2 PSK) poll costs the eIM next to plain CoAP.

``python -m bench.coaps [--seconds S] [--clients N] [--rounds R] [--server eim|binding]`` starts the real
``eim serve`` (SQLite, lab PKI, plain CoAP and CoAPS on loopback, N registered eUICCs with nothing queued, their
keys written with the eIM's own PSK-file functions) and drives it from this process with N aiocoap clients, each
sending GetEimPackageRequest after GetEimPackageRequest (answer BF4F03020101, checked), in three ways:

* ``coap``: plain CoAP, one client context per device;
* ``coaps, session kept``: DTLS, the handshake done once per device (the client holds its session);
* ``coaps, new session``: DTLS, a new client socket and handshake for every poll (a device that wakes up, polls
  and sleeps; also what aiocoap's client does when nothing holds the session between requests).

The modes take turns for ``--rounds`` rounds; printed per mode, the median over the rounds of: polls/s, the eIM
process's CPU per poll (user + system, from /proc, over the whole timed window: the figure that matters on a
shared server) and this load process's CPU per poll (when it is ~1 core, the client is the limit and polls/s
understate the eIM). ``--server binding`` runs the two ``CoapBinding``s alone in front of a handler that answers
``BF4F03020101`` at once: the transport's share. Not run by ``make bench``; documented in docs/esipa-bindings.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PY, REPO, cpu_seconds, machine, wait_healthz

NO_PACKAGE = bytes.fromhex("BF4F03020101")


def eids(n: int) -> list[str]:
    from rsp.pki import lab_eid

    return [lab_eid(900 + i) for i in range(n)]


def poll(eid: str) -> bytes:
    return bytes.fromhex("BF4F125A10" + eid)


async def client_context(port: int | None, eid: str, key: bytes):
    import aiocoap

    if port is None:
        return await aiocoap.Context.create_client_context(transports=["udp6"])
    ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    ctx.client_credentials.load_from_dict(
        {f"coaps://127.0.0.1:{port}/*": {"dtls": {"psk": key, "client-identity": eid.encode()}}}
    )
    return ctx


async def device(mode: str, uri: str, port: int, eid: str, key: bytes, stop: float, counts: list[int]) -> None:
    import aiocoap

    dtls_port = None if mode == "coap" else port
    ctx = None if mode == "coaps, new session" else await client_context(dtls_port, eid, key)
    held = None  # keeps the DTLS session alive between polls (aiocoap's client pool holds it weakly)
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        fresh = ctx is None
        c = await client_context(dtls_port, eid, key) if fresh else ctx
        try:
            msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=poll(eid))
            r = await asyncio.wait_for(c.request(msg).response, 30)
            if r.payload != NO_PACKAGE:
                raise RuntimeError(f"{mode}: unexpected answer {r.code} {r.payload.hex()}")
            held = r
            counts[0] += 1
        finally:
            if fresh:
                await c.shutdown()
    del held
    if ctx is not None:
        await ctx.shutdown()


async def measure(mode: str, uri: str, port: int, keys: dict[str, bytes], seconds: float, pid: int) -> dict:
    loop = asyncio.get_running_loop()
    # warm-up: one poll per device (and, for the kept sessions, the handshakes) outside the timed window
    warm = [0]
    await asyncio.gather(*(device(mode, uri, port, e, k, loop.time() + 0.5, warm) for e, k in keys.items()))
    counts = [0]
    server0, client0, t0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()
    stop = loop.time() + seconds
    await asyncio.gather(*(device(mode, uri, port, e, k, stop, counts) for e, k in keys.items()))
    wall = time.perf_counter() - t0
    n = counts[0]
    return {
        "mode": mode,
        "polls": n,
        "rate": n / wall,
        "server_us": (cpu_seconds(pid) - server0) / n * 1e6,
        "client_us": (cpu_seconds() - client0) / n * 1e6,
        "client_cores": (cpu_seconds() - client0) / wall,
    }


MODES = ("coap", "coaps, session kept", "coaps, new session")


class Constant:
    """The handler of ``--server binding``: every request answered ``BF4F03020101`` (the bindings' own cost)."""

    async def handle(self, message: bytes, ctx) -> bytes:
        return NO_PACKAGE


async def serve_binding(coap: int, coaps: int, psk_file: str) -> None:
    """``--server binding``: plain CoAP and CoAPS ``CoapBinding``s in front of :class:`Constant`, until killed."""
    from eim.bindings.coap import CoapBinding
    from eim.bindings.coap_psk import PskFile

    plain = CoapBinding(Constant(), "127.0.0.1", coap)
    dtls = CoapBinding(Constant(), "127.0.0.1", coaps, psk=PskFile(psk_file))
    await plain.start()
    await dtls.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def run(seconds: float = 5.0, clients: int = 4, rounds: int = 3, server: str = "eim") -> list[dict]:
    """``rounds`` rounds of the three modes, interleaved (a machine shared with other work drifts); per mode the
    median of each figure over the rounds. ``server``: ``eim`` (``eim serve``) or ``binding`` (the CoAP bindings
    alone, a constant answer: what the transport costs without the dispatcher and the store)."""
    import httpx

    from demo.services import free_port
    from eim.bindings.coap_psk import format_psk_line, generate_key, write_psk_file
    from rsp.pki import create_lab_pki

    tmp = Path(tempfile.mkdtemp(prefix="bench-coaps-"))
    pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=[])
    keys = {e: generate_key() for e in eids(clients)}
    write_psk_file(tmp / "coaps.psk", "".join(format_psk_line(e, k) for e, k in keys.items()))
    http, coap, coaps = free_port(), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    cfg = tmp / "eim.toml"
    cfg.write_text(
        f'[eim]\neim_id = "eim.bench"\ndata_dir = "{tmp / "data"}"\nlab_pki = "{pki.root}"\n'
        f'[store]\nurl = "sqlite:///{tmp / "eim.db"}"\n[http]\nport = {http}\n'
        f'[coap]\nenabled = true\nhost = "127.0.0.1"\nport = {coap}\ndtls = true\ndtls_port = {coaps}\n'
        f'psk_file = "{tmp / "coaps.psk"}"\n[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
    )
    log = tmp / "eim.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIM_")}
    if server == "eim":
        argv = [PY, "-m", "eim.cli", "--config", str(cfg), "serve"]
    else:
        argv = [PY, "-m", "bench.coaps", "--serve-binding", f"{coap},{coaps},{tmp / 'coaps.psk'}"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=log.open("wb"), stdout=subprocess.PIPE)
    try:
        if server == "eim":
            wait_healthz(http, proc, log)
            for e in keys:
                httpx.post(f"http://127.0.0.1:{http}/v1/euiccs", json={"eid": e}).raise_for_status()
        elif proc.stdout is None or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the binding server did not start:\n{log.read_text()[-2000:]}")
        results: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode in MODES:
                port = coap if mode == "coap" else coaps
                uri = f"{'coap' if mode == 'coap' else 'coaps'}://127.0.0.1:{port}/gsma/rsp2/asn1"
                results[mode].append(asyncio.run(measure(mode, uri, port, keys, seconds, proc.pid)))
        return [
            {"mode": m, "polls": sum(r["polls"] for r in rs)}
            | {k: statistics.median(r[k] for r in rs) for k in ("rate", "server_us", "client_us", "client_cores")}
            for m, rs in results.items()
        ]
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server", choices=("eim", "binding"), default="eim", help="eim serve, or the bindings alone")
    p.add_argument("--serve-binding", help=argparse.SUPPRESS)  # internal: COAP,COAPS,PSKFILE
    a = p.parse_args()
    if a.serve_binding:
        coap, coaps, psk_file = a.serve_binding.split(",", 2)
        asyncio.run(serve_binding(int(coap), int(coaps), psk_file))
        return
    m = machine()
    print(
        f"# CoAPS vs CoAP poll cost, server {a.server}: {a.clients} clients, {a.rounds} rounds of {a.seconds:.0f} s "
        "per mode (medians)"
    )
    print(f"# {m['nproc']} x {m['cpu']}, {m['memory']}, Python {m.get('python', '')}")
    print("| mode | polls | polls/s | eIM CPU per poll (µs) | load CPU per poll (µs) | load process cores |")
    print("|---|---|---|---|---|---|")
    for r in run(a.seconds, a.clients, a.rounds, a.server):
        print(
            f"| {r['mode']} | {r['polls']:,} | {r['rate']:,.0f} | {r['server_us']:,.0f} | {r['client_us']:,.0f} "
            f"| {r['client_cores']:.2f} |"
        )


if __name__ == "__main__":
    main()
