"""The hand-out cap, on both stores: a package whose results the eIM cannot accept is not handed out forever.

Before: every poll got the same package again (267 hand-outs in 120 s in the interop run) until the validity
window ended, the refusals were answered ``undefinedError`` without a trace on the operation, and the answers were
counted as outcome "ok". Now the refusals are recorded on the operation (once per hand-out), the operation ends
``failed`` with the last one after ``max_handouts`` hand-outs, every error answer is logged at warning, audited and
counted with its code, and undecodable requests are logged at warning, rate-limited.
"""

from __future__ import annotations

import logging

import pytest

from eim.esipa import dispatcher as dispatcher_module
from eim.esipa.dispatcher import EsipaDispatcher, error_answer_code
from eim.logs import RateLimitedLog
from eim.metrics import Metrics
from eim.model import OpKind, OpStatus
from eim.operations import OperationSettings
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import get_eim_package_request, make_env, provide_result, unwrap_package
from tests.eim.test_dispatcher_flows import ready_card

EIDS = [lab_eid(i) for i in range(41, 46)]
NO_PACKAGE = bytes.fromhex("BF4F03020101")
UNDEFINED = bytes.fromhex("BF500302017F")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


def forged(epr: bytes) -> bytes:
    """The card's result with the last byte of its signature changed (what a broken IPA or a forger sends)."""
    return epr[:-1] + bytes([epr[-1] ^ 0x01])


async def test_refused_results_end_the_operation_after_max_handouts(store, lab, caplog):
    caplog.set_level(logging.WARNING, logger="eim")
    env = make_env(store, lab, settings=OperationSettings(max_handouts=3))
    metrics = Metrics()
    env.dispatcher = EsipaDispatcher(env.rp, metrics=metrics)
    card = await ready_card(env, lab, EIDS[0])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    first = None
    for handout in (1, 2, 3):
        package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
        first = first or package
        assert package == first  # the same bytes each time
        bad = forged(await card.load(package))
        for _ in range(4):  # the IPA sends the refused result again and again: one refusal per hand-out
            assert await env.handle(provide_result(card.eid, bad)) == UNDEFINED
        now = await env.service.get(op.id)
        assert now.result["refusals"]["count"] == handout
        assert now.status is (OpStatus.IN_PROGRESS if handout < 3 else OpStatus.FAILED)
    failed = await env.service.get(op.id)
    assert failed.result_code == 127
    assert "refused after 3 hand-out(s)" in failed.error and "does not verify" in failed.error
    # the eIM stops handing it out
    assert await env.handle(get_eim_package_request(card.eid)) == NO_PACKAGE
    assert (await env.service.get(op.id)).attempts == 3
    audit = await store.list_audit(operation_id=op.id, limit=200)
    refusals = [a for a in audit if a.action == "result_refused"]
    assert [a.outcome for a in refusals][-1] == "failed" and all(a.detail["code"] == 127 for a in refusals)
    text = metrics.render().decode()
    assert 'eim_esipa_error_answers_total{binding="http",code="127",function="provideEimPackageResult"} 12.0' in text
    assert 'eim_esipa_requests_total{binding="http",function="provideEimPackageResult",outcome="rejected"} 12.0' in text
    warned = [r for r in caplog.records if r.getMessage() == "ESipa error answer"]
    assert len(warned) == 12 and {(r.function, r.eid, r.code) for r in warned} == {
        ("provideEimPackageResult", card.eid, 127)
    }


async def test_without_refusals_a_lost_result_is_handed_out_again(store, lab):
    """The cap counts refused results, not hand-outs: a package whose result never came goes out again."""
    env = make_env(store, lab, settings=OperationSettings(max_handouts=1))
    card = await ready_card(env, lab, EIDS[1])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    package = unwrap_package(await env.handle(get_eim_package_request(card.eid)))
    for _ in range(3):
        assert unwrap_package(await env.handle(get_eim_package_request(card.eid))) == package
    epr = await card.load(package)
    await env.handle(provide_result(card.eid, epr))
    assert (await env.service.get(op.id)).status is OpStatus.DONE


