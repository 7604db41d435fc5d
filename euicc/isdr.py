"""ISD-R command dispatcher: one reassembled STORE DATA payload -> one ES10 function (SGP.22 v2.5 §5.7,
SGP.32 v1.2 §5.9).

ES10 commands are DER TLVs identified by their tag (``BF20`` GetEuiccInfo1, ``BF51`` LoadEuiccPackage ...).
LoadBoundProfilePackage has no tag of its own: its segments (``BF36`` header + ``BF23``, ``A0``, ``A1`` header,
``88``, ``A2``, ``A3`` header, ``86``) are recognised by their first tag (§7.5 of the protocol brief).
"""

from __future__ import annotations

from euicc.context import SW_NOT_FOUND, SW_WRONG_DATA, Context, Es10Reject
from rsp import tlv
from rsp.errors import DecodeError

SVN = bytes([2, 5, 0])  # SGP.22 version referenced by SGP.32 v1.2

BPP_CONTINUATION_TAGS = frozenset({0xA0, 0xA1, 0xA2, 0xA3, 0x86, 0x87, 0x88})


def peek_tag(data: bytes) -> int | None:
    """The tag at the start of ``data`` (None when truncated)."""
    if not data:
        return None
    tag = data[0]
    if tag & 0x1F != 0x1F:
        return tag
    for i in range(1, min(len(data), 4)):
        tag = (tag << 8) | data[i]
        if not data[i] & 0x80:
            return tag
    return None


def dispatch(ctx: Context, command: bytes) -> bytes:
    from euicc.es10 import handler as es10_handler

    tag = peek_tag(command)
    if tag is None:
        raise Es10Reject(SW_WRONG_DATA, "ES10", "no tag")
    if tag == 0xBF36 or tag in BPP_CONTINUATION_TAGS:
        from euicc.es10 import load_bound_profile_package as lbpp  # BSP and the profile package: only to load one

        return lbpp.handle_segment(ctx, command)
    try:
        request = tlv.parse_exact(command, what="ES10 command")
    except DecodeError as exc:
        raise Es10Reject(SW_WRONG_DATA, "ES10", str(exc)) from None
    handler = es10_handler(request.tag)
    if handler is None:
        raise Es10Reject(SW_NOT_FOUND, "ES10", f"unknown function tag {request.tag:X}")
    return handler(ctx, request)
