"""Strict DER fast paths for the eUICC Package messages the eIM handles on every round trip (SGP.32 v1.2 §5.9.1
ES10b.LoadEuiccPackage, its ASN.1 ``EuiccPackageSigned`` and ``EuiccPackageResult``; DER as in ITU-T X.690 §10).

:func:`encode_euicc_package_signed` builds the ``EuiccPackageSigned`` the eIM signs, and
:func:`decode_euicc_package_result_signed` reads the usual ``EuiccPackageResult`` (the ``euiccPackageResultSigned``
alternative), both without asn1tools, which cost 15-25 µs to encode the first and 55-70 µs to decode the second and
encode it back for the DER check (docs/performance.md, section 1c).

The decoder accepts a strict subset of what ``rsp.asn1`` decodes *and* encodes back to the same bytes: one
definite length in its shortest form for every element, INTEGERs in their shortest two's complement, the
members in schema order with nothing after the last, and UTF-8 that decodes. For anything else it returns
``None`` and the caller takes asn1tools and its DER check, so every input is judged as before; an
``EuiccResultData`` other than an INTEGER result or an empty getRATResult goes through asn1tools element by
element, with the same encode-back check. Its value is exactly the one ``rsp.asn1.decode("EuiccPackageResult",
...)`` gives (``tests/eim/test_euicc_package_der.py`` holds both to that, on real and on hostile bytes).
"""

from __future__ import annotations

from typing import Any

from eim.packages.common import integer_tlv
from rsp import asn1, tlv
from rsp.errors import EncodeError, RspError

#: EuiccResultData alternatives whose value is an INTEGER, by their context tag (SGP.32 v1.2 EuiccResultData:
#: enableResult [3], disableResult [4], deleteResult [5], configureImmediateEnableResult [7], rollbackResult [12],
#: setFallbackAttributeResult [13], unsetFallbackAttributeResult [14]) and processingTerminated (universal 02).
_INTEGER_RESULTS = {
    0x83: "enableResult",
    0x84: "disableResult",
    0x85: "deleteResult",
    0x87: "configureImmediateEnableResult",
    0x8C: "rollbackResult",
    0x8D: "setFallbackAttributeResult",
    0x8E: "unsetFallbackAttributeResult",
    0x02: "processingTerminated",
}


