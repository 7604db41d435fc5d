"""Attacks on a real ``eim serve`` (uvicorn on httptools, as in production): a 100 MB body, slow clients, too many
connections, a foreign Host header, a read-only operator writing, a token rotated while the server runs, a forged
X-Operator, and configurations that must not start (an open API off loopback, the shipped example without its
operators file)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from eim.config import load_config
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.servers import EimServer, eim_command, json_items, run_cli, start_eim
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
EID = lab_eid(51)
MB = 1024 * 1024
SLOW = {"EIM_HTTP_HEADER_TIMEOUT_S": "1.5", "EIM_HTTP_BODY_TIMEOUT_S": "1.5"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def serve(tmp: Path, lab, env: dict[str, str] | None = None, name: str = "eim") -> EimServer:
    return start_eim(tmp, store_url=f"sqlite:///{tmp}/{name}.db", lab_pki=lab.root, name=name, env=env)


def add_operator(path: Path, name: str, role: str) -> str:
    r = run_cli(None, "operator", "add", name, "--role", role, "--file", str(path))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def post_huge(port: int, token: str, total: int, chunked: bool) -> tuple[bytes, int]:
    """POST /v1/batches with a ``total``-byte body, streamed 1 MB at a time until the server answers or closes.
    Returns (what the server sent, bytes of body sent)."""
    head = (
        "POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n"
        + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n")
        + "\r\n"
    ).encode()
    chunk = b"[" * MB
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0
    try:
        s.sendall(head)
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered (or closed)
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked and sent >= total:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection on us
    answer = b""
    try:
        while data := s.recv(65536):
            answer += data
    except OSError:
        pass
    s.close()
    return answer, sent


# ------------------------------------------------------------------------------------------------ body size
def test_100mb_bodies_get_413_and_memory_stays_bounded(lab, tmp_path):
    ops = tmp_path / "operators"
    token = add_operator(ops, "alice", "admin")
    server = serve(tmp_path, lab, {"EIM_API_OPERATORS_FILE": str(ops)})
    try:
        httpx.get(server.url + "/v1/euiccs", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        before = peak_rss_kb(server.proc.pid)

        async def four(chunked: bool):
            return await asyncio.gather(
                *(asyncio.to_thread(post_huge, server.port, token, 100 * MB, chunked) for _ in range(4))
            )

        declared = asyncio.run(four(False))
        streamed = asyncio.run(four(True))
        grown_mb = (peak_rss_kb(server.proc.pid) - before) / 1024
        for answer, _sent in declared:  # Content-Length over the limit: answered before any body byte is read
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert b'"code":"body_too_large"' in answer and b"connection: close" in answer
        for answer, sent in streamed:  # chunked: cut as soon as the count passes the limit
            assert answer == b"" or answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert sent < 100 * MB
        assert grown_mb < 40, f"the server's peak RSS grew by {grown_mb:.0f} MB"
        # still serving
        r = httpx.get(server.url + "/v1/euiccs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        server.stop()
    assert server.proc.returncode == 0


# ------------------------------------------------------------------------------------------------ slow clients
async def slow_client(port: int, message: bytes, interval: float = 0.3) -> tuple[int, bytes]:
    """Send ``message`` one byte every ``interval`` seconds until the server closes. (bytes sent, answer)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read())  # until EOF
    sent = 0
    try:
        for i in range(len(message)):
            if answer.done():
                break
            writer.write(message[i : i + 1])
            await writer.drain()
            sent += 1
            await asyncio.wait([answer], timeout=interval)
        got = await asyncio.wait_for(answer, 10)
    except (ConnectionError, TimeoutError):
        got = answer.result() if answer.done() and not answer.exception() else b""
    writer.close()
    return sent, got


