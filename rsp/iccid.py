"""ICCID on the wire (ITU-T E.118; SGP.22 ``Iccid``): 10 bytes of BCD, nibbles swapped, padded with F.

``8949449999999990023`` <-> ``98 94 44 99 99 99 99 09 20 F3``. Callers validate the digits for their own context
(an API parameter, a test profile) and use these two functions for the encoding only.
"""

from __future__ import annotations


def to_bcd(iccid: str) -> bytes:
    """ICCID text (up to 20 hex digits, normally 18..20 decimal) -> 10 bytes, F-padded and nibble-swapped.

    Raises :class:`ValueError` for more than 20 characters or a non-hex character."""
    text = iccid.upper()
    if len(text) > 20:
        raise ValueError(f"ICCID longer than 20 digits: {iccid!r}")
    padded = text.ljust(20, "F")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, 20, 2))


def from_bcd(data: bytes) -> str:
    """Wire form -> ICCID digits (nibbles swapped back, F padding removed)."""
    return "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data).rstrip("F")
