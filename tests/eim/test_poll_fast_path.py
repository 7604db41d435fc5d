"""The GetEimPackage fast path (:func:`eim.esipa.get_eim_package.plain_request`) against the full decoder.

The fast path recognises the 21 bytes ``BF4F 12 5A 10 <16 bytes>`` without the decoders; these tests hold it to
giving exactly what ``check_structure`` + ``rsp.asn1.decode`` give on every input it takes, to declining every
other input, and the dispatcher to answering the same bytes (and leaving the same rows) with and without it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.esipa import dispatcher as dispatcher_mod
from eim.esipa import get_eim_package
from eim.esipa.device_auth import DevicePolicy
from eim.esipa.dispatcher import EsipaDispatcher
from eim.interfaces import RequestContext
from eim.model import Euicc
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim import helpers
from tests.eim.helpers import EIM_ID, make_env

EID = lab_eid(41)
OTHER = lab_eid(42)  # not registered
LOOPBACK = RequestContext("http", "127.0.0.1:4000", None, "none", "127.0.0.1")


def full_decode(message: bytes):
    return helpers.full_decode(message, "getEimPackageRequest")


def agree(message: bytes) -> None:
    fast = get_eim_package.plain_request(message)
    if fast is not None:
        assert fast == full_decode(message)
        assert tlv.parse_exact(message) == tlv.Tlv(0xBF4F, 0, 3, 18, message)  # the head the dispatcher builds


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_fast_path_agrees_with_decoder(message):
    agree(message)


@st.composite
def poll_like(draw):
    """GetEimPackageRequests and near misses: an eidValue of any length, long-form lengths, optional fields
    (notifyStateChange 80?, rPLMN 82?), trailing bytes, another top-level tag."""
    eid = draw(st.binary(min_size=0, max_size=20))
    inner = tlv.encode(0x5A, eid)
    if draw(st.booleans()):
        inner = bytes([0x5A, 0x81, len(eid)]) + eid  # long-form length: not DER
    inner += draw(st.sampled_from([b"", b"\x80\x00", b"\x82\x03\x21\xf3\x54", b"\x81\x01\x05"]))
    top = draw(st.sampled_from([0xBF4F, 0xBF50, 0xBF4E]))
    message = tlv.encode(top, inner) + draw(st.sampled_from([b"", b"\x00", b"\x5a\x00"]))
    return message


@settings(max_examples=1500, deadline=None)
@given(poll_like())
def test_poll_like_fast_path_agrees_with_decoder(message):
    agree(message)


@given(st.binary(min_size=16, max_size=16))
def test_every_plain_request_takes_the_fast_path(eid):
    message = tlv.encode(0xBF4F, tlv.encode(0x5A, eid))
    assert get_eim_package.plain_request(message) == {"eidValue": eid} == full_decode(message)


def test_near_misses_decline():
    plain = tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID)))
    for message in (
        plain + b"\x00",  # trailing byte
        plain[:-1],  # short
        tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID)) + b"\x80\x00"),  # notifyStateChange
        bytes.fromhex("BF4F13") + bytes([0x5A, 0x81, 0x10]) + bytes.fromhex(EID),  # long-form length
        tlv.encode(0xBF50, tlv.encode(0x5A, bytes.fromhex(EID))),  # another function
    ):
        assert get_eim_package.plain_request(message) is None


# ------------------------------------------------------------------------------------------ through the dispatcher
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


async def register(store) -> None:
    await store.add_euicc(
        Euicc(eid=EID, eim_id=EIM_ID, association_token=1, counter_value=10, created_at=1000.0), who="t"
    )


async def answers(store, lab, messages, ctx=LOOPBACK, policy=None):
    env = make_env(store, lab)
    d = EsipaDispatcher(env.rp, device_policy=policy) if policy else env.dispatcher
    out = []
    for m in messages:
        try:
            out.append(await d.handle(m, ctx))
        except Exception as exc:  # EsipaRejected: its status is the observable answer
            out.append((type(exc).__name__, getattr(exc, "http_status", None)))
    return out


def requests() -> list[bytes]:
    return [
        tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID))),  # registered, nothing queued
        tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(OTHER))),  # eidNotFound
        tlv.encode(0xBF4F, tlv.encode(0x5A, b"\xff" * 16)),  # invalidEid: not BCD
        tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID.lower()))),
    ]


async def test_dispatcher_answers_the_same_with_and_without_fast_path(store, lab, monkeypatch):
    await register(store)
    fast = await answers(store, lab, requests())
    assert fast[0] == bytes.fromhex("BF4F03020101")
    assert fast[1] == bytes.fromhex("BF4F03020102")
    assert fast[2] == bytes.fromhex("BF4F03020103")
    monkeypatch.setattr(get_eim_package, "plain_request", lambda message: None)
    assert await answers(store, lab, requests()) == fast
    euicc = await store.get_euicc(EID)
    assert euicc is not None and euicc.binding == "http"


async def test_fast_path_hands_out_queued_work(store, lab):
    """A queued package goes out on a plain poll (the fast path changes the decoding only)."""
    env = make_env(store, lab)
    await register(store)
    await env.service.create(EID, "psmo", {"psmos": [{"getRAT": {}}]})
    answer = await env.dispatcher.handle(requests()[0], LOOPBACK)
    assert answer is not None and answer[:2] == b"\xbf\x4f" and answer[3:5] in (b"\xbf\x51", b"\xbf\x52")


async def test_device_policy_still_refuses_a_plain_poll_from_outside(store, lab):
    """The fast path runs after the device policy: an unauthenticated plain poll from a network that is not
    trusted gets the refusal, not the eUICC's state."""
    await register(store)
    outside = RequestContext("http", "203.0.113.9:4000", None, "none", "203.0.113.9")
    got = await answers(store, lab, requests()[:1], ctx=outside, policy=DevicePolicy())
    assert got[0] != bytes.fromhex("BF4F03020101")
    env = make_env(store, lab)
    full = EsipaDispatcher(env.rp, device_policy=DevicePolicy())
    # the same refusal as a request that takes the full decoder (a notifyStateChange poll)
    slow = tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID)) + b"\x80\x00")
    try:
        expected = await full.handle(slow, outside)
    except Exception as exc:
        expected = (type(exc).__name__, getattr(exc, "http_status", None))
    assert got[0] == expected
    assert (await store.get_euicc(EID)).binding is None  # nothing recorded for the refused poll


def test_no_package_constant_is_not_counted_as_error():
    assert dispatcher_mod.error_answer_code(0xBF4F, bytes.fromhex("BF4F03020101")) is None
    assert dispatcher_mod.error_answer_code(0xBF4F, bytes.fromhex("BF4F03020102")) == 2


def test_plain_request_takes_a_bytearray_too():
    m = tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(EID)))
    assert get_eim_package.plain_request(bytearray(m)) == get_eim_package.plain_request(m) == {"eidValue": m[5:]}
