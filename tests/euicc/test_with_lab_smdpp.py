"""The software eUICC against the real lab SM-DP+ (``smdpp``, ES9+ JSON over HTTPS on loopback): complete
downloads on both curves, with session keys and with pre-protected profile keys; the SM-DP+ verifies the card's
signatures and its PIR. The LPA side here is a few lines of JSON (SGP.22 §6.5), the card is driven over APDUs."""

from __future__ import annotations

import base64
import ssl
import uuid

import httpx
import pytest

from rsp import asn1, tlv
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.euicc.conftest import LAB_EID, Es10Driver, make_card
from tests.euicc.smdp_side import segments

T = tlv.encode


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class Es9:
    def __init__(self, srv) -> None:
        self.http = httpx.Client(
            base_url=srv.base_url, timeout=30, verify=ssl.create_default_context(cafile=str(srv.ca_bundle))
        )

    def __call__(self, function: str, **fields) -> dict | None:
        body = {
            "header": {"functionRequesterIdentifier": "euicc-test", "functionCallIdentifier": str(uuid.uuid4())},
            **fields,
        }
        r = self.http.post(f"/gsma/rsp2/es9plus/{function}", json=body, headers={"X-Admin-Protocol": "gsma/rsp/v2.5.0"})
        if r.status_code == 204:
            return None
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["header"]["functionExecutionStatus"]["status"] == "Executed-Success", data
        return data


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
@pytest.mark.parametrize("profile", ["ts48", "ts48-ppk"])
def test_download_from_the_lab_smdpp(lab_pki, tmp_path, curve, profile):
    with running_server(SmdppConfig(data_dir=tmp_path / "data", pki_dir=lab_pki.root, port=0)) as srv:
        es9 = Es9(srv)
        order = orders.create_order(srv.ctx.store, profile=profile, smdp_address=srv.address)
        card = make_card(lab_pki, eid=LAB_EID, curve=curve)
        driver = Es10Driver(card, block_size=255)
        challenge = tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value
        init = es9(
            "initiateAuthentication",
            euiccChallenge=b64(challenge),
            smdpAddress=srv.address,
            euiccInfo1=b64(driver.call(bytes.fromhex("BF2000"))),
        )
        device = T(0xA1, T(0x80, bytes.fromhex("35290611")) + T(0xA1, b""))
        request = T(
            0xBF38,
            unb64(init["serverSigned1"])
            + unb64(init["serverSignature1"])
            + unb64(init["euiccCiPKIdToBeUsed"])
            + unb64(init["serverCertificate"])
            + T(0xA0, T(0x80, order.matching_id.encode()) + device),
        )
        auth = driver.call(request)
        client = es9("authenticateClient", transactionId=init["transactionId"], authenticateServerResponse=b64(auth))
        prepare = driver.call(
            T(0xBF21, unb64(client["smdpSigned2"]) + unb64(client["smdpSignature2"]) + unb64(client["smdpCertificate"]))
        )
        bpp = es9("getBoundProfilePackage", transactionId=init["transactionId"], prepareDownloadResponse=b64(prepare))
        answer = b""
        for seg in segments(unb64(bpp["boundProfilePackage"])):
            answer = driver.call(seg)
            if answer:
                break
        result = asn1.decode("ProfileInstallationResult", answer)["profileInstallationResultData"]["finalResult"]
        assert result[0] == "successResult"
        assert es9("handleNotification", pendingNotification=b64(answer)) is None
        assert srv.ctx.store.get(order.matching_id).state == "installed"
        note = srv.ctx.store.notifications()[0]
        assert note.kind == "pir" and note.verified
        installed = card.state.profiles
        assert len(installed) == 1 and not installed[0].enabled
        es9.http.close()
