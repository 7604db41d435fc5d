"""SGP.32 eUICC packages on the software eUICC: the real captured EuiccPackageRequest, every refusal with its
exact code, counters, eCOs, AddInitialEim and GetEimConfigurationData."""

from __future__ import annotations

import pytest

from rsp import asn1, crypto, tlv
from rsp.pki import LabPki
from tests.euicc.conftest import (
    LAB_EID,
    REAL_EID,
    SAMPLE_EIM_CERT,
    Es10Driver,
    add_initial_eim,
    eim_config,
    eim_package,
    make_card,
)

T = tlv.encode
TXID = bytes.fromhex("F92B2FEE35632499E841CB754FDFD9F3")


def sample_spki() -> bytes:
    return crypto.public_key_spki_der(crypto.load_certificate(SAMPLE_EIM_CERT).public_key())


def real_request(vectors) -> bytes:
    raw = bytes.fromhex(vectors["real_get_eim_package_response"]["hex"])
    return tlv.require(raw, 0xBF51).raw  # the BF51 exactly as the eIM sent it


def card_with_sample_eim(pki: LabPki, eid: str = REAL_EID, counter: int = 1000, key: bytes | None = None):
    card = make_card(pki, eid=eid)
    driver = Es10Driver(card)
    answer = add_initial_eim(driver, eim_config("eIM", key or sample_spki(), counter=counter, token=1))
    assert answer == bytes.fromhex("BF5704A0020500")  # addOk: the token was given, not generated
    return card, driver


def test_real_package_is_accepted_and_answered_with_a_correctly_signed_result(lab_pki, vectors):
    card, driver = card_with_sample_eim(lab_pki)
    card.state.next_seq = 20  # the real card's next sequence number, to compare bytes with its answer
    result = driver.call(real_request(vectors))
    signed = tlv.require(result, 0xA0, 0x30)
    signature = tlv.require(result, 0xA0, 0x5F37).value
    # the signed data is byte-identical to what the real eUICC signed (vectors: signed_input_hex minus 84 01 01)
    expected_input = bytes.fromhex(vectors["real_euicc_package_result"]["signed_input_hex"])
    assert signed.raw + bytes.fromhex("840101") == expected_input
    crypto.verify(card.identity.euicc_cert, signed.raw + bytes.fromhex("840101"), signature, what="euiccSignEPR")
    decoded = asn1.decode("EuiccPackageResult", result)
    alt, value = decoded
    assert alt == "euiccPackageResultSigned"
    data = value["euiccPackageResultDataSigned"]
    assert data["eimId"] == "eIM" and data["counterValue"] == 1006 and data["seqNumber"] == 20
    assert data["euiccResult"] == [("enableResult", 1)]  # iccidOrAidNotFound: no such profile
    # the counter moved, the EPR is pending under seq 20
    assert card.state.eim("eIM").counter == 1006
    listed = driver.call(bytes.fromhex("BF2B04A0028200"))
    assert listed == T(0xBF2B, T(0xA2, result))
    assert driver.call(bytes.fromhex("BF2B05A003800114")) == T(0xBF2B, T(0xA2, result))
    assert driver.call(bytes.fromhex("BF2B00")) == bytes.fromhex("BF2B02A000")  # not a plain notification
    assert driver.call(bytes.fromhex("BF3003800114")) == bytes.fromhex("BF3003800100")
    assert driver.call(bytes.fromhex("BF3003800114")) == bytes.fromhex("BF3003800101")  # nothingToDelete
    assert driver.call(bytes.fromhex("BF2B04A0028200")) == bytes.fromhex("BF2B02A200")


def test_real_package_through_a_card_state_file(lab_pki, vectors, tmp_path):
    from euicc.card import SoftEuicc

    path = tmp_path / "card.json"
    card = make_card(lab_pki, eid=REAL_EID, state_path=path)
    add_initial_eim(Es10Driver(card), eim_config("eIM", sample_spki(), counter=1005, token=1))
    reloaded = SoftEuicc.load(path)
    result = Es10Driver(reloaded).call(real_request(vectors))
    assert asn1.decode("EuiccPackageResult", result)[0] == "euiccPackageResultSigned"
    again = SoftEuicc.load(path)
    assert again.state.eim("eIM").counter == 1006
    assert [n.kind for n in again.state.notifications] == ["epr"]


