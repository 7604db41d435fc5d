"""Profile packages from files: a user's Unprotected Profile Package (UPP, a DER file of Profile Elements as the
TCA "eUICC Profile Package: Interoperable Format Technical Specification" (SAIP) defines it, e.g. a GSMA TS.48
generic test profile) served as-is by the lab SM-DP+ (SGP.22 v2.5 §2.5.3: the SM-DP+ binds the package it is
given; it does not rebuild it).

``import_upp`` checks the outline a card checks first (a sequence of TLVs, a ProfileHeader ``A0`` with a
10-byte ``iccid [3]`` first, the End PE ``AA`` last, at most 512 KB), reads the ICCID from the header and stores the
file content-addressed under ``DATA/upp/<name>.der`` with its metadata in ``<name>.json``. The profile's name is
``upp-`` + the first 12 hex digits of the file's SHA-256 unless the user gives one. A package never changes under a
name (a different file under a used name is refused), so every process that reads it (the server, the CLI) may
cache it.

The header ICCID: SAIP writes it in plain ITU-T E.118 digit order, F-padded (``8949449999999990007F``); some
generators write it nibble-swapped as in EF.ICCID. The plain reading is taken when it gives 18..20 decimal digits,
else the swapped one; the order's ICCID (and the StoreMetadata ``iccid``, which SGP.22 codes as EF.ICCID) follows.

Bad input raises :class:`UppError` naming the file and the check that failed; nothing is stored then.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rsp import iccid as iccid_codec
from rsp import tlv
from rsp.errors import DecodeError

MAX_UPP_SIZE = 512 * 1024  # what the software eUICC accepts; real profiles are 10-100 KB
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PROFILE_CLASSES = ("test", "provisioning", "operational")


class UppError(ValueError):
    """A profile package file that cannot be served (bad file, bad name, a name already taken by another file)."""


@dataclass(frozen=True)
class UppInfo:
    name: str
    iccid: str  # digits
    sha256: str
    size: int
    service_provider_name: str
    profile_name: str
    profile_class: str
    profile_type: str | None  # the header's profileType, if any

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "iccid": self.iccid,
            "sha256": self.sha256,
            "size": self.size,
            "service_provider_name": self.service_provider_name,
            "profile_name": self.profile_name,
            "profile_class": self.profile_class,
            "profile_type": self.profile_type,
        }


def header_iccid(field: bytes) -> str:
    """The ICCID digits of a ProfileHeader ``iccid`` (plain E.118 order first, then EF.ICCID order)."""
    plain = field.hex().upper().rstrip("F")
    if plain.isdigit() and 18 <= len(plain) <= 20:
        return plain
    swapped = iccid_codec.from_bcd(field)
    if swapped.isdigit() and 18 <= len(swapped) <= 20:
        return swapped
    raise UppError(f"ProfileHeader iccid {field.hex().upper()} is no ICCID in either digit order")


def outline(package: bytes, what: str = "profile package") -> tuple[str, str | None]:
    """Check the outline of a UPP; returns (ICCID digits, profileType)."""
    if not package:
        raise UppError(f"{what}: empty")
    if len(package) > MAX_UPP_SIZE:
        raise UppError(f"{what}: {len(package)} bytes, more than {MAX_UPP_SIZE}")
    try:
        pes = list(tlv.iter_tlvs(package, what=what))
        if pes[0].tag != 0xA0:
            raise DecodeError(what, f"must start with a ProfileHeader (A0), starts with tag {pes[0].tag:X}")
        fields = {c.tag: c for c in tlv.children(pes[0], what="ProfileHeader")}
    except DecodeError as exc:
        raise UppError(f"{what}: not a profile package: {exc}") from None
    if pes[-1].tag != 0xAA:
        raise UppError(f"{what}: does not end with the End PE (AA), ends with tag {pes[-1].tag:X}")
    if 0x83 not in fields or len(fields[0x83].value) != 10:
        raise UppError(f"{what}: the ProfileHeader has no 10-byte iccid (83)")
    profile_type = fields[0x82].value.decode("utf-8", "replace") if 0x82 in fields else None
    return header_iccid(fields[0x83].value), profile_type


def _dir(data_dir: Path) -> Path:
    return Path(data_dir) / "upp"


def import_upp(
    data_dir: Path,
    package: bytes,
    *,
    name: str | None = None,
    service_provider_name: str = "Lab Operator",
    profile_name: str | None = None,
    profile_class: str = "operational",
    reserved: tuple[str, ...] = (),
    what: str = "profile package",
) -> UppInfo:
    """Check and store a UPP under ``DATA/upp`` (idempotent for the same file and name)."""
    iccid, profile_type = outline(package, what)
    digest = hashlib.sha256(package).hexdigest()
    name = name or f"upp-{digest[:12]}"
    if not NAME.match(name) or name in reserved:
        raise UppError(f"name {name!r}: 1-40 of a-z, 0-9 and '-', not a built-in profile name")
    if profile_class not in PROFILE_CLASSES:
        raise UppError(f"profile class {profile_class!r}: one of {', '.join(PROFILE_CLASSES)}")
    for label, text in (("service provider name", service_provider_name), ("profile name", profile_name or "")):
        if len(text) > 64:
            raise UppError(f"{label}: at most 64 characters")
    info = UppInfo(
        name=name,
        iccid=iccid,
        sha256=digest,
        size=len(package),
        service_provider_name=service_provider_name,
        profile_name=profile_name or profile_type or name,
        profile_class=profile_class,
        profile_type=profile_type,
    )
    folder = _dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    existing = load_info(data_dir, name)
    if existing is not None:
        if existing.sha256 != digest:
            raise UppError(f"name {name!r} is already taken by another package (sha256 {existing.sha256[:12]})")
        return existing
    _write(folder / f"{name}.der", package)
    _write(folder / f"{name}.json", json.dumps(info.to_json(), sort_keys=True).encode())
    return info


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_info(data_dir: Path, name: str) -> UppInfo | None:
    if not NAME.match(name):
        return None
    path = _dir(data_dir) / f"{name}.json"
    try:
        d = json.loads(path.read_text())
        return UppInfo(**{k: d[k] for k in UppInfo.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise UppError(f"{path}: damaged ({exc})") from None


def load_package(data_dir: Path, info: UppInfo) -> bytes:
    path = _dir(data_dir) / f"{info.name}.der"
    package = path.read_bytes()
    if hashlib.sha256(package).hexdigest() != info.sha256:
        raise UppError(f"{path}: content differs from the sha256 recorded at import")
    return package


def list_infos(data_dir: Path) -> list[UppInfo]:
    folder = _dir(data_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        info = load_info(data_dir, path.stem)
        if info is not None:
            out.append(info)
    return out
