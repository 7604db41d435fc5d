"""An honest ESipa peer for the binding tests, and checks of that peer itself.

:class:`SpecHandler` decodes each request with ``rsp.asn1`` and answers as SGP.32 v1.2 §6.3 says an eIM with
nothing queued answers: ``noEimPackageAvailable`` for GetEimPackage, acknowledgement of the EPR's seqNumber for
ProvideEimPackageResult, no body for HandleNotification, the function's "no session" error code for the download
functions. Undecodable input raises ``EsipaRejected`` (no ESipa answer possible). Tests queue answers per EID
with :meth:`SpecHandler.queue` (a real package, e.g. the captured one from ``vectors.json``).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest

from eim.interfaces import EsipaHandler, EsipaRejected, RequestContext
from rsp import asn1
from rsp.errors import DecodeError

DATA = Path(__file__).resolve().parent.parent / "data"
VECTORS = json.loads((DATA / "vectors.json").read_text())
EID = "89044045118427484800000000011628"  # the EID of the captured session in vectors.json
EID2 = "89049032123451234512345678901235"


def hexb(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


NO_PACKAGE = hexb(VECTORS["esipa_encodings"]["no_eim_package_available"])  # BF4F03020101
REAL_PACKAGE_RESPONSE = hexb(VECTORS["real_get_eim_package_response"]["hex"])  # BF4F 8186 BF51 ...
REAL_EPR = hexb(VECTORS["real_euicc_package_result"]["hex"])  # BF51 6A A0 68 ...


def get_eim_package_request(eid: str = EID) -> bytes:
    return asn1.encode("EsipaMessageFromIpaToEim", ("getEimPackageRequest", {"eidValue": bytes.fromhex(eid)}))


def provide_result(eid: str = EID, epr: bytes = REAL_EPR) -> bytes:
    """ProvideEimPackageResult carrying the eUICC's EPR bytes verbatim (never re-encoded)."""
    from rsp import tlv

    inner = tlv.encode(0x5A, bytes.fromhex(eid)) + epr
    return tlv.encode(0xBF50, inner)


def large_provide_result(eid: str = EID, results: int = 400) -> bytes:
    """A ProvideEimPackageResult well over 1 KB: an EPR with ``results`` euiccResult entries (seqNumber 77)."""
    epr = asn1.encode(
        "EuiccPackageResult",
        (
            "euiccPackageResultSigned",
            {
                "euiccPackageResultDataSigned": {
                    "eimId": "eIM",
                    "counterValue": 1007,
                    "eimTransactionId": bytes(range(16)),
                    "seqNumber": 77,
                    "euiccResult": [("enableResult", 1)] * results,
                },
                "euiccSignEPR": bytes(64),
            },
        ),
    )
    return provide_result(eid, epr)


def large_package_response(entries: int = 120) -> bytes:
    """A GetEimPackageResponse well over 1 KB: an EuiccPackageRequest with ``entries`` enable PSMOs."""
    iccid = bytes.fromhex("989444999999990920F3")
    value = (
        "getEimPackageResponse",
        (
            "euiccPackageRequest",
            {
                "euiccPackageSigned": {
                    "eimId": "eIM",
                    "eidValue": bytes.fromhex(EID),
                    "counterValue": 1008,
                    "eimTransactionId": bytes(range(16, 32)),
                    "euiccPackage": ("psmoList", [("enable", {"iccid": iccid})] * entries),
                },
                "eimSignature": bytes(range(64)),
            },
        ),
    )
    return asn1.encode("EsipaMessageFromEimToIpa", value)


def pir(address: str = "smdp.example.com", transaction_id: bytes = bytes(16), seq: int = 5) -> bytes:
    """A ProfileInstallationResult (BF37) shaped like the eUICC's (signature zeroed), as a PendingNotification."""
    value = (
        "profileInstallationResult",
        {
            "profileInstallationResultData": {
                "transactionId": transaction_id,
                "notificationMetadata": {
                    "seqNumber": seq,
                    "profileManagementOperation": (b"\x80", 1),  # install
                    "notificationAddress": address,
                    "iccid": bytes.fromhex("989444999999990920F3"),
                },
                "smdpOid": "1.3.6.1.4.1.31746",
                "finalResult": (
                    "successResult",
                    {
                        "aid": bytes.fromhex("A0000005591010FFFFFFFF8900001000"),
                        "simaResponse": bytes.fromhex("300780020000"),
                    },
                ),
            },
            "euiccSignPIR": bytes(64),
        },
    )
    return asn1.encode("SGP32-PendingNotification", value)


