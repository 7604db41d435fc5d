"""Hypothesis garbage into the ESipa dispatcher, on both stores: random bytes, random bodies behind every ESipa
tag, and mutations of valid messages of every function. Every answer is an ESipa message (or no body, or an
EsipaRejected), nothing hangs, and the registry and the operation in progress are untouched afterwards."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.interfaces import EsipaRejected, RequestContext
from eim.model import OpKind, OpStatus
from eim.store import open_store
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import Card, get_eim_package_request, make_env, provide_result, unwrap_package

EID = lab_eid(31)
TAGS = [0xBF39, 0xBF3B, 0xBF3A, 0xBF41, 0xBF3D, 0xBF4E, 0xBF4F, 0xBF50]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def seeds(epr: bytes) -> list[bytes]:
    txid = os.urandom(16)
    return [
        get_eim_package_request(EID),
        provide_result(EID, epr),
        provide_result(None, tlv.encode(0x30, epr + tlv.encode(0xA0, b""))),
        tlv.encode(0xBF4E, epr),
        bytes.fromhex("BF4E020500"),
        tlv.encode(0xBF3D, tlv.encode(0xBF50, tlv.encode(0x5A, bytes.fromhex(EID)) + epr)),
        asn1.encode(
            "EsipaMessageFromIpaToEim",
            (
                "initiateAuthenticationRequestEsipa",
                {"euiccChallenge": bytes(16), "smdpAddress": "smdp.example.com", "eimTransactionId": txid},
            ),
        ),
        asn1.encode(
            "EsipaMessageFromIpaToEim",
            (
                "authenticateClientRequestEsipa",
                {
                    "transactionId": txid,
                    "authenticateServerResponse": (
                        "authenticateResponseError",
                        {"transactionId": txid, "authenticateErrorCode": 1},
                    ),
                },
            ),
        ),
        tlv.encode(
            0xBF3A,
            tlv.encode(0x80, txid)
            + tlv.encode(0xBF21, tlv.encode(0xA1, tlv.encode(0x80, txid) + bytes.fromhex("020101"))),
        ),
        tlv.encode(0xBF41, tlv.encode(0x80, txid) + tlv.encode(0xA1, tlv.encode(0x81, b"\x05"))),
        tlv.encode(0xBF3D, tlv.encode(0xA0, tlv.encode(0xBF37, tlv.encode(0xBF27, b"") + tlv.encode(0x5F37, b"")))),
    ]


@st.composite
def mutated(draw, base: list[bytes]):
    data = bytearray(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


def test_garbage_into_the_dispatcher(store_url, lab):
    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        env = make_env(store, lab)

        async def setup():
            card = Card(lab, EID)
            await card.open()
            token = await card.associate(env.key)
            await env.service.register_euicc(EID, association_token=token, counter_value=1)
            await env.service.create(EID, OpKind.EUICC_DATA, {})
            req = unwrap_package(await env.handle(get_eim_package_request(EID)))
            await env.handle(provide_result(EID, await card.euicc_data(req)))
            op = await env.service.create(EID, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
            package = unwrap_package(await env.handle(get_eim_package_request(EID)))
            return op, await card.load(package)

        op, epr = runner.run(setup())
        base = seeds(epr)
        before_euicc = runner.run(store.get_euicc(EID))
        before_op = runner.run(store.get_operation(op.id))
        contexts = [
            RequestContext("http", peer_ip="127.0.0.1"),
            RequestContext("mqtt", f"esipa/{EID}/up", EID, "mqtt-acl"),
            RequestContext("coap", "[::1]:5683", peer_ip="::1"),
            RequestContext("http", "192.0.2.7:4000", peer_ip="192.0.2.7"),  # refused by the device policy
        ]

        @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            message=st.one_of(
                st.binary(max_size=200),
                st.builds(lambda t, b: tlv.encode(t, b), st.sampled_from(TAGS), st.binary(max_size=120)),
                mutated(base),
            ),
            ctx=st.sampled_from(contexts),
        )
        def probe(message, ctx):
            async def once():
                return await asyncio.wait_for(env.dispatcher.handle(message, ctx), 10)

            try:
                answer = runner.run(once())
            except EsipaRejected as exc:
                # 403: a notification that does not verify, or the device policy's refusal of an unauthenticated
                # non-loopback peer; 429: over its eUICC's rate
                assert exc.http_status in (400, 403, 429) and exc.message
                return
            if answer is not None:
                try:
                    asn1.decode("EsipaMessageFromEimToIpa", answer)  # a well-formed ESipa answer
                except asn1.DecodeError:
                    asn1.decode("V10-EsipaMessageFromEimToIpa", answer)  # or SGP.32 v1.0's (eim.esipa.v10)

        probe()
        after_euicc = runner.run(store.get_euicc(EID))
        assert (after_euicc.counter_value, after_euicc.association_token, after_euicc.euicc_certificate) == (
            before_euicc.counter_value,
            before_euicc.association_token,
            before_euicc.euicc_certificate,
        )
        after_op = runner.run(store.get_operation(op.id))
        assert after_op.package == before_op.package
        # Some inputs are still the genuine result (a seed, or a mutation outside the signed bytes such as a
        # TransferEimPackageResponse wrapper): then the operation is done with exactly the eUICC's result.
        # Anything else left it in progress.
        genuine = asn1.decode("EuiccPackageResult", epr)[1]["euiccPackageResultDataSigned"]["seqNumber"]
        assert after_op.status in (OpStatus.IN_PROGRESS, OpStatus.DONE)
        if after_op.status is OpStatus.DONE:
            assert after_op.result["seqNumber"] == genuine
        # and the genuine result closes it (or is acknowledged again)
        reply = runner.run(env.handle(provide_result(EID, epr)))
        assert asn1.decode("ProvideEimPackageResultResponse", reply) == ("eimAcknowledgements", [genuine])
        assert runner.run(store.get_operation(op.id)).status is OpStatus.DONE
        runner.run(store.close())
    finally:
        runner.close()
