"""ES9+ negative paths, each with the exact SGP.22 subjectCode/reasonCode, and the order state afterwards."""

from __future__ import annotations

import dataclasses
import ssl
import time

import pytest

from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.smdpp.conftest import EID1, EID2
from tests.smdpp.sim import Download, Es9Client, SimEuicc, b64, status


def _order(smdp, **kw):
    return orders.create_order(smdp.ctx.store, smdp_address=smdp.address, **{"profile": "small", **kw})


def _codes(resp):
    st = status(resp)
    assert st != "Executed-Success", resp
    return st[0], st[1]


def test_invalid_smdp_address(es9, smdp, lab_pki):
    dl = Download(es9, SimEuicc(lab_pki), "other.example:443", "X")
    assert _codes(dl.initiate()) == ("8.8.1", "3.8")


def test_unknown_matching_id(es9, smdp, lab_pki):
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, "NO-SUCH-ORDER")
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.2.6", "3.8")
    # the session is gone after a refused authentication
    _, resp = es9.call(
        "getBoundProfilePackage", transactionId=dl.auth["transactionId"], prepareDownloadResponse=b64(b"\xbf\x21\x00")
    )
    assert _codes(resp) == ("8.10.1", "3.9")


def test_order_held_is_refused_until_released(es9, smdp, lab_pki):
    order = _order(smdp, hold=True)
    assert order.state == "confirmed"
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.2.6", "3.8")
    smdp.ctx.store.release(order.matching_id)
    Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id).run()
    assert smdp.ctx.store.get(order.matching_id).state == "installed"


def test_eid_mismatch(es9, smdp, lab_pki):
    order = _order(smdp, eid=EID2)
    dl = Download(es9, SimEuicc(lab_pki, eid=EID1), smdp.address, order.matching_id)
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.1.1", "3.8")
    assert smdp.ctx.store.get(order.matching_id).state == "released"
    # the right eUICC still gets it
    Download(es9, SimEuicc(lab_pki, eid=EID2), smdp.address, order.matching_id).run()
    assert smdp.ctx.store.get(order.matching_id).bound_eid == EID2


def test_first_eUICC_links_an_unlinked_order(es9, smdp, lab_pki):
    order = _order(smdp)
    first = Download(es9, SimEuicc(lab_pki, eid=EID1), smdp.address, order.matching_id)
    first.initiate()
    assert status(first.authenticate()) == "Executed-Success"
    assert smdp.ctx.store.get(order.matching_id).eid == EID1
    other = Download(es9, SimEuicc(lab_pki, eid=EID2), smdp.address, order.matching_id)
    other.initiate()
    assert _codes(other.authenticate()) == ("8.1.1", "3.8")


def test_empty_matching_id_finds_the_order_linked_to_the_eid(es9, smdp, lab_pki):
    order = _order(smdp, eid=EID2)
    Download(es9, SimEuicc(lab_pki, eid=EID2), smdp.address, "").run()
    assert smdp.ctx.store.get(order.matching_id).state == "installed"
    dl = Download(es9, SimEuicc(lab_pki, eid=EID2), smdp.address, None)
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.2.6", "3.8")


def test_confirmation_code_right_wrong_missing_and_exhausted(es9, smdp, lab_pki):
    ok = _order(smdp, confirmation_code="4711")
    assert ok.activation_code.endswith("$$1")
    Download(es9, SimEuicc(lab_pki), smdp.address, ok.matching_id).run(cc="4711")
    assert smdp.ctx.store.get(ok.matching_id).state == "installed"

    order = _order(smdp, confirmation_code="4711")
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    resp = dl.authenticate()
    assert status(resp) == "Executed-Success"
    from rsp import tlv
    from tests.smdpp.sim import unb64

    assert tlv.find(unb64(resp["smdpSigned2"]), 0x01).value == b"\xff"  # ccRequiredFlag
    assert _codes(dl.get_bpp(None)) == ("8.2.7", "2.2")
    assert _codes(dl.get_bpp("0000")) == ("8.2.7", "3.8")
    assert _codes(dl.get_bpp("1111")) == ("8.2.7", "3.8")
    assert smdp.ctx.store.get(order.matching_id).state == "released"
    assert _codes(dl.get_bpp("2222")) == ("8.2.7", "6.4")
    after = smdp.ctx.store.get(order.matching_id)
    assert (after.state, after.cc_attempts) == ("error", 3)
    # the session ended and the order is over, even with the right code
    assert _codes(dl.get_bpp("4711")) == ("8.10.1", "3.9")
    again = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    again.initiate()
    assert _codes(again.authenticate()) == ("8.2.6", "3.8")


def test_expired_order(es9, smdp, lab_pki):
    order = _order(smdp, expires="1s")
    time.sleep(1.1)
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.8.5", "4.10")


