"""A scripted ESipa peer (the eIM side) built from ``rsp`` for the IPA tests, and the three servers that carry it:
HTTP (Starlette on a real uvicorn), CoAP (a real aiocoap server) and MQTT (an aiomqtt client on a real Mosquitto).

The peer signs real EuiccPackageRequests with the lab PKI's eIM key (counter per package, association token from
the eUICC), decodes everything the IPA sends with ``rsp.asn1`` (so a wrong encoding fails the test), verifies the
eUICC's signature on every EuiccPackageResult over the bytes as received, acknowledges sequence numbers, and can
relay an indirect download to a lab SM-DP+ over ES9+.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from ipa import messages as m
from rsp import asn1, crypto, tlv
from tests.services import free_port


class Drop(Exception):
    """Raised by a fault hook: the server answers with a transport error (HTTP 503 / CoAP 5.03 / no MQTT answer)."""


@dataclass(frozen=True)
class MqttErrorAnswer:
    """What :class:`MqttEim` publishes as the eIM's MQTT binding does when it has no ESipa answer: ``text`` with
    Content Type text/plain and the user property ``esipa-status``."""

    status: int
    text: str


@dataclass
class Received:
    name: str
    value: Any
    der: bytes


@dataclass
class ScriptedEim:
    eim_key: Any
    euicc_cert: Any
    eid: bytes
    eim_id: str = "lab-eim"
    association_token: int = 1
    counter: int = 0
    packages: list[bytes] = field(default_factory=list)  # GetEimPackageResponse alternatives, served in order
    received: list[Received] = field(default_factory=list)
    results: list[bytes] = field(default_factory=list)  # every ProvideEimPackageResult (DER) accepted
    notifications: list[bytes] = field(default_factory=list)  # HandleNotification payloads accepted
    epr_verified: list[bool] = field(default_factory=list)
    drop: Any = None  # callable(name, der) -> bool: drop this message
    ack: bool = True
    relay: Any = None  # ES9+ relay for indirect downloads (Es9Relay)
    decode_errors: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ packages
    def sign(
        self, package: bytes, *, txid: bytes | None = None, eid: bytes | None = None, with_txid: bool = True
    ) -> bytes:
        """EuiccPackageRequest BF51 around ``package`` (A0 psmoList / A1 ecoList). ``with_txid=False`` leaves out
        eimTransactionId (OPTIONAL in EuiccPackageSigned, SGP.32 v1.2)."""
        self.counter += 1
        txid = txid if txid is not None else os.urandom(16)
        signed = tlv.encode(
            0x30,
            tlv.encode(0x80, self.eim_id.encode())
            + tlv.encode(0x5A, eid or self.eid)
            + m.enc_int(0x81, self.counter)
            + (tlv.encode(0x82, txid) if with_txid else b"")
            + package,
        )
        sig = crypto.sign(self.eim_key, signed + m.enc_int(0x84, self.association_token))
        return tlv.encode(0xBF51, signed + tlv.encode(0x5F37, sig))

    def psmo(self, *ops: bytes, **kw) -> bytes:
        return self.sign(tlv.encode(0xA0, b"".join(ops)), **kw)

    @staticmethod
    def enable(iccid: str, rollback: bool = False) -> bytes:
        return tlv.encode(0xA3, tlv.encode(0x5A, m.iccid_to_bytes(iccid)) + (b"\x05\x00" if rollback else b""))

    @staticmethod
    def disable(iccid: str) -> bytes:
        return tlv.encode(0xA4, tlv.encode(0x5A, m.iccid_to_bytes(iccid)))

    @staticmethod
    def list_profiles() -> bytes:
        return b"\xbf\x2d\x00"

    def queue(self, alternative: bytes) -> None:
        self.packages.append(alternative)

    # ------------------------------------------------------------------ the ESipa function dispatcher
    async def handle(self, der: bytes) -> bytes | None:
        try:
            name, value = asn1.decode("EsipaMessageFromIpaToEim", der)
        except asn1.DecodeError as exc:
            self.decode_errors.append(str(exc))
            raise
        self.received.append(Received(name, value, der))
        if self.drop is not None and self.drop(name, der):
            raise Drop(name)
        if name == "getEimPackageRequest":
            if value["eidValue"] != self.eid:
                return tlv.encode(0xBF4F, m.enc_int(0x02, 2))
            if self.packages:
                return tlv.encode(0xBF4F, self.packages.pop(0))
            return bytes.fromhex("BF4F03020101")
        if name == "provideEimPackageResult":
            self.results.append(der)
            acks = self._acks(der)
            if not self.ack:
                return bytes.fromhex("BF50023000")
            return tlv.encode(0xBF50, tlv.encode(0xBF53, b"".join(m.enc_int(0x80, s) for s in acks)))
        if name == "handleNotificationEsipa":
            self.notifications.append(der)
            return None
        if name == "transferEimPackageResponse":
            return None
        if self.relay is not None:
            return await self.relay.handle(name, der)
        raise AssertionError(f"unexpected {name}")

    def _acks(self, der: bytes) -> list[int]:
        """Sequence numbers to acknowledge: the EPR's (signature verified first) and those of the notifications."""
        body = tlv.children(tlv.parse_exact(der))
        alt = body[-1]
        seqs: list[int] = []
        eprs = []
        if alt.tag == 0xBF51:
            eprs.append(alt)
        elif alt.tag == 0x30:
            kids = tlv.children(alt)
            eprs.append(kids[0])
            for n in tlv.children(kids[1]):
                seqs.append(m.parse_pending_notification(n).seq_number)
        for e in eprs:
            parsed = m.parse_euicc_package_result(e.raw)
            inner = tlv.children(e)[0]
            if inner.tag in (0xA0, 0xA1):
                signed = tlv.find(inner, 0x30).raw
                sig = tlv.find(inner, 0x5F37).value
                ok = crypto.is_valid_signature(self.euicc_cert, signed + m.enc_int(0x84, self.association_token), sig)
                self.epr_verified.append(ok)
            if parsed.seq_number is not None:
                seqs.insert(0, parsed.seq_number)
        return seqs

    def result_kinds(self) -> list[str]:
        return [asn1.decode("EsipaMessageFromIpaToEim", d)[1]["eimPackageResult"][0] for d in self.results]


