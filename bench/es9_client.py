"""One complete profile download over ES9+, the LPA's side (SGP.22 v2.5 §3.1.2-§3.1.3 and §3.5; ES9+ JSON binding
§6.5), with a software eUICC (``euicc.card.SoftEuicc``) as the card: initiateAuthentication -> authenticateClient ->
getBoundProfilePackage (the Bound Profile Package loaded segment by segment into the card) -> handleNotification
(the ProfileInstallationResult). Used by the load client ``bench/es9_load.py`` and by the SM-DP+ worker tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

B64 = base64.b64encode


class DownloadError(Exception):
    """A download that did not complete: which ES9+/ES10 step failed and why."""


@dataclass(frozen=True)
class Target:
    """Where the ES9+ server is: ``url`` (base, without /gsma/...), TLS verification, an optional address map
    (``--resolve host:port:addr``), the SM-DP+ address the card is told (``smdpAddress``) and whether each request
    gets its own connection (else one keep-alive connection per download)."""

    url: str
    ca_file: str | None = None
    insecure: bool = False
    resolve: tuple[tuple[str, int, str], ...] = ()
    address: str = ""
    fresh_connections: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        u = urlsplit(self.url)
        return u.port or (443 if u.scheme == "https" else 80)

    @property
    def smdp_address(self) -> str:
        return self.address or f"{self.host}:{self.port}"

    def connect_to(self) -> tuple[str, int]:
        for host, port, addr in self.resolve:
            if host == self.host and port == self.port:
                return addr, port
        return self.host, self.port

    def ssl_context(self) -> ssl.SSLContext | None:
        if urlsplit(self.url).scheme != "https":
            return None
        if self.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.ca_file)


class Connection:
    """One HTTP/1.1 keep-alive connection (``ipa.esipa.http1.read_response`` reads the answers)."""

    def __init__(self, target: Target, tls: ssl.SSLContext | None) -> None:
        self.target = target
        self.tls = tls
        self.prefix = urlsplit(target.url).path.rstrip("/")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, function: str, body: dict) -> tuple[int, dict[str, str], bytes]:
        from ipa.esipa.http1 import read_response

        if self._writer is None or self.target.fresh_connections or self._reader.at_eof():  # type: ignore[union-attr]
            await self.close()
            host, port = self.target.connect_to()
            sni = self.target.host if self.tls else None
            self._reader, self._writer = await asyncio.open_connection(host, port, ssl=self.tls, server_hostname=sni)
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {self.prefix}/gsma/rsp2/es9plus/{function} HTTP/1.1\r\nHost: {self.target.host}:{self.target.port}"
            "\r\nContent-Type: application/json;charset=UTF-8\r\nX-Admin-Protocol: gsma/rsp/v2.5.0\r\n"
            f"User-Agent: gsma-rsp-lpad\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        assert self._reader is not None and self._writer is not None
        self._writer.write(head.encode("latin-1") + data)
        await self._writer.drain()
        status, headers, answer, keep_alive = await read_response(self._reader)
        if not keep_alive:
            await self.close()
        return status, headers, answer

    async def close(self) -> None:
        from ipa.esipa.http1 import close_writer

        writer, self._reader, self._writer = self._writer, None, None
        await close_writer(writer)


@dataclass
class DownloadResult:
    seconds: float
    bpp_bytes: int
    workers: list[str] = field(default_factory=list)  # X-Smdpp-Worker of each answer, when the server sends it


def _card(card, command: bytes, step: str) -> bytes:
    data, sw = card.execute(command)
    if sw != 0x9000:
        raise DownloadError(f"{step}: the card answered {sw:04X}")
    return data


async def _es9(conn, function: str, fields: dict, workers: list[str]) -> dict | None:
    body = {"header": {"functionRequesterIdentifier": "bench", "functionCallIdentifier": uuid.uuid4().hex}, **fields}
    status, headers, answer = await conn.post_json(function, body)
    if "x-smdpp-worker" in headers:
        workers.append(headers["x-smdpp-worker"])
    if status == 204:
        return None
    if status != 200:
        raise DownloadError(f"{function}: HTTP {status}: {answer[:200]!r}")
    js = json.loads(answer)
    fes = js.get("header", {}).get("functionExecutionStatus", {})
    if fes.get("status") != "Executed-Success":
        raise DownloadError(f"{function}: {fes.get('statusCodeData')}")
    return js


async def download(
    target: Target,
    card,
    matching_id: str,
    tls: ssl.SSLContext | None = None,
    *,
    connections: dict[str, Connection] | None = None,
) -> DownloadResult:
    """One complete download through ``card`` (a fresh ``SoftEuicc``); raises :class:`DownloadError`.
    ``connections``: the connection to use for each ES9+ function (left open), e.g. one per server worker; by
    default one connection for the whole download."""
    from bench.smdpp_download import _segments, authenticate_server_command, prepare_download_command
    from rsp import tlv

    d = base64.b64decode
    workers: list[str] = []
    own = Connection(target, tls if tls is not None else target.ssl_context())

    class _Route:
        async def post_json(self, function: str, body: dict) -> tuple[int, dict[str, str], bytes]:
            return await (connections or {}).get(function, own).post_json(function, body)

    conn = _Route()
    t = time.perf_counter()
    try:
        info1 = _card(card, b"\xbf\x20\x00", "GetEUICCInfo1")
        challenge = tlv.require(_card(card, b"\xbf\x2e\x00", "GetEUICCChallenge"), 0x80).value
        auth = await _es9(
            conn,
            "initiateAuthentication",
            {
                "euiccChallenge": B64(challenge).decode(),
                "euiccInfo1": B64(info1).decode(),
                "smdpAddress": target.smdp_address,
            },
            workers,
        )
        assert auth is not None
        asr = _card(card, authenticate_server_command(auth, matching_id), "AuthenticateServer")
        client = await _es9(
            conn,
            "authenticateClient",
            {"transactionId": auth["transactionId"], "authenticateServerResponse": B64(asr).decode()},
            workers,
        )
        assert client is not None
        pdr = _card(card, prepare_download_command(client), "PrepareDownload")
        bpp = await _es9(
            conn,
            "getBoundProfilePackage",
            {"transactionId": auth["transactionId"], "prepareDownloadResponse": B64(pdr).decode()},
            workers,
        )
        assert bpp is not None
        raw = d(bpp["boundProfilePackage"])
        pir = b""
        for segment in _segments(raw):
            pir = _card(card, segment, "LoadBoundProfilePackage")
        if tlv.parse_exact(pir).tag != 0xBF37 or tlv.find(tlv.require(tlv.parse_exact(pir), 0xBF27), 0xA2) is None:
            raise DownloadError("LoadBoundProfilePackage: no ProfileInstallationResult")
        final = tlv.children(tlv.require(tlv.require(tlv.parse_exact(pir), 0xBF27), 0xA2))
        if not final or final[0].tag != 0xA0:
            raise DownloadError("LoadBoundProfilePackage: the card reported an installation error")
        await _es9(conn, "handleNotification", {"pendingNotification": B64(pir).decode()}, workers)
        return DownloadResult(time.perf_counter() - t, len(raw), workers)
    finally:
        await own.close()


class CardMaker:
    """Fresh software eUICCs: from a lab PKI (``pki_dir``, its first EID) or copies of a saved card state."""

    def __init__(self, pki_dir: str | None = None, curve: str = "nist", card_state: str | None = None) -> None:
        if (pki_dir is None) == (card_state is None):
            raise ValueError("give a lab PKI directory or a card state file")
        self.pki_dir, self.curve, self.card_state = pki_dir, curve, card_state

    def __call__(self):
        from euicc import state as state_mod
        from euicc.card import SoftEuicc

        if self.card_state is not None:
            return SoftEuicc.in_memory(state_mod.load(self.card_state))
        from rsp.pki import LabPki

        return SoftEuicc.create(self.pki_dir, LabPki.load(self.pki_dir).eid, None, curve=self.curve)