def _length(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """``(value start, value end)`` of the length at ``pos``; ``None`` unless it is a DER length (the shortest
    definite form, X.690 §10.1) of at most 65,535 that fits before ``end``."""
    if pos >= end:
        return None
    first = data[pos]
    if first < 0x80:
        start, n = pos + 1, first
    elif first == 0x81:
        if pos + 1 >= end:
            return None
        n = data[pos + 1]
        if n < 0x80:
            return None
        start = pos + 2
    elif first == 0x82:
        if pos + 2 >= end:
            return None
        n = (data[pos + 1] << 8) | data[pos + 2]
        if n < 0x100:
            return None
        start = pos + 3
    else:
        return None
    stop = start + n
    return (start, stop) if stop <= end else None


def _element(data: bytes, pos: int, end: int, tag: bytes) -> tuple[int, int] | None:
    """The value span of the element with exactly the tag bytes ``tag`` at ``pos``, or ``None``."""
    if data[pos : pos + len(tag)] != tag:
        return None
    return _length(data, pos + len(tag), end)


def _integer(data: bytes, start: int, stop: int) -> int | None:
    """A DER INTEGER's content (X.690 §8.3: at least one octet, no redundant leading 00 or FF)."""
    n = stop - start
    if n == 0:
        return None
    if n > 1:
        a, b = data[start], data[start + 1]
        if (a == 0x00 and b < 0x80) or (a == 0xFF and b >= 0x80):
            return None
    return int.from_bytes(data[start:stop], "big", signed=True)


def _utf8(data: bytes, start: int, stop: int) -> str | None:
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _result_data(data: bytes, pos: int, end: int) -> tuple[tuple[str, Any], int] | None:
    """One EuiccResultData at ``pos``: ``((alternative, value), end of the element)``."""
    tag = data[pos]
    if tag in _INTEGER_RESULTS:
        span = _length(data, pos + 1, end)
        if span is None:
            return None
        value = _integer(data, *span)
        return None if value is None else ((_INTEGER_RESULTS[tag], value), span[1])
    if tag == 0xA6 and data[pos + 1 : pos + 2] == b"\x00":  # getRATResult: an empty RulesAuthorisationTable
        return ("getRATResult", []), pos + 2
    # any other alternative: asn1tools for this element alone, with the same encode-back check
    if tag & 0x1F == 0x1F:
        head = pos + 1
        while head < end and data[head] & 0x80:
            head += 1
        head += 1
    else:
        head = pos + 1
    span = _length(data, head, end)
    if span is None:
        return None
    raw = data[pos : span[1]]
    try:
        value = asn1.decode("EuiccResultData", raw)
        if asn1.encode("EuiccResultData", value) != raw:
            return None
    except RspError:
        return None
    return value, span[1]


def decode_euicc_package_result_signed(raw: bytes) -> tuple[Any, int, int] | None:
    """``raw`` as a DER ``EuiccPackageResult`` of the ``euiccPackageResultSigned`` alternative:
    ``(value, start, end)`` where ``value`` is what ``rsp.asn1.decode`` gives and ``raw[start:end]`` is the
    ``EuiccPackageResultDataSigned`` TLV as received (the signed part). ``None`` for anything else."""
    n = len(raw)
    top = _element(raw, 0, n, b"\xbf\x51")
    if top is None or top[1] != n:
        return None
    alt = _element(raw, top[0], top[1], b"\xa0")
    if alt is None or alt[1] != top[1]:
        return None
    signed_at, n = alt
    data = _element(raw, signed_at, n, b"\x30")
    if data is None:
        return None
    pos, data_end = data
    span = _element(raw, pos, data_end, b"\x80")
    if span is None or not 1 <= span[1] - span[0] <= 4 * 128:
        return None
    eim_id = _utf8(raw, *span)
    if eim_id is None or not 1 <= len(eim_id) <= 128:
        return None
    span = _element(raw, span[1], data_end, b"\x81")
    if span is None:
        return None
    counter = _integer(raw, *span)
    if counter is None:
        return None
    fields: dict[str, Any] = {"eimId": eim_id, "counterValue": counter}
    pos = span[1]
    if raw[pos : pos + 1] == b"\x82":
        span = _element(raw, pos, data_end, b"\x82")
        if span is None or not 1 <= span[1] - span[0] <= 16:
            return None
        fields["eimTransactionId"] = raw[span[0] : span[1]]
        pos = span[1]
    span = _element(raw, pos, data_end, b"\x83")
    if span is None:
        return None
    seq = _integer(raw, *span)
    if seq is None:
        return None
    fields["seqNumber"] = seq
    span = _element(raw, span[1], data_end, b"\x30")
    if span is None or span[1] != data_end:
        return None
    results: list[Any] = []
    pos, results_end = span
    while pos < results_end:
        one = _result_data(raw, pos, results_end)
        if one is None:
            return None
        results.append(one[0])
        pos = one[1]
    fields["euiccResult"] = results
    sig = _element(raw, data_end, n, b"\x5f\x37")
    if sig is None or sig[1] != n:
        return None
    value = (
        "euiccPackageResultSigned",
        {"euiccPackageResultDataSigned": fields, "euiccSignEPR": raw[sig[0] : sig[1]]},
    )
    return value, signed_at, data_end


def encode_euicc_package_signed(
    eim_id: str, eid_value: bytes, counter_value: int, eim_transaction_id: bytes | None, euicc_package: bytes
) -> bytes:
    """DER of ``EuiccPackageSigned`` from its members; ``euicc_package`` is the DER of the ``EuiccPackage``.
    Raises :class:`rsp.errors.EncodeError` where ``rsp.asn1.encode`` would (the SIZE constraints)."""
    if not 1 <= len(eim_id) <= 128:
        raise EncodeError("EuiccPackageSigned", f"eimId: {len(eim_id)} characters, not 1..128")
    if len(eid_value) != 16:
        raise EncodeError("EuiccPackageSigned", f"eidValue: {len(eid_value)} bytes, not 16")
    body = tlv.encode(0x80, eim_id.encode("utf-8")) + tlv.encode(0x5A, eid_value) + integer_tlv(0x81, counter_value)
    if eim_transaction_id is not None:
        if not 1 <= len(eim_transaction_id) <= 16:
            raise EncodeError("EuiccPackageSigned", f"eimTransactionId: {len(eim_transaction_id)} bytes, not 1..16")
        body += tlv.encode(0x82, eim_transaction_id)
    return tlv.encode(0x30, body + euicc_package)
