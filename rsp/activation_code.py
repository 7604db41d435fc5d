"""Activation Code - SGP.22 v2.5 §4.1.

Format (fields separated by ``$``; a QR code carries the ``LPA:`` prefix, which is optional on input here)::

    AC_Format "$" SM-DP+ Address "$" AC_Token [ "$" SM-DP+ OID [ "$" Confirmation Code Required Flag
        [ "$" eSIM CA RootCA Public Key Indicator ] ] ]

* ``AC_Format`` is ``1``.
* ``SM-DP+ Address``: the FQDN of the SM-DP+ (mandatory, non-empty). An optional ``:port`` is accepted for lab
  set-ups (it is how our lab SM-DP+ on loopback is addressed); real SM-DP+ addresses have none.
* ``AC_Token`` (the Matching ID): may be empty (then the SM-DP+ uses its default/SM-DS logic).
* ``SM-DP+ OID``: dotted decimal OBJECT IDENTIFIER; may be empty when a later field follows.
* ``Confirmation Code Required Flag``: ``1`` when a confirmation code is needed; may be empty (= not required)
  when a later field follows.
* ``eSIM CA RootCA Public Key Indicator``: the CI key identifier the eUICC should use (hex in practice); kept as
  text. [U: present from SGP.22 v2.3 on in public implementations; we accept it, we never require it]

Every field is printable ASCII without ``$``. Malformed input raises :class:`ActivationCodeError` naming the
field and the fault; nothing else escapes :func:`parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rsp.errors import RspError

__all__ = ["PREFIX", "ActivationCode", "ActivationCodeError", "format_activation_code", "parse"]

PREFIX = "LPA:"
MAX_LENGTH = 255 * 4  # generous bound; QR codes of real ACs are well below 256 characters
_FIELDS = (
    "AC_Format",
    "SM-DP+ Address",
    "AC_Token",
    "SM-DP+ OID",
    "Confirmation Code Required Flag",
    "eSIM CA RootCA Public Key Indicator",
)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


class ActivationCodeError(RspError, ValueError):
    """A malformed activation code. ``field`` names the offending part (or ``"activation code"``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"invalid activation code: {field}: {message}")


def _check_printable(field: str, value: str) -> None:
    for i, ch in enumerate(value):
        if not (0x20 <= ord(ch) <= 0x7E):
            raise ActivationCodeError(field, f"non-printable or non-ASCII character {ch!r} at position {i}")


def _check_address(address: str) -> None:
    field = "SM-DP+ Address"
    if not address:
        raise ActivationCodeError(field, "empty (the SM-DP+ address is mandatory)")
    host, sep, port = address.partition(":")
    if sep:
        if not port.isdigit() or not port.isascii() or not (0 < int(port) < 65536) or port.startswith("0"):
            raise ActivationCodeError(field, f"bad port {port!r} in {address!r}")
    if len(host) > 253:
        raise ActivationCodeError(field, f"host name longer than 253 characters ({len(host)})")
    labels = host.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise ActivationCodeError(
                field, f"{host!r} is not a host name (label {label!r}: letters, digits, inner hyphens, 1..63)"
            )


def _check_oid(oid: str) -> None:
    if not _OID.match(oid):
        raise ActivationCodeError("SM-DP+ OID", f"{oid!r} is not a dotted OID (like 1.3.6.1.4.1.31746)")
    arcs = oid.split(".")
    if arcs[0] in ("0", "1") and int(arcs[1]) > 39:
        raise ActivationCodeError("SM-DP+ OID", f"{oid!r}: second arc must be 0..39 under arc {arcs[0]}")