class Es9Relay:
    """The eIM's ES9+' side of an indirect download: ESipa BF39/BF3B/BF3A/BF41 -> ES9+ JSON -> ESipa answers
    (stripping the TLV envelopes the JSON carries, as an eIM must)."""

    def __init__(self, base_url: str, ca_file: str) -> None:
        import httpx

        self.base = base_url
        self.client = httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_file), timeout=30)
        self.calls: list[str] = []
        self.fail: dict[str, int] = {}  # function -> ESipa error code to answer instead of relaying
        # eimDownloadDataHandling: (SM-DP+ address, matchingId) the eIM holds when its trigger carries no data
        self.download_data: tuple[str, str] | None = None

    async def _post(self, fn: str, body: dict) -> dict:
        body = {"header": {"functionRequesterIdentifier": "eim", "functionCallIdentifier": "1"}, **body}
        r = await self.client.post(
            f"{self.base}/gsma/rsp2/es9plus/{fn}", json=body, headers={"X-Admin-Protocol": "gsma/rsp/v2.1.0"}
        )
        self.calls.append(fn)
        return r.json() if r.content else {}

    async def handle(self, name: str, der: bytes) -> bytes | None:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        unb = base64.b64decode
        outer = tlv.parse_exact(der)
        f = {c.tag: c for c in tlv.children(outer)}
        if name == "initiateAuthenticationRequestEsipa":
            if "initiateAuthentication" in self.fail:
                return tlv.encode(0xBF39, m.enc_int(0x81, self.fail["initiateAuthentication"]))
            d = await self._post(
                "initiateAuthentication",
                {
                    "euiccChallenge": b64(f[0x81].value),
                    "euiccInfo1": b64(f[0xBF20].raw),
                    "smdpAddress": f[0x83].value.decode() if 0x83 in f else self.download_data[0],
                },
            )
            ok = (
                tlv.encode(0x80, bytes.fromhex(d["transactionId"]))
                + unb(d["serverSigned1"])
                + tlv.encode(0x5F37, tlv.parse_exact(unb(d["serverSignature1"])).value)
                + tlv.encode(0x04, tlv.parse_exact(unb(d["euiccCiPKIdToBeUsed"])).value)
                + unb(d["serverCertificate"])
            )
            if 0x83 not in f and self.download_data is not None:  # the eIM supplies the matchingId
                ok += tlv.encode(0x0C, self.download_data[1].encode())
            return tlv.encode(0xBF39, tlv.encode(0xA0, ok))
        if name == "authenticateClientRequestEsipa":
            txid = f[0x80].value
            if "authenticateClient" in self.fail:
                return tlv.encode(0xBF3B, m.enc_int(0x82, self.fail["authenticateClient"]))
            d = await self._post(
                "authenticateClient",
                {"transactionId": txid.hex().upper(), "authenticateServerResponse": b64(f[0xBF38].raw)},
            )
            ok = (
                tlv.encode(0x80, txid)
                + unb(d["profileMetadata"])
                + unb(d["smdpSigned2"])
                + tlv.encode(0x5F37, tlv.parse_exact(unb(d["smdpSignature2"])).value)
                + unb(d["smdpCertificate"])
            )
            return tlv.encode(0xBF3B, tlv.encode(0xA0, ok))
        if name == "getBoundProfilePackageRequestEsipa":
            txid = f[0x80].value
            if "getBoundProfilePackage" in self.fail:
                return tlv.encode(0xBF3A, m.enc_int(0x81, self.fail["getBoundProfilePackage"]))
            d = await self._post(
                "getBoundProfilePackage",
                {"transactionId": txid.hex().upper(), "prepareDownloadResponse": b64(f[0xBF21].raw)},
            )
            return tlv.encode(0xBF3A, tlv.encode(0xA0, tlv.encode(0x80, txid) + unb(d["boundProfilePackage"])))
        if name == "cancelSessionRequestEsipa":
            txid = f[0x80].value
            card_answer = tlv.encode(0xBF41, f[0xA1].value)
            await self._post(
                "cancelSession", {"transactionId": txid.hex().upper(), "cancelSessionResponse": b64(card_answer)}
            )
            return bytes.fromhex("BF4102A000")
        raise AssertionError(f"relay: unexpected {name}")

    async def close(self) -> None:
        await self.client.aclose()


