"""One eUICC's operations and audit trail, newest first, a page at a time (migration 0008), on both backends.

The dashboard's eUICC page showed the OLDEST 200 operations and 500 audit rows: an eUICC with a long history never
showed what happened last. Now the store walks the index (eid, seq) / (eid, id) backwards, the REST lists take
``order=desc`` (``GET /v1/operations?eid=...``, ``GET /v1/euiccs/{eid}/audit``) with cursors that page in that
order, and the page shows the newest first with an "Older" link that follows the cursor.
"""

from __future__ import annotations

import re

from eim.store.logic import Q
from eim.ui.pages import euiccs as euicc_page
from rsp.pki import lab_eid
from tests.eim.helpers import plain_euicc, queued_psmo
from tests.eim.test_api_fleet import api, lab  # noqa: F401 - fixtures
from tests.eim.test_ui import build, login, operators_config

EID = lab_eid(300)
OTHER = lab_eid(301)


async def history(store, n_ops: int, n_audit: int) -> tuple[list[str], list[str]]:
    """``n_ops`` operations and ``n_audit`` extra audit rows for EID (and some for another eUICC, interleaved):
    the operation ids in creation order, and EID's audit actions in insertion order."""
    for eid in (EID, OTHER):
        assert await store.add_euicc(plain_euicc(eid), who="test")
    ops = []
    for i in range(n_ops):
        (op,) = await store.add_operations([queued_psmo(EID, at=1000.0 + i)], who="test")
        ops.append(op.id)
        await store.add_operations([queued_psmo(OTHER, at=1000.0 + i)], who="test")
    for i in range(n_audit):
        await store.add_audit(who="test", action=f"note-{i}", outcome="ok", eid=EID, at=2000.0 + i)
        await store.add_audit(who="test", action=f"other-{i}", outcome="ok", eid=OTHER, at=2000.0 + i)
    actions = [a.action for a in await store.list_audit(eid=EID, limit=10_000)]
    assert len(actions) >= n_ops + n_audit  # each operation's creation is audited too
    return ops, actions


async def test_store_walks_one_euiccs_history_backwards_in_pages(store):
    ops, actions = await history(store, 7, 5)
    for page in (1, 3, 100):
        got, after = [], None
        while True:
            chunk = await store.list_operations(eid=EID, limit=page, after_seq=after, descending=True)
            got += [o.id for o in chunk]
            if len(chunk) < page:
                break
            after = chunk[-1].seq
        assert got == ops[::-1], page
        seen, after_id = [], None
        while True:
            rows = await store.list_audit(eid=EID, limit=page, after_id=after_id, descending=True)
            seen += [a.action for a in rows]
            if len(rows) < page:
                break
            after_id = rows[-1].id
        assert seen == actions[::-1], page
    # the oldest-first order (and its cursor) is unchanged
    assert [o.id for o in await store.list_operations(eid=EID, limit=3)] == ops[:3]
    first = await store.list_audit(eid=EID, limit=2)
    assert [a.action for a in await store.list_audit(eid=EID, limit=2, after_id=first[-1].id)] == actions[2:4]


async def test_newest_first_reads_the_eid_indexes(store):
    """The newest page is an index range read backwards, not every row of the eUICC sorted (the plan says so)."""
    await history(store, 3, 3)
    sqlite = store.dialect == "sqlite"
    queries = [
        "SELECT * FROM operations WHERE eid = ? ORDER BY seq DESC LIMIT ?",
        "SELECT * FROM operations WHERE eid = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        "SELECT * FROM audit WHERE eid = ? ORDER BY id DESC LIMIT ?",
        "SELECT * FROM audit WHERE eid = ? AND id < ? ORDER BY id DESC LIMIT ?",
    ]

    def plans():
        out = []
        if not sqlite:
            # a 12-row table is a scan and a sort whatever the indexes: ask whether an index gives the order at all
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                yield Q(f"SET LOCAL {setting} = off", ())
        for sql in queries:
            args = (EID, 10**9, 50) if "<" in sql else (EID, 50)
            rows = yield Q(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, args, "all")
            out.append(" ".join(str(v) for r in rows for v in dict(r).values()))
        return out

    for sql, plan in zip(queries, await store._run(plans, write=True), strict=True):  # one transaction
        want = "operations_eid_seq" if "operations" in sql else "audit_eid_id"
        assert want in plan, (sql, plan)
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, (sql, plan)


