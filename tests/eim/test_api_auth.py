"""Operators, roles, limits and the OpenAPI security scheme of the operator API, in process (the ASGI app that
``eim serve`` runs); hypothesis over the operators file parser, the Host matcher and the new configuration keys.
The same attacks against a real ``eim serve``: tests/eim/test_serve_limits.py."""

from __future__ import annotations

import json
import logging
import os
import stat

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.api import auth
from eim.api.limits import host_allowed
from eim.app import create_app
from eim.config import Config, ConfigError, load_config
from eim.logs import JsonFormatter
from eim.serve import check_operator_auth
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import get_eim_package_request, make_env

EID = lab_eid(21)
CT = {"Content-Type": "application/x-gsma-rsp-asn1"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def write_operators(path, **roles) -> dict[str, str]:
    """One operator per keyword (name=role); returns their tokens."""
    tokens, lines = {}, ["# name:role:hash"]
    for name, role in roles.items():
        tokens[name] = auth.generate_token()
        lines.append(f"{name}:{role}:{auth.hash_token(tokens[name])}")
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return tokens


def make_client(store, lab, cfg: Config, host: str = "eim") -> tuple[httpx.AsyncClient, object]:
    env = make_env(store, lab)
    app = create_app(cfg, store, env.dispatcher, service=env.service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}"), env


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def sqlite_store_url(tmp_path):
    return f"sqlite:///{tmp_path}/eim.db"


@pytest.fixture
async def sqlite_store(sqlite_store_url):
    from eim.store import open_store

    s = open_store(sqlite_store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# ------------------------------------------------------------------------------------------------ roles
async def test_roles_and_the_audit_trail_names_the_authenticated_operator(sqlite_store, lab, tmp_path):
    f = tmp_path / "operators"
    tok = write_operators(f, alice="admin", bob="read-only", carol="operator")
    cfg = Config()
    cfg.api.operators_file = str(f)
    c, _ = make_client(sqlite_store, lab, cfg)
    async with c:
        r = await c.get("/v1/euiccs")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        assert (await c.get("/v1/euiccs", headers=bearer(tok["bob"] + "x"))).status_code == 401
        assert (await c.get("/v1/euiccs", headers={"Authorization": tok["bob"]})).status_code == 401  # no scheme
        # read-only: may read, may not write, and the store is untouched
        assert (await c.get("/v1/euiccs", headers=bearer(tok["bob"]))).status_code == 200
        r = await c.post("/v1/euiccs", json={"eid": EID}, headers=bearer(tok["bob"]))
        assert r.status_code == 403
        assert r.json()["error"] == {
            "code": "forbidden",
            "message": "operator bob has role read-only; POST /v1/euiccs needs operator",
        }
        assert await sqlite_store.get_euicc(EID) is None
        # operator: writes; the audit names carol, whatever X-Operator claims
        r = await c.post("/v1/euiccs", json={"eid": EID}, headers=bearer(tok["carol"]))
        assert r.status_code == 201
        r = await c.post(
            f"/v1/euiccs/{EID}/operations",
            json={"kind": "euicc_data", "params": {}},
            headers={**bearer(tok["carol"]), "X-Operator": "mallory"},
        )
        assert r.status_code == 202
        audit = await sqlite_store.list_audit(operation_id=r.json()["id"], limit=10)
        assert [(a.action, a.who) for a in audit] == [("create", "operator:carol")]
        assert r.json()["operation"]["created_by"] == "operator:carol"
        # admin endpoint
        assert (await c.get("/v1/operators", headers=bearer(tok["carol"]))).status_code == 403
        listed = await c.get("/v1/operators", headers=bearer(tok["alice"]))
        assert listed.json() == {
            "items": [
                {"name": "alice", "role": "admin"},
                {"name": "bob", "role": "read-only"},
                {"name": "carol", "role": "operator"},
            ]
        }
        assert "sha256" not in listed.text
        # metrics and docs need a token (any role) unless made public; /healthz never does
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer(tok["bob"]))).status_code == 200
        assert (await c.get("/docs")).status_code == 401
        assert (await c.get("/openapi.json")).status_code == 401
        assert (await c.get("/healthz")).status_code == 200
        # ESipa is not behind operator tokens
        r = await c.post("/gsma/rsp2/asn1", content=get_eim_package_request(EID), headers=CT)
        assert r.status_code == 200


