"""What the lab SM-DP+ says and does around the steps that go wrong in the field (interop issue 14, point 8):
a wrong confirmation code followed by the LPA's cancel (lpac cancels with endUserRejection after any error) leaves
the order open while attempts remain, and every message says what happened; the cancelSession an LPA sends after
a failed authenticateClient is answered as expected; a PIR delivered twice is no warning."""

from __future__ import annotations

import logging

from smdpp import orders
from tests.smdpp.sim import Download, SimEuicc, b64, status

END_USER_REJECTION, UNDEFINED = 0, 127


def _order(smdp, **kw):
    return orders.create_order(smdp.ctx.store, smdp_address=smdp.address, **{"profile": "small", **kw})


def _cancel(es9, dl, reason):
    return es9.call(
        "cancelSession",
        transactionId=dl.auth["transactionId"],
        cancelSessionResponse=b64(dl.card.cancel_session(reason)),
    )[1]


def test_wrong_code_then_lpa_cancel_keeps_the_order_until_attempts_run_out(es9, smdp, lab_pki):
    order = _order(smdp, confirmation_code="2468")
    for attempt, reason in ((1, END_USER_REJECTION), (2, UNDEFINED)):
        dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
        dl.initiate()
        assert status(dl.authenticate()) == "Executed-Success"
        refused = status(dl.get_bpp("1111"))
        assert refused[:2] == ("8.2.7", "3.8")
        left = 3 - attempt
        assert f"({attempt} of 3 attempts used)" in refused[2] and f"stays open for {left} more attempt" in refused[2]
        assert status(_cancel(es9, dl, reason)) == "Executed-Success"
        after = smdp.ctx.store.get(order.matching_id)
        assert (after.state, after.cc_attempts) == ("released", attempt)
        assert "after a wrong confirmation code; order kept" in smdp.ctx.store.events(order.matching_id)[-1]["detail"]
    # the right code now installs
    pir = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id).run("2468")
    assert pir[:2] == b"\xbf\x37"
    assert smdp.ctx.store.get(order.matching_id).state == "installed"


def test_the_last_wrong_code_ends_the_order_and_the_retry_says_why(es9, smdp, lab_pki, caplog):
    order = _order(smdp, confirmation_code="2468")
    for _ in range(3):
        dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
        dl.initiate()
        assert status(dl.authenticate()) == "Executed-Success"
        answer = status(dl.get_bpp("1111"))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="smdpp"):
            cancelled = status(_cancel(es9, dl, END_USER_REJECTION))
        assert cancelled == "Executed-Success"
    assert answer[:2] == ("8.2.7", "6.4") and "(3 of 3 attempts used)" in answer[2] and "is ended" in answer[2]
    # the LPA's cancel after the final refusal: expected, answered, not logged as a failure
    assert not [r for r in caplog.records if r.getMessage().startswith("cancelSession failed")]
    assert any("had already ended when getBoundProfilePackage failed" in r.getMessage() for r in caplog.records)
    assert smdp.ctx.store.get(order.matching_id).state == "error"
    retry = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    retry.initiate()
    refused = status(retry.authenticate())
    assert refused[:2] == ("8.2.6", "3.8")
    assert "confirmation code retries exhausted" in refused[2] and "already used" not in refused[2]


def test_cancel_after_a_failed_authenticate_client_is_expected(es9, smdp, lab_pki, caplog):
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, "NO-SUCH-ORDER")
    dl.initiate()
    assert status(dl.authenticate())[:2] == ("8.2.6", "3.8")
    with caplog.at_level(logging.INFO, logger="smdpp"):
        answer = _cancel(es9, dl, UNDEFINED)
    assert status(answer) == "Executed-Success"
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("cancelSession failed")]
    assert any("had already ended when authenticateClient failed" in m for m in messages)
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    # once: a second cancel for the same transactionId is unknown again
    assert status(_cancel(es9, dl, UNDEFINED))[:2] == ("8.10.1", "3.9")


def test_a_pir_delivered_twice_is_info_not_warning(es9, smdp, lab_pki, caplog):
    order = _order(smdp)
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    pir = dl.run()
    with caplog.at_level(logging.INFO, logger="smdpp"):
        assert dl.notify(pir) == 204
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    assert any("again" in r.getMessage() for r in caplog.records)
    assert smdp.ctx.store.get(order.matching_id).state == "installed"
    assert len([n for n in smdp.ctx.store.notifications() if n.kind == "pir"]) == 2
