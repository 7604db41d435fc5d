"""The relay's ES9+ <-> ESipa mapping against a scripted ES9+ peer over real HTTPS, and fuzzed ESipa input.

The scripted peer answers each function with what a test sets (including what a broken SM-DP+ would send), so
every row of the error-code tables, the TLV-vs-value tolerance and every malformed-answer path is exercised on
the wire. The peer also records what the relay sent (headers and JSON).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eim.relay import Es9BadResponse, Es9Failed, Es9PlusClient, Es9Relay, NotForwardable, session_key, tls_context
from eim.relay import authenticate_client as ac
from eim.relay import cancel_session as cs
from eim.relay import get_bound_profile_package as gbpp
from eim.relay import handle_notification as hn
from eim.relay import initiate_authentication as ia
from eim.relay.common import der_integer, esipa_error
from eim.relay.errors import Es9Unreachable
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.test_bindings_common import pir
from tests.eim.test_relay import MemoryRelayStore
from tests.services import free_port

T = tlv.encode
EID = lab_eid(21)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ScriptedSmdp:
    """An ES9+ peer: ``answers[function] = (http_status, body)``; ``seen`` records (function, headers, json)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.seen: list[tuple[str, dict[str, str], Any]] = []

        async def es9(request: Request) -> Response:
            function = request.path_params["function"]
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self.seen.append((function, dict(request.headers), body))
            status, answer = self.answers.get(function, (500, "not scripted"))
            if status == 204:
                return Response(status_code=204)
            content = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            return Response(content, status_code=status, media_type="application/json")

        self.app = Starlette(routes=[Route("/gsma/rsp2/es9plus/{function}", es9, methods=["POST"])])


def ok_header() -> dict[str, Any]:
    return {"functionExecutionStatus": {"status": "Executed-Success"}}


def failed(subject: str, reason: str) -> dict[str, Any]:
    return {
        "header": {
            "functionExecutionStatus": {
                "status": "Failed",
                "statusCodeData": {"subjectCode": subject, "reasonCode": reason, "message": "scripted"},
            }
        }
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("mapping-pki"), curves=("nist",), eids=(EID,))