@dataclass(frozen=True)
class ActivationCode:
    """A parsed activation code. ``matching_id`` may be ``""``; ``smdp_oid`` / ``ci_pk_indicator`` are ``None``
    when absent."""

    smdp_address: str
    matching_id: str = ""
    smdp_oid: str | None = None
    confirmation_code_required: bool = False
    ci_pk_indicator: str | None = None

    def __post_init__(self) -> None:
        _check_printable("SM-DP+ Address", self.smdp_address)
        _check_address(self.smdp_address)
        for field, value in (
            ("AC_Token", self.matching_id),
            ("SM-DP+ OID", self.smdp_oid),
            ("eSIM CA RootCA Public Key Indicator", self.ci_pk_indicator),
        ):
            if value is None:
                continue
            if not isinstance(value, str):
                raise ActivationCodeError(field, f"must be text, got {type(value).__name__}")
            _check_printable(field, value)
            if "$" in value:
                raise ActivationCodeError(field, "contains the delimiter '$'")
        if self.smdp_oid is not None:
            _check_oid(self.smdp_oid)
        if self.ci_pk_indicator == "":
            raise ActivationCodeError("eSIM CA RootCA Public Key Indicator", "empty (use None for absent)")

    @property
    def smdp_host(self) -> str:
        return self.smdp_address.partition(":")[0]

    def format(self, *, prefix: bool = False) -> str:
        """The canonical text (shortest form: trailing absent fields and their delimiters omitted)."""
        parts = ["1", self.smdp_address, self.matching_id]
        tail = [self.smdp_oid or "", "1" if self.confirmation_code_required else "", self.ci_pk_indicator or ""]
        while tail and tail[-1] == "":
            tail.pop()
        text = "$".join(parts + tail)
        return PREFIX + text if prefix else text

    def __str__(self) -> str:
        return self.format()


def parse(text: str) -> ActivationCode:
    """Parse an activation code (``LPA:`` prefix optional). Raises :class:`ActivationCodeError` only."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise ActivationCodeError("activation code", "not ASCII text") from None
    if not isinstance(text, str):
        raise ActivationCodeError("activation code", f"must be text, got {type(text).__name__}")
    body = text[len(PREFIX) :] if text[: len(PREFIX)].upper() == PREFIX else text
    if not body:
        raise ActivationCodeError("activation code", "empty")
    if len(body) > MAX_LENGTH:
        raise ActivationCodeError("activation code", f"too long ({len(body)} characters)")
    fields = body.split("$")
    for name, value in zip(_FIELDS, fields, strict=False):
        _check_printable(name, value)
    if fields[0] != "1":
        if len(fields) == 1:
            raise ActivationCodeError("activation code", f"no '$'-separated fields in {body[:40]!r}")
        raise ActivationCodeError("AC_Format", f"unsupported version {fields[0]!r} (only '1' is defined)")
    if len(fields) < 3:
        if len(fields) == 1 or fields[1] == "":
            raise ActivationCodeError("SM-DP+ Address", "empty (the SM-DP+ address is mandatory)")
        raise ActivationCodeError("AC_Token", "missing: at least '1$<SM-DP+ address>$<matching ID>' is required")
    if len(fields) > len(_FIELDS):
        raise ActivationCodeError(
            "activation code", f"too many fields: {len(fields)} '$'-separated fields, at most {len(_FIELDS)}"
        )
    address, matching_id = fields[1], fields[2]
    _check_address(address)
    oid = fields[3] if len(fields) > 3 and fields[3] != "" else None
    if oid is not None:
        _check_oid(oid)
    cc_required = False
    if len(fields) > 4:
        flag = fields[4]
        if flag not in ("", "1"):
            raise ActivationCodeError("Confirmation Code Required Flag", f"must be '1' or empty, got {flag!r}")
        cc_required = flag == "1"
    indicator = None
    if len(fields) > 5:
        indicator = fields[5] or None
    return ActivationCode(address, matching_id, oid, cc_required, indicator)


def format_activation_code(ac: ActivationCode, *, prefix: bool = False) -> str:
    """Same as ``ac.format(prefix=prefix)``."""
    return ac.format(prefix=prefix)