# ---------------------------------------------------------------------- HTTP
@dataclass
class HttpServer:
    url: str
    headers: list[dict[str, str]]
    server: Any
    task: asyncio.Task

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


async def start_http(peer: ScriptedEim, *, tls: tuple[str, str] | None = None) -> HttpServer:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    headers: list[dict[str, str]] = []

    async def asn1_endpoint(request: Request) -> Response:
        headers.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.body()
        try:
            answer = await peer.handle(body)
        except Drop:
            return Response(b"dropped", status_code=503)
        except asn1.DecodeError as exc:
            return Response(str(exc).encode(), status_code=400)
        if answer is None:
            return Response(status_code=204)
        return Response(answer, media_type="application/x-gsma-rsp-asn1")

    app = Starlette(routes=[Route("/gsma/rsp2/asn1", asn1_endpoint, methods=["POST"])])
    port = free_port()
    kwargs: dict = {"host": "127.0.0.1", "port": port, "log_level": "warning", "lifespan": "off"}
    if tls:
        kwargs.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    server = uvicorn.Server(uvicorn.Config(app, **kwargs))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    scheme = "https" if tls else "http"
    return HttpServer(f"{scheme}://127.0.0.1:{port}", headers, server, task)


# ---------------------------------------------------------------------- CoAP
@dataclass
class CoapServer:
    url: str
    context: Any
    sizes: list[int]

    async def stop(self) -> None:
        await self.context.shutdown()


