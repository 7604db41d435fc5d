"""Benchmark 3: a profile download over the serial line - virtual modem on a real pty, throttled to 115200 baud
(8N1), the software eUICC as its SIM, the firmware bridge (AT+CSIM or AT+CGLA) and the IPA's ES10 client with
STORE DATA blocks of 120 or 255 bytes. The SM-DP+ side is the lab SM-DP+'s ES9+ functions called in-process
(its cost is not on the line and is excluded from the timed ES10 work).

Wire-time lower bound (the bar's denominator): AT+CSIM and AT+CGLA carry APDUs as hexadecimal text, so every
byte of an ES10 command sent to the eUICC and of its answer costs at least two characters on the line, each 10
bits (8N1). LB = 2 × (ES10 command bytes + ES10 answer bytes) × 10 / baud, summed over the whole download
(GetEUICCInfo1, GetEUICCChallenge, AuthenticateServer, PrepareDownload, every BPP segment). AT framing, APDU
headers, status words, GET RESPONSE rounds and turnaround gaps are overhead above it.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Section, versus
from bench.smdpp_download import _segments, authenticate_server_command, prepare_download_command

B64 = base64.b64encode
BAUD = 115200


class CountingEs10:
    def __init__(self, es10: Any) -> None:
        self.es10 = es10
        self.cmd_bytes = 0
        self.resp_bytes = 0
        self.seconds = 0.0

    async def call(self, command: bytes, step: str = "ES10") -> bytes:
        t = time.perf_counter()
        answer = await self.es10.call(command, step)
        self.seconds += time.perf_counter() - t
        self.cmd_bytes += len(command)
        self.resp_bytes += len(answer)
        return answer


async def download(ctx: Any, es10: CountingEs10, matching_id: str) -> int:
    """SGP.22 download with the SM-DP+ in-process; returns the BPP size."""
    from rsp import tlv
    from smdpp.es9plus import FUNCTIONS

    d = base64.b64decode
    info1 = await es10.call(b"\xbf\x20\x00", "GetEUICCInfo1")
    challenge = tlv.require(await es10.call(b"\xbf\x2e\x00", "GetEUICCChallenge"), 0x80).value
    auth = FUNCTIONS["initiateAuthentication"](
        ctx, {"euiccChallenge": B64(challenge).decode(), "euiccInfo1": B64(info1).decode(), "smdpAddress": ctx.address}
    )
    asr = await es10.call(authenticate_server_command(auth, matching_id), "AuthenticateServer")
    client = FUNCTIONS["authenticateClient"](
        ctx, {"transactionId": auth["transactionId"], "authenticateServerResponse": B64(asr).decode()}
    )
    pdr = await es10.call(prepare_download_command(client), "PrepareDownload")
    bpp = FUNCTIONS["getBoundProfilePackage"](
        ctx, {"transactionId": auth["transactionId"], "prepareDownloadResponse": B64(pdr).decode()}
    )
    raw = d(bpp["boundProfilePackage"])
    pir = b""
    for segment in _segments(raw):
        pir = await es10.call(segment, "LoadBoundProfilePackage")
    if tlv.parse_exact(pir).tag != 0xBF37:
        raise RuntimeError("no ProfileInstallationResult at the end of the BPP")
    FUNCTIONS["handleNotification"](ctx, {"pendingNotification": B64(pir).decode()})
    return len(raw)


async def one_case(ctx: Any, store: Any, pki: Any, profile: str, route: str, block: int, baud: int) -> dict:
    from euicc.card import SoftEuicc
    from firmware_bridge.at import AtEngine
    from firmware_bridge.channel import AtApduChannel
    from firmware_bridge.virtual_modem import VirtualModem
    from ipa.es10 import Es10Client
    from smdpp import orders

    order = orders.create_order(store, profile=profile, smdp_address=ctx.address)
    card = SoftEuicc.create(pki.root, pki.eid, None)
    with VirtualModem(card, baud=baud) as vm:
        async with AtEngine(vm.path, timeout=30, long_timeout=60) as at:
            channel = AtApduChannel(at, "generic", route)
            await channel.open()
            apdus = 0
            transmit = channel.transmit

            async def counted(apdu: bytes) -> bytes:
                nonlocal apdus
                apdus += 1
                return await transmit(apdu)

            channel.transmit = counted  # type: ignore[method-assign]
            es10 = CountingEs10(Es10Client(channel, block))
            in0, out0 = vm.stats.bytes_in, vm.stats.bytes_out
            t = time.perf_counter()
            size = await download(ctx, es10, order.matching_id)
            total = time.perf_counter() - t
            line = vm.stats.bytes_in - in0 + vm.stats.bytes_out - out0
            await channel.close()
    if store.get(order.matching_id).state != "installed":
        raise RuntimeError("the order is not installed after the download")
    lb = 2 * (es10.cmd_bytes + es10.resp_bytes) * 10 / baud
    return {
        "profile": profile,
        "route": route,
        "block": block,
        "bpp_bytes": size,
        "total_s": total,
        "es10_s": es10.seconds,
        "apdus": apdus,
        "line_bytes": line,
        "payload_bytes": es10.cmd_bytes + es10.resp_bytes,
        "lower_bound_s": lb,
        "ratio": es10.seconds / lb,
        "line_time_s": line * 10 / baud,
        "line_ratio": es10.seconds / (line * 10 / baud),
    }


def run(
    quick: bool = False,
    *,
    baud: int = BAUD,
    profiles: tuple[str, ...] | None = None,
    routes: tuple[str, ...] = ("csim", "cgla"),
    blocks: tuple[int, ...] = (120, 255),
) -> Section:
    from rsp.pki import create_lab_pki
    from smdpp.config import SmdppConfig
    from smdpp.es9plus import SmdpContext
    from smdpp.server import finalize, load_credentials
    from smdpp.store import OrderStore

    sec = Section("serial", "3. Profile download over the serial line")
    profiles = profiles or (("ts48",) if quick else ("ts48", "large"))
    rows = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serial-") as tmp:
        pki = create_lab_pki(Path(tmp) / "pki", curves=("nist",))
        config = SmdppConfig(data_dir=Path(tmp) / "data", pki_dir=pki.root, port=8443, curves=("nist",))
        creds = load_credentials(config)
        config = finalize(config, creds)
        store = OrderStore.in_dir(config.data_dir)
        ctx = SmdpContext(config=config, credentials=creds, store=store)
        for profile in profiles:
            for route in routes:
                for block in blocks:
                    r = asyncio.run(one_case(ctx, store, pki, profile, route, block, baud))
                    key = f"{profile}/{route}/{block}"
                    figures[key] = r
                    rows.append(
                        [
                            profile,
                            r["bpp_bytes"],
                            route,
                            block,
                            r["es10_s"],
                            r["apdus"],
                            r["line_bytes"],
                            r["payload_bytes"],
                            r["lower_bound_s"],
                            r["ratio"],
                            r["line_ratio"],
                            versus(r["ratio"], 1.25, higher_is_better=False) if block == 255 else "-",
                        ]
                    )
                    print(
                        f"  serial {key}: {r['es10_s']:.2f} s, {r['apdus']} APDUs, {r['line_bytes']} line bytes, "
                        f"ratio {r['ratio']:.3f}",
                        flush=True,
                    )
        store.close()
    sec.figures = figures
    sec.add(
        f"Virtual modem on a pty at {baud} baud (8N1, both directions throttled), software eUICC as the SIM, "
        "`firmware_bridge.AtApduChannel` + `ipa.es10.Es10Client`. *time* = the ES10 work of the whole download "
        "(the SM-DP+ runs in-process and is not on the line). *lower bound* = 2 hex characters × 10 bits for "
        "every byte of every ES10 command and answer, / baud (see the module docstring). *line ratio* = time / "
        "wire time of the bytes that really crossed the line (1.0 = the line never idles)."
    )
    sec.add("")
    sec.table(
        [
            "profile",
            "BPP bytes",
            "route",
            "block",
            "time s",
            "APDUs",
            "line bytes",
            "ES10 payload bytes",
            "lower bound s",
            "ratio",
            "line ratio",
            "bar (255-byte blocks: ≤ 1.25)",
        ],
        rows,
    )
    worst = max((f["ratio"] for f in figures.values() if f["block"] == 255), default=0.0)
    sec.add(
        f"- Bar, serial download time / wire-time lower bound with 255-byte blocks (worst case): {worst:.2f} → "
        f"{versus(worst, 1.25, higher_is_better=False)}"
    )
    return sec
