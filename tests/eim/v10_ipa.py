"""A minimal SGP.32 v1.0 IPA (test double): v1.0 ESipa envelopes around the software eUICC's own output.

What it does follows what the independent v1.0 IPA onomondo-ipa does (facts from its source, commit 47da883, and
from tests/data/sgp32_v10_captures.json; no code of it):

* eUICC package (``proc_euicc_pkg_dwnld_exec.c``): ES10b.LoadEuiccPackage with the BF51 as received; then
  ES10b.RetrieveNotificationsList with searchCriteria seqNumber = the result's seqNumber; then
  ``BF50 { 30 { <BF51 from the card>, <BF2B from the card> } }`` (no EID). When the eIM's answer decodes as a
  ProvideEimPackageResultResponse, ES10b.RemoveNotificationFromList for the result's seqNumber and for every
  acknowledged seqNumber. When the answer is empty or does not decode (``esipa.c``: "eIM response contained no
  data" / "cannot decode eIM response"), nothing is removed: the result stays on the card. Its HTTP client (curl
  without CURLOPT_FAILONERROR, ``http.c``) does not look at the HTTP status: the body decides.
* eUICC data request: ``BF50 { BF52 { A0 IpaEuiccData } }`` in the v1.0 form (no EID, no eimTransactionId;
  defaultSmdpAddress under 80), with the certificates from ES10b.GetCerts.
* InitiateAuthentication: ``BF39 { 81 euiccChallenge, 83 smdpAddress, BF20 euiccInfo1 }`` without eimTransactionId.

``post`` sends one ESipa message and returns ``(status, body)``; :func:`http_post` is the real HTTP binding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from eim.packages.common import integer_tlv
from rsp import asn1, tlv
from rsp.errors import RspError

Post = Callable[[bytes], Awaitable[tuple[int, bytes]]]
NO_PACKAGE = bytes.fromhex("BF4F03020101")
DEVICE_INFO = bytes.fromhex("800412345678A100")  # tac 12345678, no capabilities (as in the captures)


def http_post(client: httpx.AsyncClient, url: str) -> Post:
    async def post(message: bytes) -> tuple[int, bytes]:
        r = await client.post(url, content=message, headers={"Content-Type": "application/x-gsma-rsp-asn1"})
        return r.status_code, r.content

    return post


@dataclass
class Exchange:
    """One ProvideEimPackageResult the double sent and what became of the result on the card."""

    request: bytes
    status: int
    answer: bytes
    seq_number: int | None
    removed: list[int] = field(default_factory=list)  # seqNumbers removed from the card after the answer
    kept: bool = False  # the answer was not a ProvideEimPackageResultResponse: nothing removed


class V10Ipa:
    def __init__(self, card, post: Post) -> None:
        self.card = card  # tests.eim.helpers.Card (software eUICC + ES10 client)
        self.post = post
        self.exchanges: list[Exchange] = []

    async def poll(self) -> bytes | None:
        """GetEimPackageRequest (same form in v1.0 and v1.2); the package (BF51/BF52/BF54) or ``None``."""
        status, answer = await self.post(tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(self.card.eid))))
        assert status == 200, (status, answer)
        if answer == NO_PACKAGE:
            return None
        return tlv.children(tlv.parse_exact(answer))[0].raw

    async def step(self) -> Exchange | bytes | None:
        """One poll and what the package asks for. ``None`` when there was nothing to do."""
        package = await self.poll()
        if package is None:
            return None
        if package[:2] == b"\xbf\x51":
            return await self.euicc_package(package)
        if package[:2] == b"\xbf\x52":
            return await self.euicc_data(package)
        return package  # BF54: the caller runs the download

    async def euicc_package(self, package: bytes) -> Exchange:
        await self.card.es10.ensure_open()  # re-opens ISD-R after a REFRESH (an enable resets the card)
        result = await self.card.load(package)
        seq = _seq_number(result)
        await self.card.es10.ensure_open()
        notes = await self.card.es10.call(
            tlv.encode(0xBF2B, tlv.encode(0xA0, integer_tlv(0x80, seq or 0))), "RetrieveNotificationsList"
        )
        return await self.provide(tlv.encode(0xBF50, tlv.encode(0x30, result + notes)), seq)

    async def euicc_data(self, request: bytes) -> Exchange:
        certs = await self.card.es10.get_certs()
        data = (
            tlv.encode(0x80, b"smdp.v10.example")
            + integer_tlv(0x84, 1)
            + tlv.encode(0xA5, tlv.parse_exact(certs.eum_certificate).value)
            + tlv.encode(0xA6, tlv.parse_exact(certs.euicc_certificate).value)
            + tlv.encode(0xA8, tlv.encode(0x80, bytes([0x06, 0x40])))  # ipaFeatures: indirectRspServerCommunication
        )
        return await self.provide(tlv.encode(0xBF50, tlv.encode(0xBF52, tlv.encode(0xA0, data))), None)

    async def provide(self, message: bytes, seq: int | None) -> Exchange:
        status, answer = await self.post(message)
        ex = Exchange(message, status, answer, seq)
        await self.card.es10.ensure_open()
        acks = _acknowledgements(answer)
        if acks is None:
            ex.kept = True
        else:
            for s in ([seq] if seq is not None else []) + acks:
                await self.card.es10.remove_notification_from_list(s)
                ex.removed.append(s)
        self.exchanges.append(ex)
        return ex

    def initiate_authentication(self, challenge: bytes, smdp_address: str, euicc_info1: bytes) -> bytes:
        """The v1.0 BF39 (no eimTransactionId)."""
        return tlv.encode(0xBF39, tlv.encode(0x81, challenge) + tlv.encode(0x83, smdp_address.encode()) + euicc_info1)


def _seq_number(result: bytes) -> int | None:
    """seqNumber of a signed EuiccPackageResult (BF51 { A0 { 30 { ... 83 seq ... } } }); ``None`` otherwise."""
    found = tlv.find(result, 0xA0, 0x30, 0x83)
    return None if found is None else int.from_bytes(found.value, "big", signed=True)


def _acknowledgements(answer: bytes) -> list[int] | None:
    """What a v1.0 IPA reads from the eIM's answer: the acknowledged seqNumbers, or ``None`` when the body is empty
    or is not a v1.0 ProvideEimPackageResultResponse (it then keeps the result)."""
    if not answer:
        return None
    try:
        alt, value = asn1.decode("V10-EsipaMessageFromEimToIpa", answer)
    except RspError:
        return None
    if alt != "provideEimPackageResultResponse":
        return None
    return list(value.get("eimAcknowledgements", []))


@dataclass
class Download:
    """One indirect download the double ran: every ESipa message it sent and the eIM's answers, in order."""

    sent: list[bytes] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=list)
    pir: bytes | None = None
    failed: str | None = None  # the step that failed, as the IPA saw it
    error_answer: bytes | None = None  # the eIM's error answer the IPA reported as errorResponse


