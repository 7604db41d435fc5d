"""The fleet half of the operator API on both stores: label filters, unknown query parameters, PATCH / DELETE of an
eUICC, batches by labels / per-EID rows / CSV, batch list and cancel, cursor paging, GET /v1/fleet and the fleet
gauges, the local Swagger UI; and hypothesis garbage on each new endpoint (a 4xx naming the field, nothing
stored)."""

from __future__ import annotations

import asyncio
import json
import time
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
from tests.eim.helpers import make_env
from tests.eim.test_api_auth import bearer, write_operators

TOKEN = "fleet-operator-token"
EIDS = [lab_eid(40 + i) for i in range(6)]
AC = "1$smdp.example.com$MATCH-{}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS[:1])


def build(store, lab, cfg: Config | None = None, token: str | None = TOKEN):
    env = make_env(store, lab)
    metrics = Metrics()
    env.service.metrics = metrics
    cfg = cfg or Config()
    if token:
        cfg.api.token = token
    cfg.fleet.poll_interval_s = 3600.0
    metrics.stale_after_s = 3600.0
    app = create_app(cfg, store, env.dispatcher, service=env.service, metrics=metrics)
    headers = bearer(token) if token else {}
    return env, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://eim", headers=headers)


@pytest.fixture
async def api(store, lab):
    env, client = build(store, lab)
    async with client:
        yield env, client


async def register(c, labels_of: dict[str, dict[str, str]]) -> None:
    for eid, labels in labels_of.items():
        r = await c.post("/v1/euiccs", json={"eid": eid, "labels": labels})
        assert r.status_code == 201, r.text


async def counts(store) -> tuple[int, int, int]:
    """(eUICCs, operations, batches) in the store."""
    euiccs = await store.find_euiccs(limit=1000)
    ops = await store.list_operations(limit=10000)
    batches = await store.list_batches(limit=1000)
    return len(euiccs), len(ops), len(batches)


# ------------------------------------------------------------------------------------------------ label filters
async def test_label_filter_ands_and_unknown_parameters_are_refused(api):
    _, c = api
    await register(
        c,
        {
            EIDS[0]: {"site": "berlin", "tier": "gold"},
            EIDS[1]: {"site": "berlin"},
            EIDS[2]: {"site": "paris", "tier": "gold"},
        },
    )
    r = await c.get("/v1/euiccs", params={"label": "site=berlin"})
    assert [e["eid"] for e in r.json()["items"]] == [EIDS[0], EIDS[1]]  # the old API returned all three
    r = await c.get("/v1/euiccs", params=[("label", "site=berlin"), ("label", "tier=gold")])
    assert [e["eid"] for e in r.json()["items"]] == [EIDS[0]]
    assert (await c.get("/v1/euiccs", params={"label": "site=rome"})).json()["items"] == []
    for bad in ("site", "=x", "a b=c", "k" * 65 + "=v"):
        r = await c.get("/v1/euiccs", params={"label": bad})
        assert r.status_code == 400 and r.json()["error"]["field"] == "label", (bad, r.text)
    # a misspelt filter is never ignored, on any list
    for path in (
        "/v1/euiccs",
        "/v1/operations",
        "/v1/batches",
        "/v1/notifications",
        "/v1/subscriptions",
        "/v1/fleet",
        f"/v1/euiccs/{EIDS[0]}",
    ):
        r = await c.get(path, params={"lable": "site=berlin"})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["field"] == "lable" and "unknown query parameter" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------------ PATCH / DELETE
