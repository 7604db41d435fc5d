"""The permitted EID range of an EUM certificate and the check of an EID against it (SGP.22 §4.5.2.1.0.2,
§4.5.2.2; SGP.22 v3 / SGP.26 v3 ``permittedEins``).

An EUM may only issue eUICC certificates for its own EIDs. The range travels in the EUM certificate in one or
both of two forms:

* **nameConstraints** (SGP.22 v2.x EUM profile, policy ``id-rspRole-eum`` 2.23.146.1.2.1.2): each
  ``permittedSubtrees`` entry is a ``directoryName`` whose ``serialNumber`` attribute is an EID prefix (the
  8-digit IIN, or per SGP.29 a variable-length EIN) and whose ``organizationName``, when present, is the
  organisation the eUICC certificate subject must carry. SGP.22 §4.5.2.2: the eUICC subject ``O`` shall be one
  of those organisations and its ``serialNumber`` (the EID) shall start with the matching prefix.
  ``excludedSubtrees`` entries of the same shape exclude EID prefixes.
* **permittedEins** (SGP.22 v3 EUM variants, extension OID 2.23.146.1.2.2.0, published with the SGP.26 v3 test
  certificates as ``2.23.146.1.2.2.0 = ASN1:SEQUENCE:permittedEins``): ``PermittedEins ::= SEQUENCE OF
  PrintableString``, each string an EID prefix.

When both are present, the EID must satisfy both. An EUM with neither is refused: a peer SM-DP+ cannot tell
which EIDs it may vouch for (osmo-smdpp refuses it the same way, ES9+ AuthenticateClient ``8.1.4``/``6.1``).

Pure functions: certificates in, :class:`EidRange` or :class:`EidRangeError` out.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from rsp import tlv
from rsp.errors import DecodeError, RspError

__all__ = [
    "PERMITTED_EINS_OID",
    "EidRange",
    "EidRangeError",
    "NameConstraintRange",
    "check_eid_in_range",
    "eid_range_of",
    "encode_permitted_eins",
    "parse_permitted_eins",
]

#: id-rsp-cert-objects 2 (2.23.146.1.2.2), permittedEins 0
PERMITTED_EINS_OID = "2.23.146.1.2.2.0"
_TAG_SEQUENCE = 0x30
_TAG_PRINTABLE_STRING = 0x13
MAX_PREFIX_DIGITS = 32


class EidRangeError(RspError):
    """An EID is not within the permitted range of its EUM certificate, or the range cannot be read.

    ``reason``: ``"no-range"`` (the EUM carries neither form), ``"malformed"`` (a range extension does not decode
    or holds something that is not an EID prefix), ``"outside"`` (the EID or the subject organisation is not
    permitted)."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in ("no-range", "malformed", "outside"), reason
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class NameConstraintRange:
    """One directoryName subtree of nameConstraints: an EID ``prefix`` and the ``organization`` (or ``None``)."""

    prefix: str
    organization: str | None


@dataclass(frozen=True)
class EidRange:
    """The EID range an EUM certificate carries. Empty tuples mean "this form is absent"."""

    permitted: tuple[NameConstraintRange, ...] = ()
    excluded: tuple[NameConstraintRange, ...] = ()
    permitted_eins: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.permitted or self.permitted_eins)

    def describe(self) -> str:
        parts = []
        if self.permitted:
            parts.append(
                "nameConstraints "
                + ", ".join(
                    f"{r.prefix}" + (f" (O={r.organization})" if r.organization else "") for r in self.permitted
                )
            )
        if self.excluded:
            parts.append("excluded " + ", ".join(r.prefix for r in self.excluded))
        if self.permitted_eins:
            parts.append("permittedEins " + ", ".join(self.permitted_eins))
        return "; ".join(parts) or "none"