async def test_legacy_token_is_the_admin_operator_and_public_flags(sqlite_store, lab, tmp_path):
    cfg = Config()
    cfg.api.token = "legacy-token"
    cfg.api.public_metrics = True
    cfg.api.public_docs = True
    c, _ = make_client(sqlite_store, lab, cfg)
    async with c:
        assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/docs")).status_code == 200
        spec = (await c.get("/openapi.json")).json()
        assert (await c.get("/v1/euiccs")).status_code == 401
        r = await c.post("/v1/euiccs", json={"eid": EID}, headers=bearer("legacy-token"))
        assert r.status_code == 201
        assert (await c.get("/v1/operators", headers=bearer("legacy-token"))).json()["items"] == [
            {"name": "admin", "role": "admin"}
        ]
    # the OpenAPI document says how to authenticate, and which role each operation needs
    assert spec["components"]["securitySchemes"]["operatorToken"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    assert spec["security"] == [{"operatorToken": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/v1/batches"]["post"]["x-eim-role"] == "operator"
    assert spec["paths"]["/v1/euiccs"]["get"]["x-eim-role"] == "read-only"
    assert spec["paths"]["/v1/operators"]["get"]["x-eim-role"] == "admin"


async def test_reload_rotates_and_a_broken_file_keeps_the_operators(sqlite_store, lab, tmp_path, caplog):
    f = tmp_path / "operators"
    old = write_operators(f, alice="operator")["alice"]
    cfg = Config()
    cfg.api.operators_file = str(f)
    registry = auth.OperatorRegistry(f)
    env = make_env(sqlite_store, lab)
    app = create_app(cfg, sqlite_store, env.dispatcher, service=env.service, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://eim") as c:
        assert (await c.get("/v1/euiccs", headers=bearer(old))).status_code == 200
        text, replaced = auth.set_operator(
            f.read_text(),
            auth.OperatorEntry("alice", auth.Role.OPERATOR, auth.hash_token(new := auth.generate_token())),
        )
        assert replaced
        auth.write_operators_file(f, text)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert registry.reload()
        assert (await c.get("/v1/euiccs", headers=bearer(old))).status_code == 401
        assert (await c.get("/v1/euiccs", headers=bearer(new))).status_code == 200
        f.write_text(f.read_text() + "mallory:root:sha256:00\n")  # a broken edit by hand
        with caplog.at_level(logging.ERROR, "eim.api.auth"):
            assert not registry.reload()
        error = next(r.error for r in caplog.records if r.name == "eim.api.auth")
        assert "line 3" in error and "role must be one of" in error
        assert (await c.get("/v1/euiccs", headers=bearer(new))).status_code == 200  # the previous operators stay


def test_a_bad_operators_file_stops_the_start(tmp_path, lab):
    f = tmp_path / "operators"
    f.write_text(f"alice:admin:{auth.hash_token('a')}\nbob:admin:{auth.hash_token('a')}\n")
    with pytest.raises(auth.OperatorsFileError, match="line 2: bob has the token of another operator"):
        auth.OperatorRegistry(f)
    with pytest.raises(auth.OperatorsFileError, match="no such file"):
        auth.OperatorRegistry(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ limits
async def test_body_limits_per_route(sqlite_store, lab):
    cfg = Config()
    cfg.api.max_body_bytes = 4096
    cfg.api.max_batch_body_bytes = 300_000
    c, _ = make_client(sqlite_store, lab, cfg)
    async with c:
        big = json.dumps({"eid": EID, "labels": {"x": "y" * 5000}}).encode()
        r = await c.post("/v1/euiccs", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert r.headers["connection"] == "close"

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b"x" * 1000

        r = await c.post("/v1/euiccs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = await c.post("/v1/euiccs", content=b"{}", headers={"content-length": "x1"})
        assert r.status_code == 400
        assert await sqlite_store.get_euicc(EID) is None
        # a batch of 5,000 EIDs fits the batch limit, not the general one
        batch = {"kind": "euicc_data", "params": {}, "eids": [lab_eid(i) for i in range(5000)]}
        r = await c.post("/v1/batches", json=batch)
        assert r.status_code == 202 and r.json()["summary"] == {"refused": 5000}


async def test_host_allowlist(sqlite_store, lab):
    cfg = Config()
    cfg.http.allowed_hosts = ["eim.example.com", "*.eim.example.net"]
    c, _ = make_client(sqlite_store, lab, cfg, host="eim.example.com")
    async with c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/healthz", headers={"Host": "a.eim.example.net:8443"})).status_code == 200
        for evil in ("evil.example", "eim.example.com.evil.example", "eim.example.net", "127.0.0.1", "x:y"):
            r = await c.get("/healthz", headers={"Host": evil})
            assert r.status_code == 400 and r.text == "Host not allowed", evil
        r = await c.post("/gsma/rsp2/asn1", content=get_eim_package_request(EID), headers={**CT, "Host": "evil"})
        assert r.status_code == 400


async def test_one_access_log_line_per_call_names_the_operator(sqlite_store, lab, tmp_path, caplog):
    f = tmp_path / "operators"
    tok = write_operators(f, carol="operator")
    cfg = Config()
    cfg.api.operators_file = str(f)
    c, _ = make_client(sqlite_store, lab, cfg)
    async with c:
        with caplog.at_level(logging.INFO, "eim.api"):
            await c.get("/v1/euiccs", headers=bearer(tok["carol"]))
            await c.get("/v1/euiccs")
    lines = [r for r in caplog.records if r.name == "eim.api"]
    assert len(lines) == 2
    first = json.loads(JsonFormatter().format(lines[0]))
    assert first["operator"] == "carol" and first["status"] == 200 and first["method"] == "GET"
    assert first["path"] == "/v1/euiccs" and first["level"] == "info"
    assert json.loads(JsonFormatter().format(lines[1]))["status"] == 401
    assert "\x1b" not in caplog.text and tok["carol"] not in caplog.text


# ------------------------------------------------------------------------------------------------ exposure
def test_serve_refuses_an_open_api_on_the_network(caplog):
    cfg = Config()
    cfg.http.host = "0.0.0.0"
    with pytest.raises(ConfigError, match="not a loopback address and no operator authentication"):
        check_operator_auth(cfg)
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        cfg.http.host = host
        check_operator_auth(cfg)
    cfg.http.host = "192.0.2.1"
    with caplog.at_level(logging.WARNING, "eim.serve"):
        check_operator_auth(cfg, insecure=True)
    assert "WITHOUT authentication" in caplog.text
    cfg.api.operators_file = "/etc/eim/operators"
    check_operator_auth(cfg)


# ------------------------------------------------------------------------------------------------ hypothesis
LINE = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda n, r, h: f"{n}:{r}:{h}",
        st.text(max_size=12),
        st.sampled_from([*auth.ROLES, "root", "", "Admin"]),
        st.one_of(st.text(max_size=80), st.builds(lambda b: "sha256:" + b.hex(), st.binary(min_size=30, max_size=34))),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINE, max_size=8))
def test_operators_file_parser_on_garbage(lines):
    text = "\n".join(lines)
    try:
        parsed = auth.parse_operators_file(text, "ops")
    except auth.OperatorsFileError as exc:
        assert str(exc).startswith("ops line ")
        for line in lines:  # never repeats a hash
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[2].strip().startswith("sha256:") and len(parts[2].strip()) > 20:
                assert parts[2].strip() not in str(exc)
        return
    for name, entry in parsed.items():
        assert entry.name == name and entry.role in auth.Role
        assert auth.parse_operators_file(auth.format_line(entry), "ops") == {name: entry}


NAMES = st.from_regex(r"[A-Za-z0-9._@+-]{1,64}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(NAMES, st.sampled_from(auth.ROLES), max_size=6), st.data())
def test_edit_round_trip(ops, data):
    text, tokens = "# operators\n", {}
    for name, role in ops.items():
        tokens[name] = auth.generate_token()
        text, replaced = auth.set_operator(
            text, auth.OperatorEntry(name, auth.Role(role), auth.hash_token(tokens[name]))
        )
        assert not replaced
    parsed = auth.parse_operators_file(text)
    assert {n: e.role.value for n, e in parsed.items()} == ops
    if ops:
        gone = data.draw(st.sampled_from(sorted(ops)))
        text, removed = auth.remove_operator(text, gone)
        assert removed and gone not in auth.parse_operators_file(text)
        assert text.startswith("# operators")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.lists(st.sampled_from(["eim.example.com", "*.example.net", "*", "[::1]"])))
def test_host_matcher_never_raises(value, patterns):
    assert host_allowed(value, patterns) in (True, False)
    assert not host_allowed(value, []) and not host_allowed(None, patterns)


KEYS = {
    "http": ["allowed_hosts", "max_connections", "header_timeout_s", "body_timeout_s", "keep_alive_s"],
    "api": [
        "operators_file",
        "public_metrics",
        "public_docs",
        "insecure_no_auth",
        "max_body_bytes",
        "max_batch_body_bytes",
    ],
}
VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(),
    st.booleans(),
    st.lists(st.text(max_size=20), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([(s, k) for s, ks in KEYS.items() for k in ks]), VALUES, st.booleans())
def test_new_config_keys_on_garbage(tmp_path_factory, key, value, via_env):
    section, name = key
    env: dict[str, str] = {}
    path = None
    if via_env:
        env[f"EIM_{section.upper()}_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    try:
        if not via_env:
            path = tmp_path_factory.mktemp("cfg") / "eim.toml"
            path.write_text(f"[{section}]\n{name} = {json.dumps(value)}\n")
        cfg = load_config(path, env=env)
    except ConfigError as exc:
        assert f"[{section}]" in str(exc) or "configuration file" in str(exc)
        return
    h, a = cfg.http, cfg.api
    assert h.max_connections >= 1 and 0 < h.header_timeout_s <= 3600 and 0 < h.body_timeout_s <= 3600
    assert 1024 <= a.max_body_bytes and 1024 <= a.max_batch_body_bytes
    assert all(isinstance(x, str) and x for x in h.allowed_hosts)


def test_garbage_authorization_headers_get_401_and_change_nothing(sqlite_store_url, lab, tmp_path):
    """Random Authorization values (bytes a client may send, near-misses of the real token) on a read and a write:
    401 with a message, never a 5xx, nothing registered; the real token still works afterwards."""
    import asyncio

    from eim.store import open_store

    f = tmp_path / "operators"
    token = write_operators(f, alice="admin")["alice"]
    cfg = Config()
    cfg.api.operators_file = str(f)
    runner = asyncio.Runner()
    try:
        store = open_store(sqlite_store_url)
        runner.run(store.open())
        client, _ = make_client(store, lab, cfg)
        near = st.sampled_from(
            [token[:-1], token + "=", token.upper(), f"Bearer {token[:-1]}", f"Basic {token}", f"Bearer  {token}x"]
        )

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=st.one_of(st.binary(max_size=80), near.map(str.encode)), write=st.booleans())
        def probe(value, write):
            value = value.replace(b"\r", b"").replace(b"\n", b"")
            headers = [(b"authorization", value)]
            if write:
                r = runner.run(client.post("/v1/euiccs", json={"eid": EID}, headers=headers))
            else:
                r = runner.run(client.get("/v1/euiccs", headers=headers))
            assert r.status_code == 401, (value, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized"

        probe()
        assert runner.run(store.get_euicc(EID)) is None
        assert runner.run(client.get("/v1/euiccs", headers=bearer(token))).status_code == 200
        runner.run(client.aclose())
        runner.run(store.close())
    finally:
        runner.close()


# ---------------------------------------------------------------- tokens at their edges, as an attacker sends them
def test_token_length_cap_holds_even_for_a_matching_token():
    """Tokens over 512 characters are never hashed nor compared, even one that would match."""
    at_cap, over = "t" * 512, "t" * 513
    assert auth.OperatorRegistry(legacy_token=at_cap).authenticate(f"Bearer {at_cap}") == auth.Operator(
        "admin", auth.Role.ADMIN
    )
    assert auth.OperatorRegistry(legacy_token=over).authenticate(f"Bearer {over}") is None
    assert auth.OperatorRegistry(legacy_token=over).authenticate(f"Bearer {over}".encode()) is None


def test_the_token_is_everything_after_the_scheme():
    registry = auth.OperatorRegistry(legacy_token="two words")
    assert registry.authenticate("Bearer two words") == auth.Operator(auth.LEGACY_OPERATOR, auth.Role.ADMIN)
    assert registry.authenticate("Bearer words") is None
    assert registry.authenticate("Bearer two") is None
    assert registry.authenticate("Basic two words") is None


def test_tokens_that_do_not_encode_are_refused_not_raised(tmp_path):
    """A str token with an escaped byte (``\\udc80``-``\\udcff``: what bytes decoded with surrogateescape hold)."""
    path = tmp_path / "operators"
    write = write_operators(path, alice="admin")
    registry = auth.OperatorRegistry(path, legacy_token="legacy")
    for token in ("\udcff", "legacy\udcff", write["alice"] + "\udc80"):
        assert registry.authenticate(f"Bearer {token}") is None
    assert auth.hash_token("\udcff").startswith("sha256:") and auth.hash_token("\udcff") != auth.hash_token("\udcfe")


def test_head_needs_only_read_only_and_other_methods_operator():
    assert auth.needed_role("HEAD", "/v1/operations") is auth.Role.READ_ONLY
    assert auth.needed_role("GET", "/v1/operations") is auth.Role.READ_ONLY
    for method in ("POST", "PUT", "PATCH", "DELETE", "head", "get"):
        assert auth.needed_role(method, "/v1/operations") is auth.Role.OPERATOR
    assert auth.needed_role("GET", "/v1/operators") is auth.Role.ADMIN