def test_unknown_eim_gives_the_unsigned_error(lab_pki, vectors):
    card = make_card(lab_pki, eid=REAL_EID)
    result = Es10Driver(card).call(real_request(vectors))
    assert result == T(0xBF51, T(0xA2, T(0x80, b"eIM") + T(0x82, TXID)))


def test_wrong_eim_key_gives_the_unsigned_error(lab_pki, vectors):
    other = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    card, driver = card_with_sample_eim(lab_pki, key=other)
    before = card.state.snapshot()
    result = driver.call(real_request(vectors))
    assert result == T(0xBF51, T(0xA2, T(0x80, b"eIM") + T(0x82, TXID) + T(0x84, b"\x01")))
    assert card.state == before  # nothing changed: no counter, no notification


@pytest.mark.parametrize("where", ["signature", "eid", "counter", "psmo"])
def test_any_flipped_byte_gives_the_unsigned_error(lab_pki, vectors, where):
    card, driver = card_with_sample_eim(lab_pki)
    raw = bytearray(real_request(vectors))
    offset = {
        "signature": len(raw) - 5,
        "eid": raw.find(bytes.fromhex("8904404511")) + 3,
        "counter": raw.find(bytes.fromhex("810203EE")) + 3,
        "psmo": raw.find(bytes.fromhex("989444")) + 1,
    }[where]
    raw[offset] ^= 0x01
    result = driver.call(bytes(raw))
    assert tlv.parse_exact(result).value[:1] == b"\xa2"
    assert card.state.eim("eIM").counter == 1000


def test_wrong_eid_gives_signed_invalid_eid(lab_pki, vectors):
    card, driver = card_with_sample_eim(lab_pki, eid=LAB_EID)
    result = driver.call(real_request(vectors))
    signed = tlv.require(result, 0xA1, 0x30)
    assert signed.raw == T(0x30, T(0x80, b"eIM") + T(0x81, bytes.fromhex("03EE")) + T(0x82, TXID) + T(0x02, b"\x03"))
    crypto.verify(
        card.identity.euicc_cert,
        signed.raw + bytes.fromhex("840101"),
        tlv.require(result, 0xA1, 0x5F37).value,
        what="euiccSignEPE",
    )
    assert asn1.decode("EuiccPackageResult", result)[1]["euiccPackageErrorDataSigned"]["euiccPackageErrorCode"] == 3
    assert card.state.eim("eIM").counter == 1000 and not card.state.notifications


def test_repeated_or_lower_counter_gives_replay_error(lab_pki, vectors):
    _card, driver = card_with_sample_eim(lab_pki, counter=1005)
    first = driver.call(real_request(vectors))
    assert tlv.parse_exact(first).value[:1] == b"\xa0"
    again = driver.call(real_request(vectors))
    assert tlv.require(again, 0xA1, 0x30, 0x02).value == b"\x04"  # replayError
    card2, driver2 = card_with_sample_eim(lab_pki, counter=2000)
    lower = driver2.call(real_request(vectors))
    assert tlv.require(lower, 0xA1, 0x30, 0x02).value == b"\x04"
    assert card2.state.eim("eIM").counter == 2000
    _card3, driver3 = card_with_sample_eim(lab_pki, counter=1006)  # equal is a replay too
    assert tlv.require(driver3.call(real_request(vectors)), 0xA1, 0x30, 0x02).value == b"\x04"


def lab_eim(lab_pki, card, driver, *, counter=0, token=-1, eim_id="lab-eim") -> int | None:
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    answer = add_initial_eim(driver, eim_config(eim_id, spki, counter=counter, token=token))
    if token == -1:
        return tlv.require(answer, 0xA0, 0x84).value[0]
    return token


def test_counter_beyond_the_maximum_is_out_of_range(lab_pki):
    from euicc.eim_config import COUNTER_MAX

    card = make_card(lab_pki)
    driver = Es10Driver(card)
    token = lab_eim(lab_pki, card, driver)
    pkg = eim_package(lab_pki.eim_key("nist"), "lab-eim", card.state.eid, COUNTER_MAX + 1, T(0xA6, b""), token=token)
    result = driver.call(pkg)
    assert tlv.require(result, 0xA1, 0x30, 0x02).value == b"\x06"
    ok = driver.call(
        eim_package(lab_pki.eim_key("nist"), "lab-eim", card.state.eid, COUNTER_MAX, T(0xA6, b""), token=token)
    )
    assert asn1.decode("EuiccPackageResult", ok)[1]["euiccPackageResultDataSigned"]["euiccResult"] == [
        ("getRATResult", [])
    ]


