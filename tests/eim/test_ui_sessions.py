"""Dashboard sessions in the store (migration 0006), on SQLite and PostgreSQL: a session opened on one eIM worker
works on a second one sharing the store and after an eIM restart; the table holds a hash of the session id, never
the id or the operator's token; logout deletes the row everywhere; idle / maximum age / rotated token / removed
operator end a session; expired rows are cleaned; the number of rows is capped."""

from __future__ import annotations

import hashlib
import os

import pytest

from eim.api.auth import OperatorRegistry, generate_token, hash_token
from eim.store import open_store
from eim.store.logic import Q
from eim.ui import session as ui_session
from eim.ui.session import IDLE_S, MAX_AGE_S, TOUCH_S, Sessions
from tests.eim.test_api_auth import write_operators
from tests.eim.test_ui import CSRF, EIDS, build, operators_config, register, ui_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return ui_lab(tmp_path_factory)


@pytest.fixture
def operators(tmp_path):
    return operators_config(tmp_path, alice="operator", grafana="read-only")


async def rows(store) -> list[dict]:
    def gen():
        return (yield Q("SELECT * FROM ui_sessions ORDER BY seen_at", (), "all"))

    return await store._run(gen, write=False)


async def opened(url: str):
    s = open_store(url)
    await s.open()
    return s


async def test_a_session_works_on_a_second_worker_and_after_a_restart(store_url, lab, operators):
    cfg, tokens, _ = operators
    one, two = await opened(store_url), await opened(store_url)
    try:
        a, b = build(one, lab, cfg), build(two, lab, cfg)
        async with a, b:
            await register(a, tokens["alice"])
            r = await a.post("/ui/login", data={"token": tokens["alice"]})
            assert r.status_code == 303
            sid = a.cookies["eim_session"]
            (row,) = await rows(one)
            assert row["id_hash"] == hashlib.sha256(sid.encode()).hexdigest() and row["operator"] == "alice"
            dump = repr(row)
            assert sid not in dump and tokens["alice"] not in dump
            assert hash_token(tokens["alice"]).removeprefix("sha256:") not in dump
            # the second worker: same cookie, same CSRF token, acts as alice
            page = await b.get("/ui/", headers={"Cookie": f"eim_session={sid}"})
            assert page.status_code == 200 and "alice" in page.text
            csrf = CSRF.search(page.text).group(1)
            assert csrf == row["csrf"]
            r = await b.post(
                "/ui/operations/new",
                data={"csrf": csrf, "eid": EIDS[0], "kind": "euicc_data"},
                headers={"Cookie": f"eim_session={sid}"},
            )
            assert r.status_code == 303, r.text
            op_id = r.headers["location"].rsplit("/", 1)[1]
            assert (await two.get_operation(op_id)).created_by == "operator:alice"
        await one.close()
        await two.close()
        # restart: a new store and app on the same database
        one = await opened(store_url)
        async with build(one, lab, cfg) as c:
            page = await c.get("/ui/operations", headers={"Cookie": f"eim_session={sid}"})
            assert page.status_code == 200 and "alice" in page.text
            r = await c.post("/ui/logout", data={"csrf": csrf}, headers={"Cookie": f"eim_session={sid}"})
            assert r.status_code == 303
            assert await rows(one) == []
        two = await opened(store_url)
        async with build(two, lab, cfg) as c:  # logged out everywhere
            assert (await c.get("/ui/", headers={"Cookie": f"eim_session={sid}"})).status_code == 303
    finally:
        await one.close()
        await two.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


async def test_idle_max_age_rotation_removal_and_cleanup(store, operators):
    _cfg, tokens, path = operators
    registry = OperatorRegistry(path)
    clock = Clock()
    sessions = Sessions(registry, store, clock)
    assert await sessions.login("eim_not_a_token") is None and await rows(store) == []
    s = await sessions.login(tokens["alice"])
    assert (await sessions.get(s.id)).name == "alice"
    assert await sessions.get(s.id[:-1] + "x") is None and await sessions.get("é" * 10) is None
    # used within the idle time: it lives on (the last use written at most every TOUCH_S)
    for _ in range(3):
        clock.t += IDLE_S - 1
        assert await sessions.get(s.id) is not None
    (row,) = await rows(store)
    assert row["seen_at"] == clock.t and row["expires_at"] == clock.t + IDLE_S
    clock.t += TOUCH_S / 2
    await sessions.get(s.id)
    assert (await rows(store))[0]["seen_at"] == clock.t - TOUCH_S / 2  # not written again so soon
    clock.t += IDLE_S + 1
    assert await sessions.get(s.id) is None  # idle
    # the maximum age, however busy
    s = await sessions.login(tokens["alice"])
    assert len(await rows(store)) == 1  # opening it deleted the expired row
    start = clock.t
    while clock.t < start + MAX_AGE_S - IDLE_S / 2:
        clock.t += IDLE_S / 2
        assert await sessions.get(s.id) is not None
    clock.t = start + MAX_AGE_S + 1
    assert await sessions.get(s.id) is None
    # a rotated token and a removed operator end the session; a changed role applies at once
    s = await sessions.login(tokens["alice"])
    g = await sessions.login(tokens["grafana"])
    path.write_text(f"alice:operator:{hash_token(generate_token())}\ngrafana:admin:{hash_token(tokens['grafana'])}\n")
    os.utime(path, (1, 1))
    registry.reload()
    assert await sessions.get(s.id) is None  # alice's token was rotated
    assert (await sessions.get(g.id)).role.value == "admin"  # grafana kept its token, now admin
    write_operators(path, alice="operator")
    os.utime(path, (2, 2))
    registry.reload()
    assert await sessions.get(g.id) is None  # grafana removed
    assert await rows(store) == []  # both rows deleted
    # expired rows are cleaned
    await sessions.anonymous()
    clock.t += IDLE_S + 1
    assert await store.ui_sessions_purge(now=clock.t) == 1 and await rows(store) == []


async def test_sessions_are_capped_and_a_lab_session_ends_when_auth_is_turned_on(store, operators, monkeypatch):
    _cfg, _tokens, path = operators
    monkeypatch.setattr(ui_session, "MAX_SESSIONS", 3)
    clock = Clock()
    lab_sessions = Sessions(OperatorRegistry(None), store, clock)
    made = []
    for _ in range(5):
        clock.t += 1
        made.append(await lab_sessions.anonymous())
    assert len(await rows(store)) == 3
    assert [await lab_sessions.get(s.id) is not None for s in made] == [False, False, True, True, True]
    assert (await lab_sessions.get(made[-1].id)).name is None
    on = Sessions(OperatorRegistry(path), store, clock)  # the operators file configured since
    assert await on.get(made[-1].id) is None
    assert len(await rows(store)) == 2


async def test_a_store_that_does_not_answer_gets_a_503_naming_it(tmp_path, lab, operators):
    cfg, tokens, _ = operators
    store = await opened(f"sqlite:///{tmp_path}/gone.db")
    async with build(store, lab, cfg) as c:
        r = await c.post("/ui/login", data={"token": tokens["alice"]})
        assert r.status_code == 303
        await store.close()
        for call in (c.get("/ui/"), c.post("/ui/login", data={"token": tokens["alice"]})):
            r = await call
            assert r.status_code == 503 and 'data-field="store"' in r.text, r.text[:300]
