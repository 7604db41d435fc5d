"""The strict DER fast paths of eim.packages.euicc_package_der against asn1tools (rsp.asn1) as the oracle: the same
value for every input the fast path takes, and a decline (so the old path judges) for everything else. Inputs: a
real eUICC's result (sysmocom capture, tests/data/vectors.json), the SGP.32 v1.0 results logged by onomondo-ipa
(tests/data/sgp32_v10_captures.json), generated valid results, their mutations and hand-written hostile bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.packages.euicc_package import decode_euicc_package_result
from eim.packages.euicc_package_der import decode_euicc_package_result_signed, encode_euicc_package_signed
from rsp import asn1, tlv
from rsp.asn1.strategies import value_strategy
from rsp.errors import DecodeError, EncodeError, RspError

DATA = Path(__file__).resolve().parent.parent / "data"


def _oracle(raw: bytes):
    """What the old path accepts: asn1tools' value when it encodes back to exactly ``raw``, else None."""
    try:
        value = asn1.decode("EuiccPackageResult", raw)
        return value if asn1.encode("EuiccPackageResult", value) == raw else None
    except RspError:
        return None


def _check_against_oracle(raw: bytes) -> bool:
    """The fast path's answer agrees with the oracle's; True when the fast path took the input."""
    fast = decode_euicc_package_result_signed(raw)
    if fast is None:
        return False
    value, start, end = fast
    assert _oracle(raw) == value, raw.hex()
    inner = tlv.children(tlv.parse_exact(raw))[0]
    assert raw[start:end] == tlv.require(inner, 0x30).raw  # the signed part, cut from the received bytes
    return True


def _v10_results() -> list[bytes]:
    messages = json.loads((DATA / "sgp32_v10_captures.json").read_text())["messages"]
    out = []
    for m in messages:
        raw = bytes.fromhex(m["hex"])
        if raw[:2] != b"\xbf\x50":
            continue
        at = raw.find(b"\xbf\x51")
        if at > 0:
            out.append(tlv.parse_one(raw, at).raw)
    return out


def test_a_real_euicc_result_takes_the_fast_path(vectors):
    raw = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])
    assert _check_against_oracle(raw)
    value, start, end = decode_euicc_package_result_signed(raw)
    data = value[1]["euiccPackageResultDataSigned"]
    assert (data["eimId"], data["counterValue"], data["seqNumber"]) == ("eIM", 1006, 20)
    assert data["euiccResult"] == [("enableResult", 1)]
    # the signed input of the capture (vectors.json) is this signed part followed by 84 01 01
    assert raw[start:end] + b"\x84\x01\x01" == bytes.fromhex(vectors["real_euicc_package_result"]["signed_input_hex"])


def test_the_v10_captures_agree_with_the_oracle():
    results = _v10_results()
    assert len(results) >= 5
    taken = [_check_against_oracle(raw) for raw in results]
    # the signed results go the fast way; the signed errors (A1) go the old way
    assert any(taken)
    for raw, took in zip(results, taken, strict=True):
        assert took == (tlv.children(tlv.parse_exact(raw))[0].tag == 0xA0)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value_strategy("EuiccPackageResult"))
def test_every_valid_signed_result_takes_the_fast_path_with_the_same_value(value):
    raw = asn1.encode("EuiccPackageResult", value)
    took = _check_against_oracle(raw)
    assert took == (value[0] == "euiccPackageResultSigned")


def _mutate(raw: bytes, data) -> bytes:
    how = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "long_length", "append"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        return raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
    if how == "insert":
        return raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i:]
    if how == "delete":
        return raw[:i] + raw[i + 1 :]
    if how == "truncate":
        return raw[:i]
    if how == "append":
        return raw + data.draw(st.binary(min_size=1, max_size=4))
    # a short length rewritten in the long form (valid BER, not DER) wherever a length byte might be
    if raw[i] < 0x80:
        return raw[:i] + b"\x81" + raw[i:]
    return raw


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(value_strategy("EuiccPackageResult"), st.data())
def test_mutated_results_are_taken_only_when_the_oracle_agrees(value, data):
    raw = _mutate(asn1.encode("EuiccPackageResult", value), data)
    _check_against_oracle(raw)
    # the public entry point never lets a non-DER input through, fast path or not (it also refuses DER that names
    # an alternative the schema does not have, which the oracle's PreservingChoice keeps as (None, bytes))
    try:
        value, _outcome = decode_euicc_package_result(raw)
    except DecodeError:
        return
    assert _oracle(raw) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_after_the_header_agree_with_the_oracle(tail):
    for raw in (b"\xbf\x51" + bytes([len(tail)]) + tail, b"\xbf\x51" + bytes([len(tail) + 2, 0xA0, len(tail)]) + tail):
        if len(raw) < 260:
            _check_against_oracle(raw)


