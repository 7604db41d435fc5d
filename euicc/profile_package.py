"""The Unprotected Profile Package as this card reads it (SGP.22 v2.5 §2.5.3 and §5.5.4 LoadProfileElements; TCA
"eUICC Profile Package: Interoperable Format Technical Specification" (SAIP) v2.3 / v3.3, ``PEDefinitions``).

The plaintext of the ``86`` segments is a sequence of Profile Elements (PEs), each a DER ``ProfileElement``
CHOICE alternative with a context-specific constructed tag: ``A0`` header, ``A1`` genericFileManagement, ``A2``
pinCodes, ``A3`` pukCodes, ``A4`` akaParameter, ``A5`` cdmaParameter, ``A6`` securityDomain, ``A7`` rfm, ``A8``
application, ``A9`` nonStandard, ``AA`` end, ``AB``..``AF`` rfu, ``B0`` mf, ``B1`` cd, ``B2`` telecom, ``B3`` usim,
``B4`` opt-usim, ``B5`` isim, ``B6`` opt-isim, ``B7`` phonebook, ``B8`` gsm-access, ``B9`` csim, ``BA`` opt-csim,
``BB`` eap, ``BC`` df-5gs, ``BD`` df-saip, ``BE`` df-snpn, ``BF1F`` df-5gprose, ``BF20`` iot, ``BF21`` opt-iot.
Every PE but the header opens with its ``PEHeader ::= SEQUENCE { mandated NULL OPTIONAL, identification UInt15 }``
(``A0 {[80 00] 81 id}``).

What this card checks, and what it answers (SGP.22 errorReason, ``bppCommandId`` loadProfileElements):

=========================================================== ================================================
check                                                       refusal
=========================================================== ================================================
the package is a sequence of well-formed TLVs               installFailedDueToPEProcessingError (12)
the first PE is the ProfileHeader, and it is the only one   peProcessingError
header: major-version 2 or 3, minor-version, iccid of 10    peProcessingError (SAIP: unsupported-profile-version
bytes, eUICC-Mandatory-services and -GFSTEList present      for another major version)
every eUICC-Mandatory-service is one this card knows        peProcessingError (the card could not provide it)
every PE of a known type carries its PEHeader               peProcessingError
a PE of a type this card does not know (a newer SAIP):      mandated: peProcessingError; not mandated:
                                                            skipped and logged, the download goes on
the End PE (``AA``) is there, once, and last                peProcessingError
header iccid = StoreMetadata iccid, compared as digits      installFailedDueToDataMismatch (13)
=========================================================== ================================================

The header ICCID: SAIP says the header ``iccid`` is the ICCID "in a non-swapped ITU E.118 format and padded with
'F'" (``8949449999999990007F``), and that for a Full Profile the card does not check it against EF.ICCID. SGP.22's
StoreMetadata ``iccid`` is coded as in EF.ICCID (nibble-swapped, ``98944499999999090070``). pySim's SAIP
personalisation (``pySim/esim/saip/personalization.py``, its Iccid parameter) writes the header the plain way and
EF.ICCID the swapped way, and the published GSMA TS.48 generic test profile carries ``iccid '89000123456789012341'H``
in its header. Profile creators that wrote the header swapped exist too (this project's own generator did), so the
card compares the two by value and takes either digit order in the header; a header naming another ICCID is refused.

Not checked (this card keeps no file system and runs no applets): the order rules between file-system PEs, the
uniqueness of PE identification numbers, template OIDs, file contents, keys and PINs, and the range of
``identification`` (UInt15). Known PEs are stored as received, with the whole package, in the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from euicc import der
from rsp import iccid as iccid_codec
from rsp import tlv
from rsp.errors import DecodeError

PE_PROCESSING_ERROR = 12
DATA_MISMATCH = 13

TAG_HEADER = 0xA0
TAG_END = 0xAA

# ProfileElement CHOICE alternatives (SAIP v3.3 PEDefinitions, AUTOMATIC TAGS: index n -> [n] constructed)
PE_NAMES: dict[int, str] = {
    0xA0: "header",
    0xA1: "genericFileManagement",
    0xA2: "pinCodes",
    0xA3: "pukCodes",
    0xA4: "akaParameter",
    0xA5: "cdmaParameter",
    0xA6: "securityDomain",
    0xA7: "rfm",
    0xA8: "application",
    0xA9: "nonStandard",
    0xAA: "end",
    0xB0: "mf",
    0xB1: "cd",
    0xB2: "telecom",
    0xB3: "usim",
    0xB4: "opt-usim",
    0xB5: "isim",
    0xB6: "opt-isim",
    0xB7: "phonebook",
    0xB8: "gsm-access",
    0xB9: "csim",
    0xBA: "opt-csim",
    0xBB: "eap",
    0xBC: "df-5gs",
    0xBD: "df-saip",
    0xBE: "df-snpn",
    0xBF1F: "df-5gprose",
    0xBF20: "iot",
    0xBF21: "opt-iot",
}

# ServicesList (SAIP v3.3): NULL components with automatic tags [0]..[29], in this order
SERVICES = (
    "contactless",
    "usim",
    "isim",
    "csim",
    "milenage",
    "tuak128",
    "cave",
    "gba-usim",
    "gba-isim",
    "mbms",
    "eap",
    "javacard",
    "multos",
    "multiple-usim",
    "multiple-isim",
    "multiple-csim",
    "tuak256",
    "usim-test-algorithm",
    "ber-tlv",
    "dfLink",
    "cat-tp",
    "get-identity",
    "profile-a-x25519",
    "profile-b-p256",
    "suciCalculatorApi",
    "dns-resolution",
    "scp11ac",
    "scp11c-authorization-mechanism",
    "s16mode",
    "eaka",
)
SUPPORTED_MAJOR_VERSIONS = (2, 3)


class ProfilePackageError(Exception):
    """The package is refused: ``reason`` is the SGP.22 errorReason, the message names the PE and the check."""

    def __init__(self, reason: int, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ProfileHeader:
    major_version: int
    minor_version: int
    profile_type: str | None
    iccid: bytes  # the 10 bytes as received
    mandatory_services: tuple[str, ...]


@dataclass(frozen=True)
class ProfileElement:
    index: int  # position in the package, from 0 (the header)
    tag: int
    name: str  # "unknown" for a type this card does not know
    identification: int | None
    mandated: bool


@dataclass(frozen=True)
class ProfilePackage:
    header: ProfileHeader
    elements: tuple[ProfileElement, ...]  # every PE after the header, End included
    skipped: tuple[ProfileElement, ...]  # PEs of unknown types, not mandated: skipped


def header_iccid_matches(header_iccid: bytes, metadata_iccid: bytes) -> bool:
    """True when the header ICCID (plain E.118 digits as SAIP says, or nibble-swapped as EF.ICCID) names the ICCID
    of StoreMetadata (nibble-swapped, SGP.22 ``Iccid``)."""
    wanted = iccid_codec.from_bcd(metadata_iccid)
    plain = header_iccid.hex().upper().rstrip("F")
    return wanted in (plain, iccid_codec.from_bcd(header_iccid))


def _fail(message: str) -> ProfilePackageError:
    return ProfilePackageError(PE_PROCESSING_ERROR, message)


def _header(pe: tlv.Tlv) -> ProfileHeader:
    try:
        f = der.fields(pe, "ProfileHeader")
        for tag, name in ((0x80, "major-version"), (0x81, "minor-version"), (0x83, "iccid")):
            if tag not in f:
                raise DecodeError("ProfileHeader", f"missing {name} ({tag:X})")
        major = der.decode_int(f[0x80].value, "major-version")
        minor = der.decode_int(f[0x81].value, "minor-version")
        profile_type = der.decode_utf8(f[0x82].value, "profileType") if 0x82 in f else None
        services: list[str] = []
        if 0xA5 in f:
            for item in tlv.children(f[0xA5], what="eUICC-Mandatory-services"):
                number = item.tag - 0x80
                if not 0 <= number < len(SERVICES) or item.value:
                    raise ProfilePackageError(
                        PE_PROCESSING_ERROR,
                        f"ProfileHeader: eUICC-Mandatory-service tag {item.tag:X} is one this eUICC does not provide",
                    )
                services.append(SERVICES[number])
        if 0xA6 in f:
            for item in tlv.children(f[0xA6], what="eUICC-Mandatory-GFSTEList"):
                if item.tag != 0x06:
                    raise DecodeError("eUICC-Mandatory-GFSTEList", f"expected OIDs, got tag {item.tag:X}")
                der.decode_oid(item.value, "eUICC-Mandatory-GFSTEList")
    except DecodeError as exc:
        raise _fail(f"ProfileHeader: {exc}") from None
    if major not in SUPPORTED_MAJOR_VERSIONS:
        raise _fail(f"ProfileHeader: major-version {major} not supported (unsupported-profile-version)")
    if len(f[0x83].value) != 10:
        raise _fail(f"ProfileHeader: iccid must be 10 bytes, got {len(f[0x83].value)}")
    return ProfileHeader(major, minor, profile_type, f[0x83].value, tuple(services))


def _pe_header(pe: tlv.Tlv, index: int) -> tuple[int | None, bool]:
    """(identification, mandated) from a PE's PEHeader ``A0``; (None, False) when it has none."""
    kids = tlv.children(pe, what=f"PE {index}") if pe.constructed else []
    if not kids or kids[0].tag != 0xA0:
        return None, False
    f = der.fields(kids[0], f"PE {index} PEHeader")
    mandated = 0x80 in f
    ident = None
    if 0x81 in f:
        raw = f[0x81].value
        if not 1 <= len(raw) <= 4:
            raise DecodeError(f"PE {index} PEHeader", f"identification of {len(raw)} bytes")
        ident = int.from_bytes(raw, "big")  # read leniently: generators that pad it to 2 bytes exist
    return ident, mandated


