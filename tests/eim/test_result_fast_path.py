"""The ProvideEimPackageResult fast path (:func:`eim.esipa.provide_eim_package_result.plain_result`) against the
full decoder.

The fast path takes ``BF50 { 5A 10 <16 bytes>, BF51 ... }`` in DER whose BF51 parses, and hands the parsed result
on so that it is decoded once. These tests hold it to giving exactly what ``check_structure`` + ``rsp.asn1.decode``
give on every input it takes (and exactly what ``parse_euicc_package_result`` makes of its BF51), to declining every
other input, and the dispatcher to answering the same bytes and leaving the same operation with and without it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.esipa import provide_eim_package_result as pepr
from eim.model import OpKind
from eim.packages.euicc_package import parse_euicc_package_result
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim import helpers
from tests.eim.helpers import get_eim_package_request, make_env, provide_result, unwrap_package
from tests.eim.test_dispatcher_flows import ready_card

EIDS = [lab_eid(i) for i in range(51, 55)]


def full_decode(message: bytes):
    return helpers.full_decode(message, "provideEimPackageResult")


def agree(message: bytes) -> bool:
    """The fast path's value is the full decoder's, its parsed result ``parse_euicc_package_result``'s; returns
    whether the fast path took the message."""
    fast = pepr.plain_result(message)
    if fast is None:
        return False
    value, parsed = fast
    assert value == full_decode(message)
    assert value["eimPackageResult"][0] == "euiccPackageResult"
    epr = tlv.children(tlv.parse_exact(message))[1].raw
    assert parsed == parse_euicc_package_result(epr)
    return True


@st.composite
def epr(draw) -> bytes:
    """A DER EuiccPackageResult of any alternative, with random contents."""
    txid = draw(st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
    kind = draw(st.sampled_from(["result", "error", "unsigned"]))
    eim_id = draw(st.text(alphabet="abcdefghij.", min_size=1, max_size=20))
    if kind == "unsigned":
        body = {"eimId": eim_id}
        if txid is not None:
            body["eimTransactionId"] = txid
        if draw(st.booleans()):
            body["associationToken"] = draw(st.integers(-1, 2**31 - 1))
        return asn1.encode("EuiccPackageResult", ("euiccPackageErrorUnsigned", body))
    data = {"eimId": eim_id, "counterValue": draw(st.integers(0, 2**31 - 1))}
    if txid is not None:
        data["eimTransactionId"] = txid
    sig = draw(st.binary(min_size=64, max_size=64))
    if kind == "error":
        data["euiccPackageErrorCode"] = draw(st.sampled_from([3, 4, 6, 15, 127]))
        return asn1.encode(
            "EuiccPackageResult",
            ("euiccPackageErrorSigned", {"euiccPackageErrorDataSigned": data, "euiccSignEPE": sig}),
        )
    data["seqNumber"] = draw(st.integers(0, 2**31 - 1))
    data["euiccResult"] = draw(st.lists(st.sampled_from([("getRATResult", [])]), min_size=1, max_size=3))
    return asn1.encode(
        "EuiccPackageResult", ("euiccPackageResultSigned", {"euiccPackageResultDataSigned": data, "euiccSignEPR": sig})
    )


@st.composite
def result_like(draw) -> bytes:
    """ProvideEimPackageResults and near misses: eidValues of other lengths or none, long-form lengths, a member
    after the result, trailing bytes, another top-level tag, one byte of the result changed or dropped."""
    part = draw(epr())
    if draw(st.integers(0, 3)) == 0 and len(part) > 3:
        i = draw(st.integers(0, len(part) - 1))
        if draw(st.booleans()):
            part = part[:i] + bytes([draw(st.integers(0, 255))]) + part[i + 1 :]
        else:
            part = part[:i] + part[i + 1 :]
    eid = draw(st.sampled_from([16, 16, 16, 15, 17, 0, None]))
    inner = b"" if eid is None else tlv.encode(0x5A, bytes(range(eid)))
    if eid == 16 and draw(st.integers(0, 5)) == 0:
        inner = bytes([0x5A, 0x81, 0x10]) + bytes(16)  # long-form length of the eidValue: not DER
    inner += part + draw(st.sampled_from([b"", b"", b"\x80\x00"]))
    top = draw(st.sampled_from([0xBF50, 0xBF50, 0xBF50, 0xBF4F]))
    message = tlv.encode(top, inner)
    if draw(st.integers(0, 5)) == 0:  # long-form outer length (not DER when it fits in the short form)
        message = message[:2] + bytes([0x81, len(inner)]) + inner if len(inner) < 128 else message
    return message + draw(st.sampled_from([b"", b"", b"\x00"]))


@settings(max_examples=1500, deadline=None)
@given(result_like())
def test_result_like_fast_path_agrees_with_decoder(message):
    agree(message)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=60))
def test_random_bytes_fast_path_agrees_with_decoder(message):
    agree(message)


@settings(max_examples=200, deadline=None)
@given(epr())
def test_every_plain_result_takes_the_fast_path(part):
    message = tlv.encode(0xBF50, tlv.encode(0x5A, bytes(16)) + part)
    assert agree(message)


def test_near_misses_decline():
    part = asn1.encode("EuiccPackageResult", ("euiccPackageErrorUnsigned", {"eimId": "eim.x"}))
    plain = tlv.encode(0xBF50, tlv.encode(0x5A, bytes(16)) + part)
    assert agree(plain)
    inner = plain[3:]
    for message in (
        plain + b"\x00",  # trailing byte
        plain[:-1],  # short
        tlv.encode(0xBF50, part),  # no eidValue
        tlv.encode(0xBF50, inner + b"\x80\x00"),  # a member after the result
        bytes([0xBF, 0x50, 0x81, len(inner)]) + inner,  # long-form outer length
        tlv.encode(0xBF50, tlv.encode(0x5A, bytes(16)) + tlv.encode(0xA0, b"\x02\x01\x01")),  # another alternative
        tlv.encode(0xBF50, tlv.encode(0x5A, bytes(16)) + tlv.encode(0xBF51, b"\x30\x00")),  # a BF51 that fails
    ):
        assert pepr.plain_result(message) is None, message.hex()


# ------------------------------------------------------------------------------------------ through the dispatcher
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


def tamper(raw: bytes) -> bytes:
    """The same result with the last byte of its signature changed (still DER, no longer genuine)."""
    return raw[:-1] + bytes([raw[-1] ^ 0x01])


async def flow(env, lab, eid: str) -> list:
    """A PSMO round trip with a tampered result first, then the genuine one twice (a replay): the answers and the
    operation as stored after each step."""
    card = await ready_card(env, lab, eid)
    op = await env.service.create(eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    package = unwrap_package(await env.handle(get_eim_package_request(eid)))
    epr = await card.load(package)
    out: list = []
    for raw in (tamper(epr), epr, epr):
        answer = await env.handle(provide_result(eid, raw))
        stored = await env.service.get(op.id)
        out.append((answer, stored.status, timeless(stored.result), stored.result_code, stored.error, stored.attempts))
    return out


def timeless(value):
    """``value`` without its clock readings (``at``): the two flows run at different moments."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k != "at"}
    return value


async def test_dispatcher_answers_and_records_the_same_with_and_without_it(store, lab, monkeypatch):
    env = make_env(store, lab)
    taken: list[bytes] = []
    real = pepr.plain_result

    def counting(message: bytes):
        got = real(message)
        if got is not None:
            taken.append(message)
        return got

    monkeypatch.setattr(pepr, "plain_result", counting)
    fast = await flow(env, lab, EIDS[0])
    assert len(taken) == 3  # the tampered result, the genuine one and its replay (the eUICC data is a BF52)
    monkeypatch.setattr(pepr, "plain_result", lambda message: None)
    full = await flow(env, lab, EIDS[1])
    assert fast == full
    assert fast[0][0] == bytes.fromhex("BF500302017F")  # the tampered result: undefinedError, nothing changed
    assert fast[1][1].value == "done" and fast[1][0].startswith(b"\xbf\x50")