async def test_rest_lists_page_newest_first_with_their_own_cursors(api, store):  # noqa: F811
    _, c = api
    ops, actions = await history(store, 7, 4)
    for path, params, key, want in (
        ("/v1/operations", {"eid": EID}, "id", ops[::-1]),
        (f"/v1/euiccs/{EID}/audit", {}, "action", actions[::-1]),
    ):
        got, cursor = [], None
        while True:
            q = {**params, "order": "desc", "limit": 3, **({"cursor": cursor} if cursor else {})}
            r = await c.get(path, params=q)
            assert r.status_code == 200, r.text
            got += [item[key] for item in r.json()["items"]]
            cursor = r.json()["next"]
            if cursor is None:
                break
            assert "order=desc" in r.json()["next_url"]
        assert got == want, path
        asc = (await c.get(path, params={**params, "limit": 3})).json()
        assert [i[key] for i in asc["items"]] == want[::-1][:3]  # the default stays oldest first
        # a cursor pages in the order it was made in: an ascending one is refused by the descending list
        r = await c.get(path, params={**params, "order": "desc", "cursor": asc["next"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "cursor", r.text
        r = await c.get(path, params={**params, "order": "newest"})  # like every enum of a query: 422 naming it
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("query.order: "), r.text
    r = await c.get(f"/v1/euiccs/{EID}/audit", params={"limt": 3})
    assert r.status_code == 400 and r.json()["error"]["field"] == "limt"
    r = await c.get("/v1/euiccs/1234/audit")
    assert r.status_code == 404


async def test_dashboard_euicc_page_shows_the_newest_first_and_pages_to_older(store, lab, tmp_path):  # noqa: F811
    cfg, tokens, _ = operators_config(tmp_path, alice="read-only")
    n = euicc_page.OPS_PAGE + 7
    ops, actions = await history(store, n, euicc_page.AUDIT_PAGE)
    async with build(store, lab, cfg) as c:
        await login(c, tokens["alice"])
        page = await c.get(f"/ui/euiccs/{EID}")
        assert page.status_code == 200, page.text[:500]
        shown = re.findall(r'href="/ui/operations/([0-9a-f-]{36})"', page.text)
        newest = ops[::-1]
        assert shown[: euicc_page.OPS_PAGE] == newest[: euicc_page.OPS_PAGE]  # the newest first
        audit_part = page.text.split('id="audit"', 1)[1]
        assert len(re.findall(r"<td>(note-\d+|create|register)</td>", audit_part)) == euicc_page.AUDIT_PAGE
        assert re.findall(r"<td>(note-\d+|create|register)</td>", audit_part)[:3] == actions[::-1][:3]
        older = re.search(r'id="ops-older" rel="next" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
        page2 = await c.get(older)
        assert page2.status_code == 200
        shown2 = re.findall(r'href="/ui/operations/([0-9a-f-]{36})"', page2.text)
        assert shown2[:7] == newest[euicc_page.OPS_PAGE :] and 'id="ops-older"' not in page2.text
        assert 'id="ops-newest"' in page2.text
        older_audit = re.search(r'id="audit-older" rel="next" href="([^"#]+)', page.text).group(1)
        page3 = await c.get(older_audit.replace("&amp;", "&"))
        rest = re.findall(r"<td>(note-\d+|create|register)</td>", page3.text.split('id="audit"', 1)[1])
        assert rest == actions[::-1][euicc_page.AUDIT_PAGE :]
        bad = await c.get(f"/ui/euiccs/{EID}", params={"ops": "bm90LWEtY3Vyc29y"})
        assert bad.status_code == 400 and 'data-field="ops"' in bad.text
