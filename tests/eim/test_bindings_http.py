"""ESipa HTTP binding against a real uvicorn server on loopback (curl and httpx as clients)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from eim.bindings import ESIPA_CONTENT_TYPE, ESIPA_PATH, X_ADMIN_PROTOCOL
from eim.bindings.http import EsipaHttpApp, esipa_route
from rsp import asn1
from tests.eim.test_bindings_common import (
    EID,
    EID2,
    NO_PACKAGE,
    REAL_PACKAGE_RESPONSE,
    SpecHandler,
    get_eim_package_request,
    handle_notification,
    large_package_response,
    large_provide_result,
    provide_result,
)
from tests.services import free_port, missing_service

CT = {"Content-Type": ESIPA_CONTENT_TYPE}


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run ``app`` in a real uvicorn server (own thread and loop) on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def handler() -> SpecHandler:
    return SpecHandler()


@pytest.fixture(scope="module")
def base(handler) -> Iterator[str]:
    with serve(EsipaHttpApp(handler, max_body_size=64 * 1024)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as c:
        yield c


def test_curl_get_eim_package_gets_no_package_byte_for_byte(base, tmp_path):
    """The acceptance check: a raw DER GetEimPackageRequest posted by curl gets BF4F03020101 back."""
    if shutil.which("curl") is None:
        missing_service("the curl command", "apt-get install curl")
    req = tmp_path / "req.der"
    req.write_bytes(get_eim_package_request(EID))
    headers = tmp_path / "headers.txt"
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--data-binary",
            f"@{req}",
            "-H",
            f"Content-Type: {ESIPA_CONTENT_TYPE}",
            "-D",
            str(headers),
            f"{base}{ESIPA_PATH}",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    assert out.stdout == NO_PACKAGE == bytes.fromhex("BF4F03020101")
    head = headers.read_text().lower()
    assert head.startswith("http/1.1 200")
    assert f"content-type: {ESIPA_CONTENT_TYPE}" in head
    assert f"x-admin-protocol: {X_ADMIN_PROTOCOL}" in head


def test_handler_bytes_returned_verbatim_and_context(client, handler):
    handler.queue(EID2, REAL_PACKAGE_RESPONSE)
    r = client.post(ESIPA_PATH, content=get_eim_package_request(EID2), headers=CT)
    assert r.status_code == 200
    assert r.content == REAL_PACKAGE_RESPONSE
    message, ctx = handler.calls[-1]
    assert message == get_eim_package_request(EID2)
    assert ctx.binding == "http" and ctx.peer and ctx.peer.startswith("127.0.0.1:") and ctx.eid_hint is None


def test_provide_result_acknowledged(client):
    r = client.post(ESIPA_PATH, content=provide_result(), headers=CT)
    assert r.status_code == 200
    assert r.content == bytes.fromhex("BF5006BF5303800114")  # ack of the real EPR's seqNumber 20


def test_content_type_parameters_are_tolerated(client):
    r = client.post(ESIPA_PATH, content=get_eim_package_request(), headers={"Content-Type": ESIPA_CONTENT_TYPE.upper()})
    assert (r.status_code, r.content) == (200, NO_PACKAGE)


def test_handle_notification_has_no_body(client, handler):
    before = len(handler.notifications)
    r = client.post(ESIPA_PATH, content=handle_notification(), headers=CT)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["x-admin-protocol"] == X_ADMIN_PROTOCOL
    assert handler.notifications[before:] == [handle_notification()]


def test_no_body_status_200_option():
    h = SpecHandler()
    with serve(EsipaHttpApp(h, no_body_status=200)) as url:
        r = httpx.post(url + ESIPA_PATH, content=handle_notification(), headers=CT)
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain", "application/octet-stream"])
def test_wrong_content_type_is_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post(ESIPA_PATH, content=get_eim_package_request(), headers=headers)
    assert r.status_code == 415
    assert ESIPA_CONTENT_TYPE in r.text


def test_garbage_is_400_with_a_message(client):
    r = client.post(ESIPA_PATH, content=b"\x01\x02\x03", headers=CT)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert "EsipaMessageFromIpaToEim" in r.text


def test_empty_body_is_400(client):
    r = client.post(ESIPA_PATH, content=b"", headers=CT)
    assert r.status_code == 400


def test_oversized_body_is_413_declared_and_streamed(client):
    r = client.post(ESIPA_PATH, content=b"\x30" * (64 * 1024 + 1), headers=CT)
    assert r.status_code == 413

    def chunks():
        for _ in range(100):
            yield b"\x00" * 1024

    r = client.post(ESIPA_PATH, content=chunks(), headers=CT)  # chunked: no Content-Length
    assert r.status_code == 413


def test_large_request_and_response(client, handler):
    handler.queue(EID, large_package_response())
    r = client.post(ESIPA_PATH, content=get_eim_package_request(EID), headers=CT)
    assert r.status_code == 200 and r.content == large_package_response()
    r = client.post(ESIPA_PATH, content=large_provide_result(), headers=CT)
    assert r.status_code == 200
    assert asn1.decode("EsipaMessageFromEimToIpa", r.content) == (
        "provideEimPackageResultResponse",
        ("eimAcknowledgements", [77]),
    )


def test_method_and_path(client):
    r = client.get(ESIPA_PATH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/other", content=get_eim_package_request(), headers=CT)
    assert r.status_code == 404


def test_handler_bug_is_500_and_server_keeps_serving():
    class Broken:
        def __init__(self) -> None:
            self.n = 0

        async def handle(self, message, ctx):
            self.n += 1
            if self.n == 1:
                raise RuntimeError("bug")
            return NO_PACKAGE

    with serve(EsipaHttpApp(Broken())) as url:
        assert httpx.post(url + ESIPA_PATH, content=b"\x30\x00", headers=CT).status_code == 500
        r = httpx.post(url + ESIPA_PATH, content=b"\x30\x00", headers=CT)
    assert (r.status_code, r.content) == (200, NO_PACKAGE)


def test_fallback_app_and_starlette_route():
    async def hello(request):
        return PlainTextResponse("rest api")

    rest = Starlette(routes=[Route("/v1/hello", hello)])
    h = SpecHandler()
    with serve(EsipaHttpApp(h, fallback=rest)) as url:
        assert httpx.get(url + "/v1/hello").text == "rest api"
        assert httpx.post(url + ESIPA_PATH, content=get_eim_package_request(), headers=CT).content == NO_PACKAGE
    app = Starlette(routes=[esipa_route(h), Route("/v1/hello", hello)])
    with serve(app) as url:
        assert httpx.get(url + "/v1/hello").text == "rest api"
        r = httpx.post(url + ESIPA_PATH, content=get_eim_package_request(), headers=CT)
        assert (r.status_code, r.content) == (200, NO_PACKAGE)
        assert httpx.post(url + ESIPA_PATH, content=b"junk", headers=CT).status_code == 400
        assert httpx.post(url + ESIPA_PATH, content=b"junk").status_code == 415
        assert httpx.get(url + ESIPA_PATH).status_code == 405


ESIPA_TAGS = [bytes.fromhex(t) for t in ("BF39", "BF3B", "BF3A", "BF41", "BF3D", "BF4E", "BF4F", "BF50", "30", "A0")]
garbage = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda tag, rest: tag + rest, st.sampled_from(ESIPA_TAGS), st.binary(max_size=300)),
    st.builds(
        lambda tag, body: tag + bytes([len(body)]) + body,
        st.sampled_from(ESIPA_TAGS),
        st.binary(max_size=127),
    ),
)


@settings(max_examples=200, deadline=None)
@given(body=garbage)
def test_garbage_gets_an_esipa_answer_or_4xx_and_server_keeps_serving(client, body):
    r = client.post(ESIPA_PATH, content=body, headers=CT)
    assert r.status_code in (200, 204, 400), (r.status_code, r.text)
    if r.status_code == 200:
        asn1.decode("EsipaMessageFromEimToIpa", r.content)
    elif r.status_code == 400:
        assert r.text
    ok = client.post(ESIPA_PATH, content=get_eim_package_request(), headers=CT)
    assert ok.content == NO_PACKAGE
