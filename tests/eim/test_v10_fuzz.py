"""Hypothesis: malformed SGP.32 v1.0 envelopes into the dispatcher, on both stores.

Seeds are the real v1.0 messages (tests/data/sgp32_v10_captures.json) with the operation they answer in progress.
The envelope around the eUICC's signed BF51 is broken (headers, lengths, tags, inserted or cut bytes, garbage in the
BF2B / IpaEuiccData), the BF51 itself is kept. Every input gets either a v1.0 answer the IPA can read (then the
result was genuine and the operation is done with it) or EsipaRejected (HTTP 400) naming what was wrong, and then
nothing in the store changed; never the v1.2 error BF50 03 02 01 xx, which a v1.0 IPA reads as success."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.interfaces import EsipaRejected, RequestContext
from eim.model import OpKind, OpStatus
from eim.store import open_store
from rsp import asn1, tlv
from tests.eim.test_v10_captures import EID, env_for, hand_out, lab, msg  # noqa: F401 (lab: fixture)

RESULT = "ProvideEimPackageResult ePRAndNotifications enable"


def envelope_mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    """``BF50 { 30 { BF51, BF2B } }`` with the 30/BF2B envelope broken and the BF51 kept; the outer BF50 length is
    fixed so the message still reaches the dispatcher as one TLV."""
    part = tlv.children(tlv.parse_exact(raw))[0]
    epr, notes = tlv.children(part)
    payloads = st.binary(max_size=40)

    def wrap(inner: bytes) -> bytes:
        return tlv.encode(0xBF50, inner)

    return st.one_of(
        # the 30's length byte(s) wrong
        st.builds(lambda d: wrap(b"\x30" + bytes([d]) + epr.raw + notes.raw), st.integers(0, 0x7F)),
        # another tag instead of BF2B / 30, or BF2B with garbage content
        st.builds(
            lambda t, c: wrap(tlv.encode(0x30, epr.raw + tlv.encode(t, c))),
            st.sampled_from([0xBF2B, 0xBF2C, 0xA1, 0x04, 0xBF51]),
            payloads,
        ),
        st.builds(lambda t: wrap(tlv.encode(t, epr.raw + notes.raw)), st.sampled_from([0x30, 0x31, 0x02])),
        # bytes inserted between the BF51 and the BF2B, or after the BF2B (not starting with A0: 30 { BF51, A0 ..}
        # is how a v1.2 message begins, and gets v1.2's answer, see the test of an extension member below)
        st.builds(
            lambda b: wrap(tlv.encode(0x30, epr.raw + b + notes.raw)),
            st.binary(min_size=1, max_size=8).filter(lambda b: b[0] != 0xA0),
        ),
        st.builds(lambda b: wrap(tlv.encode(0x30, epr.raw + notes.raw + b)), st.binary(min_size=1, max_size=8)),
        # the 30's content cut inside the BF2B (its header still claims the old length)
        st.builds(lambda n: wrap(part.raw[: part.header_len + len(epr.raw) + n]), st.integers(1, len(notes.raw) - 1)),
        # two members in the BF50 (a CHOICE in v1.0), a bare INTEGER of any size (with an eidValue first it is a
        # v1.2 message and gets v1.2's answer: not a v1.0 envelope)
        st.builds(lambda b: wrap(part.raw + b), st.binary(min_size=1, max_size=8)),
        st.builds(lambda b: wrap(tlv.encode(0x02, b) + b"\x00"), st.binary(max_size=6)),
        # IpaEuiccData of the v1.0 form with garbage members
        st.builds(
            lambda b: wrap(tlv.encode(0xBF52, tlv.encode(0xA0, tlv.encode(0x80, b"x") + b))),
            st.binary(min_size=1, max_size=30),
        ),
    )


@contextlib.contextmanager
def handed_out(store_url: str, lab: Any) -> Iterator[tuple[asyncio.Runner, Any, Any, Any, Any]]:  # noqa: F811
    """A store with the v1.0 capture's enable operation handed out: (runner, store, service, dispatcher, op)."""
    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        factory, service, dispatcher = runner.run(env_for(store, lab))
        op = runner.run(hand_out(factory, service, dispatcher, "GetEimPackageResponse euiccPackageRequest enable"))
        yield runner, store, service, dispatcher, op
        runner.run(store.close())
    finally:
        runner.close()