async def indirect_download(ipa: V10Ipa, trigger: bytes) -> Download:
    """The v1.0 IPA's side of an indirect download (SGP.32 v1.0 §3.2.3.2) from the eIM's ``BF54`` trigger.

    Every eUICC answer goes to the eIM unchanged (AuthenticateServerResponse inside BF3B, PrepareDownloadResponse
    inside BF3A, the PIR inside BF3D); only the BF39 is the IPA's own, in the v1.0 form (no eimTransactionId).
    When the eIM answers an error, the IPA reports ``ProvideEimPackageResult { profileDownloadTriggerResult {
    eimTransactionId, profileDownloadError { errorResponse = the eIM's answer } } }`` in the v1.0 form (BF50 { BF54
    { 82, 30 { 80 } } }), as the v1.0 ASN.1 has it."""
    from ipa import messages as m

    es10 = ipa.card.es10
    out = Download()
    code = tlv.find(trigger, 0xA0, 0x80)
    assert code is not None, trigger.hex()
    _, address, matching_id = code.value.decode().split("$")[:3]
    eim_txid = tlv.find(trigger, 0x82)

    async def send(message: bytes) -> bytes:
        out.sent.append(message)
        status, answer = await ipa.post(message)
        out.answers.append((status, answer))
        return answer

    async def report(step: str, answer: bytes) -> Download:
        out.failed, out.error_answer = step, answer
        data = tlv.encode(0x30, tlv.encode(0x80, answer))
        body = (tlv.encode(0x82, eim_txid.value) if eim_txid is not None else b"") + data
        await send(tlv.encode(0xBF50, tlv.encode(0xBF54, body)))
        return out

    await es10.ensure_open()
    info1 = await es10.get_euicc_info1()
    challenge = await es10.get_euicc_challenge()
    answer = await send(ipa.initiate_authentication(challenge, address, info1))
    init = m.parse_initiate_authentication_response(answer)
    if isinstance(init, m.EsipaErrorAnswer):
        return await report("InitiateAuthentication", answer)
    params = tlv.encode(0xA0, tlv.encode(0x80, matching_id.encode()) + tlv.encode(0xA1, DEVICE_INFO))
    auth = await es10.authenticate_server(
        init.server_signed1, init.server_signature1, init.euicc_ci_pkid_to_be_used, init.server_certificate, params
    )
    answer = await send(m.authenticate_client_request(init.transaction_id, auth.raw))
    client = m.parse_authenticate_client_response(answer)
    if isinstance(client, m.EsipaErrorAnswer):
        return await report("AuthenticateClient", answer)
    prep = await es10.prepare_download(client.smdp_signed2, client.smdp_signature2, client.smdp_certificate)
    answer = await send(m.get_bound_profile_package_request(init.transaction_id, prep.raw))
    bpp = m.parse_get_bound_profile_package_response(answer)
    if isinstance(bpp, m.EsipaErrorAnswer):
        return await report("GetBoundProfilePackage", answer)
    out.pir = await es10.load_bound_profile_package(bpp)
    await send(m.handle_notification(out.pir))
    return out
