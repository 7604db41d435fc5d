"""Test profiles: generated Profile Packages and their metadata (SGP.22 v2.5 §2.5.3, SIMalliance eUICC Profile
Package v2.3 element framing).

The content contract with the software eUICC (``euicc``): the plaintext of the ``86`` segments, concatenated, is
a sequence of Profile Elements (BER-TLV, SIMalliance ``ProfileElement`` CHOICE tags):

* first a **ProfileHeader** ``A0 { 80 major-version, 81 minor-version, 82 profileType, 83 iccid(10, BCD) }``;
* then filler elements, here ``PE-NonStandard`` ``A9 { A0 {81 identification}, 81 issuerID (OID), 82 content }``
  whose content is deterministic pseudo-random bytes, sized so that the whole package has a realistic size
  (``ts48``: ~12 KB, like the TS.48 test profile; ``large``: 100 KB);
* last the **End** element ``AA { A0 { 81 identification } }``.

The metadata (``StoreMetadataRequest``, BF25) names the ICCID, service provider, profile name, profile class, and
``notificationConfigurationInfo`` pointing at this SM-DP+ for install/enable/disable/delete, so the eUICC sends
those notifications back here.

Per-profile work that does not change per download is cached (the filler elements, the package of an ICCID,
its plaintext segmentation and, for pre-protected profiles, the PPK-protected ``86`` segments).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from rsp import iccid as iccid_codec
from rsp.tlv import encode as tlv

# SIMalliance ProfileElement CHOICE tags (context-specific, constructed)
PE_HEADER = 0xA0
PE_NON_STANDARD = 0xA9
PE_END = 0xAA

PROFILE_CLASS = {"test": 0, "provisioning": 1, "operational": 2}
# NotificationEvent BIT STRING named bits (SGP.22 §2.4a)
NOTIFY_INSTALL, NOTIFY_ENABLE, NOTIFY_DISABLE, NOTIFY_DELETE = 0, 1, 2, 3

ISSUER_OID = bytes.fromhex("2B0601040182F91E")  # 1.3.6.1.4.1.31966 (arbitrary lab issuer arc)
# Plaintext of one 86 segment: 1 tag + 3 length + ciphertext(<=1008) + 8 MAC <= 1020 (SGP.22 §5.5.2);
# AES-CBC padding always adds 1..16 bytes, so at most 1007 plaintext bytes fit.
MAX_SEGMENT_PLAINTEXT = 1007


@dataclass(frozen=True)
class TestProfile:
    """A named test profile: an ICCID range and a package layout."""

    name: str
    description: str
    size: int  # approximate size of the Profile Package in bytes
    iccid_prefix: str  # leading ICCID digits; a serial and the Luhn digit follow
    service_provider_name: str
    profile_name: str
    profile_class: str = "operational"
    pre_protected: bool = False  # bound with ReplaceSessionKeys + PPK-protected 86 segments

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "size": self.size,
            "iccid_prefix": self.iccid_prefix,
            "service_provider_name": self.service_provider_name,
            "profile_name": self.profile_name,
            "profile_class": self.profile_class,
            "pre_protected": self.pre_protected,
        }


PROFILES: dict[str, TestProfile] = {
    p.name: p
    for p in (
        TestProfile(
            "ts48", "TS.48-like test profile (~12 KB), session keys", 12_288, "8949000011", "Lab Operator", "Lab TS48"
        ),
        TestProfile(
            "ts48-ppk",
            "TS.48-like test profile (~12 KB), pre-protected (ReplaceSessionKeys)",
            12_288,
            "8949000012",
            "Lab Operator",
            "Lab TS48 PPK",
            pre_protected=True,
        ),
        TestProfile("small", "minimal profile (~1.5 KB)", 1_536, "8949000013", "Lab Operator", "Lab Small"),
        TestProfile("large", "large profile (100 KB)", 102_400, "8949000014", "Lab Operator", "Lab Large"),
        TestProfile(
            "test-class",
            "profile of class test (~4 KB)",
            4_096,
            "8949000015",
            "Lab Operator",
            "Lab Test Class",
            profile_class="test",
        ),
    )
}
DEFAULT_PROFILE = "ts48"


def get_profile(name: str) -> TestProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r} (known: {', '.join(sorted(PROFILES))})") from None


def iccid_to_bcd(iccid: str) -> bytes:
    """ICCID digits -> 10 bytes, nibble-swapped BCD padded with F (ITU-T E.118 / SGP.22 Iccid)."""
    digits = iccid.upper()
    if not (18 <= len(digits) <= 20) or not all(c in "0123456789F" for c in digits):
        raise ValueError(f"ICCID must be 18..20 digits, got {iccid!r}")
    return iccid_codec.to_bcd(digits)


def bcd_to_iccid(data: bytes) -> str:
    return iccid_codec.from_bcd(data)


def _bit_string(bits: list[int]) -> bytes:
    """DER BIT STRING contents of a named-bit list (no trailing zero bits)."""
    if not bits:
        return b"\x00"
    nbits = max(bits) + 1
    nbytes = (nbits + 7) // 8
    value = 0
    for b in bits:
        value |= 1 << (nbytes * 8 - 1 - b)
    unused = nbytes * 8 - nbits
    return bytes([unused]) + value.to_bytes(nbytes, "big")


@functools.lru_cache(maxsize=32)
def _filler(profile_name: str, budget: int) -> bytes:
    """The filler elements of a profile: deterministic, cached (they never change per download)."""
    out = bytearray()
    ident = 2
    stream_seed = hashlib.sha256(profile_name.encode()).digest()
    counter = 0
    while len(out) < budget:
        chunk = min(1000, max(16, budget - len(out) - 24))
        content = bytearray()
        while len(content) < chunk:
            content += hashlib.sha256(stream_seed + counter.to_bytes(4, "big")).digest()
            counter += 1
        pe = tlv(
            PE_NON_STANDARD,
            tlv(0xA0, tlv(0x81, ident.to_bytes(2, "big"))) + tlv(0x81, ISSUER_OID) + tlv(0x82, bytes(content[:chunk])),
        )
        out += pe
        ident += 1
    return bytes(out)


def profile_header(profile: TestProfile, iccid: str) -> bytes:
    return tlv(
        PE_HEADER,
        tlv(0x80, b"\x02")
        + tlv(0x81, b"\x03")
        + tlv(0x82, f"SGP32 lab {profile.name}".encode())
        + tlv(0x83, iccid_to_bcd(iccid)),
    )


@functools.lru_cache(maxsize=256)
def profile_package(profile_name: str, iccid: str) -> bytes:
    """The Unprotected Profile Package (PE sequence) of one ICCID of a test profile."""
    profile = get_profile(profile_name)
    header = profile_header(profile, iccid)
    end = tlv(PE_END, tlv(0xA0, tlv(0x81, b"\xff\xff")))
    budget = max(0, profile.size - len(header) - len(end))
    return header + _filler(profile.name, budget) + end


@functools.lru_cache(maxsize=256)
def package_segments(profile_name: str, iccid: str) -> tuple[bytes, ...]:
    """The package cut into plaintext chunks that each fit one ``86`` segment."""
    upp = profile_package(profile_name, iccid)
    return tuple(upp[i : i + MAX_SEGMENT_PLAINTEXT] for i in range(0, len(upp), MAX_SEGMENT_PLAINTEXT))


def store_metadata_request(profile: TestProfile, iccid: str, notification_address: str) -> bytes:
    """``StoreMetadataRequest`` (BF25, SGP.22 §5.5.3 / §2.4a ProfileMetadata) for one ICCID."""
    nci = tlv(
        0x30,
        tlv(0x80, _bit_string([NOTIFY_INSTALL, NOTIFY_ENABLE, NOTIFY_DISABLE, NOTIFY_DELETE]))
        + tlv(0x81, notification_address.encode()),
    )
    body = (
        tlv(0x5A, iccid_to_bcd(iccid))
        + tlv(0x91, profile.service_provider_name.encode())
        + tlv(0x92, profile.profile_name.encode())
    )
    if profile.profile_class != "operational":  # DEFAULT operational: DER omits the default value
        body += tlv(0x95, bytes([PROFILE_CLASS[profile.profile_class]]))
    body += tlv(0xB6, nci)
    return tlv(0xBF25, body)
