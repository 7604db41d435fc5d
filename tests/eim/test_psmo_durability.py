"""Durability of the signed PSMO round trip on SQLite (issue 18: "fsync per commit stays, counters stay durable").

Group commit lets many requests share one COMMIT (one fsync), and answers each only after the COMMIT that holds
its write returned. Two ways to see it from outside:

1. ``eim serve`` SIGKILLed right after an acknowledgement, while other IPAs' requests are in flight: after the
   restart every acknowledged result is in the store (its operation done), and the stored counter of every eUICC is
   at least the highest counter value of any package handed out.
2. A COMMIT that fails (failpoint ``sqlite_commit``, like a full disk): every request of the group gets an error
   answer - no acknowledgement, no package - and the store keeps nothing of them; once the COMMIT works again the
   same results are acknowledged.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from eim import failpoints
from eim.model import OpKind, OpStatus
from eim.store import open_store
from eim.store.sqlite import SqliteStore
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import get_eim_package_request, make_env, provide_result, unwrap_package
from tests.eim.servers import start_eim
from tests.eim.test_dispatcher_flows import ready_card
from tests.eim.test_serve import CT, queue, ready_cards, register

EIDS = [lab_eid(i) for i in range(61, 71)]
NO_PACKAGE = bytes.fromhex("BF4F03020101")
UNDEFINED_RESULT_ERROR = bytes.fromhex("BF500302017F")  # provideEimPackageResultError undefinedError
UNDEFINED_POLL_ERROR = bytes.fromhex("BF4F0302017F")  # eimPackageError undefinedError


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


async def test_acknowledged_results_and_handed_out_counters_survive_sigkill(lab, tmp_path):
    url = f"sqlite:///{tmp_path / 'eim.db'}"
    cards = await ready_cards(lab, EIDS[:6])
    server = start_eim(tmp_path / "a", store_url=url, lab_pki=lab.root)
    ops: list[str] = []
    for card in cards:
        register(server.url, card)
        ops += [queue(server.url, card.eid, {"psmos": [{"getRAT": {}}]}) for _ in range(6)]
    acked: list[bytes] = []  # eimTransactionIds of results the eIM acknowledged
    handed: dict[str, int] = {}  # highest counter value handed out per EID
    kill_after = random.Random().randrange(3, 25)

    pending: dict[str, tuple[bytes, bytes | None]] = {}  # a result not yet acknowledged, kept like an IPA does

    async def ipa(client: httpx.AsyncClient, card) -> None:
        while True:
            if card.eid not in pending:
                r = await client.post(server.esipa, content=get_eim_package_request(card.eid), headers=CT)
                if r.content == NO_PACKAGE:
                    return
                package = tlv.children(tlv.parse_exact(r.content))[0].raw
                if package[:2] == b"\xbf\x52":  # the automatic eUICC data request (certificates)
                    pending[card.eid] = (await card.euicc_data(package), None)
                else:
                    signed = asn1.decode("EuiccPackageRequest", package)["euiccPackageSigned"]
                    handed[card.eid] = max(handed.get(card.eid, 0), signed["counterValue"])
                    pending[card.eid] = (await card.load(package), signed["eimTransactionId"])
            result, txid = pending[card.eid]
            r = await client.post(server.esipa, content=provide_result(card.eid, result), headers=CT)
            assert r.content[:2] == b"\xbf\x50" and r.content != UNDEFINED_RESULT_ERROR, r.content.hex()
            del pending[card.eid]
            if txid is not None and b"\xbf\x53" in r.content:
                acked.append(txid)
                if len(acked) >= kill_after:
                    server.kill()  # SIGKILL right after this answer; other requests are in flight

    async with httpx.AsyncClient(timeout=30) as client:
        outcomes = await asyncio.gather(*(ipa(client, c) for c in cards), return_exceptions=True)
    server.kill()
    assert all(o is None or isinstance(o, httpx.HTTPError) for o in outcomes), outcomes
    assert len(acked) >= kill_after and server.proc.returncode == -9

    store = open_store(url)
    await store.open()
    try:
        for txid in acked:
            op = await store.find_operation_by_eim_transaction_id(txid)
            assert op is not None and op.status is OpStatus.DONE, (txid.hex(), op)
        for eid, counter in handed.items():
            assert (await store.get_euicc(eid)).counter_value >= counter
    finally:
        await store.close()

    again = start_eim(tmp_path / "b", store_url=url, lab_pki=lab.root)  # and the queues still finish
    try:
        server, kill_after = again, 1 << 30  # no more kills
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(ipa(client, c) for c in cards))
            for op_id in ops:
                assert (await client.get(f"{again.url}/v1/operations/{op_id}")).json()["status"] == "done"
    finally:
        again.stop()


async def test_a_failed_commit_answers_nothing_it_held(lab, tmp_path, monkeypatch):
    store = SqliteStore(str(tmp_path / "eim.db"))
    await store.open()
    try:
        env = make_env(store, lab)
        cards = [await ready_card(env, lab, eid) for eid in EIDS[6:10]]
        ops = [await env.service.create(c.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]}) for c in cards]
        handed, waiting = cards[:2], cards[2:]  # two with a package handed out, two whose package is still queued
        packages = await asyncio.gather(*(env.handle(get_eim_package_request(c.eid)) for c in handed))
        results = [await c.load(unwrap_package(p)) for c, p in zip(handed, packages, strict=True)]
        counters = {c.eid: (await store.get_euicc(c.eid)).counter_value for c in cards}

        monkeypatch.setitem(failpoints.POINTS, "sqlite_commit", 1.0)
        groups = store.groups
        # the results and the polls arrive together: no acknowledgement, no package, nothing recorded
        answers = await asyncio.gather(
            *(env.handle(provide_result(c.eid, r)) for c, r in zip(handed, results, strict=True)),
            *(env.handle(get_eim_package_request(c.eid)) for c in waiting),
        )
        assert answers == [UNDEFINED_RESULT_ERROR] * 2 + [UNDEFINED_POLL_ERROR] * 2
        assert store.groups == groups  # no COMMIT went through
        for c, op in zip(cards, ops, strict=True):
            stored = await env.service.get(op.id)
            want = OpStatus.IN_PROGRESS if c in handed else OpStatus.QUEUED
            assert stored.status is want and "seqNumber" not in (stored.result or {})
            assert (await store.get_euicc(c.eid)).counter_value == counters[c.eid]

        monkeypatch.delitem(failpoints.POINTS, "sqlite_commit")
        # the same results again, once COMMITs work: acknowledged and recorded
        for c, r, op in zip(handed, results, ops[:2], strict=True):
            ack = await env.handle(provide_result(c.eid, r))
            assert asn1.decode("ProvideEimPackageResultResponse", ack)[0] == "eimAcknowledgements"
            assert (await env.service.get(op.id)).status is OpStatus.DONE
        for c in waiting:  # the package takes the next counter value: the failed claim consumed none
            package = unwrap_package(await env.handle(get_eim_package_request(c.eid)))
            signed = asn1.decode("EuiccPackageRequest", package)["euiccPackageSigned"]
            assert signed["counterValue"] == counters[c.eid] + 1
    finally:
        await store.close()