async def test_patch_is_a_merge_patch_and_is_audited(api, store):
    _, c = api
    await register(c, {EIDS[0]: {"site": "berlin", "tier": "gold"}})
    r = await c.patch(
        f"/v1/euiccs/{EIDS[0]}", json={"labels": {"site": "paris", "tier": None, "row": "7"}, "note": "rack 3"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == {"site": "paris", "row": "7"} and r.json()["note"] == "rack 3"
    stored = await store.get_euicc(EIDS[0])
    assert stored.labels == {"site": "paris", "row": "7"} and stored.note == "rack 3"
    r = await c.patch(f"/v1/euiccs/{EIDS[0]}", json={"poll_interval_s": 600})
    assert r.json()["poll_interval_s"] == 600 and r.json()["note"] == "rack 3"  # left-out fields stay
    assert (await c.patch(f"/v1/euiccs/{EIDS[0]}", json={"note": None})).json()["note"] is None
    audit = await store.list_audit(eid=EIDS[0])
    assert [a.action for a in audit].count("update") == 3 and audit[-1].who == "operator:admin"
    for body, field in (
        ({"poll_interval_s": 5}, "poll_interval_s"),
        ({"poll_interval_s": 1e12}, "poll_interval_s"),
        ({"labels": {"k": 5}}, "labels"),
        ({"labels": {"": "x"}}, "labels"),
        ({"note": "a\x00b"}, "note"),
        ({}, "body"),
    ):
        r = await c.patch(f"/v1/euiccs/{EIDS[0]}", json=body)
        assert r.status_code in (400, 422), (body, r.text)
        assert field in (r.json()["error"].get("field") or r.json()["error"]["message"]), (body, r.text)
    assert (await store.get_euicc(EIDS[0])).labels == {"site": "paris", "row": "7"}
    assert (await c.patch(f"/v1/euiccs/{EIDS[1]}", json={"note": "x"})).status_code == 404


async def test_delete_refused_while_open_unless_forced(api, store):
    _, c = api
    await register(c, {EIDS[0]: {}, EIDS[1]: {}})
    op = (await c.post(f"/v1/euiccs/{EIDS[0]}/operations", json={"kind": "euicc_data"})).json()["operation"]
    r = await c.delete(f"/v1/euiccs/{EIDS[0]}")
    assert r.status_code == 409 and "1 open operation" in r.json()["error"]["message"]
    assert await store.get_euicc(EIDS[0]) is not None
    assert (await store.get_operation(op["id"])).status.value == "queued"
    r = await c.delete(f"/v1/euiccs/{EIDS[0]}", params={"force": "true"})
    assert r.status_code == 200 and r.json()["cancelled"] == [op["id"]]
    assert await store.get_euicc(EIDS[0]) is None and await store.get_operation(op["id"]) is None
    actions = [a.action for a in await store.list_audit(eid=EIDS[0])]
    assert actions[-2:] == ["cancelled", "remove"]  # the history stays in the audit trail
    assert (await c.get(f"/v1/euiccs/{EIDS[0]}")).status_code == 404
    assert (await c.delete(f"/v1/euiccs/{EIDS[0]}")).status_code == 404
    assert (await c.delete(f"/v1/euiccs/{EIDS[1]}")).status_code == 200  # nothing open: no force needed
    assert (await c.delete(f"/v1/euiccs/{EIDS[2]}", params={"force": "maybe"})).status_code == 422


async def test_roles_on_the_new_endpoints(store, lab, tmp_path):
    f = tmp_path / "operators"
    tokens = write_operators(f, admin="admin", ops="operator", viewer="read-only")
    cfg = Config()
    cfg.api.operators_file = str(f)
    _, c = build(store, lab, cfg, token=None)
    async with c:
        r = await c.post("/v1/euiccs", json={"eid": EIDS[0]}, headers=bearer(tokens["ops"]))
        assert r.status_code == 201
        viewer = bearer(tokens["viewer"])
        for method, path, body in (
            ("PATCH", f"/v1/euiccs/{EIDS[0]}", {"note": "x"}),
            ("DELETE", f"/v1/euiccs/{EIDS[0]}", None),
            ("POST", "/v1/batches", {"kind": "euicc_data", "eids": [EIDS[0]]}),
            ("POST", "/v1/batches/00000000-0000-4000-8000-000000000000/cancel", None),
            ("POST", "/v1/subscriptions", {"url": "https://hooks.example.com/x", "events": ["operation.done"]}),
        ):
            r = await c.request(method, path, json=body, headers=viewer)
            assert r.status_code == 403, (method, path, r.text)
        for path in ("/v1/fleet", "/v1/batches", "/v1/subscriptions", "/v1/euiccs"):
            assert (await c.get(path, headers=viewer)).status_code == 200, path
        assert (await c.patch(f"/v1/euiccs/{EIDS[0]}", json={"note": "x"}, headers=bearer(tokens["ops"]))).is_success
        assert (await store.get_euicc(EIDS[0])).note == "x"


# ------------------------------------------------------------------------------------------------ batches
async def test_batch_by_labels_rows_and_csv(api, store):
    _, c = api
    await register(c, {EIDS[0]: {"site": "berlin"}, EIDS[1]: {"site": "berlin"}, EIDS[2]: {"site": "paris"}})
    r = await c.post("/v1/batches", json={"kind": "euicc_data", "labels": {"site": "berlin"}})
    assert r.status_code == 202, r.text
    assert [it["eid"] for it in r.json()["items"]] == [EIDS[0], EIDS[1]]
    rows = [{"eid": EIDS[i], "params": {"activationCode": AC.format(i)}} for i in range(3)]
    r = await c.post("/v1/batches", json={"kind": "download", "params": {"mode": "indirect"}, "rows": rows})
    assert r.status_code == 202, r.text
    codes = {}
    for it in r.json()["items"]:
        codes[it["eid"]] = (await store.get_operation(it["operation_id"])).params["activationCode"]
    assert codes == {EIDS[i]: AC.format(i) for i in range(3)}  # one activation code per EID
    csv_body = "eid,activation_code\r\n" + "".join(f"{EIDS[i]},{AC.format(10 + i)}\r\n" for i in range(2))
    r = await c.post("/v1/batches", content=csv_body, headers={"content-type": "text/csv"})
    assert r.status_code == 202, r.text
    ops = [await store.get_operation(it["operation_id"]) for it in r.json()["items"]]
    assert [(o.eid, o.kind.value, o.params["activationCode"]) for o in ops] == [
        (EIDS[0], "download", AC.format(10)),
        (EIDS[1], "download", AC.format(11)),
    ]


@pytest.mark.parametrize(
    ("send", "field"),
    [
        (
            {
                "json": {
                    "kind": "download",
                    "rows": [
                        {"eid": EIDS[0], "params": {"activationCode": AC.format(1)}},
                        {"eid": EIDS[1], "params": {"activationCode": "nope"}},
                    ],
                }
            },
            "rows[1].activationCode",
        ),
        (
            {
                "json": {
                    "kind": "download",
                    "rows": [{"eid": EIDS[0], "params": {"activationCode": "1$169.254.169.254$X"}}],
                }
            },
            "rows[0].activationCode",
        ),
        (
            {"content": "eid,activation_code\n" + EIDS[0] + "," + AC.format(1) + "\n" + EIDS[1] + ",garbage\n"},
            "rows[1].activationCode",
        ),
        ({"content": "eid,activation_code\n" + EIDS[0] + "\n"}, "line 2"),
        ({"content": "eid,activation_code,pin\n"}, "header"),
        ({"content": "activation_code\n" + AC.format(1) + "\n"}, "header"),
        ({"content": "eid,activation_code\n"}, "body"),
        ({"content": b"eid,activation_code\n\xff\xfe,x\n"}, "body"),
        ({"json": {"kind": "euicc_data", "labels": {"site": "nowhere"}}}, "labels"),
        ({"json": {"kind": "euicc_data", "labels": {"site": "x"}, "eids": [EIDS[0]]}}, "eids"),
        ({"json": {"kind": "euicc_data"}}, "eids"),
    ],
)
async def test_a_bad_row_names_row_and_field_and_stores_nothing(api, store, send, field):
    _, c = api
    await register(c, {EIDS[0]: {}, EIDS[1]: {}})
    before = await counts(store)
    if "content" in send:
        r = await c.post("/v1/batches", content=send["content"], headers={"content-type": "text/csv"})
    else:
        r = await c.post("/v1/batches", json=send["json"])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"].startswith(field), r.text
    assert await counts(store) == before


async def test_batch_list_pages_and_cancel_counts(api, store):
    _, c = api
    await register(c, {e: {} for e in EIDS[:3]})
    ids = []
    for _ in range(3):
        r = await c.post("/v1/batches", json={"kind": "euicc_data", "eids": [*EIDS[:3], "1234"]})
        ids.append(r.json()["id"])
    first = (await c.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in first["items"]] == ids[:2] and first["next"]
    assert first["items"][0]["items"] == 4 and first["items"][0]["refused"] == 1
    rest = (await c.get("/v1/batches", params={"limit": 2, "cursor": first["next"]})).json()
    assert [b["id"] for b in rest["items"]] == ids[2:] and rest["next"] is None
    bad = await c.get("/v1/batches", params={"cursor": first["next"][:-2] + "xx"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "cursor"
    other = (await c.get("/v1/euiccs", params={"limit": 1})).json()["next"]  # a cursor of another list
    assert (await c.get("/v1/batches", params={"cursor": other})).status_code == 400
    # one operation of the first batch ended already: cancel counts the rest
    batch = (await c.get(f"/v1/batches/{ids[0]}")).json()
    await c.post(f"/v1/operations/{batch['items'][0]['operation_id']}/cancel")
    r = await c.post(f"/v1/batches/{ids[0]}/cancel")
    assert r.status_code == 200 and r.json()["cancelled"] == 2 and r.json()["by_status"] == {"cancelled": 3}
    statuses = [(await store.get_operation(it["operation_id"])).status.value for it in batch["items"][:3]]
    assert statuses == ["cancelled"] * 3
    assert (await c.post(f"/v1/batches/{ids[0]}/cancel")).json()["cancelled"] == 0
    assert (await c.get(f"/v1/batches/{ids[1]}")).json()["summary"] == {"queued": 3, "refused": 1}
    assert (await c.post("/v1/batches/00000000-0000-4000-8000-000000000000/cancel")).status_code == 404


async def test_operations_page_through_with_cursors(api):
    _, c = api
    await register(c, {EIDS[0]: {}})
    made = [
        (await c.post(f"/v1/euiccs/{EIDS[0]}/operations", json={"kind": "euicc_data"})).json()["id"] for _ in range(7)
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = (await c.get("/v1/operations", params=params)).json()
        seen += [o["id"] for o in r["items"]]
        cursor = r["next"]
        if not cursor:
            break
        assert r["next_url"].startswith("/v1/operations?limit=3&cursor=")
    assert seen == made


# ------------------------------------------------------------------------------------------------ fleet
async def test_fleet_summary_and_gauges(api, store):
    _env, c = api
    await register(c, {e: {} for e in EIDS})
    now = time.time()
    await store.update_euicc(EIDS[0], last_contact=now - 60, binding="http")  # seen 1 h
    await store.update_euicc(EIDS[1], last_contact=now - 7200, binding="mqtt")  # seen 24 h, stale (1 h default)
    await store.update_euicc(EIDS[2], last_contact=now - 7200, binding="mqtt")  # its own interval: 3 h
    await c.patch(f"/v1/euiccs/{EIDS[2]}", json={"poll_interval_s": 3 * 3600})
    await store.update_euicc(EIDS[3], last_contact=now - 2 * 86400, binding="coap")  # stale
    await c.patch(f"/v1/euiccs/{EIDS[4]}", json={"poll_interval_s": 60})  # never seen: not stale
    await c.post(f"/v1/euiccs/{EIDS[0]}/operations", json={"kind": "euicc_data"})
    listed = [{"iccid": "8900000000000000001", "state": "enabled", "smdpAddress": "smdp.example.com"}]
    await store.update_euicc(EIDS[5], sgp32_version="1.0", profiles=listed)  # as learned from its IPA
    e5 = (await c.get(f"/v1/euiccs/{EIDS[5]}")).json()
    assert (e5["enabled_iccid"], e5["enabled_smdp"]) == ("8900000000000000001", "smdp.example.com")
    r = await c.get("/v1/fleet")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["euiccs"] == {
        "registered": 6,
        "never_seen": 2,
        "seen_1h": 1,
        "seen_24h": 3,
        "stale": 2,
        "by_binding": {"http": 1, "mqtt": 2, "coap": 1, "none": 2},
        "by_sgp32_version": {"1.2": 5, "1.0": 1},
        "by_enabled_smdp": {"smdp.example.com": 1, "unknown": 5},
    }
    assert f["operations"]["by_status"] == {"queued": 1} and f["stale_after_s"] == 3600.0
    assert f["operations"]["ended_24h"] == {} and f["operations"]["failure_rate_24h"] is None
    assert len(f["hourly"]) == 24 and f["hourly"][-1]["hour"] >= int(now // 3600) * 3600
    assert sum(h["created"] for h in f["hourly"]) == 1 and all(h["polls"] == 0 for h in f["hourly"])
    text = (await c.get("/metrics")).text
    for line in (
        'eim_fleet_euiccs{state="registered"} 6.0',
        'eim_fleet_euiccs{state="seen_1h"} 1.0',
        'eim_fleet_euiccs{state="seen_24h"} 3.0',
        'eim_fleet_euiccs{state="stale"} 2.0',
        'eim_operations{kind="euicc_data",status="queued"} 1.0',
        'eim_fleet_euiccs_by_sgp32_version{version="1.2"} 5.0',
        'eim_fleet_euiccs_by_sgp32_version{version="1.0"} 1.0',
        'eim_fleet_euiccs_by_enabled_smdp{smdp="smdp.example.com"} 1.0',
        'eim_fleet_euiccs_by_enabled_smdp{smdp="unknown"} 5.0',
        "eim_operations_failure_ratio_24h NaN",
    ):
        assert line in text, line
    assert not any(e in text for e in EIDS)  # never labelled by EID


async def test_docs_are_served_from_the_package(api):
    _, c = api
    html = (await c.get("/docs")).text
    assert "/docs/static/swagger-ui-bundle.js" in html and "/docs/static/swagger-ui.css" in html
    assert "cdn" not in html.lower() and "https://" not in html  # nothing loaded from elsewhere
    js = await c.get("/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and b"SwaggerUIBundle" in js.content
    assert (await c.get("/docs/static/swagger-ui.css")).status_code == 200
    spec = (await c.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    roles = {
        ("patch", "/v1/euiccs/{eid}"): "operator",
        ("delete", "/v1/euiccs/{eid}"): "operator",
        ("get", "/v1/fleet"): "read-only",
        ("post", "/v1/batches/{batch_id}/cancel"): "operator",
        ("get", "/v1/subscriptions/{sub_id}/deliveries"): "read-only",
        ("post", "/v1/subscriptions"): "operator",
    }
    for (method, path), role in roles.items():
        assert spec["paths"][path][method]["x-eim-role"] == role, (method, path)
    assert "text/csv" in spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    names = set(spec["components"]["schemas"])
    dangling = {r for r in refs(spec) if r.removeprefix("#/components/schemas/") not in names}
    assert not dangling  # every schema the document points to is in it
    assert "rows" in spec["components"]["schemas"]["BatchIn"]["properties"]


async def test_docs_public_flag_covers_the_assets(store, lab):
    cfg = Config()
    cfg.api.public_docs = True
    _, c = build(store, lab, cfg)
    async with c:
        c.headers.pop("Authorization")
        for path in ("/docs", "/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/openapi.json"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/v1/fleet")).status_code == 401


# ------------------------------------------------------------------------------------------------ garbage
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["labels", "note", "poll_interval_s", "kind", "params", "eids", "rows", "url", "events"])
BODIES = st.one_of(JSONISH, st.dictionaries(FIELDS, JSONISH, max_size=4))
NEW_ENDPOINTS = [
    ("PATCH", "/v1/euiccs/{x}"),
    ("DELETE", "/v1/euiccs/{x}"),
    ("GET", "/v1/fleet"),
    ("GET", "/v1/batches"),
    ("POST", "/v1/batches"),
    ("POST", "/v1/batches/{x}/cancel"),
    ("GET", "/v1/euiccs"),
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/{x}"),
    ("DELETE", "/v1/subscriptions/{x}"),
    ("GET", "/v1/subscriptions/{x}/deliveries"),
    ("POST", "/v1/subscriptions/{x}/deliveries/{x}/retry"),
    ("GET", "/v1/batches/{x}"),  # ?limit=&cursor= (a page of items)
]


def test_garbage_on_the_new_endpoints_gets_a_4xx_and_stores_nothing(store_url, lab):
    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        _env, client = build(store, lab)
        runner.run(client.post("/v1/euiccs", json={"eid": EIDS[0], "labels": {"site": "berlin"}}))
        op = runner.run(client.post(f"/v1/euiccs/{EIDS[0]}/operations", json={"kind": "euicc_data"})).json()
        before = runner.run(store.get_euicc(EIDS[0]))

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            endpoint=st.sampled_from(NEW_ENDPOINTS),
            segment=st.one_of(TEXT, st.just(EIDS[0]), st.just("00000000-0000-4000-8000-000000000000")),
            body=BODIES,
            query=st.dictionaries(
                st.sampled_from(["label", "limit", "cursor", "status", "kind", "validity_s", "x", "state"]),
                TEXT,
                max_size=3,
            ),
            csv=st.one_of(st.none(), TEXT.map(lambda t: "eid,activation_code\n" + t)),
        )
        def probe(endpoint, segment, body, query, csv):
            method, template = endpoint
            path = template.replace("{x}", quote(segment, safe="") or "x")
            kw: dict = {"params": query}
            if method in ("POST", "PATCH"):
                if csv is not None and path == "/v1/batches":
                    kw.update(content=csv.encode(), headers={"content-type": "text/csv"})
                else:
                    kw.update(
                        content=json.dumps(body, allow_nan=True).encode(), headers={"content-type": "application/json"}
                    )
            r = runner.run(client.request(method, path, **kw))
            assert r.status_code < 500, (method, path, body, r.text)
            if r.status_code >= 400:
                err = r.json()["error"]
                assert err["message"]
                if r.status_code == 400:
                    assert err.get("field"), r.text  # a 400 names the field
            # nothing a refused request sent was stored: the eUICC and its open operation are as they were
            after = runner.run(store.get_euicc(EIDS[0]))
            assert after is not None and after.counter_value == before.counter_value
            assert runner.run(store.get_operation(op["id"])).status.value == "queued"
            assert runner.run(store.list_batches(limit=10)) == []
            assert runner.run(store.list_subscriptions(limit=10)) == []

        probe()
        runner.run(client.aclose())
        runner.run(store.close())
    finally:
        runner.close()


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
    | st.lists(st.lists(TEXT, max_size=4).map(",".join), max_size=5).map(
        lambda rows: "eid,activation_code\n" + "\n".join(rows)
    )
)
def test_csv_parser_names_a_field_or_returns_one_parameter_set_per_eid(text):
    from eim.api.batches import parse_csv
    from eim.packages.common import ParamError

    try:
        eids, rows = parse_csv(text)
    except ParamError as exc:
        assert exc.field and exc.reason
        return
    assert eids and len(eids) == len(rows) and all(e for e in eids)
    assert all(set(r) <= {"activationCode", "mode"} for r in rows)
