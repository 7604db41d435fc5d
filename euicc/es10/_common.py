"""Helpers shared by the ES10 function modules."""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, Es10Reject
from rsp import tlv
from rsp.errors import DecodeError


def fields(request: tlv.Tlv, step: str) -> dict[int, tlv.Tlv]:
    """Children by tag; a malformed request is refused with ``6A80``."""
    try:
        return der.fields(request, step)
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None


def children(node: tlv.Tlv, step: str) -> list[tlv.Tlv]:
    try:
        return tlv.children(node, what=step)
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None


def refresh_flag(request: tlv.Tlv, step: str) -> bool:
    """``{80 refreshFlag BOOLEAN}`` of the SGP.32 ES10b requests (automatic tag [0])."""
    f = fields(request, step)
    if 0x80 not in f or set(f) != {0x80}:
        raise Es10Reject(SW_WRONG_DATA, step, "request must hold exactly refreshFlag (80)")
    try:
        return der.decode_bool(f[0x80].value, "refreshFlag")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None


def result(outer: int, code: int, inner: int = 0x80) -> bytes:
    """``outer { inner INTEGER code }``, e.g. ``BF5A {80 00}``."""
    return tlv.encode(outer, der.integer(inner, code))


def integer(node: tlv.Tlv, step: str) -> int:
    try:
        return der.decode_int(node.value, step)
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None


def utf8(node: tlv.Tlv, step: str) -> str:
    try:
        return der.decode_utf8(node.value, step)
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, step, str(exc)) from None