def test_add_initial_eim_generates_tokens_and_only_once(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    cert_der = SmdpDer.der(lab_pki.eim_cert("brainpool"))
    answer = add_initial_eim(
        driver, eim_config("a", spki, token=-1), eim_config("b", cert_der, certificate=True, token=-1, counter=None)
    )
    assert answer == bytes.fromhex("BF5708A006840101840102")
    assert asn1.decode("AddInitialEimResponse", answer) == (
        "addInitialEimOk",
        [("associationToken", 1), ("associationToken", 2)],
    )
    assert add_initial_eim(driver, eim_config("c", spki)) == bytes.fromhex("BF5703810102")
    configs = asn1.decode("GetEimConfigurationDataResponse", driver.call(bytes.fromhex("BF5500")))
    listed = configs["eimConfigurationDataList"]
    assert [(c["eimId"], c["associationToken"], c["counterValue"]) for c in listed] == [("a", 1, 0), ("b", 2, 0)]
    one = asn1.decode("GetEimConfigurationDataResponse", driver.call(T(0xBF55, T(0xA0, T(0x80, b"b")))))
    assert [c["eimId"] for c in one["eimConfigurationDataList"]] == ["b"]
    assert one["eimConfigurationDataList"][0]["eimPublicKeyData"][0] == "eimCertificate"
    # the certificate-configured eIM signs with the brainpool eIM key
    pkg = eim_package(lab_pki.eim_key("brainpool"), "b", card.state.eid, 1, T(0xAB, b""), token=2, eco=True)
    listed = asn1.decode("EuiccPackageResult", driver.call(pkg))[1]["euiccPackageResultDataSigned"]
    assert listed["euiccResult"] == [("listEimResult", ("eimIdList", [{"eimId": "a"}, {"eimId": "b"}]))]


class SmdpDer:
    @staticmethod
    def der(cert) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("config", "code"),
    [
        (lambda spki: eim_config("x", spki, token=-5), 5),  # invalidAssociationToken
        (lambda spki: eim_config("x", spki, counter=-1), 6),  # counterValueOutOfRange
        (lambda spki: eim_config("x", spki, extra=T(0x88, b"\x01" * 20)), 3),  # ciPKUnknown
        (lambda spki: T(0x80, b"x") + T(0x83, b"\x00"), 7),  # no key: commandError
        (lambda spki: T(0x80, b"x") + T(0xA5, T(0xA0, b"\x30\x00")), 7),  # unusable key
    ],
)
def test_add_initial_eim_refusals(lab_pki, config, code):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    assert add_initial_eim(driver, config(spki)) == T(0xBF57, T(0x81, bytes([code])))
    assert card.state.eims == []


def test_onomondo_sample_add_initial_eim_request(lab_pki):
    """The AddInitialEim of onomondo-ipa's sample (protocol brief §4): token -1, counter 1, SPKI."""
    spki = sample_spki()
    request = T(
        0xBF57,
        T(
            0xA0,
            T(
                0x30,
                T(0x80, b"eIM")
                + T(0x81, b"127.0.0.1:8000")
                + T(0x83, b"\x01")
                + T(0x84, b"\xff")
                + T(0xA5, T(0xA0, tlv.parse_exact(spki).value)),
            ),
        ),
    )
    assert request[:4] == bytes.fromhex("BF577CA0")
    card = make_card(lab_pki, eid=REAL_EID)
    answer = Es10Driver(card).call(request)
    assert answer == bytes.fromhex("BF5705A003840101")  # observed token on the test eUICC: 1


