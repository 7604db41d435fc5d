"""The operator REST API on both stores: status codes, messages, per-item batch results, cancel, auth, metrics,
OpenAPI; and hypothesis garbage on every endpoint (4xx, never 5xx, the store keeps its data)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.app import create_app
from eim.config import Config
from eim.metrics import Metrics
from eim.store import open_store
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import get_eim_package_request, make_env

EID, EID2, EID3 = lab_eid(11), lab_eid(12), lab_eid(13)
TOKEN = "s3cret-operator-token"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=[EID])


def build(store, lab, token=TOKEN):
    env = make_env(store, lab)
    metrics = Metrics()
    env.service.metrics = metrics
    env.dispatcher.metrics = metrics
    env.rp.metrics = metrics
    cfg = Config()
    cfg.api.token = token or ""
    app = create_app(cfg, store, env.dispatcher, service=env.service, metrics=metrics)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://eim",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    return env, client


@pytest.fixture
async def api(store, lab):
    env, client = build(store, lab)
    async with client:
        yield env, client


async def test_register_list_show(api):
    _env, c = api
    r = await c.post("/v1/euiccs", json={"eid": EID, "association_token": 7, "labels": {"site": "berlin"}})
    assert r.status_code == 201 and r.headers["location"] == f"/v1/euiccs/{EID}"
    assert r.json()["created"] is True and r.json()["euicc"]["association_token"] == 7
    again = await c.post("/v1/euiccs", json={"eid": EID, "association_token": 9})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["euicc"]["association_token"] == 7  # registration does not overwrite
    await c.post("/v1/euiccs", json={"eid": EID2})
    listed = (await c.get("/v1/euiccs")).json()
    assert [e["eid"] for e in listed["items"]] == [EID, EID2] and listed["next"] is None
    page = (await c.get("/v1/euiccs", params={"limit": 1})).json()
    assert [e["eid"] for e in page["items"]] == [EID] and page["next"]  # an opaque cursor
    rest = (await c.get("/v1/euiccs", params={"limit": 1, "cursor": page["next"]})).json()
    assert [e["eid"] for e in rest["items"]] == [EID2]
    assert page["next_url"] == f"/v1/euiccs?limit=1&cursor={page['next']}"
    shown = (await c.get(f"/v1/euiccs/{EID}")).json()
    assert shown["labels"] == {"site": "berlin"} and shown["certificate_known"] is False
    assert (await c.get(f"/v1/euiccs/{EID3}")).status_code == 404


async def test_validation_messages(api):
    _, c = api
    r = await c.post("/v1/euiccs", json={"eid": "1234"})
    assert r.status_code == 400 and "eid: must be 32 decimal digits" in r.json()["error"]["message"]
    bad_check = EID[:-1] + str((int(EID[-1]) + 1) % 10)
    r = await c.post("/v1/euiccs", json={"eid": bad_check})
    assert r.status_code == 400 and "check digits" in r.json()["error"]["message"]
    r = await c.post("/v1/euiccs", json={"eid": EID, "counter_value": -1})
    assert r.status_code == 422 and "counter_value" in r.json()["error"]["message"]
    r = await c.post("/v1/euiccs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    await c.post("/v1/euiccs", json={"eid": EID})
    r = await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "psmo", "params": {"psmos": [{"enable": {}}]}})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "invalid_parameter",
        "message": "psmos[0].enable.iccid: is required",
        "field": "psmos[0].enable.iccid",
    }
    r = await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "teleport", "params": {}})
    assert r.status_code == 422 and "kind" in r.json()["error"]["message"]
    r = await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "download", "params": {"activationCode": "2$x$y"}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "activationCode"
    r = await c.post(f"/v1/euiccs/{EID2}/operations", json={"kind": "psmo", "params": {"psmos": [{"getRAT": {}}]}})
    assert r.status_code == 404 and "not registered" in r.json()["error"]["message"]


async def test_auth(store, lab):
    _, c = build(store, lab)
    async with c:
        r = await c.get("/v1/euiccs", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "bearer token" in r.json()["error"]["message"]
        assert (await c.get("/v1/euiccs", headers={"Authorization": ""})).status_code == 401
        assert (await c.get("/metrics", headers={"Authorization": ""})).status_code == 401  # public_metrics = false
        assert (await c.get("/openapi.json", headers={"Authorization": ""})).status_code == 401
        assert (await c.get("/healthz", headers={"Authorization": ""})).status_code == 200
    _, open_client = build(store, lab, token=None)
    async with open_client:
        assert (await open_client.get("/v1/euiccs")).status_code == 200


async def test_operations_lifecycle_and_audit(api):
    env, c = api
    await c.post("/v1/euiccs", json={"eid": EID})
    r = await c.post(
        f"/v1/euiccs/{EID}/operations",
        json={"kind": "download", "params": {"activationCode": "1$smdp.example.com$ABC-123"}, "validity_s": 600},
        headers={"X-Operator": "alice"},
    )
    assert r.status_code == 202
    op_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/operations/{op_id}"
    op = (await c.get(f"/v1/operations/{op_id}")).json()
    assert op["status"] == "queued" and op["params"]["mode"] == "indirect"  # nothing known: the configured default
    assert op["params"]["smdpAddress"] == "smdp.example.com"
    # the legacy [api] token is the operator "admin"; the caller's X-Operator header is not trusted
    assert [(a["action"], a["who"]) for a in op["audit"]] == [("create", "operator:admin")]
    # hand it out over ESipa, then list by status
    answer = await env.handle(get_eim_package_request(EID))
    assert answer[:2] == b"\xbf\x4f" and b"smdp.example.com" in answer
    listed = (await c.get("/v1/operations", params={"eid": EID, "status": "in_progress"})).json()
    assert [o["id"] for o in listed["items"]] == [op_id]
    assert (await c.get("/v1/operations", params={"status": "done"})).json()["items"] == []
    cancelled = await c.post(f"/v1/operations/{op_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await c.post(f"/v1/operations/{op_id}/cancel")
    assert again.status_code == 200  # cancelling a cancelled operation is idempotent
    # after cancel nothing is handed out
    assert await env.handle(get_eim_package_request(EID)) == bytes.fromhex("BF4F03020101")
    assert (await c.get("/v1/operations/not-a-uuid")).status_code == 404
    assert (await c.post("/v1/operations/00000000-0000-0000-0000-000000000000/cancel")).status_code == 404


async def test_cancel_finished_operation_is_a_conflict(api, store):
    _env, c = api
    await c.post("/v1/euiccs", json={"eid": EID})
    op_id = (await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data", "params": {}})).json()["id"]
    await c.post(f"/v1/operations/{op_id}/cancel")
    r = await c.post(f"/v1/operations/{op_id}/cancel")
    assert r.status_code == 200
    # expire a second one, then cancel it: 409 naming the state
    op2 = await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data", "params": {}, "validity_s": 1})
    op2_id = op2.json()["id"]
    await store.expire_operations(10**12)
    r = await c.post(f"/v1/operations/{op2_id}/cancel")
    assert r.status_code == 409 and "already expired" in r.json()["error"]["message"]


async def test_batches_with_per_item_results(api):
    _, c = api
    for e in (EID, EID2):
        await c.post("/v1/euiccs", json={"eid": e})
    r = await c.post(
        "/v1/batches",
        json={"kind": "euicc_data", "params": {"tags": ["ipaCapabilities"]}, "eids": [EID, EID2, EID3, "12", EID]},
    )
    assert r.status_code == 202
    b = r.json()
    assert [(i["eid"], i["status"]) for i in b["items"]] == [
        (EID, "queued"),
        (EID2, "queued"),
        (EID3, "refused"),
        ("12", "refused"),
        (EID, "refused"),
    ]
    assert b["items"][2]["error"] == f"eUICC {EID3} is not registered"
    assert b["items"][3]["error"].startswith("must be 32 decimal digits")
    assert b["items"][4]["error"] == "duplicate EID in this batch"
    assert b["summary"] == {"queued": 2, "refused": 3}
    shown = (await c.get(f"/v1/batches/{b['id']}")).json()
    assert shown["items"] == b["items"]
    ops = (await c.get("/v1/operations", params={"batch_id": b["id"]})).json()["items"]
    assert sorted(o["eid"] for o in ops) == sorted([EID, EID2])
    r = await c.post("/v1/batches", json={"kind": "euicc_data", "params": {"tags": ["nope"]}, "eids": [EID]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "tags"
    assert (await c.get("/v1/batches/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_metrics_and_openapi(api):
    env, c = api
    await c.post("/v1/euiccs", json={"eid": EID})
    await c.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data", "params": {}})
    await env.handle(get_eim_package_request(EID))
    text = (await c.get("/metrics")).text
    assert 'eim_operations{kind="euicc_data",status="in_progress"} 1.0' in text
    assert 'eim_operations_created_total{kind="euicc_data"} 1.0' in text
    assert 'eim_esipa_requests_total{binding="http",function="getEimPackage",outcome="ok"} 1.0' in text
    assert 'eim_packages_handed_out_total{again="false",kind="euicc_data"} 1.0' in text
    assert EID not in text  # no EID labels, ever
    spec = (await c.get("/openapi.json")).json()
    assert {
        "/v1/euiccs",
        "/v1/euiccs/{eid}",
        "/v1/euiccs/{eid}/operations",
        "/v1/operations",
        "/v1/operations/{op_id}",
        "/v1/operations/{op_id}/cancel",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/metrics",
    } <= set(spec["paths"])
    assert (await c.get("/healthz")).json()["status"] == "ok"


# ------------------------------------------------------------------------------------------------ hypothesis
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "eid",
        "kind",
        "params",
        "validity_s",
        "not_before",
        "eids",
        "counter_value",
        "association_token",
        "labels",
        "eim_id",
        "trusted_ci",
        "psmos",
        "ecos",
        "tags",
        "activationCode",
        "smds",
        "defaultSmdp",
        "mode",
    ]
)
BODIES = st.one_of(
    JSONISH,
    st.dictionaries(FIELDS, JSONISH, max_size=6),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["psmo", "eco", "download", "euicc_data"]),
            "params": st.dictionaries(FIELDS, JSONISH, max_size=4),
        }
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("psmo"),
            "params": st.fixed_dictionaries(
                {
                    "psmos": st.lists(
                        st.dictionaries(
                            st.sampled_from(
                                [
                                    "enable",
                                    "disable",
                                    "delete",
                                    "listProfileInfo",
                                    "getRAT",
                                    "configureImmediateEnable",
                                    "setDefaultDpAddress",
                                    "setFallbackAttribute",
                                ]
                            ),
                            st.dictionaries(
                                FIELDS | st.sampled_from(["iccid", "rollback", "address"]), JSONISH, max_size=3
                            ),
                            min_size=1,
                            max_size=1,
                        ),
                        max_size=3,
                    )
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("eco"),
            "params": st.fixed_dictionaries(
                {
                    "ecos": st.lists(
                        st.dictionaries(
                            st.sampled_from(["addEim", "deleteEim", "updateEim", "listEim"]),
                            st.dictionaries(
                                st.sampled_from(
                                    [
                                        "eimId",
                                        "eimFqdn",
                                        "counterValue",
                                        "associationToken",
                                        "eimPublicKey",
                                        "euiccCiPKId",
                                        "eimIdType",
                                        "eimSupportedProtocol",
                                    ]
                                ),
                                JSONISH,
                                max_size=4,
                            ),
                            min_size=1,
                            max_size=1,
                        ),
                        max_size=3,
                    )
                }
            ),
        }
    ),
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SEGMENTS = st.one_of(TEXT, st.just(EID), st.just("00000000-0000-0000-0000-000000000000"))
ENDPOINTS = [
    ("POST", "/v1/euiccs"),
    ("GET", "/v1/euiccs/{x}"),
    ("GET", "/v1/euiccs"),
    ("POST", "/v1/euiccs/{x}/operations"),
    ("GET", "/v1/operations/{x}"),
    ("GET", "/v1/operations"),
    ("POST", "/v1/operations/{x}/cancel"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/{x}"),
    ("GET", "/v1/operators"),
    ("GET", "/v1/euiccs/{x}/audit"),
]


def test_garbage_on_every_endpoint_gets_4xx_and_loses_nothing(store_url, lab):
    """Every endpoint, random JSON bodies, path segments and query strings: never a 5xx, and the registry and the
    queued operation created before are still there afterwards."""
    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        _env, client = build(store, lab)
        r = runner.run(client.post("/v1/euiccs", json={"eid": EID, "association_token": 3}))
        assert r.status_code == 201
        op = runner.run(client.post(f"/v1/euiccs/{EID}/operations", json={"kind": "euicc_data", "params": {}}))
        op_id = op.json()["id"]
        before = runner.run(store.get_euicc(EID))

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            endpoint=st.sampled_from(ENDPOINTS),
            segment=SEGMENTS,
            body=BODIES,
            query=st.dictionaries(
                st.sampled_from(["eid", "status", "kind", "batch_id", "limit", "cursor", "label", "order"]),
                st.one_of(TEXT, st.sampled_from(["asc", "desc"])),
                max_size=3,
            ),
            raw=st.one_of(st.none(), st.binary(max_size=64)),
        )
        def probe(endpoint, segment, body, query, raw):
            method, template = endpoint
            path = template.replace("{x}", quote(segment, safe="") or "x")
            kw = {"params": query}
            if method == "POST":
                if raw is not None:
                    kw["content"] = raw
                    kw["headers"] = {"content-type": "application/json"}
                else:
                    kw["content"] = json.dumps(body, allow_nan=True).encode()
                    kw["headers"] = {"content-type": "application/json"}
            resp = runner.run(client.request(method, path, **kw))
            assert resp.status_code < 500, (method, path, body, resp.text)
            if resp.status_code >= 400:
                assert resp.json()["error"]["message"]

        probe()
        after = runner.run(store.get_euicc(EID))
        assert (after.eid, after.association_token, after.counter_value) == (
            before.eid,
            before.association_token,
            before.counter_value,
        )
        kept = runner.run(store.get_operation(op_id))
        assert kept is not None and kept.kind.value == "euicc_data"
        runner.run(client.aclose())
        runner.run(store.close())
    finally:
        runner.close()
