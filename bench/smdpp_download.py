"""SM-DP+ server-side cost of one complete download (ES9+ functions called in-process, no HTTP/TLS).

Each download: InitiateAuthentication, AuthenticateClient, GetBoundProfilePackage, HandleNotification(PIR) on
the SM-DP+, with the software eUICC (``euicc.card.SoftEuicc``, ES10 commands executed directly) doing the card
side between the calls; only the SM-DP+ functions are timed. Prints per-function milliseconds and the resulting
single-core ceiling in downloads/s for each profile.

    python bench/smdpp_download.py [--downloads 50] [--curve nist|brainpool]

Reference (performance.md): osmo-smdpp serves 25.5 downloads/s sequentially with a 13 KB TS.48 BPP.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

from euicc.card import SoftEuicc
from rsp import asn1, tlv
from rsp.pki import create_lab_pki
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.es9plus import FUNCTIONS, SmdpContext
from smdpp.server import finalize, load_credentials
from smdpp.store import OrderStore

B64 = base64.b64encode


def _card(card: SoftEuicc, command: bytes) -> bytes:
    data, sw = card.execute(command)
    if sw != 0x9000:
        raise RuntimeError(f"card refused {command[:2].hex()}: {sw:04X}")
    return data


def _segments(bpp: bytes) -> list[bytes]:
    top = tlv.parse_exact(bpp)
    parts = tlv.children(top)
    out = [bpp[: top.header_len] + parts[0].raw]
    for part in parts[1:]:
        if part.tag in (0xA0, 0xA2):
            out.append(part.raw)
        else:
            out.append(part.raw[: part.header_len])
            out.extend(c.raw for c in tlv.children(part))
    return out


TAC = b"\x35\x29\x06\x11"  # the device's Type Allocation Code in CtxParams1's deviceInfo


def authenticate_server_command(auth: dict, matching_id: str) -> bytes:
    """ES10b.AuthenticateServer (BF38, SGP.22 §5.7.13) from the SM-DP+'s InitiateAuthentication answer (its base64
    fields) and CtxParams1 (ctxParamsForCommonAuthentication: ``matching_id``, :data:`TAC`, no capabilities)."""
    d = base64.b64decode
    ctx1 = asn1.encode(
        "CtxParams1",
        (
            "ctxParamsForCommonAuthentication",
            {"matchingId": matching_id, "deviceInfo": {"tac": TAC, "deviceCapabilities": {}}},
        ),
    )
    return tlv.encode(
        0xBF38,
        d(auth["serverSigned1"])
        + d(auth["serverSignature1"])
        + d(auth["euiccCiPKIdToBeUsed"])
        + d(auth["serverCertificate"])
        + ctx1,
    )


def prepare_download_command(client: dict) -> bytes:
    """ES10b.PrepareDownload (BF21, SGP.22 §5.7.5) from the SM-DP+'s AuthenticateClient answer, without a
    confirmation code."""
    d = base64.b64decode
    return tlv.encode(0xBF21, d(client["smdpSigned2"]) + d(client["smdpSignature2"]) + d(client["smdpCertificate"]))


def one_download(ctx: SmdpContext, card: SoftEuicc, matching_id: str, timings: dict[str, float]) -> int:
    """One download; returns the size of the BPP."""

    def server(name: str, request: dict):
        t = time.perf_counter()
        result = FUNCTIONS[name](ctx, request)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
        return result

    info1 = _card(card, b"\xbf\x20\x00")
    challenge = tlv.require(_card(card, b"\xbf\x2e\x00"), 0x80).value
    auth = server(
        "initiateAuthentication",
        {"euiccChallenge": B64(challenge).decode(), "euiccInfo1": B64(info1).decode(), "smdpAddress": ctx.address},
    )
    d = base64.b64decode
    asr = _card(card, authenticate_server_command(auth, matching_id))
    client = server(
        "authenticateClient", {"transactionId": auth["transactionId"], "authenticateServerResponse": B64(asr).decode()}
    )
    pdr = _card(card, prepare_download_command(client))
    bpp = server(
        "getBoundProfilePackage", {"transactionId": auth["transactionId"], "prepareDownloadResponse": B64(pdr).decode()}
    )
    pir = b""
    raw_bpp = d(bpp["boundProfilePackage"])
    for segment in _segments(raw_bpp):
        pir = _card(card, segment)
    server("handleNotification", {"pendingNotification": B64(pir).decode()})
    return len(raw_bpp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--downloads", type=int, default=50)
    ap.add_argument("--curve", default="nist", choices=("nist", "brainpool"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = create_lab_pki(Path(tmp) / "pki", curves=(args.curve,))
        config = SmdppConfig(data_dir=Path(tmp) / "data", pki_dir=pki.root, port=8443, curves=(args.curve,))
        creds = load_credentials(config)
        config = finalize(config, creds)
        store = OrderStore.in_dir(config.data_dir)
        ctx = SmdpContext(config=config, credentials=creds, store=store)
        print(f"SM-DP+ server-side cost per download, {args.downloads} downloads per profile, curve {args.curve}")
        print(
            f"{'profile':<10} {'BPP bytes':>9} {'initAuth':>9} {'authCli':>9} {'getBPP':>9} {'notify':>9} "
            f"{'total ms':>9} {'dl/s':>7}"
        )
        for profile in ("ts48", "ts48-ppk", "large"):
            card = SoftEuicc.create(pki.root, pki.eid, None, curve=args.curve)
            timings: dict[str, float] = {}
            one_download(
                ctx, card, orders.create_order(store, profile=profile, smdp_address=ctx.address).matching_id, {}
            )  # warm-up (caches, imports)
            # orders are created (and pre-protected packages prepared) before the downloads, as ES2+ does
            batch = [
                orders.create_order(store, profile=profile, smdp_address=ctx.address) for _ in range(args.downloads)
            ]
            bpp_size = 0
            for order in batch:
                card = SoftEuicc.create(pki.root, pki.eid, None, curve=args.curve)
                bpp_size = one_download(ctx, card, order.matching_id, timings)
                assert store.get(order.matching_id).state == "installed"
            ms = {k: v * 1000 / args.downloads for k, v in timings.items()}
            total = sum(ms.values())
            print(
                f"{profile:<10} {bpp_size:>9} {ms['initiateAuthentication']:>9.2f} {ms['authenticateClient']:>9.2f} "
                f"{ms['getBoundProfilePackage']:>9.2f} {ms['handleNotification']:>9.2f} {total:>9.2f} "
                f"{1000 / total:>7.0f}"
            )
        store.close()


if __name__ == "__main__":
    main()


def run(quick: bool = False, *, downloads: int | None = None, curve: str = "nist"):
    """Benchmark 6 for ``python -m bench``: complete downloads per second with in-process software eUICCs (one
    process, one core: SM-DP+ functions + the card's ES10 work), and the SM-DP+'s share of it."""
    from bench.common import Section

    n = downloads or (5 if quick else 30)
    sec = Section("smdpp", "6. Lab SM-DP+: complete downloads per second")
    rows = []
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        pki = create_lab_pki(Path(tmp) / "pki", curves=(curve,))
        config = SmdppConfig(data_dir=Path(tmp) / "data", pki_dir=pki.root, port=8443, curves=(curve,))
        creds = load_credentials(config)
        config = finalize(config, creds)
        store = OrderStore.in_dir(config.data_dir)
        ctx = SmdpContext(config=config, credentials=creds, store=store)
        for profile in ("ts48", "ts48-ppk", "large"):
            card = SoftEuicc.create(pki.root, pki.eid, None, curve=curve)
            one_download(
                ctx, card, orders.create_order(store, profile=profile, smdp_address=ctx.address).matching_id, {}
            )  # warm-up
            batch = [orders.create_order(store, profile=profile, smdp_address=ctx.address) for _ in range(n)]
            cards = [SoftEuicc.create(pki.root, pki.eid, None, curve=curve) for _ in range(n)]
            timings: dict[str, float] = {}
            size = 0
            t = time.perf_counter()
            for order, card in zip(batch, cards, strict=True):
                size = one_download(ctx, card, order.matching_id, timings)
            wall = time.perf_counter() - t
            for order in batch:
                assert store.get(order.matching_id).state == "installed"
            server = sum(timings.values())
            figures[profile] = {
                "bpp_bytes": size,
                "downloads": n,
                "per_s": n / wall,
                "server_ms": server * 1000 / n,
                "card_ms": (wall - server) * 1000 / n,
                "server_only_per_s": n / server,
                **{f"{k}_ms": v * 1000 / n for k, v in timings.items()},
            }
            f = figures[profile]
            rows.append(
                [
                    profile,
                    size,
                    n,
                    f["per_s"],
                    f["server_ms"],
                    f["card_ms"],
                    f["server_only_per_s"],
                    f["initiateAuthentication_ms"],
                    f["authenticateClient_ms"],
                    f["getBoundProfilePackage_ms"],
                    f["handleNotification_ms"],
                ]
            )
            print(
                f"  smdpp {profile}: {f['per_s']:.1f} downloads/s complete, SM-DP+ {f['server_ms']:.1f} ms "
                f"(ceiling {f['server_only_per_s']:.0f}/s)",
                flush=True,
            )
        store.close()
    sec.figures = figures
    sec.add(
        f"{n} sequential downloads per profile, curve {curve}, one process: the lab SM-DP+'s ES9+ functions "
        "called directly (no HTTP/TLS) and a fresh software eUICC (`SoftEuicc`, ES10 commands executed "
        "directly) per download; orders created beforehand (as ES2+ does). *complete/s* = whole downloads "
        "(SM-DP+ + card) per second of wall time; *SM-DP+ ceiling* = 1 / SM-DP+ time per download. "
        "Reference: osmo-smdpp 25.5 downloads/s sequential (13 KB BPP, performance.md)."
    )
    sec.add("")
    sec.table(
        [
            "profile",
            "BPP bytes",
            "downloads",
            "complete/s",
            "SM-DP+ ms",
            "card ms",
            "SM-DP+ ceiling /s",
            "initAuth ms",
            "authClient ms",
            "getBPP ms",
            "notify ms",
        ],
        rows,
    )
    return sec