def test_eco_add_update_delete_list(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    token = lab_eim(lab_pki, card, driver, counter=10)
    key = lab_pki.eim_key("nist")
    eid = card.state.eid
    spki2 = crypto.public_key_spki_der(lab_pki.eim_cert("brainpool").public_key())

    def run(counter, ops):
        res = driver.call(eim_package(key, "lab-eim", eid, counter, ops, token=token, eco=True, txid=b"\x01\x02"))
        return asn1.decode("EuiccPackageResult", res)[1]["euiccPackageResultDataSigned"]["euiccResult"]

    add = T(0xA8, eim_config("second", spki2, counter=5, token=-1))
    assert run(11, add + T(0xAB, b"")) == [
        ("addEimResult", ("associationToken", 2)),
        ("listEimResult", ("eimIdList", [{"eimId": "lab-eim"}, {"eimId": "second"}])),
    ]
    assert run(12, add) == [("addEimResult", ("addEimResultCode", 2))]  # associatedEimAlreadyExists
    assert run(13, T(0xAA, eim_config("second", spki2, counter=4, token=None))) == [("updateEimResult", 6)]
    assert run(14, T(0xAA, eim_config("second", spki2, counter=50, token=None, fqdn="new.example"))) == [
        ("updateEimResult", 0)
    ]
    assert card.state.eim("second").counter == 50 and card.state.eim("second").fqdn == "new.example"
    assert run(15, T(0xAA, eim_config("nobody", spki2))) == [("updateEimResult", 1)]
    assert run(16, T(0xA9, T(0x80, b"nobody"))) == [("deleteEimResult", 1)]
    assert run(17, T(0xA9, T(0x80, b"second"))) == [("deleteEimResult", 0)]
    # an unknown eCO ends processing
    assert run(18, T(0xAB, b"") + T(0xBF7F, b"") + T(0xAB, b"")) == [
        ("listEimResult", ("eimIdList", [{"eimId": "lab-eim"}])),
        ("processingTerminated", 2),
    ]
    assert run(19, T(0xA9, T(0x80, b"lab-eim"))) == [("deleteEimResult", 2)]  # the last one: lastEimDeleted
    assert card.state.eims == []


def test_psmo_list_without_profiles(lab_pki, vectors):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    token = lab_eim(lab_pki, card, driver)
    ops = bytes.fromhex(
        vectors["esipa_encodings"]["psmo_list_listProfileInfo_getRAT_configureImmediateEnable_setDefaultDpAddress_a.b"]
    )
    signed = T(0x30, T(0x80, b"lab-eim") + T(0x5A, card.state.eid) + T(0x81, b"\x07") + ops)
    pkg = T(0xBF51, signed + T(0x5F37, crypto.sign(lab_pki.eim_key("nist"), signed + T(0x84, bytes([token])))))
    res = asn1.decode("EuiccPackageResult", driver.call(pkg))[1]["euiccPackageResultDataSigned"]
    assert res["euiccResult"] == [
        ("listProfileInfoResult", ("profileInfoListOk", [])),
        ("getRATResult", []),
        ("configureImmediateEnableResult", 0),
        ("setDefaultDpAddressResult", {"setDefaultDpAddressResult": 0}),
    ]
    assert card.state.default_dp_address == "a.b"
    assert card.state.immediate_enable.flag is True
    assert driver.call(bytes.fromhex("BF3C00")).startswith(bytes.fromhex("BF3C"))
    addresses = asn1.decode("EuiccConfiguredAddressesResponse", driver.call(bytes.fromhex("BF3C00")))
    assert addresses["defaultDpAddress"] == "a.b"


def test_malformed_packages_get_status_words(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    assert driver.call_sw(bytes.fromhex("BF5100"))[1] == 0x6A80
    assert driver.call_sw(T(0xBF51, T(0x30, T(0x5A, b"\x00" * 16)) + T(0x5F37, b"\x00" * 64)))[1] == 0x6A80
    assert driver.call_sw(T(0xBF51, T(0x30, T(0x80, b"\xff")) + T(0x5F37, b"")))[1] == 0x6A80  # eimId not UTF-8


def test_association_without_token_and_package_without_transaction_id(lab_pki):
    """Without an association token both signatures cover the signed SEQUENCE alone; without an
    eimTransactionId the result carries none."""
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    assert add_initial_eim(driver, eim_config("nt", spki, token=None)) == bytes.fromhex("BF5704A0020500")
    pkg = eim_package(lab_pki.eim_key("nist"), "nt", card.state.eid, 1, T(0xA6, b""), token=None)
    result = driver.call(pkg)
    signed = tlv.require(result, 0xA0, 0x30)
    assert tlv.find(signed, 0x82) is None
    crypto.verify(card.identity.euicc_cert, signed.raw, tlv.require(result, 0xA0, 0x5F37).value)
    # the same package signed with a token suffix does not verify on this association
    wrong = eim_package(lab_pki.eim_key("nist"), "nt", card.state.eid, 2, T(0xA6, b""), token=0)
    assert driver.call(wrong) == T(0xBF51, T(0xA2, T(0x80, b"nt")))