async def start_coap(peer: ScriptedEim, *, psk: dict[str, bytes] | None = None) -> CoapServer:
    """A CoAP server on loopback; with ``psk`` ({identity: key}) a CoAPS server (DTLS PSK, aiocoap tinydtls_server)."""
    import aiocoap
    import aiocoap.resource as resource
    from aiocoap.credentials import CredentialsMap

    sizes: list[int] = []

    class Asn1(resource.Resource):
        async def render_post(self, request):
            sizes.append(len(request.payload))
            try:
                answer = await peer.handle(request.payload)
            except Drop:
                return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE)
            except asn1.DecodeError:
                return aiocoap.Message(code=aiocoap.BAD_REQUEST)
            return aiocoap.Message(code=aiocoap.CHANGED, payload=answer or b"")

    site = resource.Site()
    site.add_resource(["gsma", "rsp2", "asn1"], Asn1())
    port = free_port(__import__("socket").SOCK_DGRAM)
    if psk is not None:
        creds = CredentialsMap()
        creds.load_from_dict(
            {f":{ident}": {"dtls": {"psk": key, "client-identity": ident.encode()}} for ident, key in psk.items()}
        )
        # tinydtls_server listens on the port it is given + 1
        ctx = await aiocoap.Context.create_server_context(
            site, bind=("127.0.0.1", port - 1), transports=["tinydtls_server"], server_credentials=creds
        )
        return CoapServer(f"coaps://127.0.0.1:{port}", ctx, sizes)
    # UDP only: aiocoap's default server transports also listen on TCP at the same port number, which a free UDP
    # port does not guarantee (a parallel test's client socket may hold it)
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["simplesocketserver"])
    return CoapServer(f"coap://127.0.0.1:{port}", ctx, sizes)


# ---------------------------------------------------------------------- MQTT
class MqttEim:
    """The eIM on the broker: shared subscription on esipa/+/up, answers on the response topic. Like the eIM's own
    binding it connects again (every 0.1 s) when the broker goes away, with a clean session, and subscribes again.

    ``seen`` lists every copy that reached it as ``(payload, correlation data)``; ``connects`` counts connections."""

    def __init__(self, peer: ScriptedEim, host: str, port: int) -> None:
        self.peer, self.host, self.port = peer, host, port
        self.client = None
        self.task: asyncio.Task | None = None
        self.answers_to_pushes: list[tuple[bytes, bytes | None]] = []
        self.seen: list[tuple[bytes, bytes | None]] = []
        self.connects = 0
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _run(self) -> None:
        import aiomqtt

        while True:
            client = aiomqtt.Client(
                self.host, self.port, identifier=f"eim-{os.getpid()}-{id(self)}", protocol=aiomqtt.ProtocolVersion.V5
            )
            try:
                async with client:
                    await client.subscribe("$share/eim/esipa/+/up", qos=1)
                    self.client = client
                    self.connects += 1
                    self._ready.set()
                    await self._serve(client)
            except aiomqtt.MqttError:
                from ipa.esipa.mqtt import _collect_disconnect_error

                _collect_disconnect_error(client)
            finally:
                self.client = None
                self._ready.clear()
            await asyncio.sleep(0.1)

    async def wait_ready(self) -> None:
        await asyncio.wait_for(self._ready.wait(), 10)

    def copies(self, tag: bytes) -> list[bytes | None]:
        """Correlation data of every copy seen of the messages starting with ``tag`` (e.g. ``b"\\xbf\\x4f"``)."""
        return [corr for payload, corr in self.seen if payload[:2] == tag]

    async def _serve(self, client) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        async for msg in client.messages:
            payload = bytes(msg.payload)
            props = msg.properties
            corr = getattr(props, "CorrelationData", None)
            reply_to = getattr(props, "ResponseTopic", None)
            self.seen.append((payload, bytes(corr) if corr else None))
            if payload[:2] == b"\xbf\x4e":
                self.answers_to_pushes.append((payload, bytes(corr) if corr else None))
            try:
                answer = await self.peer.handle(payload)
            except (Drop, asn1.DecodeError):
                continue
            if reply_to:
                out = Properties(PacketTypes.PUBLISH)
                if corr:
                    out.CorrelationData = corr
                if isinstance(answer, MqttErrorAnswer):
                    out.ContentType = "text/plain; charset=utf-8"
                    out.UserProperty = [("esipa-status", str(answer.status))]
                    answer = answer.text.encode()
                await client.publish(reply_to, answer or b"", qos=1, properties=out)

    async def push(self, eid: bytes, der: bytes, correlation: bytes | None = b"push-1") -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        if correlation:
            props.CorrelationData = correlation
        await self.wait_ready()
        await self.client.publish(f"esipa/{eid.hex().upper()}/down", der, qos=1, properties=props)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