def parse(data: bytes) -> ProfilePackage:
    """Read and check a profile package (the rules in the module docstring). Raises :class:`ProfilePackageError`."""
    try:
        pes = list(tlv.iter_tlvs(data, what="profile package"))
    except DecodeError as exc:
        raise _fail(f"profile package: {exc}") from None
    if not pes or pes[0].tag != TAG_HEADER:
        raise _fail("profile package: must start with a ProfileHeader (A0)")
    header = _header(pes[0])
    elements: list[ProfileElement] = []
    skipped: list[ProfileElement] = []
    for index, pe in enumerate(pes[1:], start=1):
        name = PE_NAMES.get(pe.tag, "unknown")
        if pe.tag == TAG_HEADER:
            raise _fail(f"PE {index}: a second ProfileHeader")
        if elements and elements[-1].tag == TAG_END:
            raise _fail(f"PE {index} ({name}): after the End PE")
        try:
            ident, mandated = _pe_header(pe, index)
        except DecodeError as exc:
            raise _fail(f"PE {index} ({name}): {exc}") from None
        element = ProfileElement(index, pe.tag, name, ident, mandated)
        if name == "unknown":
            if mandated:
                raise _fail(
                    f"PE {index} (tag {pe.tag:X}, identification {ident}): mandated, of a type this eUICC does not know"
                )
            skipped.append(element)
        elif ident is None:
            raise _fail(f"PE {index} ({name}): no PEHeader (A0 with identification 81)")
        elements.append(element)
    if not elements or elements[-1].tag != TAG_END:
        raise _fail("profile package: no End PE (AA) at the end")
    return ProfilePackage(header, tuple(elements), tuple(skipped))


def check_against_metadata(package: ProfilePackage, metadata_iccid: bytes) -> None:
    """SGP.22 installFailedDueToDataMismatch: the header must name the ICCID of StoreMetadata."""
    if not header_iccid_matches(package.header.iccid, metadata_iccid):
        raise ProfilePackageError(
            DATA_MISMATCH,
            f"ProfileHeader ICCID {package.header.iccid.hex().upper()} names neither "
            f"{iccid_codec.from_bcd(metadata_iccid)} (plain digits) nor its EF.ICCID form "
            f"{metadata_iccid.hex().upper()} (StoreMetadata)",
        )
