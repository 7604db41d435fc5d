"""A test-side eUICC simulated from the rsp primitives, and an ES9+ client over real HTTPS.

The simulated card does what a real eUICC does on the SM-DP+ path (SGP.22 §5.7.13-§5.7.16): it verifies CERT.DPauth
and serverSignature1, signs euiccSigned1/euiccSigned2 with the lab eUICC key, makes a one-time key pair,
verifies smdpSign, derives the BSP keys and unprotects every BPP segment (so a wrong byte anywhere fails the test),
and signs the ProfileInstallationResult. It is independent of the server code: it only uses ``rsp``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from euicc.der import int_bytes
from rsp import bsp, crypto, tlv
from rsp.pki import LabPki, Role, verify_chain
from smdpp.profiles import bcd_to_iccid, iccid_to_bcd

T = tlv.encode


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class SimError(Exception):
    pass


@dataclass
class Installed:
    iccid: str
    metadata: bytes
    package: bytes


@dataclass
class SimEuicc:
    pki: LabPki
    curve: str = "nist"
    eid: str | None = None
    key: object = None
    cert_der: bytes = b""
    eum_der: bytes = b""
    ci_pkids: list[bytes] = field(default_factory=list)  # euiccCiPKIdListForSigning (the card's own chain)
    verify_pkids: list[bytes] = field(default_factory=list)  # euiccCiPKIdListForVerification (default: the same)
    trusted: list = field(default_factory=list)  # CI certificates the card trusts (default: its own PKI's)
    profiles: dict[str, Installed] = field(default_factory=dict)
    seq: int = 0
    # session state
    txid: bytes = b""
    challenge: bytes = b""
    server_cert: object = None
    smdp_oid: str = ""
    signature1: bytes = b""
    otsk: object = None
    smdp_signature2_tlv: bytes = b""
    dppb_cert: object = None

    def __post_init__(self) -> None:
        self.eid = self.eid or self.pki.eid
        self.key = self.pki.euicc_key(self.eid, self.curve)
        self.cert_der = self.pki.euicc_cert(self.eid, self.curve).public_bytes(serialization.Encoding.DER)
        self.eum_der = self.pki.eum_cert(self.curve).public_bytes(serialization.Encoding.DER)
        if not self.ci_pkids:
            self.ci_pkids = [self.pki.ci_key_id(self.curve)]
        if not self.verify_pkids:
            self.verify_pkids = list(self.ci_pkids)
        if not self.trusted:
            self.trusted = self.pki.ci_certs()

    # ES10b.GetEuiccInfo1 / GetEuiccChallenge
    def euicc_info1(self) -> bytes:
        verify = b"".join(T(0x04, k) for k in self.verify_pkids)
        sign = b"".join(T(0x04, k) for k in self.ci_pkids)
        return T(0xBF20, T(0x82, b"\x02\x05\x00") + T(0xA9, verify) + T(0xAA, sign))

    def get_challenge(self) -> bytes:
        self.challenge = secrets.token_bytes(16)
        return self.challenge

    # ES10b.AuthenticateServer
    def authenticate_server(self, resp: dict, matching_id: str | None, *, tamper_signature: bool = False) -> bytes:
        signed1 = unb64(resp["serverSigned1"])
        sig_tlv = tlv.parse_exact(unb64(resp["serverSignature1"]))
        assert sig_tlv.tag == 0x5F37 and sig_tlv.length == 64
        pkid_tlv = tlv.parse_exact(unb64(resp["euiccCiPKIdToBeUsed"]))
        assert pkid_tlv.tag == 0x04 and pkid_tlv.value in self.ci_pkids
        cert = crypto.load_certificate(unb64(resp["serverCertificate"]))
        verify_chain(cert, (), self.trusted, Role.DP_AUTH)
        crypto.verify(cert, signed1, sig_tlv.value, what="serverSignature1")
        f = {c.tag: c.value for c in tlv.children(signed1)}
        if f[0x81] != self.challenge:
            raise SimError("euiccChallenge mismatch")
        self.txid = f[0x80]
        if resp["transactionId"] != self.txid.hex().upper():
            raise SimError("transactionId mismatch")
        self.server_cert = cert
        ctx = T(0xA1, T(0x80, b"\x35\x29\x06\x11") + T(0xA1, b""))
        if matching_id is not None:
            ctx = T(0x80, matching_id.encode()) + ctx
        ids = T(0x04, self.ci_pkids[0])
        info2 = T(
            0xBF22,
            T(0x81, b"\x02\x03\x00")  # profileVersion
            + T(0x82, b"\x02\x05\x00")  # svn
            + T(0x83, b"\x01\x00\x00")  # euiccFirmwareVer
            + T(0x84, b"\x81\x01\x00")  # extCardResource
            + T(0x85, b"\x07\x80")  # uiccCapability
            + T(0x88, b"\x07\x80")  # rspCapability
            + T(0xA9, ids)
            + T(0xAA, ids)
            + T(0x04, b"\x00\x00\x01")  # ppVersion
            + T(0x0C, b"LAB-SIM"),  # sasAcreditationNumber
        )
        euicc_signed1 = T(0x30, T(0x80, self.txid) + T(0x83, f[0x83]) + T(0x84, f[0x84]) + info2 + T(0xA0, ctx))
        signature = crypto.sign(self.key, euicc_signed1)
        if tamper_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        self.signature1 = signature
        return T(0xBF38, T(0xA0, euicc_signed1 + T(0x5F37, signature) + self.cert_der + self.eum_der))

    # ES10b.PrepareDownload
    def prepare_download(self, resp: dict, cc: str | None = None, *, tamper_signature: bool = False) -> bytes:
        signed2 = unb64(resp["smdpSigned2"])
        sig2_tlv = unb64(resp["smdpSignature2"])
        assert sig2_tlv[:3] == b"\x5f\x37\x40"
        cert = crypto.load_certificate(unb64(resp["smdpCertificate"]))
        verify_chain(cert, (), self.trusted, Role.DP_PB)
        crypto.verify(cert, signed2 + T(0x5F37, self.signature1), sig2_tlv[3:], what="smdpSignature2")
        f = {c.tag: c.value for c in tlv.children(signed2)}
        assert f[0x80] == self.txid
        self.dppb_cert = cert
        self.smdp_signature2_tlv = sig2_tlv
        self.otsk = crypto.generate_key(self.curve)
        body = T(0x80, self.txid) + T(0x5F49, crypto.public_point(self.otsk))
        if cc is not None:
            body += T(0x04, hashlib.sha256(hashlib.sha256(cc.encode()).digest() + self.txid).digest())
        euicc_signed2 = T(0x30, body)
        signature = crypto.sign(self.key, euicc_signed2 + sig2_tlv)
        if tamper_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return T(0xBF21, T(0xA0, euicc_signed2 + T(0x5F37, signature)))

    # ES10b.LoadBoundProfilePackage (whole BPP at once)
    def load_bpp(self, bpp: bytes) -> bytes:
        top = tlv.parse_exact(bpp)
        assert top.tag == 0xBF36
        parts = {c.tag: c for c in tlv.children(top)}
        isc = parts[0xBF23]
        isc_f = {c.tag: c for c in tlv.children(isc)}
        signed_part = b"".join(c.raw for c in tlv.children(isc) if c.tag != 0x5F37)
        crypto.verify(
            self.dppb_cert,
            bsp.smdp_sign_input(signed_part, crypto.public_point(self.otsk)),
            isc_f[0x5F37].value,
            what="smdpSign",
        )
        assert isc_f[0x80].value == self.txid
        host_id = tlv.find(isc_f[0xA6], 0x84).value
        shs = crypto.ecdh(self.otsk, isc_f[0x5F49].value)
        keys = bsp.derive_session_keys(shs, host_id, bytes.fromhex(self.eid))
        un = bsp.BspUnprotector(keys)
        configure = un.unprotect_all([c.raw for c in tlv.children(parts[0xA0])], expected_tag=0x87)
        assert configure[:2] == b"\xbf\x24"
        metadata = un.unprotect_all([c.raw for c in tlv.children(parts[0xA1])], expected_tag=0x88)
        if 0xA2 in parts:
            rsk = un.unprotect_all([c.raw for c in tlv.children(parts[0xA2])], expected_tag=0x87)
            un.replace_session_keys(bsp.decode_replace_session_keys(rsk))
        package = un.unprotect_all([c.raw for c in tlv.children(parts[0xA3])], expected_tag=0x86)
        header = tlv.parse_one(package)
        assert header.tag == 0xA0
        # the header carries the ICCID in plain digit order (SAIP), StoreMetadata nibble-swapped (SGP.22)
        iccid = tlv.find(header, 0x83).value.hex().upper().rstrip("F")
        meta_iccid = bcd_to_iccid(tlv.find(metadata, 0x5A).value)
        assert iccid == meta_iccid
        if iccid in self.profiles:
            raise SimError("iccidAlreadyExists")
        last = list(tlv.iter_tlvs(package))[-1]
        assert last.tag == 0xAA
        self.profiles[iccid] = Installed(iccid, metadata, package)
        return self.pir(success=True, iccid=iccid, address=self._notification_address(metadata))

    def _notification_address(self, metadata: bytes) -> str:
        nci = tlv.find(metadata, 0xB6, 0x30, 0x81)
        return nci.value.decode() if nci else ""

    def pir(self, *, success: bool, iccid: str, address: str, tamper: bool = False) -> bytes:
        self.seq += 1
        meta = T(
            0xBF2F,
            T(0x80, int_bytes(self.seq))
            + T(0x81, b"\x07\x80")
            + T(0x0C, address.encode())
            + T(0x5A, iccid_to_bcd(iccid)),
        )
        if success:
            final = T(0xA2, T(0xA0, T(0x4F, bytes.fromhex("A0000005591010FFFFFFFF8900001000")) + T(0x04, b"")))
        else:
            final = T(0xA2, T(0xA1, T(0x80, b"\x05") + T(0x81, b"\x0c")))
        data = T(0xBF27, T(0x80, self.txid) + meta + T(0x06, encode_oid(self.server_oid())) + final)
        signature = crypto.sign(self.key, data)
        if tamper:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return T(0xBF37, data + T(0x5F37, signature))

    def server_oid(self) -> str:
        san = self.server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return san.get_values_for_type(x509.RegisteredID)[0].dotted_string

    def cancel_session(self, reason: int, smdp_oid: str | None = None) -> bytes:
        if smdp_oid is None:
            smdp_oid = self.server_oid()
        signed = T(0x30, T(0x80, self.txid) + T(0x81, encode_oid(smdp_oid)) + T(0x82, bytes([reason])))
        return T(0xBF41, T(0xA0, signed + T(0x5F37, crypto.sign(self.key, signed))))

    def other_notification(self, event_bit: int, iccid: str, address: str) -> bytes:
        self.seq += 1
        nbits = event_bit + 1
        bits = bytes([8 - nbits, 0x80 >> event_bit])
        meta = T(
            0xBF2F,
            T(0x80, int_bytes(self.seq)) + T(0x81, bits) + T(0x0C, address.encode()) + T(0x5A, iccid_to_bcd(iccid)),
        )
        return T(0x30, meta + T(0x5F37, crypto.sign(self.key, meta)) + self.cert_der + self.eum_der)


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for i, a in enumerate([arcs[0] * 40 + arcs[1], *arcs[2:]]):
        del i
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


class Es9Client:
    """ES9+ over HTTPS (JSON binding), as an LPA sends it."""

    def __init__(self, base_url: str, verify):
        self.http = httpx.Client(base_url=base_url, verify=verify, timeout=30)

    def close(self) -> None:
        self.http.close()

    def raw(self, function: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
        return self.http.post(
            f"/gsma/rsp2/es9plus/{function}",
            content=content,
            headers={"Content-Type": content_type, "X-Admin-Protocol": "gsma/rsp/v2.5.0"},
        )

    def call(self, function: str, **fields) -> tuple[int, dict | None]:
        body = {
            "header": {"functionRequesterIdentifier": "test-lpa", "functionCallIdentifier": str(uuid.uuid4())},
            **fields,
        }
        r = self.http.post(f"/gsma/rsp2/es9plus/{function}", json=body, headers={"X-Admin-Protocol": "gsma/rsp/v2.5.0"})
        if r.status_code == 204:
            return 204, None
        return r.status_code, r.json()


def status(resp: dict) -> tuple[str, str, str] | str:
    """``"Executed-Success"`` or ``(subjectCode, reasonCode, message)``."""
    fes = resp["header"]["functionExecutionStatus"]
    if fes["status"] == "Executed-Success":
        return "Executed-Success"
    scd = fes["statusCodeData"]
    return scd["subjectCode"], scd["reasonCode"], scd["message"]


@dataclass
class Download:
    """One LPA-side download run step by step (each step may be replaced by a test)."""

    client: Es9Client
    card: SimEuicc
    address: str
    matching_id: str | None
    auth: dict | None = None
    client_resp: dict | None = None
    bpp_resp: dict | None = None

    def initiate(self) -> dict:
        code, resp = self.client.call(
            "initiateAuthentication",
            euiccChallenge=b64(self.card.get_challenge()),
            euiccInfo1=b64(self.card.euicc_info1()),
            smdpAddress=self.address,
        )
        assert code == 200
        self.auth = resp
        return resp

    def authenticate(self, **kw) -> dict:
        asr = self.card.authenticate_server(self.auth, self.matching_id, **kw)
        code, resp = self.client.call(
            "authenticateClient", transactionId=self.auth["transactionId"], authenticateServerResponse=b64(asr)
        )
        assert code == 200
        self.client_resp = resp
        return resp

    def get_bpp(self, cc: str | None = None, **kw) -> dict:
        pdr = self.card.prepare_download(self.client_resp, cc, **kw)
        code, resp = self.client.call(
            "getBoundProfilePackage", transactionId=self.auth["transactionId"], prepareDownloadResponse=b64(pdr)
        )
        assert code == 200
        self.bpp_resp = resp
        return resp

    def install(self) -> bytes:
        return self.card.load_bpp(unb64(self.bpp_resp["boundProfilePackage"]))

    def notify(self, pir: bytes) -> int:
        code, _ = self.client.call("handleNotification", pendingNotification=b64(pir))
        return code

    def run(self, cc: str | None = None) -> bytes:
        for step in (self.initiate, self.authenticate):
            assert status(step()) == "Executed-Success"
        assert status(self.get_bpp(cc)) == "Executed-Success"
        pir = self.install()
        assert self.notify(pir) == 204
        return pir