T = tlv.encode
SIG = b"\x5f\x37\x40" + b"\x11" * 64
PARTS = {  # the members of the real result (vectors.json), as received
    "eimId": b"\x80\x03eIM",
    "counterValue": b"\x81\x02\x03\xee",
    "eimTransactionId": bytes.fromhex("8210F92B2FEE35632499E841CB754FDFD9F3"),
    "seqNumber": b"\x83\x01\x14",
    "euiccResult": b"\x30\x03\x83\x01\x01",
}


def _build(parts: dict[str, bytes], *, extra: bytes = b"", sig: bytes = SIG, long_data: bool = False) -> bytes:
    """A euiccPackageResultSigned from its members, every enclosing length right (so only the member is at fault).
    ``long_data``: the EuiccPackageResultDataSigned length in the long form (BER, not DER)."""
    content = b"".join(parts.values()) + extra
    data = b"\x30\x81" + bytes([len(content)]) + content if long_data else T(0x30, content)
    return T(0xBF51, T(0xA0, data + sig))


def test_the_builder_makes_the_real_result(vectors):
    assert _build(PARTS)[:-64] == bytes.fromhex(vectors["real_euicc_package_result"]["hex"])[:-64]
    assert decode_euicc_package_result_signed(_build(PARTS)) is not None


HOSTILE = [
    ({"counterValue": b"\x81\x81\x02\x03\xee"}, {}, "counterValue length in the long form"),
    ({"seqNumber": b"\x83\x02\x00\x14"}, {}, "seqNumber with a redundant leading 00"),
    ({"counterValue": b"\x81\x03\xff\xff\xee"}, {}, "counterValue with a redundant leading FF"),
    ({"counterValue": b"\x81\x00"}, {}, "counterValue without content"),
    ({"euiccResult": b"\x30\x04\x83\x02\x00\x01"}, {}, "enableResult with a redundant leading 00"),
    ({"euiccResult": b"\x30\x05\x83\x81\x01\x01"}, {}, "enableResult length in the long form"),
    ({"euiccResult": b"\x30\x05\x83\x01\x01\xa6\x80"}, {}, "an indefinite length"),
    ({"eimId": b"\x80\x03\xffIM"}, {}, "eimId that is not UTF-8"),
    ({"eimId": b"\x80\x00"}, {}, "an empty eimId"),
    ({"eimTransactionId": b"\x82\x00"}, {}, "an empty eimTransactionId"),
    ({}, {"extra": b"\x84\x01\x00"}, "a member the schema does not name after euiccResult"),
    ({}, {"long_data": True}, "the signed data's length in the long form"),
    ({}, {"sig": b"\x5f\x37\x81\x40" + b"\x11" * 64}, "the signature's length in the long form"),
    ({}, {"sig": SIG + b"\x00\x00"}, "bytes after the signature"),
]


@pytest.mark.parametrize("change, how, why", HOSTILE, ids=[h[2] for h in HOSTILE])
def test_hostile_results_are_refused_by_both_paths(change, how, why):
    raw = _build({**PARTS, **change}, **how)
    assert decode_euicc_package_result_signed(raw) is None, why
    assert _oracle(raw) is None, why  # the old path refuses it too: the fast path never took what it did not
    with pytest.raises(DecodeError):
        decode_euicc_package_result(raw)


def test_an_alternative_the_schema_does_not_name_goes_the_old_way():
    # [6] in primitive form is no EuiccResultData the schema names; the old path keeps such an element as it came
    # (rsp.asn1 PreservingChoice), so the fast path leaves it to the old path
    raw = _build({**PARTS, "euiccResult": b"\x30\x06\x83\x01\x01\x86\x01\x00"})
    assert decode_euicc_package_result_signed(raw) is None
    assert decode_euicc_package_result(raw)[0] == _oracle(raw)