async def idle_client(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def test_slow_clients_are_cut_off(lab, tmp_path):
    server = serve(tmp_path, lab, SLOW)
    headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris/1.0 (one byte a time)\r\n\r\n"
    body_head = (
        b"POST /v1/euiccs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    try:

        async def attack():
            slow_headers = [slow_client(server.port, headers) for _ in range(30)]
            idle = [idle_client(server.port) for _ in range(30)]

            async def slow_body():
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(body_head)
                await writer.drain()
                sent, got = await slow_client_on(reader, writer, b'{"eid": "' + b"8" * 190 + b'"}')
                return sent, got

            async def slow_second_request():  # keep-alive: one good request, then the next one drips
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                first = head + await reader.readexactly(length)
                return first, await slow_client_on(reader, writer, headers)

            return await asyncio.gather(
                asyncio.gather(*slow_headers), asyncio.gather(*idle), slow_body(), slow_second_request()
            )

        async def slow_client_on(reader, writer, body):
            answer = asyncio.create_task(reader.read())
            sent = 0
            try:
                for i in range(len(body)):
                    if answer.done():
                        break
                    writer.write(body[i : i + 1])
                    await writer.drain()
                    sent += 1
                    await asyncio.wait([answer], timeout=0.3)
                got = await asyncio.wait_for(answer, 10)
            except ConnectionError:
                got = b""
            writer.close()
            return sent, got

        slow_headers, idle, (body_sent, body_answer), (first, (second_sent, second)) = asyncio.run(attack())
        assert first.startswith(b"HTTP/1.1 200 ") and second_sent < len(headers)
        assert second.startswith(b"HTTP/1.1 408 "), second
        for sent, got in slow_headers:
            assert sent < len(headers)  # cut before the headers were complete
            assert got.startswith(b"HTTP/1.1 408 ") or got == b"", got
        assert all(got.startswith(b"HTTP/1.1 408 ") for got in idle)  # never sent a byte: cut too
        assert body_sent < 200 and body_answer.startswith(b"HTTP/1.1 408 "), body_answer
        assert httpx.get(server.url + "/healthz").status_code == 200  # and the server still serves
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_too_many_connections_are_refused(lab, tmp_path):
    server = serve(tmp_path, lab, {"EIM_HTTP_MAX_CONNECTIONS": "4", "EIM_HTTP_HEADER_TIMEOUT_S": "60"})
    try:

        async def flood():
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            refused = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            for _, w in held:
                w.close()
                await w.wait_closed()
            return refused

        refused = asyncio.run(flood())
        assert refused.startswith(b"HTTP/1.1 503 ") and refused.endswith(b"too many connections"), refused
        for _ in range(50):  # the held connections are gone once the server has seen them close
            try:
                if httpx.get(server.url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the server did not take connections again")
    finally:
        server.stop()


def test_foreign_host_header_gets_400(lab, tmp_path):
    server = serve(tmp_path, lab, {"EIM_HTTP_ALLOWED_HOSTS": "eim.example.com,127.0.0.1"})
    try:
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert httpx.get(server.url + "/healthz", headers={"Host": "eim.example.com:8443"}).status_code == 200
        r = httpx.get(server.url + "/v1/euiccs", headers={"Host": "attacker.example"})
        assert r.status_code == 400 and r.text == "Host not allowed"
        r = httpx.post(
            server.esipa,
            content=bytes.fromhex("BF4F125A10" + EID),
            headers={"Host": "attacker.example", "Content-Type": "application/x-gsma-rsp-asn1"},
        )
        assert r.status_code == 400
    finally:
        server.stop()


def test_a_forwarded_for_header_does_not_move_a_device_into_the_trusted_networks(lab, tmp_path):
    """Security: the device policy judges the TCP peer. With loopback outside ``[devices] trusted_networks``, an
    unauthenticated poll from 127.0.0.1 that claims a trusted address in X-Forwarded-For (or Forwarded, or
    X-Real-IP) is refused like the same poll without the header, and a poll from an address in the networks is not
    what it gets (the attack: any process on the eIM's host, or a proxy passing such a header through)."""
    from eim.esipa import codec

    server = serve(tmp_path, lab, {"EIM_DEVICES_TRUSTED_NETWORKS": "10.0.0.0/8"})
    try:
        body = bytes.fromhex("BF4F125A10" + EID)
        ct = {"Content-Type": "application/x-gsma-rsp-asn1"}
        refused = codec.undefined_error(0xBF4F)
        assert httpx.post(server.esipa, content=body, headers=ct).content == refused
        for forged in (
            {"X-Forwarded-For": "10.1.2.3"},
            {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"},
            {"Forwarded": "for=10.1.2.3"},
            {"X-Real-IP": "10.1.2.3"},
        ):
            r = httpx.post(server.esipa, content=body, headers={**ct, **forged})
            assert (r.status_code, r.content) == (200, refused), forged
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ operators
def test_operators_rotate_without_restart_and_the_audit_names_them(lab, tmp_path):
    ops = tmp_path / "operators"
    alice = add_operator(ops, "alice", "admin")
    assert os.stat(ops).st_mode & 0o777 == 0o600
    server = serve(tmp_path, lab, {"EIM_API_OPERATORS_FILE": str(ops)})
    url = server.url

    def get(path: str, token: str | None) -> int:
        return httpx.get(url + path, headers={"Authorization": f"Bearer {token}"} if token else {}).status_code

    def until(predicate) -> None:
        for _ in range(100):
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError("the running server did not pick up the operators file")

    try:
        assert get("/metrics", None) == 401 and get("/v1/euiccs", None) == 401
        assert get("/metrics", alice) == 200
        # a read-only operator, added while the server runs: reads, cannot write
        grafana = add_operator(ops, "grafana", "read-only")
        until(lambda: get("/v1/euiccs", grafana) == 200)
        r = httpx.post(url + "/v1/euiccs", json={"eid": EID}, headers={"Authorization": f"Bearer {grafana}"})
        assert r.status_code == 403 and "grafana has role read-only" in r.json()["error"]["message"]
        # the audit names the authenticated operator, not what X-Operator says
        h = {"Authorization": f"Bearer {alice}", "X-Operator": "bob"}
        assert httpx.post(url + "/v1/euiccs", json={"eid": EID}, headers=h).status_code == 201
        op = httpx.post(url + f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data", "params": {}}, headers=h)
        shown = httpx.get(url + f"/v1/operations/{op.json()['id']}", headers=h).json()
        assert [(a["action"], a["who"]) for a in shown["audit"]] == [("create", "operator:alice")]
        # rotation: the old token stops working, the new one works, no restart
        r = run_cli(None, "operator", "rotate", "alice", "--file", str(ops))
        assert r.returncode == 0, r.stderr
        new = r.stdout.strip()
        assert new != alice and new.startswith("eim_")
        until(lambda: get("/v1/euiccs", alice) == 401)
        assert get("/v1/euiccs", new) == 200
        r = run_cli(None, "operator", "remove", "grafana", "--file", str(ops))
        assert r.returncode == 0
        until(lambda: get("/v1/euiccs", grafana) == 401)
        listed = run_cli(None, "--json", "operator", "list", "--file", str(ops))
        assert json_items(listed.stdout) == [{"name": "alice", "role": "admin"}]
        assert new not in ops.read_text() and alice not in server.log_text() and new not in server.log_text()
        access = [json.loads(ln) for ln in server.log_text().splitlines() if '"logger": "eim.api"' in ln]
        assert any(a["operator"] == "alice" and a["status"] == 201 and a["method"] == "POST" for a in access)
        assert any(a["operator"] is None and a["status"] == 401 for a in access)
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_operator_cli_errors(tmp_path):
    ops = tmp_path / "operators"
    r = run_cli(None, "operator", "add", "bad:name", "--role", "admin", "--file", str(ops))
    assert r.returncode == 2 and "operator name must be" in r.stderr
    r = run_cli(None, "operator", "rotate", "nobody", "--file", str(ops))
    assert r.returncode == 1 and "no such file" in r.stderr
    add_operator(ops, "alice", "operator")
    r = run_cli(None, "operator", "add", "alice", "--role", "admin", "--file", str(ops))
    assert r.returncode == 1 and "already in" in r.stderr
    r = run_cli(None, "operator", "remove", "bob", "--file", str(ops))
    assert r.returncode == 1 and "bob is not in" in r.stderr
    ops.write_text(ops.read_text() + "broken line\n")
    r = run_cli(None, "operator", "list", "--file", str(ops))
    assert r.returncode == 1 and "line 2" in r.stderr


# ------------------------------------------------------------------------------------------------ start-up checks
def run_serve(config: Path | None, *extra: str, env: dict[str, str], wait: float = 30) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EIM_")}
    full.update(env)
    args = [*eim_command(), *(["--config", str(config)] if config else []), "serve", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def test_open_api_off_loopback_refuses_to_start(lab, tmp_path):
    port = free_port()
    env = {
        "EIM_HTTP_HOST": "0.0.0.0",
        "EIM_HTTP_PORT": str(port),
        "EIM_EIM_LAB_PKI": str(lab.root),
        "EIM_EIM_DATA_DIR": str(tmp_path / "data"),
        "EIM_RELAY_ENABLED": "false",
    }
    proc = run_serve(None, env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "is not a loopback address and no operator authentication is configured" in err
    assert "--insecure-no-operator-auth" in err
    assert not (tmp_path / "data").exists()  # refused before anything was created
    proc = run_serve(None, "--insecure-no-operator-auth", env=env)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/euiccs", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("did not start with --insecure-no-operator-auth")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert err.count("WITHOUT authentication") == 1


def test_shipped_example_config_passes_the_checklist_and_starts_only_with_its_operators(lab, tmp_path):
    example = ROOT / "deploy" / "eim.example.toml"
    cfg = load_config(example, env={})
    # the production checklist
    assert cfg.http.host == "0.0.0.0" and cfg.api.operators_file and not cfg.api.token
    assert cfg.http.allowed_hosts and "*" not in cfg.http.allowed_hosts
    assert cfg.http.tls_cert and cfg.http.tls_key
    assert not (cfg.api.public_metrics or cfg.api.public_docs or cfg.api.insecure_no_auth)
    assert cfg.http.header_timeout_s <= 30 and cfg.http.max_connections <= 10000
    # devices prove who they are (docs/security.md): nobody is served unauthenticated, not even from loopback
    assert cfg.devices.trusted_networks == [] and not cfg.devices.allow_unauthenticated
    assert cfg.devices.client_ca or cfg.devices.secret_file
    assert not cfg.relay.allow_private_addresses
    # as shipped, on a host where the operators file was never created: exit 2 naming the file
    port = free_port()
    env = {
        "EIM_HTTP_PORT": str(port),
        "EIM_HTTP_TLS_CERT": "",
        "EIM_HTTP_TLS_KEY": "",
        "EIM_EIM_SIGNING_KEY": "",
        "EIM_EIM_SIGNING_CERT": "",
        "EIM_EIM_LAB_PKI": str(lab.root),
        "EIM_EIM_TRUSTED_CI": "",
        "EIM_EIM_DATA_DIR": str(tmp_path / "data"),
        "EIM_STORE_URL": f"sqlite:///{tmp_path}/eim.db",
        "EIM_RELAY_CA_FILES": "",
        "EIM_DEVICES_CLIENT_CA": "",  # needs the HTTPS stripped above
        "EIM_DEVICES_SECRET_FILE": "",
    }
    if not Path(cfg.api.operators_file).exists():
        proc = run_serve(example, env=env)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and f"[api] operators_file: {cfg.api.operators_file}: no such file" in err
    # with its operators file: starts, and holds to its allowlist and its operators
    ops = tmp_path / "operators"
    token = add_operator(ops, "alice", "admin")
    proc = run_serve(example, env={**env, "EIM_API_OPERATORS_FILE": str(ops)})
    host = {"Host": "eim.example.com"}
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", headers=host, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            proc.terminate()
            raise AssertionError(proc.communicate(timeout=30)[1][-3000:])
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v1/euiccs", headers={"Host": "evil.example"}).status_code == 400
        assert httpx.get(base + "/v1/euiccs", headers=host).status_code == 401
        assert httpx.get(base + "/metrics", headers=host).status_code == 401
        ok = httpx.get(base + "/v1/euiccs", headers={**host, "Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
