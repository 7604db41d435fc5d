"""Test profiles: generated Profile Packages in the real-world shape, user-given packages (``smdpp.upp``), and
their metadata (SGP.22 v2.5 §2.5.3; TCA "eUICC Profile Package: Interoperable Format Technical Specification"
(SAIP) v2.3/v3.3 ``PEDefinitions``; GSMA TS.48 generic eUICC test profile).

The plaintext of the ``86`` segments, concatenated, is a Profile Element sequence as real packages have it:

* the **ProfileHeader** ``A0 {80 major-version 2, 81 minor-version 3, 82 profileType, 83 iccid, A5
  eUICC-Mandatory-services, A6 eUICC-Mandatory-GFSTEList}`` with the fields of the published TS.48 generic test
  profile, and the ``iccid`` in **plain E.118 digit order**, F-padded (``8949000011000000015F``), as SAIP says
  and as TS.48 (``iccid '89000123456789012341'H``) and pySim's SAIP personalisation write it; StoreMetadata
  carries the same ICCID nibble-swapped (SGP.22 ``Iccid``, as in EF.ICCID), and so does EF.ICCID in the MF;
* then the PEs of TS.48 in its published order (:data:`TS48_PES`: mf, pukCodes, pinCodes, telecom, pinCodes,
  genericFileManagement, usim, opt-usim, pinCodes, akaParameter, gsm-access, df-5gs, df-saip, csim, opt-csim,
  pinCodes, cdmaParameter, isim, opt-isim, pinCodes, akaParameter, genericFileManagement x2, securityDomain,
  rfm x4), each with its SAIP PE tag and ``PEHeader {mandated, identification}``; the bodies are stand-ins
  (the template OID of the template PEs, one file of deterministic content) sized so that the package has the
  profile's size (``ts48``: 12 KB, the real one is about 13 KB; ``large``: 100 KB);
* last the **End** PE ``AA { A0 {80 mandated, 81 identification} }``.

A UPP file given by the user (``smdpp profile import`` / ``order create --upp``) is served byte for byte; its
ICCID is the one in its header.

The metadata (``StoreMetadataRequest``, BF25) names the ICCID, service provider, profile name, profile class, and
``notificationConfigurationInfo`` pointing at this SM-DP+ for install/enable/disable/delete, so the eUICC sends
those notifications back here.

Per-profile work that does not change per download is cached (the layout of a generated profile, built once: a new
ICCID only fills its two 10-byte fields, ~25 us instead of ~550 us of generation per order; the package of an
ICCID, its plaintext segmentation and, for pre-protected profiles, the PPK-protected ``86`` segments).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from rsp import iccid as iccid_codec
from rsp.tlv import encode as tlv
from smdpp import upp as upp_files

# SAIP ProfileElement CHOICE tags (context-specific, constructed)
PE_HEADER = 0xA0
PE_END = 0xAA

PROFILE_CLASS = {"test": 0, "provisioning": 1, "operational": 2}
# NotificationEvent BIT STRING named bits (SGP.22 §2.4a)
NOTIFY_INSTALL, NOTIFY_ENABLE, NOTIFY_DISABLE, NOTIFY_DELETE = 0, 1, 2, 3

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
    upp: bytes | None = field(default=None, repr=False)  # a user's package, served as-is (smdpp.upp)
    fixed_iccid: str | None = None  # the ICCID of a user's package (from its ProfileHeader)

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
            "source": "file" if self.upp is not None else "generated",
            "iccid": self.fixed_iccid,
        }


PROFILES: dict[str, TestProfile] = {
    p.name: p
    for p in (
        TestProfile(
            "ts48",
            "TS.48-shaped test profile (~12 KB), session keys",
            12_288,
            "8949000011",
            "Lab Operator",
            "Lab TS48",
        ),
        TestProfile(
            "ts48-ppk",
            "TS.48-shaped test profile (~12 KB), pre-protected (ReplaceSessionKeys)",
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


_UPP_DIRS: list[Path] = []  # data directories whose imported packages get_profile() serves
_UPP_PROFILES: dict[str, TestProfile] = {}  # name -> profile (a name never changes its package: safe to cache)


def use_data_dir(data_dir: Path) -> None:
    """Serve the packages imported into ``data_dir`` (``smdpp.upp``) by name (the server and the CLI call this)."""
    path = Path(data_dir)
    if path not in _UPP_DIRS:
        _UPP_DIRS.append(path)


def _upp_profile(info: upp_files.UppInfo, package: bytes) -> TestProfile:
    return TestProfile(
        name=info.name,
        description=f"profile package file ({info.profile_type or 'no profileType'}), sha256 {info.sha256[:12]}",
        size=info.size,
        iccid_prefix="",
        service_provider_name=info.service_provider_name,
        profile_name=info.profile_name,
        profile_class=info.profile_class,
        upp=package,
        fixed_iccid=info.iccid,
    )


def get_profile(name: str) -> TestProfile:
    """A built-in test profile or an imported package (raises KeyError naming the known ones)."""
    if name in PROFILES:
        return PROFILES[name]
    if name in _UPP_PROFILES:
        return _UPP_PROFILES[name]
    for data_dir in _UPP_DIRS:
        info = upp_files.load_info(data_dir, name)
        if info is not None:
            profile = _UPP_PROFILES[name] = _upp_profile(info, upp_files.load_package(data_dir, info))
            return profile
    known = sorted(PROFILES) + sorted({i.name for d in _UPP_DIRS for i in upp_files.list_infos(d)})
    raise KeyError(f"unknown profile {name!r} (known: {', '.join(known)})")


def all_profiles() -> list[TestProfile]:
    """The built-in profiles, then the imported packages of the data directories in use."""
    out = list(PROFILES.values())
    for data_dir in _UPP_DIRS:
        out += [get_profile(info.name) for info in upp_files.list_infos(data_dir)]
    return out


def import_upp(data_dir: Path, package: bytes, **kw) -> TestProfile:
    """Store a user's package in ``data_dir`` (``smdpp.upp.import_upp``) and return it as a profile."""
    info = upp_files.import_upp(data_dir, package, reserved=tuple(PROFILES), **kw)
    known = _UPP_PROFILES.get(info.name)
    if known is not None and known.upp != package:
        raise upp_files.UppError(f"name {info.name!r} is already taken by another package in this process")
    use_data_dir(data_dir)
    return get_profile(info.name)


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


