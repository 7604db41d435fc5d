"""Property tests over every top-level ESipa, eIM package, ES10 and ES9+ type.

* round trip: hypothesis-generated valid values encode -> decode -> encode to identical bytes, and the JSON form
  used by the CLI converts back to the same value;
* robustness: random bytes, random bytes behind the right tag, and mutated valid encodings make `decode` return a
  value or raise `DecodeError` - never anything else.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsp import asn1
from rsp.asn1.jsonval import from_json, to_json
from rsp.asn1.strategies import value_strategy
from rsp.errors import DecodeError, EncodeError

TYPES = list(asn1.TOP_LEVEL_TYPES)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("type_name", TYPES)
def test_roundtrip_encode_decode_encode(type_name):
    @FAST
    @given(value_strategy(type_name))
    def check(value):
        data = asn1.encode(type_name, value)
        decoded = asn1.decode(type_name, data, strict=True)
        assert asn1.encode(type_name, decoded) == data
        # The CLI's JSON form is an exact inverse.
        as_json = json.loads(json.dumps(to_json(type_name, decoded)))
        assert from_json(type_name, as_json) == decoded
        # Exactly one top-level TLV whose tag is one guess_types() proposes for this type.
        assert type_name in asn1.guess_types(data)

    check()


def _mutations(data: bytes):
    """Strategy of byte strings derived from ``data`` by one small corruption."""
    n = len(data)
    return st.one_of(
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
            lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]
        ),
        st.integers(0, n - 1).map(lambda i: data[:i]),  # truncation
        st.integers(0, n).flatmap(lambda i: st.binary(min_size=1, max_size=4).map(lambda b: data[:i] + b + data[i:])),
        st.integers(0, n - 1).map(lambda i: data[:i] + data[i + 1 :]),  # deletion
        st.integers(1, min(n, 4)).map(lambda k: data[:1] + bytes([0xFF] * k) + data[1 + k :]),  # absurd lengths
    )


def _decode_or_decode_error(type_name: str, data: bytes) -> None:
    try:
        value = asn1.decode(type_name, data)
    except DecodeError as exc:
        assert exc.type_name == type_name
        assert exc.position is None or 0 <= exc.position <= len(data)
        return
    # What decodes re-encodes (constraints are not checked on decode, so neither here) to bytes that decode to
    # the same value: a decoder that silently drops or invents content breaks this.
    again = asn1.encode(type_name, value, strict=False)
    assert asn1.decode(type_name, again) == value, (data.hex(), again.hex())


@pytest.mark.parametrize("type_name", TYPES)
def test_mutated_encodings_raise_only_decode_error(type_name):
    @FAST
    @given(st.data())
    def check(data):
        valid = asn1.encode(type_name, data.draw(value_strategy(type_name)))
        mutated = data.draw(_mutations(valid))
        _decode_or_decode_error(type_name, mutated)

    check()


@pytest.mark.parametrize("type_name", TYPES)
def test_random_bytes_raise_only_decode_error(type_name):
    tags = sorted(asn1.leading_tags(type_name))

    @FAST
    @given(st.one_of(st.binary(max_size=64), st.tuples(st.sampled_from(tags), st.binary(max_size=64)).map(b"".join)))
    def check(data):
        _decode_or_decode_error(type_name, data)

    check()


def test_non_bytes_input_is_a_decode_error():
    with pytest.raises(DecodeError):
        asn1.decode("GetEimPackageResponse", "BF4F03020101")  # type: ignore[arg-type]


def test_unknown_type_names():
    with pytest.raises(DecodeError):
        asn1.decode("NoSuchType", b"\x30\x00")
    with pytest.raises(EncodeError):
        asn1.encode("NoSuchType", {})


@pytest.mark.parametrize(
    "value",
    [
        {},  # missing eidValue
        {"eidValue": b"\x00" * 15},  # SIZE(16)
        {"eidValue": "not bytes" * 2},
        {"eidValue": b"\x00" * 16, "stateChangeCause": "x"},
        ("eimPackageError", 1),
    ],
)
def test_bad_values_raise_only_encode_error(value):
    with pytest.raises(EncodeError) as err:
        asn1.encode("GetEimPackageRequest", value)
    assert err.value.type_name == "GetEimPackageRequest"


def test_bad_bit_string_is_an_encode_error():
    with pytest.raises(EncodeError):
        asn1.encode("SGP32-EuiccMemoryResetRequest", {"resetOptions": (b"", 9)})


def test_deeply_nested_garbage():
    data = b"\xbf\x4f\x84\x00\x00\x10\x00" + b"\x30\x80" * 2000
    with pytest.raises(DecodeError):
        asn1.decode("EsipaMessageFromEimToIpa", data)


def test_component_past_the_end_of_its_container_is_refused():
    """Found by `make fuzz`: BF3D of length 0 followed by bytes. The unknown-alternative path of the explicit
    CHOICE took the bytes after the BF3D as its value and the whole input decoded."""
    for data in ("BF3D00BB01BF", "BF3D00A000", "BF4F00" + "5A10" + "89" * 16):
        with pytest.raises(DecodeError):
            asn1.decode("EsipaMessageFromIpaToEim", bytes.fromhex(data))
