"""Store calls per ESipa exchange, on both stores: a PSMO round trip (GetEimPackage -> card -> ProvideEimPackageResult)
costs one claim, one read and one result write; the answers on the wire are those of the protocol brief."""

from __future__ import annotations

from typing import Any

import pytest

from eim.model import Euicc, OpKind, OpStatus
from rsp import asn1, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import Card, get_eim_package_request, make_env, provide_result, unwrap_package

EIDS = [lab_eid(i) for i in range(31, 33)]
UNKNOWN = "89049032123451234512345678909999"
EMPTY_RESPONSE = bytes.fromhex("BF50023000")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


class CountingStore:
    """The real store, recording the name of every store call (each one is one database transaction)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await value(*args, **kwargs)

        return call


async def ready(env, lab, eid):
    card = Card(lab, eid)
    await card.open()
    token = await card.associate(env.key, counter_value=1)
    await env.service.register_euicc(eid, association_token=token, counter_value=1)
    await env.service.create(eid, OpKind.EUICC_DATA, {})
    req = unwrap_package(await env.handle(get_eim_package_request(eid)))
    assert await env.handle(provide_result(eid, await card.euicc_data(req))) == EMPTY_RESPONSE
    return card


def result_error(answer: bytes) -> int:
    alt, value = asn1.decode("ProvideEimPackageResultResponse", answer)
    assert alt == "provideEimPackageResultError", (alt, value)
    return value


async def test_psmo_round_trip_store_calls(store, lab):
    counting = CountingStore(store)
    env = make_env(counting, lab)
    card = await ready(env, lab, EIDS[0])
    for _ in range(2):
        op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
        counting.calls.clear()
        package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
        epr = await card.load(package)
        answer = await env.handle(provide_result(card.eid, epr))
        alt, acks = asn1.decode("ProvideEimPackageResultResponse", answer)
        assert alt == "eimAcknowledgements" and len(acks) == 1
        assert counting.calls == ["claim_next", "result_context", "record_result"]
        done = await store.get_operation(op.id)
        assert done.status is OpStatus.DONE and done.result["seqNumber"] == acks[0]
        # a replay of the accepted result changes nothing and is acknowledged again
        assert await env.handle(provide_result(card.eid, epr)) == answer
    # the result without an EID in the message (the binding knows none): found by its eimTransactionId
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card.load(unwrap_package(await env.handle(get_eim_package_request(card.eid))))
    counting.calls.clear()
    assert asn1.decode("ProvideEimPackageResultResponse", await env.handle(provide_result(None, epr)))[0] == (
        "eimAcknowledgements"
    )
    assert counting.calls == ["result_context", "record_result"]
    assert (await store.get_operation(op.id)).status is OpStatus.DONE


async def test_unknown_eid_is_reported_before_anything_else(store, lab):
    env = make_env(store, lab)
    card = await ready(env, lab, EIDS[1])
    await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    epr = await card.load(unwrap_package(await env.handle(get_eim_package_request(card.eid))))
    for part in (
        epr,  # a genuine result, sent with an EID that is not registered
        tlv.encode(0x30, epr + tlv.encode(0xA0, b"")),  # ePRAndNotifications
    ):
        answer = await env.handle(provide_result(UNKNOWN, part))
        assert answer is not None and result_error(answer) == 2  # eidNotFound
    # the operation is still waiting for its result, which is then accepted
    assert asn1.decode("ProvideEimPackageResultResponse", await env.handle(provide_result(card.eid, epr)))[0] == (
        "eimAcknowledgements"
    )
    # the same (accepted) result with another registered EID is refused: undefinedError, nothing acknowledged
    await store.add_euicc(Euicc(eid=UNKNOWN, eim_id="x", association_token=1, counter_value=1, created_at=1.0), who="t")
    assert result_error(await env.handle(provide_result(UNKNOWN, epr))) == 127


async def test_result_context_on_both_stores(store, lab):
    env = make_env(store, lab)
    card = await ready(env, lab, EIDS[0])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    claimed = await store.get_operation(op.id)
    txid = claimed.eim_transaction_id
    ctx = await store.result_context(card.eid, txid)
    assert ctx.eid_known and ctx.euicc.eid == card.eid and ctx.operation == claimed
    assert ctx.operation_euicc == ctx.euicc == await store.get_euicc(card.eid)
    ctx = await store.result_context(None, txid)
    assert ctx.eid_known and ctx.euicc is None and ctx.operation == claimed and ctx.operation_euicc.eid == card.eid
    ctx = await store.result_context(UNKNOWN, txid)
    assert not ctx.eid_known and ctx.operation is None
    ctx = await store.result_context(card.eid, b"\x01" * 16)
    assert ctx.eid_known and ctx.operation is None and ctx.operation_euicc is None
    await store.add_euicc(Euicc(eid=UNKNOWN, eim_id="x", association_token=1, counter_value=1, created_at=1.0), who="t")
    ctx = await store.result_context(UNKNOWN, txid)  # the operation belongs to another eUICC: both are read
    assert ctx.euicc.eid == UNKNOWN and ctx.operation_euicc.eid == card.eid


async def test_reads_change_nothing(store):
    """Reads take no write lock (PostgreSQL: no BEGIN/COMMIT at all): a read that tries to write is refused and
    nothing changes; a read of several statements still answers."""
    from eim.store import StoreError
    from eim.store.logic import Q

    await store.add_euicc(Euicc(eid=UNKNOWN, eim_id="x", association_token=1, counter_value=1, created_at=1.0), who="t")

    def sneaky():
        yield Q("SELECT eid FROM euiccs WHERE eid = ?", (UNKNOWN,), "one")
        yield Q("UPDATE euiccs SET counter_value = 99 WHERE eid = ?", (UNKNOWN,))
        return None

    with pytest.raises(StoreError):
        await store._run(sneaky, write=False)
    assert (await store.get_euicc(UNKNOWN)).counter_value == 1
    ctx = await store.result_context(UNKNOWN, b"\x02" * 16)  # two statements
    assert ctx.eid_known and ctx.euicc.eid == UNKNOWN and ctx.operation is None