# The PEs of the published GSMA TS.48 generic eUICC test profile after its header, in order: (SAIP tag, name,
# template OID arc under 2.23.143.1.2 or None). Checked against the value notation of the published profile.
TS48_PES: tuple[tuple[int, str, int | None], ...] = (
    (0xB0, "mf", 1),
    (0xA3, "pukCodes", None),
    (0xA2, "pinCodes", None),
    (0xB2, "telecom", 3),
    (0xA2, "pinCodes", None),
    (0xA1, "genericFileManagement", None),
    (0xB3, "usim", 4),
    (0xB4, "opt-usim", 5),
    (0xA2, "pinCodes", None),
    (0xA4, "akaParameter", None),
    (0xB8, "gsm-access", 7),
    (0xBC, "df-5gs", 13),
    (0xBD, "df-saip", 14),
    (0xB9, "csim", 10),
    (0xBA, "opt-csim", 11),
    (0xA2, "pinCodes", None),
    (0xA5, "cdmaParameter", None),
    (0xB5, "isim", 8),
    (0xB6, "opt-isim", 9),
    (0xA2, "pinCodes", None),
    (0xA4, "akaParameter", None),
    (0xA1, "genericFileManagement", None),
    (0xA1, "genericFileManagement", None),
    (0xA6, "securityDomain", None),
    (0xA7, "rfm", None),
    (0xA7, "rfm", None),
    (0xA7, "rfm", None),
    (0xA7, "rfm", None),
)
# TS.48 header: usim, isim, csim, usim-test-algorithm, ber-tlv, get-identity, profile-a-x25519, profile-b-p256
TS48_SERVICES = bytes.fromhex("81008200830091009200950096009700")
TS48_GFSTE = (1, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14)
TEMPLATE_ARC = bytes.fromhex("67810F0102")  # 2.23.143.1.2


def _der_int(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")


def _pe_header(identification: int) -> bytes:
    """``PEHeader { mandated NULL, identification }`` (``A0 {80 00, 81 id}``)."""
    return tlv(0xA0, tlv(0x80, b"") + tlv(0x81, _der_int(identification)))


def _content(seed: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:n])


