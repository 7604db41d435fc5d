"""The LPA side of an SGP.22 profile download (protocol brief §7.1), for tests: ES10 commands through
``ipa.es10.Es10Client.call`` (STORE DATA chains over an APDU channel to the card), ES9+ over HTTPS with httpx,
messages built and read with ``rsp.asn1`` / ``rsp.tlv``. Signed parts travel verbatim."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass

import httpx

from rsp import asn1, tlv

T = tlv.encode
TAC = b"\x35\x29\x06\x11"


class DownloadFailed(Exception):
    def __init__(self, step: str, detail) -> None:
        self.step = step
        self.detail = detail
        super().__init__(f"{step}: {detail}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class LpaDownload:
    es10: object  # ipa.es10.Es10Client
    http: httpx.AsyncClient
    address: str

    async def es9(self, function: str, **fields) -> dict | None:
        body = {
            "header": {"functionRequesterIdentifier": "lpa-test", "functionCallIdentifier": str(uuid.uuid4())},
            **fields,
        }
        r = await self.http.post(
            f"/gsma/rsp2/es9plus/{function}", json=body, headers={"X-Admin-Protocol": "gsma/rsp/v2.5.0"}
        )
        if r.status_code == 204:
            return None
        r.raise_for_status()
        js = r.json()
        fes = js["header"]["functionExecutionStatus"]
        if fes["status"] != "Executed-Success":
            raise DownloadFailed(function, fes["statusCodeData"])
        return js

    async def run(self, matching_id: str | None, confirmation_code: str | None = None) -> bytes:
        """The whole download; returns the PIR (BF37) the card produced, after delivering it to the SM-DP+."""
        info1 = await self.es10.call(b"\xbf\x20\x00", "GetEUICCInfo1")
        challenge = tlv.require(await self.es10.call(b"\xbf\x2e\x00", "GetEUICCChallenge"), 0x80).value
        auth = await self.es9(
            "initiateAuthentication", euiccChallenge=_b64(challenge), euiccInfo1=_b64(info1), smdpAddress=self.address
        )
        common = {"deviceInfo": {"tac": TAC, "deviceCapabilities": {}}}
        if matching_id is not None:
            common["matchingId"] = matching_id
        ctx_params1 = asn1.encode("CtxParams1", ("ctxParamsForCommonAuthentication", common))
        request = T(
            0xBF38,
            base64.b64decode(auth["serverSigned1"])
            + base64.b64decode(auth["serverSignature1"])
            + base64.b64decode(auth["euiccCiPKIdToBeUsed"])
            + base64.b64decode(auth["serverCertificate"])
            + ctx_params1,
        )
        asr = await self.es10.call(request, "AuthenticateServer")
        kind, _ = asn1.decode("AuthenticateServerResponse", asr)
        if kind != "authenticateResponseOk":
            raise DownloadFailed("AuthenticateServer", asn1.decode("AuthenticateServerResponse", asr))
        client = await self.es9(
            "authenticateClient", transactionId=auth["transactionId"], authenticateServerResponse=_b64(asr)
        )
        self.profile_metadata = asn1.decode("StoreMetadataRequest", base64.b64decode(client["profileMetadata"]))
        signed2 = base64.b64decode(client["smdpSigned2"])
        body = signed2 + base64.b64decode(client["smdpSignature2"])
        if asn1.decode("SmdpSigned2", signed2)["ccRequiredFlag"]:
            if confirmation_code is None:
                raise DownloadFailed("PrepareDownload", "confirmation code required")
            txid = bytes.fromhex(auth["transactionId"])
            body += T(0x04, hashlib.sha256(hashlib.sha256(confirmation_code.encode()).digest() + txid).digest())
        body += base64.b64decode(client["smdpCertificate"])
        pdr = await self.es10.call(T(0xBF21, body), "PrepareDownload")
        kind, _ = asn1.decode("PrepareDownloadResponse", pdr)
        if kind != "downloadResponseOk":
            raise DownloadFailed("PrepareDownload", asn1.decode("PrepareDownloadResponse", pdr))
        bpp_resp = await self.es9(
            "getBoundProfilePackage", transactionId=auth["transactionId"], prepareDownloadResponse=_b64(pdr)
        )
        bpp = base64.b64decode(bpp_resp["boundProfilePackage"])
        pir = b""
        for i, segment in enumerate(bpp_segments(bpp)):
            pir = await self.es10.call(segment, f"LoadBoundProfilePackage segment {i}")
            if pir:
                break
        if pir[:2] != b"\xbf\x37":
            raise DownloadFailed("LoadBoundProfilePackage", f"no PIR: {pir[:8].hex()}")
        await self.deliver_notifications()
        return pir

    async def deliver_notifications(self) -> list[int]:
        """RetrieveNotificationsList -> ES9+ handleNotification each -> RemoveNotificationFromList."""
        data = await self.es10.call(b"\xbf\x2b\x00", "RetrieveNotificationsList")
        kind, value = asn1.decode("RetrieveNotificationsListResponse", data)
        if kind != "notificationList":
            return []
        delivered = []
        lst = tlv.require(data, 0xA0)
        for item in tlv.children(lst):
            meta = tlv.find(item, 0xBF27, 0xBF2F) if item.tag == 0xBF37 else tlv.find(item, 0xBF2F)
            seq = int.from_bytes(tlv.require(meta, 0x80).value, "big")
            await self.es9("handleNotification", pendingNotification=_b64(item.raw))
            removed = await self.es10.call(
                T(0xBF30, T(0x80, seq.to_bytes(max(1, (seq.bit_length() + 8) // 8), "big"))),
                "RemoveNotificationFromList",
            )
            assert removed == bytes.fromhex("BF3003800100"), removed.hex()
            delivered.append(seq)
        del value
        return delivered

    async def profiles(self) -> list[dict]:
        data = await self.es10.call(b"\xbf\x2d\x00", "GetProfilesInfo")
        kind, value = asn1.decode("ProfileInfoListResponse", data)
        assert kind == "profileInfoListOk", (kind, value)
        return value


def bpp_segments(bpp: bytes) -> list[bytes]:
    """Protocol brief §7.5: BF36 header + BF23; the whole A0; A1 header; each 88; the whole A2; A3 header; each 86."""
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
