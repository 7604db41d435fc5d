"""Bound Profile Package generation (SGP.22 v2.5 §2.5.5 BPP, §5.5 ES8+ functions, §2.6.4 key agreement).

``BF36 { BF23 InitialiseSecureChannel, A0 {87 ConfigureISDP}, A1 {88.. StoreMetadata}, [A2 {87 ReplaceSessionKeys}],
A3 {86.. profile elements} }``

* one-time ECKA key pair per download; ShS = ECDH(otSK.DP, otPK.EUICC); session keys by the X9.63 KDF with the
  hostId of the control reference template and the EID (``rsp.bsp``);
* InitialiseSecureChannel signed with SK.DPpb over remoteOpId || transactionId || CRT || smdpOtpk || euiccOtpk;
* ConfigureISDP (BF24) and ReplaceSessionKeys (BF26) as encrypted ``87`` segments, StoreMetadata (BF25) as
  MAC-only ``88`` segments;
* the profile elements as ``86`` segments, protected either with the session keys (default) or, for a
  pre-protected profile, with the profile's own PPK keys: then the ``86`` segments are computed once per ICCID
  and cached, and only ``BF23``/``87``/``88``/``A2`` are made per download.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from rsp import bsp, crypto, tlv
from smdpp import profiles

HOST_ID = b"SGP32LAB"  # the hostId of the CRT (8 bytes; any value the SM-DP+ chooses)
CONFIGURE_ISDP = tlv.encode(0xBF24, b"")


@dataclass(frozen=True)
class BoundPackage:
    bpp: bytes
    smdp_otpk: bytes
    segments_86: int


def _ppk_keys(profile_name: str, iccid: str) -> bsp.SessionKeys:
    """The PPK key set of a pre-protected profile (lab: derived from the ICCID, stable across restarts)."""
    seed = hashlib.sha256(b"smdpp-ppk|" + profile_name.encode() + b"|" + iccid.encode()).digest()
    seed2 = hashlib.sha256(seed).digest()
    return bsp.SessionKeys(initial_mcv=seed[:16], s_enc=seed[16:32], s_mac=seed2[:16])


@functools.lru_cache(maxsize=128)
def _protected_86(profile_name: str, iccid: str) -> tuple[bytes, ...]:
    """The PPK-protected ``86`` segments of a pre-protected profile (computed once per ICCID)."""
    protector = bsp.BspProtector(_ppk_keys(profile_name, iccid))
    return tuple(protector.protect_segment(0x86, chunk) for chunk in profiles.package_segments(profile_name, iccid))


def prepare(profile: profiles.TestProfile, iccid: str) -> None:
    """Protect a pre-protected profile's package for ``iccid`` ahead of the download (fills the cache)."""
    if profile.pre_protected:
        _protected_86(profile.name, iccid)


def _seq(tag: int, segments: list[bytes] | tuple[bytes, ...]) -> bytes:
    return tlv.encode(tag, b"".join(segments))


def bind(
    *,
    profile: profiles.TestProfile,
    iccid: str,
    metadata: bytes,
    transaction_id: bytes,
    eid: str,
    euicc_otpk: bytes,
    dppb_key: ec.EllipticCurvePrivateKey,
) -> BoundPackage:
    """Build one Bound Profile Package for ``euicc_otpk`` with fresh one-time keys."""
    curve = crypto.curve_name(dppb_key)
    otsk = crypto.generate_key(curve)
    smdp_otpk = crypto.public_point(otsk)
    shs = crypto.ecdh(otsk, crypto.public_key_from_point(euicc_otpk, curve))
    keys = bsp.derive_session_keys(shs, HOST_ID, bytes.fromhex(eid))

    signed_part = bsp.initialise_secure_channel_signed_part(transaction_id, HOST_ID, smdp_otpk)
    smdp_sign = crypto.sign(dppb_key, bsp.smdp_sign_input(signed_part, euicc_otpk))
    isc = bsp.initialise_secure_channel(signed_part, smdp_sign)

    protector = bsp.BspProtector(keys)
    first87 = protector.protect(0x87, CONFIGURE_ISDP)
    seq88 = protector.protect(0x88, metadata)
    parts = [isc, _seq(0xA0, first87), _seq(0xA1, seq88)]
    if profile.pre_protected:
        ppk = _ppk_keys(profile.name, iccid)
        parts.append(_seq(0xA2, protector.protect(0x87, bsp.encode_replace_session_keys(ppk))))
        seq86: tuple[bytes, ...] | list[bytes] = _protected_86(profile.name, iccid)
    else:
        seq86 = [protector.protect_segment(0x86, chunk) for chunk in profiles.package_segments(profile.name, iccid)]
    parts.append(_seq(0xA3, seq86))
    return BoundPackage(bpp=tlv.encode(0xBF36, b"".join(parts)), smdp_otpk=smdp_otpk, segments_86=len(seq86))