def _pe(tag: int, identification: int, template: int | None, body: bytes) -> bytes:
    inner = _pe_header(identification)
    if template is not None:
        inner += tlv(0x81, TEMPLATE_ARC + bytes([template]))
    return tlv(tag, inner + body)


def profile_header(profile: TestProfile, iccid: str) -> bytes:
    """The TS.48 ProfileHeader with ``iccid`` in plain E.118 digit order (SAIP), F-padded."""
    gfste = b"".join(tlv(0x06, TEMPLATE_ARC + bytes([n])) for n in TS48_GFSTE)
    return tlv(
        PE_HEADER,
        tlv(0x80, b"\x02")
        + tlv(0x81, b"\x03")
        + tlv(0x82, f"SGP32 lab {profile.name} (GSMA Generic eUICC Test Profile shape)".encode())
        + tlv(0x83, bytes.fromhex(iccid.upper().ljust(20, "F")))
        + tlv(0xA5, TS48_SERVICES)
        + tlv(0xA6, gfste),
    )


@functools.lru_cache(maxsize=256)
def profile_package(profile_name: str, iccid: str) -> bytes:
    """The Unprotected Profile Package of one ICCID of a profile (a user's package: the file itself)."""
    profile = get_profile(profile_name)
    if profile.upp is not None:
        if iccid != profile.fixed_iccid:
            raise ValueError(f"profile {profile_name} is a package for ICCID {profile.fixed_iccid}, not {iccid}")
        return profile.upp
    # every ICCID of a profile gets the same layout: only the header and the MF (EF.ICCID) carry it, both in
    # fields of a fixed 10 bytes, so the sized PEs after the MF are built once per profile (_layout)
    mf_tag, mf_template, mf_content, pes, end = _layout(profile_name)
    mf = _pe(mf_tag, 2, mf_template, _mf_body(iccid) + mf_content)
    return b"".join((profile_header(profile, iccid), mf, pes, end))


def _mf_body(iccid: str) -> bytes:
    """The MF's file list: EF.ICCID (2FE2) holding the ICCID nibble-swapped, as EF.ICCID does."""
    return tlv(0xA4, tlv(0xA1, tlv(0x83, bytes.fromhex("2FE2"))) + tlv(0x83, iccid_to_bcd(iccid)))


@functools.lru_cache(maxsize=64)
def _layout(profile_name: str) -> tuple[int, int | None, bytes, bytes, bytes]:
    """(MF tag, MF template, the MF's file content after its EF.ICCID, the encoded PEs after the MF, the End PE) of
    a generated profile, sized so that the package has the profile's size."""
    profile = get_profile(profile_name)
    placeholder = "8900000000000000000"  # the sizes do not depend on the ICCID's value
    header_len = len(profile_header(profile, placeholder))
    end = tlv(PE_END, _pe_header(len(TS48_PES) + 2))
    seed = hashlib.sha256(profile.name.encode()).digest()
    assert TS48_PES[0][1] == "mf"
    mf_tag, _name, mf_template = TS48_PES[0]

    def pes(sizes: list[int]) -> tuple[bytes, bytes]:
        """(the MF's content element, the PEs after the MF)"""
        parts = []
        for i, (tag, _n, tpl) in enumerate(TS48_PES):
            body = tlv(0xA5, tlv(0x83, _content(seed + bytes([i]), sizes[i]))) if sizes[i] else b""
            parts.append(body if i == 0 else _pe(tag, i + 2, tpl, body))
        return parts[0], b"".join(parts[1:])

    def size(sizes: list[int]) -> int:
        mf_extra, rest = pes(sizes)
        return header_len + len(_pe(mf_tag, 2, mf_template, _mf_body(placeholder) + mf_extra)) + len(rest) + len(end)

    sizes = [0] * len(TS48_PES)
    budget = max(0, profile.size - size(sizes) - 8 * len(TS48_PES))
    sizes = [budget // len(sizes) + (1 if i < budget % len(sizes) else 0) for i in range(len(sizes))]
    total = size(sizes)
    for _ in range(8):  # TLV length fields grow with the content: settle the size on the largest file
        diff = profile.size - total
        if diff == 0 or sizes[0] + diff <= 0:
            break
        sizes[0] += diff
        total = size(sizes)
    mf_content, rest = pes(sizes)
    return mf_tag, mf_template, mf_content, rest, end


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