@pytest.fixture(scope="module")
def peer(pki) -> Iterator[tuple[ScriptedSmdp, str]]:
    smdp = ScriptedSmdp()
    port = free_port()
    config = uvicorn.Config(
        smdp.app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(pki.dptls_cert_path),
        ssl_keyfile=str(pki.dptls_key_path),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "scripted SM-DP+ did not start"
        time.sleep(0.01)
    try:
        yield smdp, f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
async def relay(pki):
    client = Es9PlusClient(tls_context([pki.ca_bundle_path]), timeout=10, requester_id="eim-test")
    store = MemoryRelayStore()
    yield Es9Relay(store, client)
    await client.aclose()


TXID = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")
CHALLENGE = bytes(range(16))


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def server_signed1(address: str) -> bytes:
    return T(0x30, T(0x80, TXID) + T(0x81, CHALLENGE) + T(0x83, address.encode()) + T(0x84, bytes(16)))


def initiate_answer(pki, address: str, **override) -> dict[str, Any]:
    answer = {
        "header": ok_header(),
        "transactionId": TXID.hex().upper(),
        "serverSigned1": b64(server_signed1(address)),
        "serverSignature1": b64(T(0x5F37, bytes(range(64)))),
        "euiccCiPKIdToBeUsed": b64(T(0x04, pki.ci_key_id("nist"))),
        "serverCertificate": b64(der(pki.cert("dpauth", "nist"))),
    }
    answer.update(override)
    return {k: v for k, v in answer.items() if v is not None}


def initiate_request(address: str) -> bytes:
    info1 = T(0xBF20, T(0x82, b"\x02\x05\x00") + T(0xA9, T(0x04, bytes(20))) + T(0xAA, T(0x04, bytes(20))))
    return T(0xBF39, T(0x81, CHALLENGE) + T(0x83, address.encode()) + info1)


def esipa(answer: bytes) -> tuple[str, Any]:
    return asn1.decode("EsipaMessageFromEimToIpa", answer)[1]


async def start_session(relay: Es9Relay, smdp: ScriptedSmdp, address: str, pki) -> None:
    smdp.answers["initiateAuthentication"] = (200, initiate_answer(pki, address))
    assert esipa(await relay.initiate_authentication(EID, initiate_request(address)))[0] == (
        "initiateAuthenticationOkEsipa"
    )


# ---------------------------------------------------------------- what goes on the wire
async def test_request_headers_and_json(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    function, headers, body = smdp.seen[-1]
    assert function == "initiateAuthentication"
    assert headers["x-admin-protocol"] == "gsma/rsp/v2.1.0"
    assert headers["content-type"] == "application/json;charset=UTF-8"
    assert body["header"]["functionRequesterIdentifier"] == "eim-test" and body["header"]["functionCallIdentifier"]
    assert base64.b64decode(body["euiccChallenge"]) == CHALLENGE and body["smdpAddress"] == address
    assert base64.b64decode(body["euiccInfo1"])[:2] == b"\xbf\x20"

    asr = T(0xBF38, T(0xA1, T(0x80, TXID) + T(0x02, b"\x01")))  # an authenticateResponseError is forwarded too
    smdp.answers["authenticateClient"] = (200, failed("8.1", "6.1"))
    await relay.authenticate_client(EID, T(0xBF3B, T(0x80, TXID) + asr))
    function, _, body = smdp.seen[-1]
    assert function == "authenticateClient"
    assert body["transactionId"] == TXID.hex().upper() and base64.b64decode(body["authenticateServerResponse"]) == asr


async def test_bare_values_from_a_lenient_smdp_are_accepted(peer, relay, pki):
    smdp, address = peer
    key_id = pki.ci_key_id("nist")
    smdp.answers["initiateAuthentication"] = (
        200,
        initiate_answer(pki, address, serverSignature1=b64(bytes(range(64))), euiccCiPKIdToBeUsed=b64(key_id)),
    )
    answer = await relay.initiate_authentication(EID, initiate_request(address))
    name, ok = esipa(answer)
    assert name == "initiateAuthenticationOkEsipa"
    assert ok["serverSignature1"] == bytes(range(64)) and ok["euiccCiPKIdentifierToBeUsed"] == key_id
    assert ok["transactionId"] == TXID and ok["serverSigned1"]["serverAddress"] == address


@pytest.mark.parametrize(
    "override",
    [
        {"transactionId": None},
        {"transactionId": "XYZ"},
        {"transactionId": "00" * 17},
        {"serverSigned1": "@@not-base64@@"},
        {"serverSigned1": b64(b"\x31\x00")},  # wrong tag
        {"serverSigned1": b64(T(0x30, T(0x80, TXID)))},  # not a ServerSigned1
        {"serverSignature1": b64(T(0x5F38, bytes(64)))},
        {"serverSignature1": b64(bytes(63))},
        {"euiccCiPKIdToBeUsed": None},
        {"serverCertificate": b64(b"\x30\x03\x02\x01")},  # truncated
    ],
)
async def test_malformed_answers_become_undefined_error(peer, relay, pki, override):
    smdp, address = peer
    smdp.answers["initiateAuthentication"] = (200, initiate_answer(pki, address, **override))
    assert esipa(await relay.initiate_authentication(EID, initiate_request(address))) == (
        "initiateAuthenticationErrorEsipa",
        127,
    )
    assert not relay.store.sessions  # nothing half-started, nothing remembered from a failed attempt


@pytest.mark.parametrize(
    "status,body",
    [
        (500, {"oops": 1}),
        (404, "nope"),
        (200, b"not json"),
        (200, [1, 2]),
        (200, {"no": "header"}),
        (200, {"header": {"functionExecutionStatus": {"status": "Maybe"}}}),
        (204, None),
    ],
)
async def test_broken_http_answers_become_undefined_error(peer, relay, status, body):
    smdp, address = peer
    smdp.answers["initiateAuthentication"] = (status, body)
    assert esipa(await relay.initiate_authentication(EID, initiate_request(address))) == (
        "initiateAuthenticationErrorEsipa",
        127,
    )


# ---------------------------------------------------------------- the error-code tables, row by row, on the wire
async def test_initiate_authentication_error_table(peer, relay):
    smdp, address = peer
    for (subject, reason), code in [*ia.ERRORS.items(), (("1.2", "2.1"), 127), (("8.8", "9.9"), 127)]:
        smdp.answers["initiateAuthentication"] = (200, failed(subject, reason))
        assert esipa(await relay.initiate_authentication(EID, initiate_request(address))) == (
            "initiateAuthenticationErrorEsipa",
            code,
        ), (subject, reason)


async def test_authenticate_client_error_table(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    asr = T(0xBF38, T(0xA1, T(0x80, TXID) + T(0x02, b"\x01")))
    for (subject, reason), code in [*ac.ERRORS.items(), (("8.8.5", "4.10"), 127)]:
        smdp.answers["authenticateClient"] = (200, failed(subject, reason))
        answer = await relay.authenticate_client(EID, T(0xBF3B, T(0x80, TXID) + asr))
        assert esipa(answer) == ("authenticateClientErrorEsipa", code), (subject, reason)
        assert answer[-3:] == bytes([0x82, 0x01, code])  # the INTEGER alternative is [2] here


async def test_get_bound_profile_package_error_table(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    pdr = T(0xBF21, T(0xA1, T(0x80, TXID) + T(0x02, b"\x01")))
    for (subject, reason), code in [*gbpp.ERRORS.items(), (("8.1", "4.2"), 127)]:
        smdp.answers["getBoundProfilePackage"] = (200, failed(subject, reason))
        answer = await relay.get_bound_profile_package(EID, T(0xBF3A, T(0x80, TXID) + pdr))
        assert esipa(answer) == ("getBoundProfilePackageErrorEsipa", code), (subject, reason)


async def test_cancel_session_error_table(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    response = T(0xA1, T(0xA0, T(0x30, T(0x80, TXID)) + T(0x5F37, bytes(64))))
    for (subject, reason), code in [*cs.ERRORS.items(), (("8.8", "3.10"), 127)]:
        smdp.answers["cancelSession"] = (200, failed(subject, reason))
        answer = await relay.cancel_session(EID, T(0xBF41, T(0x80, TXID) + response))
        assert esipa(answer) == ("cancelSessionError", code), (subject, reason)
    _, _, body = smdp.seen[-1]
    assert base64.b64decode(body["cancelSessionResponse"]) == T(
        0xBF41, T(0xA0, T(0x30, T(0x80, TXID)) + T(0x5F37, bytes(64)))
    )
    smdp.answers["cancelSession"] = (200, {"header": ok_header()})
    assert await relay.cancel_session(EID, T(0xBF41, T(0x80, TXID) + response)) == cs.OK
    assert session_key(TXID) not in relay.store.sessions


async def test_get_bound_profile_package_ok_is_verbatim(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    bpp = T(0xBF36, T(0xBF23, T(0x82, b"\x01") + T(0x80, TXID)) + T(0xA0, T(0x87, bytes(40))) + T(0xA3, bytes(3000)))
    smdp.answers["getBoundProfilePackage"] = (
        200,
        {"header": ok_header(), "transactionId": TXID.hex(), "boundProfilePackage": b64(bpp)},
    )
    pdr = T(0xBF21, T(0xA0, T(0x30, T(0x80, TXID)) + T(0x5F37, bytes(64))))
    answer = await relay.get_bound_profile_package(EID, T(0xBF3A, T(0x80, TXID) + pdr))
    assert answer == T(0xBF3A, T(0xA0, T(0x80, TXID) + bpp))
    assert relay.store.sessions[session_key(TXID)]["step"] == "bpp"


async def test_compact_forms_are_refused_without_calling_the_smdp(peer, relay, pki):
    smdp, address = peer
    await start_session(relay, smdp, address, pki)
    before = len(smdp.seen)
    compact_asr = T(0xBF38, T(0xA2, T(0x30, b"") + T(0x5F37, bytes(64))))
    assert esipa(await relay.authenticate_client(EID, T(0xBF3B, T(0x80, TXID) + compact_asr))) == (
        "authenticateClientErrorEsipa",
        127,
    )
    compact_pdr = T(0xBF21, T(0xA2, T(0x30, b"") + T(0x5F37, bytes(64))))
    assert esipa(await relay.get_bound_profile_package(EID, T(0xBF3A, T(0x80, TXID) + compact_pdr))) == (
        "getBoundProfilePackageErrorEsipa",
        127,
    )
    compact_cancel = T(0xA1, T(0xA2, T(0x30, b"") + T(0x5F37, bytes(64))))
    assert esipa(await relay.cancel_session(EID, T(0xBF41, T(0x80, TXID) + compact_cancel))) == (
        "cancelSessionError",
        127,
    )
    assert len(smdp.seen) == before
    with pytest.raises(NotForwardable):
        await relay.forward_notification(EID, T(0xA0, T(0xA0, T(0x80, TXID))))  # compact PIR in its wrapper


# ---------------------------------------------------------------- notifications
async def test_notification_outcomes(peer, relay):
    smdp, address = peer
    note = pir(address=address, transaction_id=TXID)
    for status, body in ((204, None), (200, {"header": ok_header()})):
        smdp.answers["handleNotification"] = (status, body)
        await relay.forward_notification(EID, note)
        function, _, sent = smdp.seen[-1]
        assert function == "handleNotification" and base64.b64decode(sent["pendingNotification"]) == note
    smdp.answers["handleNotification"] = (200, failed("8.1", "6.1"))
    with pytest.raises(Es9Failed) as failure:
        await relay.forward_notification(EID, note)
    assert (failure.value.subject_code, failure.value.reason_code) == ("8.1", "6.1")
    smdp.answers["handleNotification"] = (500, "down")
    with pytest.raises(Es9BadResponse):
        await relay.forward_notification(EID, note)
    with pytest.raises(Es9Unreachable):
        await relay.forward_notification(EID, pir(address=f"127.0.0.1:{free_port()}"))


def test_notification_parsing():
    note = pir(address="smdp.example.com", transaction_id=TXID)
    for wrapped in (note, T(0xA0, note), T(0xBF3D, T(0xA0, note))):
        parsed = hn.parse(wrapped)
        assert parsed.raw == note and parsed.address == "smdp.example.com"
        assert parsed.transaction_id == TXID and parsed.kind == "pir"
    with pytest.raises(NotForwardable):
        hn.parse(T(0xBF3D, T(0xBF50, b"")))  # a ProvideEimPackageResult is not for an SM-DP+
    with pytest.raises(NotForwardable):
        hn.parse(T(0x30, T(0xBF2F, T(0x80, b"\x01")) + T(0x5F37, bytes(64))))  # no notificationAddress


# ---------------------------------------------------------------- pure helpers
def test_error_encoding_helpers():
    for code in (1, 5, 50, 95, 127):
        assert der_integer(code) == bytes([code])
        assert esipa_error(0xBF39, 0x81, code) == bytes([0xBF, 0x39, 0x03, 0x81, 0x01, code])
    assert der_integer(128) == b"\x00\x80" and der_integer(0) == b"\x00"
    assert ia.error_response(1).hex().upper() == "BF3903810101"
    assert ac.error_response(8).hex().upper() == "BF3B03820108"
    assert gbpp.error_response(95).hex().upper() == "BF3A0381015F"
    assert cs.OK.hex().upper() == "BF4102A000"


def test_cancel_session_request_retagging():
    inner = T(0xA0, T(0x30, T(0x80, TXID) + T(0x81, b"\x01")) + T(0x5F37, bytes(64)))
    req = cs.parse_request(T(0xBF41, T(0x80, TXID) + T(0xA1, inner)))
    assert req.cancel_session_response == T(0xBF41, inner)  # only the outer tag changed
    double = cs.parse_request(T(0xBF41, T(0x80, TXID) + T(0xA1, T(0xBF41, inner))))
    assert double.cancel_session_response == T(0xBF41, inner)


# ---------------------------------------------------------------- fuzzing: never an exception, always an ESipa error
class CountingClient:
    def __init__(self) -> None:
        self.calls = 0

    async def call(self, address: str, function: str, body: dict[str, Any]):
        self.calls += 1
        raise Es9Unreachable(function, "fuzz: no network")


STEPS = [
    ("initiate_authentication", 0xBF39, "initiateAuthenticationErrorEsipa"),
    ("authenticate_client", 0xBF3B, "authenticateClientErrorEsipa"),
    ("get_bound_profile_package", 0xBF3A, "getBoundProfilePackageErrorEsipa"),
    ("cancel_session", 0xBF41, "cancelSessionError"),
]


def fuzz_input(tag: int):
    head = tlv.tag_bytes(tag)
    return st.one_of(
        st.binary(max_size=300),
        st.builds(lambda body: head + body, st.binary(max_size=200)),
        st.builds(lambda body: T(tag, body), st.binary(max_size=200)),
        st.builds(
            lambda a, b: T(tag, T(0x80, a) + b),
            st.binary(min_size=1, max_size=16),
            st.binary(max_size=120),
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_fuzzed_esipa_requests_get_esipa_errors(data):
    client = CountingClient()
    relay = Es9Relay(MemoryRelayStore(), client)  # type: ignore[arg-type]
    method, tag, error_name = data.draw(st.sampled_from(STEPS))
    request = data.draw(fuzz_input(tag))
    answer = await getattr(relay, method)(EID, request)
    name, code = esipa(answer)
    assert name == error_name and isinstance(code, int)


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=200))
def test_fuzzed_notifications_raise_named_errors(raw):
    from rsp.errors import RspError

    with contextlib.suppress(RspError, NotForwardable):
        hn.parse(raw)
