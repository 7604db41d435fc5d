"""The dashboard (eim.ui) over HTTP in-process: sessions and login, CSRF and origin checks, roles, what each page
shows, forms going through the REST API's validation (hypothesis: malformed form data gets a 4xx naming the field
and nothing is stored), the fleet overview rendering keys it does not know. The real-browser tests are in
tests/e2e/test_dashboard.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.app import create_app
from eim.config import Config
from eim.store import open_store
from eim.ui.pages import fleet
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import make_env
from tests.eim.test_api_auth import write_operators

EIDS = [lab_eid(70 + i) for i in range(4)]
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')
FIELD = re.compile(r'class="error" role="alert" data-field="([^"]*)"')


def ui_lab(tmp_path_factory):
    """The dashboard tests' lab PKI (one nist curve, the first of EIDS): for a module-scoped ``lab`` fixture."""
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS[:1])


@contextlib.asynccontextmanager
async def sqlite_store(tmp_path) -> AsyncIterator[Any]:
    """An open SQLite store under ``tmp_path``, closed on exit."""
    s = open_store(f"sqlite:///{tmp_path}/eim.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return ui_lab(tmp_path_factory)


def build(store, lab, cfg: Config, base: str = "http://eim") -> httpx.AsyncClient:
    env = make_env(store, lab)
    app = create_app(cfg, store, env.dispatcher, service=env.service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


@pytest.fixture
async def sqlite(tmp_path):
    async with sqlite_store(tmp_path) as s:
        yield s


def operators_config(tmp_path, **roles: str):
    """An operators file under ``tmp_path`` with ``roles`` (name=role) and a Config reading it: (cfg, tokens, path)."""
    path = tmp_path / "operators"
    tokens = write_operators(path, **roles)
    cfg = Config()
    cfg.api.operators_file = str(path)
    return cfg, tokens, path


@pytest.fixture
def operators(tmp_path):
    return operators_config(tmp_path, alice="operator", grafana="read-only")


@contextlib.contextmanager
def sync_client(tmp_path, lab, cfg: Config) -> Iterator[tuple[asyncio.Runner, Any, httpx.AsyncClient]]:
    """For hypothesis tests, which run outside an event loop: a Runner, a SQLite store and a dashboard client on
    it, all closed on exit."""
    runner = asyncio.Runner()
    store = open_store(f"sqlite:///{tmp_path}/hyp.db")
    runner.run(store.open())
    c = build(store, lab, cfg)
    try:
        yield runner, store, c
    finally:
        runner.run(c.aclose())
        runner.run(store.close())
        runner.close()


async def login(c: httpx.AsyncClient, token: str) -> str:
    r = await c.post("/ui/login", data={"token": token, "next": "/ui/"})
    assert r.status_code == 303, r.text
    page = await c.get("/ui/")
    assert page.status_code == 200
    return CSRF.search(page.text).group(1)


async def register(store_client: httpx.AsyncClient, token: str | None, labels=None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for eid in EIDS:
        r = await store_client.post(
            "/v1/euiccs", json={"eid": eid, "labels": labels or {"site": "berlin"}}, headers=headers
        )
        assert r.status_code == 201, r.text


async def rows(store) -> tuple[int, int]:
    return len(await store.list_operations(limit=10000)), len(await store.list_batches(limit=1000))


# ------------------------------------------------------------------------------------------------ sessions
async def test_no_session_redirects_to_login_and_login_sets_a_strict_cookie(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        assert (await c.get("/")).headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/euiccs", "/ui/operations", "/ui/batches/new", "/ui/fleet/live"):
            r = await c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), path
        r = await c.post("/ui/operations/new", data={"eid": EIDS[0], "kind": "psmo"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert (await c.get("/ui/static/dash.js")).status_code == 200  # assets need no session
        bad = await c.post("/ui/login", data={"token": "eim_wrong"})
        assert bad.status_code == 401 and "token not accepted" in bad.text and "set-cookie" not in bad.headers
        r = await c.post("/ui/login", data={"token": tokens["alice"], "next": "/ui/batches"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/batches"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        assert tokens["alice"] not in cookie
        page = await c.get("/ui/")
        assert page.status_code == 200 and "alice" in page.text and "Authentication is off" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # an open redirect is not possible through next
        r = await c.post("/ui/login", data={"token": tokens["alice"], "next": "https://evil.example/"})
        assert r.headers["location"] == "/ui/"


async def test_cookie_is_secure_over_tls(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg, base="https://eim") as c:
        r = await c.post("/ui/login", data={"token": tokens["alice"]})
        assert "Secure" in r.headers["set-cookie"]


async def test_logout_and_a_removed_operator_end_the_session(sqlite, lab, operators):
    cfg, tokens, path = operators
    async with build(sqlite, lab, cfg) as c:
        csrf = await login(c, tokens["alice"])
        cookie = c.cookies.get("eim_session")
        r = await c.post("/ui/logout", data={"csrf": csrf})
        assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
        r = await c.get("/ui/", headers={"Cookie": f"eim_session={cookie}"})
        assert r.status_code == 303  # the old cookie is dead on the server too
        await login(c, tokens["alice"])
        write_operators(path, bob="admin")  # alice removed from the operators file
        import os

        os.utime(path, (1, 1))
        # the registry reloads the file (eim serve does it every second; here at once)
        app_registry = c._transport.app  # type: ignore[attr-defined]
        while not hasattr(app_registry, "sessions"):
            app_registry = app_registry.app if hasattr(app_registry, "app") else app_registry.fallback
        app_registry.sessions.registry.reload()
        assert (await c.get("/ui/")).status_code == 303


# ------------------------------------------------------------------------------------------------ CSRF, origin, roles
async def test_csrf_missing_or_wrong_and_foreign_origin_are_refused_and_store_nothing(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await register(c, tokens["alice"])
        csrf = await login(c, tokens["alice"])
        form = {"eid": EIDS[0], "kind": "psmo", "params": '{"psmos": [{"listProfileInfo": {}}]}'}
        batch = {
            "kind": "euicc_data",
            "params": "",
            "validity_s": "",
            "source": "eids",
            "eids": EIDS[0],
            "csv": "",
            "labels": "",
        }
        for path, data in (("/ui/operations/new", form), ("/ui/batches/new", batch)):
            assert (await c.post(path, data=data)).status_code == 403
            r = await c.post(path, data={**data, "csrf": csrf[:-2] + "xx"})
            assert r.status_code == 403 and 'data-field="csrf"' in r.text
            r = await c.post(path, data={**data, "csrf": csrf}, headers={"Origin": "https://evil.example"})
            assert r.status_code == 403
        assert await rows(sqlite) == (0, 0)
        r = await c.post("/ui/login", data={"token": tokens["alice"]}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403  # no login from another site
        r = await c.post("/ui/operations/new", data={**form, "csrf": csrf}, headers={"Origin": "http://eim"})
        assert r.status_code == 303
        assert await rows(sqlite) == (2, 0)  # the operation and the certificate request queued in front of it


async def test_read_only_operator_sees_but_cannot_act(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await register(c, tokens["alice"])
        alice = await login(c, tokens["alice"])
        r = await c.post(
            "/ui/batches/new",
            data={
                "csrf": alice,
                "kind": "euicc_data",
                "params": "",
                "validity_s": "",
                "source": "eids",
                "eids": " ".join(EIDS),
                "csv": "",
                "labels": "",
            },
        )
        batch = r.headers["location"]
        c.cookies.clear()
        csrf = await login(c, tokens["grafana"])
        before = await rows(sqlite)
        page = await c.get(batch)
        assert page.status_code == 200 and "Cancel the batch" not in page.text and "read-only" in page.text
        eu = await c.get(f"/ui/euiccs/{EIDS[0]}")
        assert eu.status_code == 200 and "Relabel" not in eu.text and "Queue an operation" not in eu.text
        assert "Queue an operation" not in (await c.get("/ui/")).text
        for path, data in (
            (batch + "/cancel", {}),
            ("/ui/operations/new", {"eid": EIDS[0], "kind": "euicc_data"}),
            (f"/ui/euiccs/{EIDS[0]}/delete", {"force": "true"}),
        ):
            r = await c.post(path, data={**data, "csrf": csrf})
            assert r.status_code == 403 and "read-only" in r.text, path
        assert await rows(sqlite) == before
        ops = await sqlite.list_operations(limit=100)
        assert all(o.status.value == "queued" for o in ops)
        assert await sqlite.get_euicc(EIDS[0]) is not None


async def test_lab_without_auth_says_so_and_works_like_the_api(sqlite, lab):
    async with build(sqlite, lab, Config()) as c:
        await register(c, None)
        page = await c.get("/ui/")
        assert page.status_code == 200 and "Authentication is off" in page.text
        assert (await c.get("/ui/login")).headers["location"] == "/ui/"
        csrf = CSRF.search(page.text).group(1)
        r = await c.post("/ui/operations/new", data={"csrf": csrf, "eid": EIDS[1], "kind": "euicc_data"})
        assert r.status_code == 303
        (entry,) = [a for a in await sqlite.list_audit(eid=EIDS[1]) if a.action == "create"]
        assert entry.who == "operator"  # what the API writes without authentication
        assert (await c.post("/ui/operations/new", data={"eid": EIDS[1], "kind": "euicc_data"})).status_code == 403


# ------------------------------------------------------------------------------------------------ pages and actions
async def test_pages_act_through_the_api_and_audit_the_operator(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await register(c, tokens["alice"])
        csrf = await login(c, tokens["alice"])
        r = await c.post(
            "/ui/operations/new",
            data={"csrf": csrf, "eid": EIDS[0], "kind": "psmo", "params": '{"psmos": [{"listProfileInfo": {}}]}'},
        )
        op_path = r.headers["location"]
        op_id = op_path.rsplit("/", 1)[1]
        page = await c.get(op_path)
        assert page.status_code == 200 and "listProfileInfo" in page.text and "operator:alice" in page.text
        assert (await sqlite.get_operation(op_id)).created_by == "operator:alice"
        r = await c.post(op_path + "/cancel", data={"csrf": csrf})
        assert r.status_code == 303 and (await sqlite.get_operation(op_id)).status.value == "cancelled"
        again = await c.post(op_path + "/cancel", data={"csrf": csrf})
        assert again.status_code == 303  # idempotent, as POST /v1/operations/{id}/cancel is
        # eUICC page: audit trail, relabel
        eu = await c.get(f"/ui/euiccs/{EIDS[0]}")
        assert 'id="audit"' in eu.text and "operator:alice" in eu.text and "site=berlin" in eu.text
        r = await c.post(
            f"/ui/euiccs/{EIDS[0]}/edit",
            data={"csrf": csrf, "labels": "site=paris\ntier=gold", "note": "rack 3", "poll_interval_s": ""},
        )
        assert r.status_code == 303
        assert (await sqlite.get_euicc(EIDS[0])).labels == {"site": "paris", "tier": "gold"}
        # list filters: label, prefix, state
        r = await c.get("/ui/euiccs", params={"label": "site=paris"})
        assert EIDS[0] in r.text and EIDS[1] not in r.text
        r = await c.get("/ui/euiccs", params={"eid": EIDS[1][:31]})
        assert EIDS[1] in r.text and EIDS[2] not in r.text
        r = await c.get("/ui/euiccs", params={"state": "never_seen"})
        assert all(e in r.text for e in EIDS)
        r = await c.get("/ui/euiccs", params={"label": "site"})
        assert r.status_code == 400 and 'data-field="label"' in r.text
        r = await c.get("/ui/operations", params={"status": "bogus"})
        assert r.status_code == 422 and 'data-field="status"' in r.text
        # batch by labels, preview first, then the batch page and cancel
        form = {
            "csrf": csrf,
            "kind": "euicc_data",
            "params": "",
            "validity_s": "",
            "source": "labels",
            "eids": "",
            "csv": "",
            "labels": "site=berlin",
        }
        before = await rows(sqlite)
        pv = await c.post("/ui/batches/preview", data=form)
        assert pv.status_code == 200 and "<strong>3</strong> operation(s)" in pv.text
        assert await rows(sqlite) == before  # a preview stores nothing
        r = await c.post("/ui/batches/new", data=form)
        batch = r.headers["location"]
        page = await c.get(batch)
        assert 'role="progressbar"' in page.text and "Cancel the batch" in page.text
        r = await c.post(batch + "/cancel", data={"csrf": csrf})
        assert r.status_code == 303 and "cancelled=3" in r.headers["location"]
        live = await c.get(batch + "/live")
        assert 'data-state="ended"' in live.text and "Cancel the batch" not in live.text
        audit = [a for a in await sqlite.list_audit(limit=1000) if a.action == "batch_cancel"]
        assert audit and audit[0].who == "operator:alice"


async def test_csv_upload_preview_and_confirm(sqlite, lab, operators):
    cfg, tokens, _ = operators
    async with build(sqlite, lab, cfg) as c:
        await register(c, tokens["alice"])
        csrf = await login(c, tokens["alice"])
        csv = "eid,activation_code\n" + "".join(f"{e},1$smdp.example.com$M-{i}\n" for i, e in enumerate(EIDS[:2]))
        csv += f"{lab_eid(99)},1$smdp.example.com$M-9\n"
        data = {
            "csrf": csrf,
            "kind": "download",
            "params": "",
            "validity_s": "3600",
            "source": "csv",
            "eids": "",
            "csv": "",
            "labels": "",
        }
        pv = await c.post("/ui/batches/preview", data=data, files={"csv_file": ("batch.csv", csv.encode(), "text/csv")})
        assert pv.status_code == 200, pv.text
        assert "<strong>2</strong> operation(s)" in pv.text and "not registered" in pv.text and "M-1" in pv.text
        hidden = dict(re.findall(r'<textarea hidden name="(\w+)">\n?(.*?)</textarea>', pv.text, re.S))
        import html

        r = await c.post("/ui/batches/new", data={**data, "csv": html.unescape(hidden["csv"])})
        assert r.status_code == 303
        ops = await sqlite.list_operations(limit=100)
        assert sorted(o.params["activationCode"] for o in ops) == ["1$smdp.example.com$M-0", "1$smdp.example.com$M-1"]


def test_fleet_overview_renders_keys_it_does_not_know():
    data = {
        "euiccs": {"registered": 5, "seen_1h": 1, "stale": 2, "by_sgp32_version": {"1.0": 2, "1.2": 3}},
        "operations": {"by_status": {"done": 3, "failed": 1}, "by_kind": {"psmo": {"done": 3, "failed": 1}}},
        "by_smdp": {"smdp.example.com": 4},
        "timeseries": {"bucket_s": 3600, "operations": [{"t": "10:00", "done": 2}, {"t": "11:00", "done": 5}]},
        "failure_rate_24h": 0.25,
    }
    out = fleet.render(data)
    assert 'data-key="by_sgp32_version"' in out and "smdp.example.com" in out
    assert "Failure rate, last 24 h (failed or expired of ended)" in out and "25.0 %" in out
    assert "By SGP.32 version" in out and "Bucket s" not in out and "1 h" in out  # durations in words
    assert "(1 of 4 ended)" not in out  # the summary's own rate, not one computed beside it
    computed = fleet.render({"operations": {"by_status": {"done": 3, "failed": 1}}})
    assert "25.0 % (1 of 4 ended)" in computed  # a summary without a rate: computed from operations by status
    assert out.count('class="chart cols"') == 1 and "11:00" in out


# ------------------------------------------------------------------------------------------------ hypothesis
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
JSONISH = st.one_of(TEXT, st.just("{"), st.just("[]"), st.just('{"psmos": 1}'), st.just('{"tags": ["x"]}'))
FORMS = {
    "/ui/operations/new": {
        "eid": st.one_of(TEXT, st.just(EIDS[0]), st.just(""), st.just("89" * 16)),
        "kind": st.one_of(TEXT, st.sampled_from(["psmo", "download", "eco"])),
        "params": JSONISH,
        "validity_s": st.one_of(st.just(""), TEXT, st.just("-5")),
        "activation_code": st.one_of(st.just(""), TEXT),
    },
    "/ui/batches/preview": {
        "kind": st.one_of(TEXT, st.sampled_from(["psmo", "download"])),
        "params": JSONISH,
        "validity_s": st.one_of(st.just(""), TEXT, st.just("nan")),
        "source": st.one_of(TEXT, st.sampled_from(["eids", "csv", "labels"])),
        "eids": st.one_of(TEXT, st.just("")),
        "csv": st.one_of(TEXT, st.just("eid\n" + EIDS[0])),
        "labels": st.one_of(TEXT, st.just("site"), st.just("nope=nothing")),
    },
    f"/ui/euiccs/{EIDS[0]}/edit": {
        "labels": st.one_of(TEXT, st.just("=x"), st.just("a" * 70 + "=1")),
        "note": st.one_of(st.just(""), TEXT, st.just("x" * 2000)),
        "poll_interval_s": st.one_of(TEXT, st.just("5"), st.just("inf")),
    },
}
FORMS["/ui/batches/new"] = FORMS["/ui/batches/preview"]
FORMS["/ui/login"] = {"token": st.one_of(TEXT, st.just("eim_" + "A" * 43)), "next": TEXT}
SEARCHES = {
    "/ui/euiccs": {
        "eid": st.one_of(TEXT, st.just("8999")),
        "label": st.one_of(TEXT, st.just("site=berlin")),
        "state": st.one_of(TEXT, st.just("stale")),
        "cursor": TEXT,
    },
    "/ui/operations": {
        "eid": TEXT,
        "status": st.one_of(TEXT, st.just("done")),
        "kind": TEXT,
        "batch_id": TEXT,
        "cursor": TEXT,
        "bogus": TEXT,
    },
}


def test_malformed_form_data_gets_a_4xx_naming_the_field_and_stores_nothing(tmp_path, lab, operators):
    cfg, tokens, _ = operators
    with sync_client(tmp_path, lab, cfg) as (runner, store, c):
        runner.run(register(c, tokens["alice"]))
        csrf = runner.run(login(c, tokens["alice"]))

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), path=st.sampled_from(sorted(FORMS)))
        def probe(data, path):
            form = {k: data.draw(s, label=k) for k, s in FORMS[path].items()}
            before, euicc = runner.run(rows(store)), runner.run(store.get_euicc(EIDS[0]))
            r = runner.run(c.post(path, data={**form, "csrf": csrf}))
            if r.status_code in (200, 303):  # it happened to be valid
                return
            assert 400 <= r.status_code < 500, (path, form, r.status_code, r.text[:500])
            found = FIELD.search(r.text)
            assert found and found.group(1), (path, form, r.text[:800])
            assert runner.run(rows(store)) == before
            after = runner.run(store.get_euicc(EIDS[0]))
            assert (after.labels, after.note, after.poll_interval_s) == (
                euicc.labels,
                euicc.note,
                euicc.poll_interval_s,
            )

        probe()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data(), path=st.sampled_from(sorted(SEARCHES)))
        def search(data, path):
            query = {k: data.draw(s, label=k) for k, s in SEARCHES[path].items() if data.draw(st.booleans())}
            r = runner.run(c.get(path, params=query))
            assert r.status_code in (200, 303) or 400 <= r.status_code < 500, (path, query, r.text[:500])
            if r.status_code >= 400:
                found = FIELD.search(r.text)
                assert found and found.group(1), (path, query, r.text[:800])

        search()
        assert runner.run(c.get("/ui/")).status_code == 200  # still serving


def test_fleet_overview_hourly_series_are_labelled_in_utc_hours():
    """GET /v1/fleet's ``hourly`` buckets carry the hour as POSIX seconds: the charts label them HH:MM (UTC)."""
    from datetime import UTC, datetime

    hour = int(datetime(2026, 12, 7, 5, tzinfo=UTC).timestamp())
    data = {"hourly": [{"hour": hour, "created": 1, "polls": 4}, {"hour": hour + 3600, "created": 0, "polls": 9}]}
    out = fleet.render(data)
    assert "Last 24 hours, per hour" in out and "Polls" in out and "Operations created" in out
    assert "05:00" in out and "06:00" in out and str(hour) not in out
