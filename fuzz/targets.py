"""Fuzz targets: each takes the fuzzer's bytes and asserts what must hold, not only "nothing unexpected raised".

Every target may raise only :class:`rsp.errors.RspError` for bad input (the decoders' contract). On input that
decodes, the target checks a property that a broken decoder would violate:

- ``esipa``: an ESipa message from an IPA (what any client on the internet can send the eIM) decodes to a value
  that re-encodes and decodes to the same value (no silent loss), and the dispatcher's structure check agrees.
- ``euicc_package_result``: the signed part cut from the input is a slice of the input (signed bytes are cut,
  never re-encoded) and a result signed by no one never verifies with a real key.
- ``tlv``: parse/re-encode of a DER TLV is the identity on its bytes.
- ``activation_code``: a parsed activation code formats back to a code that parses to the same value.
- ``at_answer``: modem answers to AT+CSIM/CGLA give bytes or a clear error.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from rsp.errors import RspError

_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def esipa(data: bytes) -> None:
    from eim.esipa.dispatcher import check_structure
    from rsp import asn1

    try:
        value = asn1.decode("EsipaMessageFromIpaToEim", data)
    except RspError:
        return
    # decoding is lenient about SIZE constraints (strict=False, checked where a value is used): so is this
    again = asn1.decode("EsipaMessageFromIpaToEim", asn1.encode("EsipaMessageFromIpaToEim", value, strict=False))
    assert again == value, "decode(encode(decode(x))) != decode(x)"
    try:
        check_structure(data)
    except RspError:
        pass


def euicc_package_result(data: bytes) -> None:
    from eim.packages.euicc_package import ResultRejected, parse_euicc_package_result, verify_outcome

    try:
        outcome = parse_euicc_package_result(data)
    except RspError:
        return
    if not outcome.signed:
        return
    assert outcome.signed_part and outcome.signed_part in data, "signed part not cut from the received bytes"
    try:
        verify_outcome(
            outcome,
            public_key=_KEY,
            association_token=None,
            eim_id=outcome.eim_id,
            counter_value=outcome.counter_value,
            eim_transaction_id=outcome.eim_transaction_id,
        )
    except ResultRejected:
        return
    raise AssertionError("a result nobody signed verified")


def tlv_target(data: bytes) -> None:
    from rsp import tlv

    try:
        t = tlv.parse_exact(data)
    except RspError:
        return
    assert t.raw == data
    assert tlv.encode(t.tag, t.value) == data or len(t.raw) != len(tlv.encode(t.tag, t.value)), "non-DER length"


def activation_code(data: bytes) -> None:
    from rsp.activation_code import format_activation_code, parse

    text = data.decode("utf-8", "replace")
    try:
        ac = parse(text)
    except RspError:
        return
    assert parse(format_activation_code(ac)) == ac


def at_answer(data: bytes) -> None:
    from firmware_bridge.at_parser import AtResponse, parse_apdu_answer
    from firmware_bridge.errors import BridgeError

    lines = data.decode("latin-1").split("\r\n")
    response = AtResponse(command='AT+CSIM=10,"80AA000000"', lines=tuple(lines[:-1]), final=lines[-1] or "OK")
    try:
        answer = parse_apdu_answer(response, "+CSIM:")
    except BridgeError:
        return
    assert isinstance(answer, bytes) and len(answer) >= 2


TARGETS: dict[str, Callable[[bytes], None]] = {
    "esipa": esipa,
    "euicc_package_result": euicc_package_result,
    "tlv": tlv_target,
    "activation_code": activation_code,
    "at_answer": at_answer,
}
