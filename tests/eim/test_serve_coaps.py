"""``eim serve`` with ``[coap] dtls = true`` as a real process: a coaps client with the key ``eim psk set`` printed
gets ``BF4F03020101``; keys set and removed with ``eim psk`` while it runs take effect without a restart."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiocoap
import httpx
import pytest

from rsp.pki import create_lab_pki, lab_eid
from tests.eim.servers import eim_command, json_items, run_cli, start_eim
from tests.services import free_port, require_dtls

EIDS = [lab_eid(i) for i in range(61, 63)]
NO_PACKAGE = bytes.fromhex("BF4F03020101")
INVALID_EID = bytes.fromhex("BF4F03020103")


def get_eim_package_request(eid: str) -> bytes:
    return bytes.fromhex("BF4F125A10" + eid)


async def post(uri: str, payload: bytes, identity: str | None = None, key: bytes | None = None):
    """One request from a fresh aiocoap client; the response or the exception."""
    if identity is None:
        ctx = await aiocoap.Context.create_client_context()
    else:
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        origin = uri.split("/gsma/", 1)[0]
        ctx.client_credentials.load_from_dict(
            {f"{origin}/*": {"dtls": {"psk": key, "client-identity": identity.encode()}}}
        )
    try:
        msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
        return await asyncio.wait_for(ctx.request(msg).response, 15)
    except Exception as exc:
        return exc
    finally:
        await ctx.shutdown()


def psk(*args: str, config=None) -> subprocess.CompletedProcess:
    base = [*eim_command(), "--config", str(config)] if config else [*eim_command()]
    return subprocess.run([*base, "psk", *args], capture_output=True, text=True, timeout=60)


def until(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


def test_eim_serve_answers_coaps_with_keys_from_eim_psk(lab, tmp_path):
    require_dtls()
    keyfile = tmp_path / "coaps.psk"
    r = psk("set", EIDS[0], "--generate", "--file", str(keyfile))
    assert r.returncode == 0, r.stderr
    key0 = bytes.fromhex(r.stdout.strip())
    coap_port, coaps_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    extra = (
        f'[coap]\nenabled = true\nhost = "127.0.0.1"\nport = {coap_port}\ndtls = true\ndtls_port = {coaps_port}\n'
        f'psk_file = "{keyfile}"\n'
    )
    server = start_eim(tmp_path, store_url=f"sqlite:///{tmp_path}/eim.db", lab_pki=lab.root, extra_config=extra)
    coaps = f"coaps://127.0.0.1:{coaps_port}/gsma/rsp2/asn1"
    try:
        for eid in EIDS:
            r = run_cli(server, "euicc", "register", eid, "--association-token", "1")
            assert r.returncode == 0, r.stderr
        answer = asyncio.run(post(coaps, get_eim_package_request(EIDS[0]), EIDS[0], key0))
        assert isinstance(answer, aiocoap.Message), answer
        assert answer.code == aiocoap.CHANGED and answer.payload == NO_PACKAGE
        plain = asyncio.run(post(f"coap://127.0.0.1:{coap_port}/gsma/rsp2/asn1", get_eim_package_request(EIDS[0])))
        assert plain.payload == NO_PACKAGE  # plain CoAP still served next to it
        # the session of EIDS[0] asking for EIDS[1]'s work: invalidEid
        assert asyncio.run(post(coaps, get_eim_package_request(EIDS[1]), EIDS[0], key0)).payload == INVALID_EID

        # a device added while the eIM runs (the file named by the configuration)
        r = psk("set", EIDS[1], "--generate", config=server.config)
        assert r.returncode == 0, r.stderr
        key1 = bytes.fromhex(r.stdout.strip())

        def answered():
            a = asyncio.run(post(coaps, get_eim_package_request(EIDS[1]), EIDS[1], key1))
            return a if isinstance(a, aiocoap.Message) else None

        got = until(answered, "the new key works")
        assert got.payload == NO_PACKAGE

        # a device removed: its handshakes are refused, the other device is still served
        r = psk("remove", EIDS[0], config=server.config)
        assert r.returncode == 0, r.stderr
        until(
            lambda: isinstance(asyncio.run(post(coaps, get_eim_package_request(EIDS[0]), EIDS[0], key0)), Exception),
            "the removed key stops working",
        )
        assert "DTLS handshake with an unknown PSK identity" in server.log_text()
        assert asyncio.run(post(coaps, get_eim_package_request(EIDS[1]), EIDS[1], key1)).payload == NO_PACKAGE

        r = subprocess.run(
            [*eim_command(), "--config", str(server.config), "--json", "psk", "list"], capture_output=True, text=True
        )
        assert r.returncode == 0 and json_items(r.stdout) == [{"eid": EIDS[1]}]
        metrics = httpx.get(server.url + "/metrics").text
        assert 'eim_esipa_requests_total{binding="coap",function="getEimPackage",outcome="ok"}' in metrics
    finally:
        server.stop()
    log = server.log_text()
    assert server.proc.returncode == 0, log[-2000:]
    assert "CoAPS (DTLS PSK) binding listening" in log
    assert key0.hex() not in log and key1.hex() not in log
    problems = [ln for ln in log.splitlines() if '"level": "warning"' in ln or '"level": "error"' in ln]
    # the one warning is the invalidEid answer the test provoked (ESipa error answers are logged at warning)
    expected = [ln for ln in problems if '"ESipa error answer"' in ln and '"code": 3' in ln]
    assert len(expected) == 1 and problems == expected, problems  # no aiocoap noise: close_notify, shutdown


def test_eim_serve_refuses_a_bad_key_file_at_start(lab, tmp_path):
    require_dtls()
    keyfile = tmp_path / "coaps.psk"
    keyfile.write_text(f"{EIDS[0]}:0011\n")
    extra = f'[coap]\nenabled = true\nhost = "127.0.0.1"\nplain = false\ndtls = true\ndtls_port = {free_port()}\n'
    extra += f'psk_file = "{keyfile}"\n'
    with pytest.raises(RuntimeError) as err:
        start_eim(tmp_path, store_url=f"sqlite:///{tmp_path}/eim.db", lab_pki=lab.root, extra_config=extra)
    assert "[coap] psk_file:" in str(err.value) and "line 1: key is 2 bytes, must be 16 bytes" in str(err.value)


def test_eim_serve_without_dtlssocket_says_what_to_install(lab, tmp_path):
    """DTLSSocket missing (a package on PYTHONPATH that fails to import stands in for it): exit 2, the message."""
    fake = tmp_path / "site" / "DTLSSocket"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('DTLSSocket stands absent for this test')\n")
    keyfile = tmp_path / "coaps.psk"
    keyfile.write_text("")
    extra = f'[coap]\nenabled = true\nhost = "127.0.0.1"\nplain = false\ndtls = true\ndtls_port = {free_port()}\n'
    extra += f'psk_file = "{keyfile}"\n'
    with pytest.raises(RuntimeError) as err:
        start_eim(
            tmp_path,
            store_url=f"sqlite:///{tmp_path}/eim.db",
            lab_pki=lab.root,
            extra_config=extra,
            env={"PYTHONPATH": str(tmp_path / "site")},
        )
    assert "exited with 2" in str(err.value)
    assert "eim: serve: [coap] dtls: CoAPS (DTLS) needs the DTLSSocket package" in str(err.value)
