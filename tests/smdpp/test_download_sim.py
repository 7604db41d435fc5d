"""Full ES9+ downloads against the running SM-DP+ with the rsp-based simulated eUICC, on both curves."""

from __future__ import annotations

import pytest

from smdpp import orders
from tests.smdpp.sim import Download, SimEuicc, status


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
@pytest.mark.parametrize("profile", ["ts48", "ts48-ppk"])
def test_full_download_installs_and_matching_id_is_one_time(smdp, es9, lab_pki, curve, profile):
    store = smdp.ctx.store
    order = orders.create_order(store, profile=profile, smdp_address=smdp.address)
    assert order.state == "released"
    card = SimEuicc(lab_pki, curve)
    dl = Download(es9, card, smdp.address, order.matching_id)
    dl.run()
    assert order.iccid in card.profiles
    assert len(card.profiles[order.iccid].package) == 12_288
    after = store.get(order.matching_id)
    assert after.state == "installed"
    assert after.bound_eid == card.eid
    notes = store.notifications()
    assert notes[0].kind == "pir" and notes[0].verified and notes[0].iccid == order.iccid
    # the same matchingId cannot start a second download
    again = Download(es9, SimEuicc(lab_pki, curve), smdp.address, order.matching_id)
    again.initiate()
    subject, reason, message = status(again.authenticate())
    assert (subject, reason) == ("8.2.6", "3.8")
    assert "installed" in message
