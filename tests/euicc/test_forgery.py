"""The software eUICC's test-only lies (``euicc.forgery.Forgery``): the real captured package run by a card that
signs what it should not. Each lie changes exactly one thing in the signed result; the card's state moves as for
the truth, and the setting is never written to the state file."""

from __future__ import annotations

import pytest

from euicc.card import SoftEuicc
from euicc.forgery import Forgery
from rsp import asn1, crypto, tlv
from tests.euicc.conftest import REAL_EID, Es10Driver, add_initial_eim, eim_config, make_card
from tests.euicc.test_eim_package import real_request, sample_spki

TOKEN_TLV = bytes.fromhex("840101")  # the association token of the sample eIM: 1
TRUTH = {"eimId": "eIM", "counterValue": 1006, "eimTransactionId": bytes.fromhex("F92B2FEE35632499E841CB754FDFD9F3")}


def run(lab_pki, vectors, lie: Forgery | None, path=None):
    card = make_card(lab_pki, eid=REAL_EID, state_path=path)
    add_initial_eim(Es10Driver(card), eim_config("eIM", sample_spki(), counter=1000, token=1))
    card.ctx.forgery = lie
    result = Es10Driver(card).call(real_request(vectors))
    alt, value = asn1.decode("EuiccPackageResult", result)
    assert alt == "euiccPackageResultSigned"
    signed = tlv.require(result, 0xA0, 0x30).raw
    signature = tlv.require(result, 0xA0, 0x5F37).value
    return card, value["euiccPackageResultDataSigned"], signed + TOKEN_TLV, signature


@pytest.mark.parametrize(
    ("lie", "changed"),
    [
        (Forgery(counter_offset=1), {"counterValue": 1007}),
        (Forgery(eim_transaction_id=b"\x01" * 16), {"eimTransactionId": b"\x01" * 16}),
        (Forgery(drop_transaction_id=True), {"eimTransactionId": None}),
        (Forgery(eim_id="eim.attacker"), {"eimId": "eim.attacker"}),
    ],
)
def test_each_lie_changes_one_signed_field(lab_pki, vectors, lie, changed):
    card, data, signed, signature = run(lab_pki, vectors, lie)
    for name, truth in TRUTH.items():
        assert data.get(name) == changed.get(name, truth)
    crypto.verify(card.identity.euicc_cert, signed, signature)  # still the card's own signature
    assert card.state.eim("eIM").counter == 1006  # the package ran as usual


def test_another_key_signs(lab_pki, vectors):
    other = crypto.generate_key("nist")
    card, data, signed, signature = run(lab_pki, vectors, Forgery(signing_key=other))
    assert {k: data.get(k) for k in TRUTH} == TRUTH
    crypto.verify(other.public_key(), signed, signature)
    assert not crypto.is_valid_signature(card.identity.euicc_cert.public_key(), signed, signature)
    assert "<key>" in repr(Forgery(signing_key=other)) and "Private" not in repr(Forgery(signing_key=other))


def test_the_truth_by_default_and_never_persisted(lab_pki, vectors, tmp_path):
    _card, data, _signed, _signature = run(lab_pki, vectors, Forgery(counter_offset=3), path=tmp_path / "card.json")
    assert data["counterValue"] == 1009
    reloaded = SoftEuicc.load(tmp_path / "card.json")
    assert reloaded.ctx.forgery is None
    assert "forgery" not in (tmp_path / "card.json").read_text()
