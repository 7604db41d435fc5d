"""Benchmark 4b: bytes on the air for an indirect profile download (12 KB TS.48-sized profile) per binding.

The whole lab as real processes (``demo.stack.LabStack``: ``smdpp serve`` over HTTPS, ``eim serve`` with its ES9+
relay, the software eUICC behind the virtual modem, ``ipa run``), with a counting proxy (:mod:`bench.proxy`)
between the IPA and the eIM (MQTT: between the IPA and the broker). The operator queues a download operation in
indirect mode; everything the IPA exchanges with the eIM until the operation is done is counted, minus the idle
polls in that window (counted by their ``BF4F03020101`` answers and priced at the idle-poll cost measured just
before). *DER* = the ESipa messages themselves (HTTP bodies, CoAP payloads, MQTT PUBLISH payloads).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Section


def one_binding(binding: str, workdir: Path) -> dict[str, Any]:
    from bench.proxy import CountingProxy
    from demo.stack import LabStack

    stack = LabStack(workdir=workdir, binding=binding, poll_interval=1.0)
    try:
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.create_pki()
        stack.start_broker()
        stack.start_smdpp()
        stack.eim_config()
        stack.start_eim()
        stack.create_card()
        stack.start_modem()
        key = {"http": "eim_http", "coap": "eim_coap", "mqtt": "mqtt"}[binding]
        proxy = CountingProxy(stack.ports[key], udp=binding == "coap", protocol=binding, esipa_only=binding == "http")
        with proxy:
            real = dict(stack.ports)
            stack.ports[key] = proxy.port  # the IPA's configuration points at the proxy
            stack.add_initial_eim()
            stack.ports["eim_http"] = real["eim_http"]  # the operator API bypasses it
            stack.register_euicc()
            stack.ports[key] = proxy.port
            stack.start_ipa()
            stack.ports["eim_http"] = real["eim_http"]
            time.sleep(3.0)  # the IPA starts and settles into idle polling
            i0 = proxy.counts.snapshot()
            time.sleep(4.0)
            idle = proxy.counts.snapshot().minus(i0)
            order = stack.smdp_order("ts48")
            before = proxy.counts.snapshot()
            op = stack.run_op("download", {"activationCode": order["activation_code"], "mode": "indirect"})
            time.sleep(0.5)
            window = proxy.counts.snapshot().minus(before)
        if op["status"] != "done":
            raise RuntimeError(f"indirect download over {binding}: {op['status']} {op.get('error')}")
        polls = max(1, idle.idle_polls)
        per_poll_up, per_poll_down = idle.up / polls, idle.down / polls
        n = window.idle_polls
        return {
            "up": window.up - n * per_poll_up,
            "down": window.down - n * per_poll_down,
            "der_up": window.der_up - n * 21 if binding != "mqtt" or window.der_up else 0,
            "der_down": window.der_down - n * 6,
            "messages": window.messages_up - n,
            "idle_polls_removed": n,
            "chunks": window.up_chunks + window.down_chunks,
            "idle_poll_up": per_poll_up,
            "idle_poll_down": per_poll_down,
        }
    finally:
        stack.stop()


def run(quick: bool = False, *, bindings: tuple[str, ...] = ("http", "coap", "mqtt")) -> Section:
    sec = Section("air_download", "4b. Bytes on the air: indirect download of a 12 KB profile")
    rows = []
    figures: dict[str, Any] = {}
    for binding in bindings:
        with tempfile.TemporaryDirectory(prefix=f"bench-dl-{binding}-") as tmp:
            f = one_binding(binding, Path(tmp))
        figures[binding] = f
        total, der = f["up"] + f["down"], f["der_up"] + f["der_down"]
        rows.append(
            [
                binding,
                f["messages"],
                round(f["der_up"]),
                round(f["der_down"]),
                round(f["up"]),
                round(f["down"]),
                round(total - der),
                f"{total / der:.3f}" if der else "-",
                f["idle_polls_removed"],
            ]
        )
        print(
            f"  air download {binding}: socket {f['up']:.0f}+{f['down']:.0f} B, DER {f['der_up']:.0f}+"
            f"{f['der_down']:.0f} B",
            flush=True,
        )
    sec.figures = figures
    sec.add(
        "`make demo`'s lab as real processes (SM-DP+ over HTTPS, `eim serve` relaying ES9+, virtual modem, "
        "`ipa run`, block size 255); the ts48 test profile (BPP ~12.7 KB). Counted between the IPA and the eIM "
        "(MQTT: the IPA's broker connection) from the operator's request until the operation is done: "
        "GetEimPackage with the download trigger, InitiateAuthentication, AuthenticateClient, "
        "GetBoundProfilePackage, the result and the PIR notification. Idle polls in that window are removed "
        "at their measured cost. No TLS/DTLS on the ESipa side in the lab."
    )
    sec.add("")
    sec.table(
        [
            "binding",
            "IPA messages with a body",
            "DER up",
            "DER down",
            "socket up",
            "socket down",
            "overhead bytes",
            "socket / DER",
            "idle polls removed",
        ],
        rows,
    )
    return sec