async def test_undecodable_results_count_and_are_logged_rate_limited(store, lab, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="eim.esipa")
    clock = [1000.0]
    monkeypatch.setattr(
        dispatcher_module, "UNDECODABLE", RateLimitedLog(dispatcher_module.log, interval_s=60, clock=lambda: clock[0])
    )
    env = make_env(store, lab, settings=OperationSettings(max_handouts=2))
    card = await ready_card(env, lab, EIDS[2])
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    # BF50 { 5A eid, BF51 whose inner length runs past its end }: does not decode
    garbage = tlv.encode(0xBF50, tlv.encode(0x5A, bytes.fromhex(card.eid)) + bytes.fromhex("BF5103300500"))
    for _ in range(2):
        await env.handle(get_eim_package_request(card.eid))
        for _ in range(25):
            assert await env.handle(garbage) == UNDEFINED
    failed = await env.service.get(op.id)
    assert failed.status is OpStatus.FAILED and failed.result_code == 127
    assert "undecodable ProvideEimPackageResult" in failed.error
    lines = [r for r in caplog.records if r.getMessage() == "undecodable ESipa request"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].suppressed == 0
    clock[0] += 61
    await env.handle(garbage)
    lines = [r for r in caplog.records if r.getMessage() == "undecodable ESipa request"]
    assert len(lines) == 2 and lines[1].suppressed == 49


async def test_missing_eid_answers_are_warned_and_counted(store, lab, caplog):
    caplog.set_level(logging.WARNING, logger="eim.esipa")
    env = make_env(store, lab)
    metrics = Metrics()
    env.dispatcher = EsipaDispatcher(env.rp, metrics=metrics)
    # an IPA package error without EID whose eimTransactionId names no operation: missingEid (4)
    unknown = tlv.encode(0xA0, tlv.encode(0x80, bytes(16)) + bytes.fromhex("020101"))
    answer = await env.handle(provide_result(None, unknown))
    code = error_answer_code(0xBF50, answer)
    assert code == 4, answer.hex()
    text = metrics.render().decode()
    series = 'eim_esipa_error_answers_total{binding="http",code="4",function="provideEimPackageResult"} 1.0'
    assert series in text
    assert any(r.getMessage() == "ESipa error answer" and r.code == code for r in caplog.records)
    # an unregistered EID polling: eidNotFound (2), warned; the idle answer is not an error
    await env.handle(get_eim_package_request(EIDS[4]))
    assert 'code="2",function="getEimPackage"' in metrics.render().decode()
    assert error_answer_code(0xBF4F, NO_PACKAGE) is None


def test_error_answer_code_reads_each_function():
    assert error_answer_code(0xBF39, bytes.fromhex("BF3903810134")) == 52
    assert error_answer_code(0xBF3B, bytes.fromhex("BF3B03820108")) == 8
    assert error_answer_code(0xBF3A, bytes.fromhex("BF3A03810106")) == 6
    assert error_answer_code(0xBF41, bytes.fromhex("BF4103810101")) == 1
    assert error_answer_code(0xBF4F, bytes.fromhex("BF4F03020104")) == 4
    assert error_answer_code(0xBF50, bytes.fromhex("BF50023000")) is None  # emptyResponse
    assert error_answer_code(0xBF39, bytes.fromhex("BF3902A000")) is None
    assert error_answer_code(0xBF39, b"\xbf\x39") is None  # not even a TLV: no code


async def test_refused_pushed_results_count_too(store, lab):
    """MQTT push: a refused result in TransferEimPackageResponse has no error answer, but counts against the cap."""
    from eim.interfaces import RequestContext

    env = make_env(store, lab, settings=OperationSettings(max_handouts=2, push_retry_s=0.0))
    card = await ready_card(env, lab, EIDS[3])
    pushed: list[bytes] = []

    class Pusher:
        async def push(self, eid, message):
            pushed.append(message)

    env.service.pusher = Pusher()
    await store.update_euicc(card.eid, binding="mqtt")
    mqtt = RequestContext("mqtt", f"esipa/{card.eid}/up", card.eid)
    op = await env.service.create(card.eid, OpKind.PSMO, {"psmos": [{"getRAT": {}}]})
    await env.service.drain()
    for expected in (OpStatus.IN_PROGRESS, OpStatus.FAILED):
        package = tlv.children(pushed[-1])[0].raw
        bad = forged(await card.load(package))
        assert await env.dispatcher.handle(tlv.encode(0xBF4E, bad), mqtt) is None
        assert (await env.service.get(op.id)).status is expected
        await env.service.push_pending()
    assert len(pushed) == 2  # not pushed a third time
    failed = await env.service.get(op.id)
    assert failed.result["refusals"]["count"] == 2 and "refused after 2 hand-out(s)" in failed.error