def test_download_attempts_exhausted(es9, smdp, lab_pki):
    order = _order(smdp)
    for _ in range(order.download_max):
        dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
        dl.initiate()
        assert status(dl.authenticate()) == "Executed-Success"
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    assert _codes(dl.authenticate()) == ("8.8.5", "6.4")
    assert smdp.ctx.store.get(order.matching_id).state == "error"


def test_euicc_of_an_untrusted_ci(es9, smdp, lab_pki, rogue_pki):
    order = _order(smdp)
    # a card that only knows the rogue CI: no common CI at all
    dl = Download(es9, SimEuicc(rogue_pki), smdp.address, order.matching_id)
    assert _codes(dl.initiate()) == ("8.8.2", "3.1")
    # a card that claims the lab CI but whose certificates chain to the rogue CI
    liar = SimEuicc(rogue_pki, ci_pkids=[lab_pki.ci_key_id("nist")], trusted=lab_pki.ci_certs())
    dl = Download(es9, liar, smdp.address, order.matching_id)
    assert status(dl.initiate()) == "Executed-Success"
    assert _codes(dl.authenticate()) == ("8.11.1", "3.9")
    assert smdp.ctx.store.get(order.matching_id).download_attempts == 0


def test_bad_euicc_signature1(es9, smdp, lab_pki):
    order = _order(smdp)
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    assert _codes(dl.authenticate(tamper_signature=True)) == ("8.1", "6.1")
    assert smdp.ctx.store.get(order.matching_id).download_attempts == 0


def test_bad_euicc_signature2(es9, smdp, lab_pki):
    order = _order(smdp)
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    dl.authenticate()
    assert _codes(dl.get_bpp(tamper_signature=True)) == ("8.1", "6.1")
    assert smdp.ctx.store.get(order.matching_id).state == "released"


@pytest.mark.parametrize("function", ["authenticateClient", "getBoundProfilePackage", "cancelSession"])
def test_unknown_transaction_id(es9, smdp, function):
    field = {
        "authenticateClient": "authenticateServerResponse",
        "getBoundProfilePackage": "prepareDownloadResponse",
        "cancelSession": "cancelSessionResponse",
    }[function]
    code, resp = es9.call(function, transactionId="00112233445566778899AABBCCDDEEFF", **{field: b64(b"\x30\x00")})
    assert code == 200
    assert _codes(resp) == ("8.10.1", "3.9")


REASONS = {0: "error", 1: "released", 2: "released", 3: "error", 4: "error", 5: "error", 127: "error"}


@pytest.mark.parametrize("reason", sorted(REASONS))
@pytest.mark.parametrize("after", ["authenticate", "bpp"])
def test_cancel_session_each_reason(es9, smdp, lab_pki, reason, after):
    order = _order(smdp)
    card = SimEuicc(lab_pki)
    dl = Download(es9, card, smdp.address, order.matching_id)
    dl.initiate()
    dl.authenticate()
    if after == "bpp":
        assert status(dl.get_bpp()) == "Executed-Success"
        assert smdp.ctx.store.get(order.matching_id).state == "downloaded"
    code, resp = es9.call(
        "cancelSession", transactionId=dl.auth["transactionId"], cancelSessionResponse=b64(card.cancel_session(reason))
    )
    assert (code, status(resp)) == (200, "Executed-Success")
    assert smdp.ctx.store.get(order.matching_id).state == REASONS[reason]
    # the session is over
    _, resp = es9.call(
        "cancelSession", transactionId=dl.auth["transactionId"], cancelSessionResponse=b64(card.cancel_session(reason))
    )
    assert _codes(resp) == ("8.10.1", "3.9")
    # postponed/timeout: the same matchingId downloads again; otherwise it is refused
    again = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    again.initiate()
    if REASONS[reason] == "released":
        assert status(again.authenticate()) == "Executed-Success"
    else:
        assert _codes(again.authenticate()) == ("8.2.6", "3.8")


def test_cancel_session_wrong_oid_and_bad_signature(es9, smdp, lab_pki):
    order = _order(smdp)
    card = SimEuicc(lab_pki)
    dl = Download(es9, card, smdp.address, order.matching_id)
    dl.initiate()
    dl.authenticate()
    _, resp = es9.call(
        "cancelSession",
        transactionId=dl.auth["transactionId"],
        cancelSessionResponse=b64(card.cancel_session(1, smdp_oid="1.2.3.4")),
    )
    assert _codes(resp) == ("8.8", "3.10")
    dl = Download(es9, card, smdp.address, order.matching_id)
    dl.initiate()
    dl.authenticate()
    forged = bytearray(card.cancel_session(1))
    forged[-1] ^= 1
    _, resp = es9.call(
        "cancelSession", transactionId=dl.auth["transactionId"], cancelSessionResponse=b64(bytes(forged))
    )
    assert _codes(resp) == ("8.1", "6.1")


