"""Acceptance: the software eUICC at APDU level (``euicc.card.SoftEuicc`` behind ``euicc.channel.LocalApduChannel``),
driven by the ES10 client of the IPA, downloads from the SM-DP+ over real HTTPS on loopback. The profile ends
installed on the card (GetProfilesInfo lists its ICCID), the SM-DP+ marks the order installed after
handleNotification, and the same matchingId cannot be downloaded again. Both curves."""

from __future__ import annotations

import ssl

import httpx
import pytest

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from ipa.es10 import Es10Client
from smdpp import orders
from smdpp.profiles import iccid_to_bcd
from tests.smdpp.conftest import EID1
from tests.smdpp.lpa import DownloadFailed, LpaDownload


async def _lpa(smdp, card, block_size=120, style="lpac"):
    channel = LocalApduChannel(card, style)
    es10 = Es10Client(channel, block_size)
    await es10.open()
    http = httpx.AsyncClient(
        base_url=smdp.base_url, verify=ssl.create_default_context(cafile=str(smdp.ca_bundle)), timeout=30
    )
    return LpaDownload(es10, http, smdp.address), http


@pytest.mark.parametrize(
    ("curve", "profile", "block_size", "style"),
    [
        ("nist", "ts48", 120, "lpac"),
        ("brainpool", "ts48", 255, "onomondo"),
        ("nist", "ts48-ppk", 255, "lpac"),
        ("brainpool", "large", 120, "lpac"),
    ],
)
async def test_soft_euicc_downloads_over_https(smdp, lab_pki, curve, profile, block_size, style):
    store = smdp.ctx.store
    order = orders.create_order(store, profile=profile, smdp_address=smdp.address, confirmation_code="2468")
    card = SoftEuicc.create(lab_pki.root, EID1, None, curve=curve)
    lpa, http = await _lpa(smdp, card, block_size, style)
    try:
        pir = await lpa.run(order.matching_id, confirmation_code="2468")
        assert pir[:2] == b"\xbf\x37"
        listed = await lpa.profiles()
        assert iccid_to_bcd(order.iccid) in [p["iccid"] for p in listed]
        assert lpa.profile_metadata["notificationConfigurationInfo"][0]["notificationAddress"] == smdp.address
        after = store.get(order.matching_id)
        assert after.state == "installed" and after.bound_eid == EID1
        pirs = [n for n in store.notifications() if n.kind == "pir"]
        assert pirs and pirs[0].verified and pirs[0].iccid == order.iccid
        # nothing left to deliver on the card
        assert await lpa.deliver_notifications() == []
        # the same matchingId is refused now
        with pytest.raises(DownloadFailed) as err:
            await lpa.run(order.matching_id, confirmation_code="2468")
        assert err.value.step == "authenticateClient"
        assert (err.value.detail["subjectCode"], err.value.detail["reasonCode"]) == ("8.2.6", "3.8")
    finally:
        await http.aclose()


async def test_soft_euicc_wrong_confirmation_code(smdp, lab_pki):
    order = orders.create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address, confirmation_code="1")
    card = SoftEuicc.create(lab_pki.root, EID1, None)
    lpa, http = await _lpa(smdp, card)
    try:
        with pytest.raises(DownloadFailed) as err:
            await lpa.run(order.matching_id, confirmation_code="2")
        assert (err.value.detail["subjectCode"], err.value.detail["reasonCode"]) == ("8.2.7", "3.8")
        assert await lpa.profiles() == []
        assert smdp.ctx.store.get(order.matching_id).cc_attempts == 1
    finally:
        await http.aclose()
