"""Benchmark 4: bytes on the air per ESipa operation per binding, counted at the socket level by a counting proxy
(:mod:`bench.proxy`) between the simulated IPA and the eIM (MQTT: between the IPA and the broker, the part that
crosses the air), compared with the bare ESipa DER sizes.

Operations: a PSMO (GetEimPackage -> signed EuiccPackageRequest -> ProvideEimPackageResult -> acknowledgement),
an eUICC data request (certificates + IPA capabilities: GetEimPackage -> IpaEuiccDataRequest ->
ProvideEimPackageResult with the certificates), and a no-work poll. HTTP opens one connection per operation (a
device waking up to poll); MQTT and CoAP reuse their session, whose set-up (CONNECT/CONNACK/SUBSCRIBE) is shown
on its own line.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Section

TCP_IP = 40  # IPv4 + TCP header per segment (no options)
UDP_IP = 28  # IPv4 + UDP header per datagram


async def _ipa_ops(binding: str, port: int, eid: str, card_path: str, fleet: Any, proxy: Any) -> dict[str, Any]:
    from bench.eim_load import NO_PACKAGE, CoapEndpoint, HttpClient, MqttPool, get_eim_package_request, provide_result
    from euicc import state as state_mod
    from euicc.card import SoftEuicc
    from euicc.channel import LocalApduChannel
    from ipa.es10 import Es10Client
    from rsp import asn1, tlv

    card = SoftEuicc(state_mod.load(card_path), None)
    es10 = Es10Client(LocalApduChannel(card))
    await es10.open()
    out: dict[str, Any] = {}
    mqtt = None
    coap = None
    if binding == "mqtt":
        before = proxy.counts.snapshot()
        mqtt = MqttPool("127.0.0.1", proxy.port, 1)
        await mqtt.start()
        await asyncio.sleep(0.3)
        out["session set-up"] = (proxy.counts.snapshot().minus(before), 0, 0)
    elif binding == "coap":
        loop = asyncio.get_running_loop()
        transport, coap = await loop.create_datagram_endpoint(CoapEndpoint, remote_addr=("127.0.0.1", proxy.port))

    async def exchange(requests: list[bytes]) -> tuple[Any, list[bytes]]:
        """Send requests in order on a fresh HTTP connection / the MQTT session / CoAP; counts the bytes."""
        answers = []
        before = proxy.counts.snapshot()
        if binding == "http":
            c = HttpClient("127.0.0.1", proxy.port)
            await c.connect()
            for r in requests:
                answers.append(await c.request(r))
            await c.close()
        else:
            for r in requests:
                answers.append(await (mqtt.request(eid, r, 0) if mqtt else coap.request(r)))
        await asyncio.sleep(0.2)  # let the closing handshake / PUBACKs pass the proxy
        return proxy.counts.snapshot().minus(before), answers

    async def step(name: str, first: bytes, respond) -> None:
        """GetEimPackage, then the result the card produces (one connection for both with HTTP)."""
        if binding == "http":
            c = HttpClient("127.0.0.1", proxy.port)
            before = proxy.counts.snapshot()
            await c.connect()
            a = await c.request(first)
            reply = await respond(a)
            b = await c.request(reply)
            await c.close()
            await asyncio.sleep(0.2)
            counts = proxy.counts.snapshot().minus(before)
        else:
            counts1, (a,) = await exchange([first])
            reply = await respond(a)
            counts2, (b,) = await exchange([reply])
            counts = counts1
            for k in counts.__dict__:
                setattr(counts, k, getattr(counts1, k) + getattr(counts2, k))
        if not b.startswith(b"\xbf\x50"):
            raise RuntimeError(f"{name}: unexpected answer {b.hex()}")
        out[name] = (counts, len(first) + len(reply), len(a) + len(b))

    poll = get_eim_package_request(eid)

    async def euicc_data(answer: bytes) -> bytes:
        req = tlv.children(tlv.parse_exact(answer))[0].raw
        if req[:2] != b"\xbf\x52":
            raise RuntimeError(f"expected an IpaEuiccDataRequest, got {answer[:8].hex()}")
        txid = asn1.decode("IpaEuiccDataRequest", req)["eimTransactionId"]
        certs = await es10.get_certs()
        caps = tlv.encode(0xA8, tlv.encode(0x80, bytes([6, 0x40])))
        body = (
            tlv.encode(0xA5, tlv.parse_exact(certs.eum_certificate).value)
            + tlv.encode(0xA6, tlv.parse_exact(certs.euicc_certificate).value)
            + caps
            + tlv.encode(0x87, txid)
        )
        return provide_result(eid, tlv.encode(0xBF52, tlv.encode(0xA0, body)))

    async def psmo(answer: bytes) -> bytes:
        package = tlv.children(tlv.parse_exact(answer))[0].raw
        if package[:2] != b"\xbf\x51":
            raise RuntimeError(f"expected an EuiccPackageRequest, got {answer[:8].hex()}")
        return provide_result(eid, await es10.call(package, "LoadEuiccPackage"))

    await fleet.queue_kind("euicc_data", {"tags": ["euiccCertificate", "eumCertificate", "ipaCapabilities"]})
    await step("eUICC data request", poll, euicc_data)
    await fleet.queue_kind("psmo", {"psmos": [{"getRAT": {}}]})
    await step("PSMO (getRAT)", poll, psmo)
    counts, (a,) = await exchange([poll])
    if a != NO_PACKAGE:
        raise RuntimeError(f"no-work poll answered {a.hex()}")
    out["no-work poll"] = (counts, len(poll), len(a))
    if mqtt is not None:
        await mqtt.close()
    if coap is not None:
        transport.close()
    return out


def run(quick: bool = False) -> Section:
    from bench.eim import eids_for, eim_workers, services
    from bench.proxy import CountingProxy
    from rsp.pki import create_lab_pki

    sec = Section("air", "4. Bytes on the air per operation")
    rows = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-air-") as tmpd, services((), ("mqtt",)) as svc:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        for binding in ("http", "coap", "mqtt"):
            url = f"sqlite:///{tmp}/{binding}.db"
            (tmp / f"cards-{binding}").mkdir()
            fleet = AirFleet(url, pki.root, tmp / f"cards-{binding}")
            asyncio.run(fleet.associate(eids_for(1)))
            eid, path = fleet.cards[0]
            broker = svc["broker"].port if binding == "mqtt" else 0
            with eim_workers(binding, url, pki.root, mqtt_port=broker) as w:
                target = broker if binding == "mqtt" else w["ports"][0]
                with CountingProxy(target, udp=binding == "coap") as proxy:
                    ops = asyncio.run(_ipa_ops(binding, w["ports"][0], eid, path, fleet, proxy))
            for name, (c, der_up, der_down) in ops.items():
                per = UDP_IP if binding == "coap" else TCP_IP
                ip = (c.up_chunks + c.down_chunks) * per
                total = c.up + c.down
                der = der_up + der_down
                figures[f"{binding}/{name}"] = {
                    "up": c.up,
                    "down": c.down,
                    "der_up": der_up,
                    "der_down": der_down,
                    "chunks": c.up_chunks + c.down_chunks,
                    "connections": c.connections,
                }
                rows.append(
                    [
                        binding,
                        name,
                        der_up,
                        der_down,
                        c.up,
                        c.down,
                        total - der if der else "-",
                        f"{total / der:.2f}" if der else "-",
                        c.up_chunks + c.down_chunks,
                        total + ip,
                    ]
                )
                print(f"  air {binding} {name}: socket {c.up}+{c.down} B, DER {der_up}+{der_down} B", flush=True)
    sec.figures = figures
    sec.add(
        "Counted by a loopback proxy at the socket level (application bytes of TCP/UDP, both directions). "
        "*IP estimate* adds 40 bytes (IPv4+TCP) per TCP read or 28 bytes (IPv4+UDP) per datagram seen by the "
        "proxy; TCP handshakes and bare ACKs are not seen by a socket and are not included. HTTP: a new "
        "connection per operation, no TLS (TLS 1.3 would add ~5 KB of handshake with certificates, or ~0.5 KB "
        "resumed, plus 22 bytes per record). CoAP: no DTLS. MQTT: QoS 1 both ways (PUBLISH + PUBACK), "
        "Response Topic and Correlation Data properties on every request."
    )
    sec.add("")
    sec.table(
        [
            "binding",
            "operation",
            "DER up",
            "DER down",
            "socket up",
            "socket down",
            "overhead bytes",
            "socket / DER",
            "reads/datagrams",
            "with IP estimate",
        ],
        rows,
    )
    sec.add("- The indirect download of a 12 KB profile runs through the whole lab: section 4b.")
    return sec


def _fleet_base():
    from bench.eim import Fleet

    return Fleet


class AirFleet(_fleet_base()):
    async def queue_kind(self, kind: str, params: dict) -> None:
        env = await self._env()
        for eid, _ in self.cards:
            await env["service"].create(eid, kind, params)
        await env["store"].close()


_ = time