RULE = bytes.fromhex("a60c300a80020640a10082020780")  # getRATResult with one ProfilePolicyAuthorisationRule (DER)


@pytest.mark.parametrize(
    "element, why",
    [
        (bytes.fromhex("a60d30810a80020640a10082020780"), "a length in the long form inside the element"),
        (bytes.fromhex("a60c300a80020641a10082020780"), "a BIT STRING whose unused bits are not zero"),
    ],
)
def test_an_element_that_is_ber_but_not_der_is_refused(element, why):
    good = _build({**PARTS, "euiccResult": T(0x30, RULE)})
    value, _s, _e = decode_euicc_package_result_signed(good)  # the element itself goes through asn1tools
    assert value[1]["euiccPackageResultDataSigned"]["euiccResult"] == [asn1.decode("EuiccResultData", RULE)]
    raw = _build({**PARTS, "euiccResult": T(0x30, element)})
    assert decode_euicc_package_result_signed(raw) is None, why
    with pytest.raises(DecodeError):
        decode_euicc_package_result(raw)


@pytest.mark.parametrize("where", ["after", "inside", "between"])
def test_a_wrong_outer_length_is_refused(where):
    good = _build(PARTS)
    body = good[3:]  # BF51 6D <body>
    if where == "after":  # the BF51 ends before the input does
        raw = good + b"\x00"
    elif where == "inside":  # the BF51 says it ends before its A0 does
        raw = b"\xbf\x51" + bytes([len(body) - 1]) + body
    else:  # bytes in the BF51 after its one alternative
        raw = T(0xBF51, body + b"\x04\x00")
    assert decode_euicc_package_result_signed(raw) is None
    with pytest.raises(DecodeError):
        decode_euicc_package_result(raw)


def test_members_out_of_order_are_refused():
    parts = dict(PARTS)
    parts = {"counterValue": parts.pop("counterValue"), **parts}
    raw = _build(parts)
    assert decode_euicc_package_result_signed(raw) is None
    with pytest.raises(DecodeError):
        decode_euicc_package_result(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PARTS)), st.binary(max_size=20))
def test_any_member_replaced_by_any_bytes_agrees_with_the_oracle(name, value):
    raw = _build({**PARTS, name: value})
    _check_against_oracle(raw)


# ------------------------------------------------------------------------------------------------ the encoder
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value_strategy("EuiccPackageSigned"))
def test_the_envelope_encoder_gives_the_asn1tools_bytes(value):
    package = asn1.encode("EuiccPackage", value["euiccPackage"])
    mine = encode_euicc_package_signed(
        value["eimId"], value["eidValue"], value["counterValue"], value.get("eimTransactionId"), package
    )
    assert mine == asn1.encode("EuiccPackageSigned", value)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_counter_values_of_any_size_encode_as_asn1tools_does(counter):
    value = {"eimId": "e", "eidValue": b"\x89" * 16, "counterValue": counter, "euiccPackage": ("psmoList", [])}
    package = asn1.encode("EuiccPackage", value["euiccPackage"])
    assert encode_euicc_package_signed("e", b"\x89" * 16, counter, None, package) == asn1.encode(
        "EuiccPackageSigned", value
    )


@pytest.mark.parametrize(
    "eim_id, eid, txid",
    [("", b"\x89" * 16, None), ("x" * 129, b"\x89" * 16, None), ("e", b"\x89" * 15, None), ("e", b"\x89" * 16, b"")],
)
def test_values_outside_the_schema_are_refused_like_asn1tools_refuses_them(eim_id, eid, txid):
    value = {"eimId": eim_id, "eidValue": eid, "counterValue": 1, "euiccPackage": ("psmoList", [])}
    if txid is not None:
        value["eimTransactionId"] = txid
    with pytest.raises(EncodeError):
        asn1.encode("EuiccPackageSigned", value)
    with pytest.raises(EncodeError):
        encode_euicc_package_signed(eim_id, eid, 1, txid, b"\xa0\x00")