def test_pir_with_bad_signature_or_error_result(es9, smdp, lab_pki):
    order = _order(smdp)
    card = SimEuicc(lab_pki)
    dl = Download(es9, card, smdp.address, order.matching_id)
    dl.initiate()
    dl.authenticate()
    dl.get_bpp()
    pir = card.pir(success=True, iccid=order.iccid, address=smdp.address, tamper=True)
    assert dl.notify(pir) == 204
    note = smdp.ctx.store.notifications()[0]
    assert not note.verified and "not verified" in note.detail
    assert smdp.ctx.store.get(order.matching_id).state == "downloaded"
    pir = card.pir(success=False, iccid=order.iccid, address=smdp.address)
    assert dl.notify(pir) == 204
    after = smdp.ctx.store.get(order.matching_id)
    assert after.state == "error" and "loadProfileElements" in after.last_error


def test_other_signed_notifications_are_verified_and_recorded(es9, smdp, lab_pki, rogue_pki):
    order = _order(smdp)
    card = SimEuicc(lab_pki)
    Download(es9, card, smdp.address, order.matching_id).run()
    for bit, event in ((1, "enable"), (2, "disable"), (3, "delete")):
        code, _ = es9.call(
            "handleNotification", pendingNotification=b64(card.other_notification(bit, order.iccid, smdp.address))
        )
        assert code == 204
        note = smdp.ctx.store.notifications()[0]
        assert (note.kind, note.event, note.iccid, note.eid, note.verified) == (
            "other",
            event,
            order.iccid,
            card.eid,
            True,
        )
    rogue = SimEuicc(rogue_pki)
    code, _ = es9.call(
        "handleNotification", pendingNotification=b64(rogue.other_notification(1, order.iccid, smdp.address))
    )
    assert code == 204
    assert not smdp.ctx.store.notifications()[0].verified
    assert smdp.ctx.store.get(order.matching_id).state == "installed"


def test_rebinding_same_eid_only(es9, smdp, lab_pki):
    order = _order(smdp)
    first = Download(es9, SimEuicc(lab_pki, eid=EID1), smdp.address, order.matching_id)
    first.initiate()
    first.authenticate()
    assert status(first.get_bpp()) == "Executed-Success"
    assert smdp.ctx.store.get(order.matching_id).state == "downloaded"
    # the BPP never got installed: the same eUICC may download again, with fresh keys
    other = Download(es9, SimEuicc(lab_pki, eid=EID2), smdp.address, order.matching_id)
    other.initiate()
    assert _codes(other.authenticate()) == ("8.1.1", "3.8")
    card = SimEuicc(lab_pki, eid=EID1)
    again = Download(es9, card, smdp.address, order.matching_id)
    again.run()
    assert order.iccid in card.profiles
    assert first.bpp_resp["boundProfilePackage"] != again.bpp_resp["boundProfilePackage"]
    assert smdp.ctx.store.get(order.matching_id).state == "installed"
    # the late PIR of the first session verifies but changes nothing any more
    assert first.notify(first.card.pir(success=True, iccid=order.iccid, address=smdp.address)) == 204
    assert smdp.ctx.store.get(order.matching_id).state == "installed"


def test_pir_after_a_server_restart_still_verifies(lab_pki, tmp_path):
    config = SmdppConfig(data_dir=tmp_path, pki_dir=lab_pki.root, port=0)
    with running_server(config) as srv:
        order = orders.create_order(srv.ctx.store, profile="small", smdp_address=srv.address)
        client = Es9Client(srv.base_url, verify=ssl.create_default_context(cafile=str(srv.ca_bundle)))
        card = SimEuicc(lab_pki)
        dl = Download(client, card, srv.address, order.matching_id)
        dl.initiate()
        dl.authenticate()
        dl.get_bpp()
        pir = dl.install()
        client.close()
    # sessions live in the store now (shared by workers, kept over a restart): let this one expire, so the PIR
    # must verify with the eUICC key the store learned in authenticateClient
    time.sleep(0.05)
    with running_server(dataclasses.replace(config, session_ttl=0.01)) as srv:
        assert len(srv.ctx.sessions) == 0
        client = Es9Client(srv.base_url, verify=ssl.create_default_context(cafile=str(srv.ca_bundle)))
        code, _ = client.call("handleNotification", pendingNotification=b64(pir))
        client.close()
        assert code == 204
        assert srv.ctx.store.get(order.matching_id).state == "installed"
        assert srv.ctx.store.notifications()[0].verified
