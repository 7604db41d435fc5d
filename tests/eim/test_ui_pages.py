"""The dashboard pages for the rest of the REST API: registering an eUICC, webhook subscriptions with their
deliveries (failed ones visible, Re-send), the notification outbox, the operators (admin only, never a token or
hash), the system page; a check that every route of the API has its page; hypothesis on the new forms (a 4xx
naming the field, nothing stored)."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.api.paging import encode_cursor
from eim.events.catalog import stale_event
from eim.store import open_store
from rsp.pki import lab_eid
from tests.eim.test_api_notifications import fill
from tests.eim.test_ui import (
    EIDS,
    FIELD,
    TEXT,
    build,
    login,
    operators_config,
    register,
    sqlite_store,
    sync_client,
    ui_lab,
)

NEW_EID = lab_eid(90)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return ui_lab(tmp_path_factory)


@pytest.fixture
async def sqlite(tmp_path):
    async with sqlite_store(tmp_path) as s:
        yield s


@pytest.fixture
def operators(tmp_path):
    cfg, tokens, path = operators_config(tmp_path, alice="operator", grafana="read-only", root="admin")
    cfg.events.allow_loopback = True
    return cfg, tokens, path


def dashboard_of(c):
    app = c._transport.app
    while not hasattr(app, "sessions"):
        app = app.app if hasattr(app, "app") else app.fallback
    return app


async def counts(store) -> tuple[int, int]:
    return len(await store.list_euiccs(limit=10000)), len(await store.list_subscriptions(limit=1000))


# ------------------------------------------------------------------------------------------------ register
async def test_register_an_euicc_through_the_api(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        csrf = await login(c, tokens["alice"])
        assert "Register an eUICC" in (await c.get("/ui/euiccs")).text
        page = await c.get("/ui/euiccs/new")
        assert page.status_code == 200 and 'name="association_token"' in page.text
        form = {
            "csrf": csrf,
            "eid": NEW_EID,
            "eim_id": "",
            "association_token": "7",
            "counter_value": "",
            "trusted_ci": "",
            "labels": "site=berlin\ntier=gold",
        }
        r = await c.post("/ui/euiccs/new", data=form)
        assert r.status_code == 303 and r.headers["location"] == f"/ui/euiccs/{NEW_EID}"
        e = await sqlite.get_euicc(NEW_EID)
        assert e.labels == {"site": "berlin", "tier": "gold"} and e.association_token == 7 and e.counter_value == 0
        (entry,) = [a for a in await sqlite.list_audit(eid=NEW_EID) if a.action == "register"]
        assert entry.who == "operator:alice"
        again = await c.post("/ui/euiccs/new", data={**form, "labels": "site=paris"})
        assert again.status_code == 200 and "already registered" in again.text
        assert (await sqlite.get_euicc(NEW_EID)).labels["site"] == "berlin"  # nothing changed
        for field, value in (("eid", "8904"), ("association_token", "x"), ("trusted_ci", "zz"), ("labels", "a")):
            r = await c.post("/ui/euiccs/new", data={**form, "eid": lab_eid(91), field: value})
            assert 400 <= r.status_code < 500 and FIELD.search(r.text).group(1) == field, (field, r.text[:300])
        assert await sqlite.get_euicc(lab_eid(91)) is None
        c.cookies.clear()
        ro = await login(c, tokens["grafana"])
        assert "Register an eUICC" not in (await c.get("/ui/euiccs")).text
        r = await c.post("/ui/euiccs/new", data={**form, "csrf": ro, "eid": lab_eid(91)})
        assert r.status_code == 403 and await sqlite.get_euicc(lab_eid(91)) is None


# ------------------------------------------------------------------------------------------------ webhooks
async def test_subscriptions_create_show_failed_delivery_resend_and_delete(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        csrf = await login(c, tokens["alice"])
        r = await c.post(
            "/ui/subscriptions/new",
            data={"csrf": csrf, "url": "https://hooks.example.com/eim", "events": ["euicc.stale"], "description": "x"},
        )
        assert r.status_code == 201 and "shown only this once" in r.text
        (sub,) = await sqlite.list_subscriptions()
        assert sub.secret in r.text and sub.created_by == "operator:alice" and sub.events == ("euicc.stale",)
        listing = await c.get("/ui/subscriptions")
        assert sub.url in listing.text and sub.secret not in listing.text
        # a delivery that failed for good
        await register(c, tokens["alice"])
        await sqlite.scan_stale(stale_event, now=1000.0, default_interval_s=50.0)
        await sqlite.update_euicc(EIDS[0], last_contact=960.0)
        assert await sqlite.scan_stale(stale_event, now=1020.0, default_interval_s=50.0) == 1
        (d,) = await sqlite.claim_deliveries(now=2000.0, lease_s=30, owner="w")
        await sqlite.delivery_outcome(d.id, owner="w", now=2001.0, status="failed", error="HTTP 500", http_status=500)
        page = await c.get(f"/ui/subscriptions/{sub.id}", params={"status": "failed"})
        assert page.status_code == 200 and "HTTP 500" in page.text and "st-failed" in page.text
        assert f"/deliveries/{d.id}/retry" in page.text and sub.secret not in page.text
        bad = await c.get(f"/ui/subscriptions/{sub.id}", params={"status": "bogus"})
        assert bad.status_code == 422 and FIELD.search(bad.text).group(1) == "status"
        r = await c.post(f"/ui/subscriptions/{sub.id}/deliveries/{d.id}/retry", data={"csrf": csrf})
        assert r.status_code == 303
        (again,) = await sqlite.list_deliveries(sub.id)
        assert (again.status, again.attempts) == ("pending", 0)
        assert [a.who for a in await sqlite.list_audit(limit=1000) if a.action == "redeliver"] == ["operator:alice"]
        r = await c.post(f"/ui/subscriptions/{sub.id}/deliveries/999/retry", data={"csrf": csrf})
        assert r.status_code == 404
        # read-only: sees the deliveries, no buttons, cannot act
        c.cookies.clear()
        ro = await login(c, tokens["grafana"])
        page = await c.get(f"/ui/subscriptions/{sub.id}")
        assert "HTTP 500" in page.text  # the delivery, with its last error
        assert "Re-send" not in page.text and "Remove the subscription" not in page.text
        assert 'name="url"' not in (await c.get("/ui/subscriptions")).text
        assert (await c.post(f"/ui/subscriptions/{sub.id}/delete", data={"csrf": ro})).status_code == 403
        assert await sqlite.get_subscription(sub.id) is not None
        c.cookies.clear()
        csrf = await login(c, tokens["alice"])
        r = await c.post(f"/ui/subscriptions/{sub.id}/delete", data={"csrf": csrf})
        assert r.status_code == 303 and await sqlite.get_subscription(sub.id) is None
        assert (await c.get(f"/ui/subscriptions/{sub.id}")).status_code == 404


# ------------------------------------------------------------------------------------------------ outbox, operators
async def test_notification_outbox_lists_pending_and_failed(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await login(c, tokens["grafana"])  # read-only may look
        assert "the outbox is empty" in (await c.get("/ui/notifications")).text
        await fill(sqlite)
        page = await c.get("/ui/notifications")
        assert page.status_code == 200 and "Failed 8.1/6.1" in page.text and "smdp.example.com" in page.text
        failed = await c.get("/ui/notifications", params={"status": "failed"})
        assert "Failed 8.1/6.1" in failed.text and "ES9+ handleNotification: down" not in failed.text
        for query, field in (({"status": "bogus"}, "status"), ({"cursor": encode_cursor("euiccs", "x")}, "cursor")):
            r = await c.get("/ui/notifications", params=query)
            assert 400 <= r.status_code < 500 and FIELD.search(r.text).group(1) == field


async def test_operators_page_is_for_admins_and_never_shows_a_token(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        for name in ("alice", "grafana"):
            c.cookies.clear()
            await login(c, tokens[name])
            r = await c.get("/ui/operators")
            assert r.status_code == 403 and f"operator {name} has role" in r.text
            assert 'href="/ui/operators"' not in (await c.get("/ui/")).text
        c.cookies.clear()
        await login(c, tokens["root"])
        assert 'href="/ui/operators"' in (await c.get("/ui/")).text
        r = await c.get("/ui/operators")
        assert r.status_code == 200
        assert re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", r.text) == [
            ("alice", "operator"),
            ("grafana", "read-only"),
            ("root", "admin"),
        ]
        text = r.text + (await c.get("/ui/system")).text
        assert "sha256" not in text and not any(t in text for t in tokens.values())


async def test_system_page_shows_health_and_metrics(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await login(c, tokens["grafana"])
        r = await c.get("/ui/system")
        assert r.status_code == 200 and "store sqlite" in r.text
        version = await sqlite.schema_version()
        assert f"<tr><th>store schema version</th><td>{version}</td></tr>" in r.text


def test_every_api_route_has_a_dashboard_page(tmp_path, lab, operators):
    """If the API gains a route, this fails until the dashboard has a page for it (or says why not)."""
    from fastapi.routing import APIRoute

    covered = {
        ("POST", "/v1/euiccs"): "/ui/euiccs/new",
        ("GET", "/v1/euiccs"): "/ui/euiccs",
        ("GET", "/v1/euiccs/{eid}"): f"/ui/euiccs/{EIDS[0]}",
        ("GET", "/v1/euiccs/{eid}/audit"): f"/ui/euiccs/{EIDS[0]}",
        ("PATCH", "/v1/euiccs/{eid}"): f"/ui/euiccs/{EIDS[0]}/edit",
        ("DELETE", "/v1/euiccs/{eid}"): f"/ui/euiccs/{EIDS[0]}/delete",
        ("POST", "/v1/euiccs/{eid}/operations"): "/ui/operations/new",
        ("GET", "/v1/operations/{op_id}"): "/ui/operations/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01",
        ("GET", "/v1/operations"): "/ui/operations",
        ("POST", "/v1/operations/{op_id}/cancel"): "/ui/operations/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01/cancel",
        ("GET", "/v1/notifications"): "/ui/notifications",
        ("GET", "/metrics"): "/ui/system",
        ("GET", "/v1/operators"): "/ui/operators",
        ("GET", "/healthz"): "/ui/system",
        ("GET", "/v1/fleet"): "/ui/",
        ("POST", "/v1/batches"): "/ui/batches/new",
        ("GET", "/v1/batches"): "/ui/batches",
        ("GET", "/v1/batches/{batch_id}"): "/ui/batches/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01",
        ("POST", "/v1/batches/{batch_id}/cancel"): "/ui/batches/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01/cancel",
        ("POST", "/v1/subscriptions"): "/ui/subscriptions/new",
        ("GET", "/v1/subscriptions"): "/ui/subscriptions",
        ("GET", "/v1/subscriptions/{sub_id}"): "/ui/subscriptions/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01",
        ("DELETE", "/v1/subscriptions/{sub_id}"): "/ui/subscriptions/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01/delete",
        ("GET", "/v1/subscriptions/{sub_id}/deliveries"): "/ui/subscriptions/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01",
        ("POST", "/v1/subscriptions/{sub_id}/deliveries/{delivery_id}/retry"): (
            "/ui/subscriptions/0b0e7d36-9c2e-4b4e-8f6a-2f1f2d1c0a01/deliveries/1/retry"
        ),
    }
    # the API's own documentation: linked from /ui/system (the pages are the API's, served by it)
    docs = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    cfg, _, _ = operators
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    asyncio.run(store.open())
    try:
        c = build(store, lab, cfg)
        dash = dashboard_of(c)
        routes = {
            (m, r.path)
            for r in dash.api.app.routes
            if isinstance(r, APIRoute) and not r.path.startswith("/docs") and r.path not in docs
            for m in r.methods
            if m != "HEAD"
        }
        assert routes == set(covered), routes ^ set(covered)
        for (method, _), page in covered.items():
            want = "GET" if method == "GET" and not page.endswith(("/cancel", "/delete", "/retry", "/edit")) else None
            kinds = {m for m, pattern, _h in dash._routes if pattern.match(page)}
            assert kinds, page
            if want:
                assert "GET" in kinds, page
    finally:
        asyncio.run(store.close())


# ------------------------------------------------------------------------------------------------ hypothesis
FORMS = {
    "/ui/euiccs/new": {
        "eid": st.one_of(TEXT, st.just(""), st.just(NEW_EID), st.just("89" * 16)),
        "eim_id": st.one_of(st.just(""), TEXT, st.just("x" * 200)),
        "association_token": st.one_of(st.just(""), TEXT, st.just("1e99"), st.just("-1"), st.just(str(2**31))),
        "counter_value": st.one_of(st.just(""), TEXT, st.just("-1"), st.just("1.5")),
        "trusted_ci": st.one_of(st.just(""), TEXT, st.just("F54172BDF98A95D65CBEB88A38A1C11D800A85C3")),
        "labels": st.one_of(st.just(""), TEXT, st.just("=x"), st.just("k" * 70 + "=v")),
    },
    "/ui/subscriptions/new": {
        "url": st.one_of(
            TEXT,
            st.just("http://hooks.example.com/"),
            st.just("https://169.254.169.254/"),
            st.just("https://u:p@hooks.example.com/"),
            st.just("https://" + "a" * 3000),
        ),
        "events": st.lists(st.one_of(TEXT, st.just("operation.done")), max_size=3),
        "description": st.one_of(st.just(""), TEXT, st.just("d" * 300)),
    },
}


def test_malformed_new_forms_get_a_4xx_naming_the_field_and_store_nothing(tmp_path, lab, operators):
    cfg, tokens, _ = operators
    with sync_client(tmp_path, lab, cfg) as (runner, store, c):
        csrf = runner.run(login(c, tokens["alice"]))

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), path=st.sampled_from(sorted(FORMS)))
        def probe(data, path):
            form = {k: data.draw(s, label=k) for k, s in FORMS[path].items()}
            before = runner.run(counts(store))
            r = runner.run(c.post(path, data={**form, "csrf": csrf}))
            if r.status_code in (200, 201, 303):  # it happened to be valid
                return
            assert 400 <= r.status_code < 500, (path, form, r.status_code, r.text[:500])
            found = FIELD.search(r.text)
            assert found and found.group(1) in FORMS[path], (path, form, r.text[:800])
            assert runner.run(counts(store)) == before

        probe()
        sub = runner.run(
            c.post(
                "/ui/subscriptions/new",
                data={"csrf": csrf, "url": "https://hooks.example.com/x", "events": "operation.done"},
            )
        )
        assert sub.status_code == 201
        (s,) = runner.run(store.list_subscriptions())
        searches = {
            "/ui/notifications": {"status": st.one_of(TEXT, st.just("failed")), "cursor": TEXT, "bogus": TEXT},
            f"/ui/subscriptions/{s.id}": {"status": st.one_of(TEXT, st.just("failed")), "cursor": TEXT},
            "/ui/subscriptions": {"cursor": TEXT},
        }

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), path=st.sampled_from(sorted(searches)))
        def search(data, path):
            query = {k: data.draw(v, label=k) for k, v in searches[path].items() if data.draw(st.booleans())}
            r = runner.run(c.get(path, params=query))
            assert r.status_code == 200 or 400 <= r.status_code < 500, (path, query, r.text[:500])
            if r.status_code >= 400:
                found = FIELD.search(r.text)
                assert found and found.group(1) in searches[path], (path, query, r.text[:800])

        search()
        assert runner.run(c.get("/ui/euiccs/new")).status_code == 200  # still serving