def handle_notification(notification: bytes | None = None) -> bytes:
    """HandleNotificationEsipa (BF3D) carrying ``notification`` verbatim in its [0] alternative."""
    from rsp import tlv

    return tlv.encode(0xBF3D, tlv.encode(0xA0, notification if notification is not None else pir()))


class SpecHandler:
    """See the module docstring. ``calls`` records (request bytes, context) of every call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[bytes, RequestContext]] = []
        self.notifications: list[bytes] = []
        self.answers: dict[str, list[bytes]] = defaultdict(list)
        self.delay = delay

    def queue(self, eid: str, answer: bytes) -> None:
        self.answers[eid.upper()].append(answer)

    async def handle(self, message: bytes, ctx: RequestContext) -> bytes | None:
        self.calls.append((message, ctx))
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            name, value = asn1.decode("EsipaMessageFromIpaToEim", message)
        except DecodeError as exc:
            raise EsipaRejected(400, f"not an EsipaMessageFromIpaToEim: {exc}") from None
        out = "EsipaMessageFromEimToIpa"
        if name == "getEimPackageRequest":
            eid = value["eidValue"].hex().upper()
            if self.answers.get(eid):
                return self.answers[eid].pop(0)
            return asn1.encode(out, ("getEimPackageResponse", ("eimPackageError", 1)))
        if name == "provideEimPackageResult":
            alt, result = value["eimPackageResult"]
            epr = (
                result
                if alt == "euiccPackageResult"
                else result.get("euiccPackageResult")
                if alt == ("ePRAndNotifications")
                else None
            )
            if epr is not None and epr[0] == "euiccPackageResultSigned":
                seq = epr[1]["euiccPackageResultDataSigned"]["seqNumber"]
                return asn1.encode(out, ("provideEimPackageResultResponse", ("eimAcknowledgements", [seq])))
            return asn1.encode(out, ("provideEimPackageResultResponse", ("emptyResponse", {})))
        if name in ("handleNotificationEsipa", "transferEimPackageResponse"):
            self.notifications.append(message)
            return None
        if name == "initiateAuthenticationRequestEsipa":
            return asn1.encode(out, ("initiateAuthenticationResponseEsipa", ("initiateAuthenticationErrorEsipa", 1)))
        if name == "authenticateClientRequestEsipa":
            return asn1.encode(out, ("authenticateClientResponseEsipa", ("authenticateClientErrorEsipa", 10)))
        if name == "getBoundProfilePackageRequestEsipa":
            return asn1.encode(out, ("getBoundProfilePackageResponseEsipa", ("getBoundProfilePackageErrorEsipa", 95)))
        if name == "cancelSessionRequestEsipa":
            return asn1.encode(out, ("cancelSessionResponseEsipa", ("cancelSessionError", 1)))
        raise EsipaRejected(400, f"unsupported ESipa function {name}")


# ---------------------------------------------------------------- checks of the peer itself
def test_spec_handler_is_an_esipa_handler():
    assert isinstance(SpecHandler(), EsipaHandler)


async def test_spec_handler_answers_like_the_protocol_brief():
    h = SpecHandler()
    ctx = RequestContext("test")
    assert await h.handle(get_eim_package_request(), ctx) == NO_PACKAGE
    ack20 = hexb(VECTORS["esipa_encodings"]["provide_eim_package_result_ack_seq20"])
    assert await h.handle(provide_result(), ctx) == ack20  # the real EPR has seqNumber 20
    with pytest.raises(EsipaRejected):
        await h.handle(b"\x00\x01garbage", ctx)
    h.queue(EID, REAL_PACKAGE_RESPONSE)
    assert await h.handle(get_eim_package_request(), ctx) == REAL_PACKAGE_RESPONSE
    assert await h.handle(get_eim_package_request(), ctx) == NO_PACKAGE


def test_large_messages_are_large_and_decode():
    big_req = large_provide_result()
    big_resp = large_package_response()
    assert len(big_req) > 1024 and len(big_resp) > 1024
    assert asn1.decode("EsipaMessageFromIpaToEim", big_req)[0] == "provideEimPackageResult"
    assert asn1.decode("EsipaMessageFromEimToIpa", big_resp)[0] == "getEimPackageResponse"