def _check_prefix(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise EidRangeError("malformed", f"{where}: EID prefix is not a string")
    if not value or len(value) > MAX_PREFIX_DIGITS or not value.isascii() or not value.isdigit():
        raise EidRangeError("malformed", f"{where}: {value[:40]!r} is not an EID prefix (1 to 32 decimal digits)")
    return value


def encode_permitted_eins(prefixes: list[str] | tuple[str, ...]) -> bytes:
    """DER of ``PermittedEins ::= SEQUENCE OF PrintableString`` (the extension value)."""
    body = b"".join(tlv.encode(_TAG_PRINTABLE_STRING, _check_prefix(p, "permittedEins").encode()) for p in prefixes)
    return tlv.encode(_TAG_SEQUENCE, body)


def parse_permitted_eins(value: bytes) -> tuple[str, ...]:
    """The prefixes of a permittedEins extension value; raises :class:`EidRangeError` (``malformed``)."""
    what = "permittedEins"
    try:
        top = tlv.parse_exact(bytes(value), what=what)
        if top.tag != _TAG_SEQUENCE:
            raise DecodeError(what, f"expected SEQUENCE (30), got tag {top.tag:X}", 0)
        items = tlv.children(top, what=what)
    except DecodeError as exc:
        raise EidRangeError("malformed", f"EUM permittedEins extension ({PERMITTED_EINS_OID}): {exc}") from None
    out = []
    for item in items:
        if item.tag != _TAG_PRINTABLE_STRING:
            raise EidRangeError("malformed", f"EUM permittedEins: entry tag {item.tag:X} is not a PrintableString (13)")
        try:
            text = item.value.decode("ascii")
        except UnicodeDecodeError:
            raise EidRangeError("malformed", "EUM permittedEins: entry is not ASCII") from None
        out.append(_check_prefix(text, "EUM permittedEins"))
    if not out:
        raise EidRangeError("malformed", "EUM permittedEins is empty: it permits no EID")
    return tuple(out)


def _subtree_ranges(subtrees: list[x509.GeneralName] | None, which: str) -> tuple[NameConstraintRange, ...]:
    out = []
    for name in subtrees or ():
        if not isinstance(name, x509.DirectoryName):
            continue  # other name forms (DNS, IP ...) say nothing about EIDs
        serials = name.value.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        if not serials:
            continue
        orgs = name.value.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        prefix = _check_prefix(serials[0].value, f"EUM nameConstraints {which} serialNumber")
        org = orgs[0].value if orgs else None
        out.append(NameConstraintRange(prefix, org if isinstance(org, str) else None))
    return tuple(out)


def eid_range_of(eum_cert: x509.Certificate) -> EidRange:
    """Read both forms of the permitted EID range from an EUM certificate (absent forms are empty)."""
    try:
        exts = eum_cert.extensions
    except ValueError as exc:
        raise EidRangeError("malformed", f"EUM certificate extensions do not decode: {exc}") from None
    permitted: tuple[NameConstraintRange, ...] = ()
    excluded: tuple[NameConstraintRange, ...] = ()
    eins: tuple[str, ...] = ()
    for ext in exts:
        if ext.oid == ExtensionOID.NAME_CONSTRAINTS:
            nc = ext.value
            assert isinstance(nc, x509.NameConstraints)
            permitted = _subtree_ranges(nc.permitted_subtrees, "permitted")
            excluded = _subtree_ranges(nc.excluded_subtrees, "excluded")
        elif ext.oid.dotted_string == PERMITTED_EINS_OID:
            raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else None
            if raw is None:
                raise EidRangeError("malformed", "EUM permittedEins extension has no raw value")
            eins = parse_permitted_eins(raw)
    return EidRange(permitted, excluded, eins)


def _subject_org(cert: x509.Certificate | None) -> str | None:
    if cert is None:
        return None
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def check_eid_in_range(eid: str, eum_cert: x509.Certificate, euicc_cert: x509.Certificate | None = None) -> EidRange:
    """Check that ``eid`` is within the range ``eum_cert`` permits (and, with ``euicc_cert``, that its subject
    organisation is one the matching nameConstraints subtree names). Returns the range; raises
    :class:`EidRangeError` naming what failed."""
    rng = eid_range_of(eum_cert)
    if not rng.present:
        raise EidRangeError(
            "no-range",
            "EUM certificate carries no permitted EID range (neither nameConstraints with a serialNumber prefix "
            f"nor permittedEins {PERMITTED_EINS_OID}), so no EID is within its range",
        )
    if not isinstance(eid, str) or len(eid) != 32 or not eid.isascii() or not eid.isdigit():
        raise EidRangeError("outside", f"EID {str(eid)[:40]!r} is not 32 decimal digits")
    for r in rng.excluded:
        if eid.startswith(r.prefix):
            raise EidRangeError(
                "outside", f"EID {eid} is in the range {r.prefix} excluded by the EUM certificate's nameConstraints"
            )
    if rng.permitted:
        matches = [r for r in rng.permitted if eid.startswith(r.prefix)]
        if not matches:
            raise EidRangeError(
                "outside",
                f"EID {eid} is not within the permitted range of the EUM certificate "
                f"(nameConstraints permit {', '.join(r.prefix for r in rng.permitted)})",
            )
        org = _subject_org(euicc_cert)
        if euicc_cert is not None and not any(r.organization is None or r.organization == org for r in matches):
            wanted = ", ".join(sorted({r.organization for r in matches if r.organization}))
            raise EidRangeError(
                "outside",
                f"eUICC certificate organisation {org!r} is not the one the EUM's nameConstraints name for EID "
                f"prefix {matches[0].prefix} ({wanted})",
            )
    if rng.permitted_eins and not any(eid.startswith(p) for p in rng.permitted_eins):
        raise EidRangeError(
            "outside",
            f"EID {eid} is not within the permitted range of the EUM certificate "
            f"(permittedEins {', '.join(rng.permitted_eins)})",
        )
    return rng
