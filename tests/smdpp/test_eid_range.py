"""ES9+ AuthenticateClient refuses an eUICC whose EID is outside its EUM's permitted range (SGP.22 §4.5.2.2),
with the pair osmo-smdpp answers: subjectCode 8.1.4, reasonCode 6.1.

The attacker holds a CI-signed EUM whose range is ``89049033`` (written byte by byte in
``tests/rsp/test_eid_range.py``) and signs an eUICC certificate for the lab EID of another card; everything
else about the chain and the signatures is valid. Nothing is stored for the order.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rsp.pki import Role, issue_certificate
from smdpp import orders
from tests.rsp.test_eid_range import attacker_eum, in_range_eid
from tests.smdpp.conftest import EID1
from tests.smdpp.sim import Download, SimEuicc, status

DER = serialization.Encoding.DER


def _card_with(lab_pki, eum, eum_key, eid: str) -> SimEuicc:
    """A simulated card with a fresh key whose certificate ``eum`` issues for ``eid``."""
    sim = SimEuicc(lab_pki)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_certificate(Role.EUICC, key.public_key(), eum, eum_key, eid=eid)
    sim.eid, sim.cert_der, sim.eum_der = eid, cert.public_bytes(DER), eum.public_bytes(DER)
    sim.key = key
    return sim


def _attempt(es9, smdp, sim: SimEuicc):
    order = orders.create_order(smdp.ctx.store, smdp_address=smdp.address, profile="small")
    dl = Download(es9, sim, smdp.address, order.matching_id)
    assert status(dl.initiate()) == "Executed-Success"
    return order, dl.authenticate()


def test_euicc_outside_the_eum_range_is_refused_8_1_4(es9, smdp, lab_pki):
    eum_key = ec.generate_private_key(ec.SECP256R1())
    eum = attacker_eum(lab_pki.ci_cert("nist"), lab_pki.ci_key("nist"), eum_key, org="sgp32-stack lab EUM")
    sim = _card_with(lab_pki, eum, eum_key, EID1)
    order, resp = _attempt(es9, smdp, sim)
    st = status(resp)
    assert st[:2] == ("8.1.4", "6.1"), resp
    assert "EID is not within the permitted range of the EUM certificate" in st[2]
    assert EID1 in st[2]
    after = smdp.ctx.store.get(order.matching_id)
    assert after.download_attempts == 0 and after.eid is None and after.state == order.state
    # the same attacker EUM, used for an EID inside its range, gets through (the refusal above is the range)
    inside = _card_with(lab_pki, eum, eum_key, in_range_eid())
    _, ok = _attempt(es9, smdp, inside)
    assert status(ok) == "Executed-Success", ok


def test_eum_without_a_range_is_refused_8_1_4(es9, smdp, lab_pki):
    """An EUM like the lab EUM before interop issue 14: CI-signed, no nameConstraints, no permittedEins."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    eum = issue_certificate(
        Role.EUM, eum_key.public_key(), lab_pki.ci_cert("nist"), lab_pki.ci_key("nist"), eid_prefixes=()
    )
    sim = _card_with(lab_pki, eum, eum_key, EID1)
    order, resp = _attempt(es9, smdp, sim)
    st = status(resp)
    assert st[:2] == ("8.1.4", "6.1"), resp
    assert "carries no permitted EID range" in st[2]
    assert smdp.ctx.store.get(order.matching_id).download_attempts == 0


def test_lab_pki_euiccs_are_inside_and_download(es9, smdp, lab_pki):
    order = orders.create_order(smdp.ctx.store, smdp_address=smdp.address, profile="small")
    Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id).run()
    assert smdp.ctx.store.get(order.matching_id).state == "installed"
