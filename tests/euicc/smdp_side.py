"""The SM-DP+ half of a profile download, built in the tests from ``rsp`` only (SGP.22 v2.5 §3.1.3, §5.5).

Signs serverSigned1 with the lab DPauth key, smdpSigned2 and smdpSign with the lab DPpb key, checks the card's
euiccSignature1/2 against its certificate chain, and binds a profile package with BSP (``rsp.bsp``), optionally
with ReplaceSessionKeys (pre-protected profile keys). ``segments()`` cuts a BPP into the ES10b
LoadBoundProfilePackage commands (protocol brief §7.5). Knobs let tests forge each part.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from rsp import bsp, crypto, tlv
from rsp.pki import LabPki, Role, verify_chain

T = tlv.encode


def bits(*numbers: int) -> bytes:
    """DER BIT STRING content for named bits."""
    if not numbers:
        return b"\x00"
    n = max(numbers) + 1
    size = (n + 7) // 8
    buf = bytearray(size)
    for b in numbers:
        buf[b // 8] |= 0x80 >> (b % 8)
    return bytes([size * 8 - n]) + bytes(buf)


def iccid_bcd(digits: str) -> bytes:
    """ICCID digits -> 10 bytes nibble-swapped BCD (F-padded), as in EF.ICCID."""
    digits = digits + "F" * (20 - len(digits))
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, 20, 2))


@dataclass
class TestProfile:
    iccid: bytes
    name: str = "Lab profile"
    spn: str = "Lab operator"
    profile_class: int | None = None  # None = DEFAULT operational (omitted)
    notifications: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    ecall: bool | None = None
    fallback_allowed: bool | None = None
    ppr: bytes | None = None
    size: int = 3000
    header_iccid: bytes | None = None  # ProfileHeader ICCID (default: the same)
    package: bytes | None = None  # the whole profile package as given (default: generated below)

    def metadata(self) -> bytes:
        body = T(0x5A, self.iccid) + T(0x91, self.spn.encode()) + T(0x92, self.name.encode())
        if self.profile_class is not None:
            body += T(0x95, bytes([self.profile_class]))
        if self.notifications:
            body += T(
                0xB6, b"".join(T(0x30, T(0x80, bits(*ev)) + T(0x81, addr.encode())) for ev, addr in self.notifications)
            )
        if self.ppr is not None:
            body += T(0x99, self.ppr)
        if self.ecall is not None:
            body += T(0x9F7B, b"\xff" if self.ecall else b"\x00")
        if self.fallback_allowed is not None:
            body += T(0x9F67, b"\xff" if self.fallback_allowed else b"\x00")
        return T(0xBF25, body)

    def elements(self) -> bytes:
        if self.package is not None:
            return self.package
        iccid = self.header_iccid or self.iccid
        header = T(0xA0, T(0x80, b"\x02") + T(0x81, b"\x03") + T(0x82, b"lab") + T(0x83, iccid))
        out = bytearray(header)
        n = 2
        seed = hashlib.sha256(self.iccid).digest()
        while len(out) < self.size:
            chunk = (seed * 40)[:700]
            out += T(0xA9, T(0xA0, T(0x81, n.to_bytes(2, "big"))) + T(0x82, chunk))
            seed = hashlib.sha256(seed).digest()
            n += 1
        out += T(0xAA, T(0xA0, T(0x81, b"\xff\xff")))
        return bytes(out)


def segments(bpp: bytes) -> list[bytes]:
    """A BPP (BF36) cut into the LoadBoundProfilePackage commands (protocol brief §7.5)."""
    top = tlv.parse_exact(bpp)
    kids = tlv.children(top)
    out = [bpp[: top.header_len] + kids[0].raw]
    for k in kids[1:]:
        if k.tag in (0xA0, 0xA2):
            out.append(k.raw)
        else:
            out.append(k.raw[: k.header_len])
            out += [c.raw for c in tlv.children(k)]
    return out


class SmdpSide:
    def __init__(
        self,
        pki: LabPki,
        curve: str = "nist",
        address: str = "smdp.lab.example",
        ci_pkid: bytes | None = None,
        dpauth=None,
        dpauth_key=None,
        dppb=None,
        dppb_key=None,
    ) -> None:
        self.pki = pki
        self.curve = curve
        self.address = address
        self.ci_pkid = ci_pkid if ci_pkid is not None else pki.ci_key_id(curve)
        self.dpauth = dpauth or pki.dpauth_cert(curve)
        self.dpauth_key = dpauth_key or pki.dpauth_key(curve)
        self.dppb = dppb or pki.dppb_cert(curve)
        self.dppb_key = dppb_key or pki.dppb_key(curve)
        self.txid = os.urandom(16)
        self.euicc_signature1: bytes | None = None
        self.euicc_cert = None
        self.smdp_signature2: bytes | None = None
        self.euicc_otpk: bytes | None = None

    @staticmethod
    def der(cert) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.DER)

    # ---------------------------------------------------------------------------------------------- step 1
    def authenticate_server_request(
        self,
        challenge: bytes,
        *,
        matching_id: str = "LAB-MATCHING-ID",
        signature: bytes | None = None,
        cert_der: bytes | None = None,
        server_challenge: bytes | None = None,
    ) -> bytes:
        signed1 = T(
            0x30,
            T(0x80, self.txid)
            + T(0x81, challenge)
            + T(0x83, self.address.encode())
            + T(0x84, server_challenge or os.urandom(16)),
        )
        sig = signature if signature is not None else crypto.sign(self.dpauth_key, signed1)
        device_info = T(0xA1, T(0x80, bytes.fromhex("35290611")) + T(0xA1, b""))
        ctx_params = T(0xA0, T(0x80, matching_id.encode()) + device_info)
        return T(
            0xBF38,
            signed1
            + T(0x5F37, sig)
            + T(0x04, self.ci_pkid)
            + (cert_der if cert_der is not None else self.der(self.dpauth))
            + ctx_params,
        )

    def check_authenticate_response(self, response: bytes) -> tlv.Tlv:
        """Verify the card's euiccSignature1 and certificate chain (what ES9+ AuthenticateClient does)."""
        ok = tlv.require(response, 0xA0)
        parts = tlv.children(ok)
        signed1, sig1, euicc_cert, eum_cert = parts
        assert signed1.tag == 0x30 and sig1.tag == 0x5F37
        chain = verify_chain(euicc_cert.raw, [eum_cert.raw], self.pki.ci_certs(), Role.EUICC)
        crypto.verify(chain.public_key, signed1.raw, sig1.value, what="euiccSignature1")
        assert tlv.require(signed1, 0x80).value == self.txid
        self.euicc_signature1 = sig1.value
        self.euicc_cert = chain.leaf
        return signed1

    # ---------------------------------------------------------------------------------------------- step 2
    def prepare_download_request(
        self,
        *,
        cc_required: bool = False,
        hash_cc: bytes | None = None,
        signature: bytes | None = None,
        cert_der: bytes | None = None,
        txid: bytes | None = None,
    ) -> bytes:
        assert self.euicc_signature1 is not None
        signed2 = T(0x30, T(0x80, txid or self.txid) + T(0x01, b"\xff" if cc_required else b"\x00"))
        sig = (
            signature
            if signature is not None
            else crypto.sign(self.dppb_key, signed2 + T(0x5F37, self.euicc_signature1))
        )
        self.smdp_signature2 = sig
        body = signed2 + T(0x5F37, sig)
        if hash_cc is not None:
            body += T(0x04, hash_cc)
        return T(0xBF21, body + (cert_der if cert_der is not None else self.der(self.dppb)))

    def check_prepare_response(self, response: bytes) -> bytes:
        ok = tlv.require(response, 0xA0)
        signed2, sig2 = tlv.children(ok)
        crypto.verify(
            self.euicc_cert, signed2.raw + T(0x5F37, self.smdp_signature2), sig2.value, what="euiccSignature2"
        )
        self.euicc_otpk = tlv.require(signed2, 0x5F49).value
        return self.euicc_otpk

    # ---------------------------------------------------------------------------------------------- step 3
    def bind(
        self,
        profile: TestProfile,
        eid: bytes,
        *,
        ppk: bool = False,
        smdp_sign: bytes | None = None,
        remote_op: int = 1,
        txid: bytes | None = None,
    ) -> bytes:
        """A Bound Profile Package for the card's euiccOtpk (BF36 bytes)."""
        assert self.euicc_otpk is not None
        otsk = crypto.generate_key(crypto.curve_name(self.dppb))
        otpk = crypto.public_point(otsk)
        host_id = b"LAB-HOST"
        keys = bsp.derive_session_keys(crypto.ecdh(otsk, self.euicc_otpk), host_id, eid)
        signed_part = bsp.initialise_secure_channel_signed_part(
            txid or self.txid, host_id, otpk, remote_op_id=remote_op
        )
        sign = (
            smdp_sign
            if smdp_sign is not None
            else crypto.sign(self.dppb_key, bsp.smdp_sign_input(signed_part, self.euicc_otpk))
        )
        isc = bsp.initialise_secure_channel(signed_part, sign)
        p = bsp.BspProtector(keys)
        a0 = T(0xA0, b"".join(p.protect(0x87, T(0xBF24, b""))))
        a1 = T(0xA1, b"".join(p.protect(0x88, profile.metadata())))
        a2 = b""
        if ppk:
            ppk_keys = bsp.SessionKeys(os.urandom(16), os.urandom(16), os.urandom(16))
            a2 = T(0xA2, b"".join(p.protect(0x87, bsp.encode_replace_session_keys(ppk_keys))))
            p = bsp.BspProtector(ppk_keys)
        a3 = T(0xA3, b"".join(p.protect(0x86, profile.elements())))
        return T(0xBF36, isc + a0 + a1 + a2 + a3)