def test_malformed_v10_envelopes(store_url, lab):  # noqa: F811
    with handed_out(store_url, lab) as (runner, store, service, dispatcher, op):
        genuine = msg(RESULT)
        contexts = [
            RequestContext("http", "127.0.0.1", peer_ip="127.0.0.1"),
            RequestContext("coap", "127.0.0.1", eid_hint=EID),
        ]

        async def snapshot():
            ops = await store.list_operations(eid=EID)
            e = await store.get_euicc(EID)
            return [(o.id, o.status, o.result) for o in ops], (e.sgp32_version, e.last_seq_number, e.info)

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(message=envelope_mutations(genuine), ctx=st.sampled_from(contexts))
        def probe(message, ctx):
            before = runner.run(snapshot())
            try:
                answer = runner.run(asyncio.wait_for(dispatcher.handle(message, ctx), 10))
            except EsipaRejected as exc:
                assert exc.http_status == 400 and exc.message
                assert runner.run(snapshot()) == before  # nothing stored
                return
            # an answer: never one a v1.0 IPA reads as success for a result that was not accepted
            assert answer is not None and answer[:3] != b"\xbf\x50\x03", answer.hex()
            alt, value = asn1.decode("V10-EsipaMessageFromEimToIpa", answer)
            assert alt == "provideEimPackageResultResponse"
            if value.get("eimAcknowledgements"):
                assert runner.run(service.get(op.id)).status is OpStatus.DONE

        probe()
        # still serving: the genuine result completes the operation (or is acknowledged again)
        assert runner.run(dispatcher.handle(genuine, contexts[0])) == bytes.fromhex("BF5006BF5303800103")
        assert runner.run(service.get(op.id)).status is OpStatus.DONE
        assert runner.run(store.list_operations(eid=EID, kind=OpKind.PSMO))[0].result["seqNumber"] == 3


def test_bytes_inside_the_30_that_make_an_a0_member_are_refused_not_answered_with_a_v12_error(store_url, lab):  # noqa: F811
    """Found by the test above: 4 bytes inserted between the BF51 and the BF2B (``00 0A 00 00``: a TLV that swallows
    the BF2B's header) leave an ``A0`` among the 30's members. The 30 was then read as v1.2's ePRAndNotifications,
    failed to decode, and got BF50 03 02 01 7F, which a v1.0 IPA reads as success. v1.2's begins ``30 { BF51, A0``:
    anything else is refused (400), and nothing is stored."""
    with handed_out(store_url, lab) as (runner, _store, service, dispatcher, op):
        part = tlv.children(tlv.parse_exact(msg(RESULT)))[0]
        epr, notes = tlv.children(part)
        broken = tlv.encode(0xBF50, tlv.encode(0x30, epr.raw + b"\x00\n\x00\x00" + notes.raw))
        assert 0xA0 in [c.tag for c in tlv.children(tlv.children(tlv.parse_exact(broken))[0])]
        before = runner.run(service.get(op.id))
        try:
            answer = runner.run(dispatcher.handle(broken, RequestContext("http", "127.0.0.1", peer_ip="127.0.0.1")))
        except EsipaRejected as exc:
            assert exc.http_status == 400 and exc.message
        else:
            raise AssertionError(f"answered {answer.hex()}")
        after = runner.run(service.get(op.id))
        assert (after.status, after.result, after.attempts) == (before.status, before.result, before.attempts)


def test_a_v12_ep_r_and_notifications_with_an_extension_member_stays_v12():
    """SGP.32 v1.2's module is EXTENSIBILITY IMPLIED: ``30 { BF51, A0, <extension> }`` is a valid v1.2 message
    (our v1.2 decoder takes it) and stays on the v1.2 path; the same 30 with a stray member before the A0 is not."""
    from eim.esipa import v10

    part = tlv.children(tlv.parse_exact(msg(RESULT)))[0]
    epr = tlv.children(part)[0]
    extended = tlv.encode(0xBF50, tlv.encode(0x30, epr.raw + b"\xa0\x00" + b"\x81\x01\x00"))
    alt, _value = asn1.decode("EsipaMessageFromIpaToEim", extended)
    assert alt == "provideEimPackageResult"
    assert v10.recognise(0xBF50, extended) is False
    stray = tlv.encode(0xBF50, tlv.encode(0x30, epr.raw + b"\x81\x01\x00" + b"\xa0\x00"))
    assert v10.recognise(0xBF50, stray) is True
