"""ESipa messages built and read by the IPA, checked against the project's ASN.1 codec (rsp.asn1) and real vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipa import messages as m
from rsp import asn1, tlv
from rsp.errors import DecodeError

EID = bytes.fromhex("89044045118427484800000000011628")
CERT = (Path(__file__).resolve().parents[1] / "data/sgp26/DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der").read_bytes()


def other_signed_notification(seq: int) -> bytes:
    """An otherSignedNotification with real certificates (signature not checked here)."""
    meta = tlv.encode(0xBF2F, m.enc_int(0x80, seq) + bytes.fromhex("81020780") + tlv.encode(0x0C, b"a.b"))
    return tlv.encode(0x30, meta + tlv.encode(0x5F37, bytes(64)) + CERT + CERT)


def both_ways(type_name: str, der: bytes):
    value = asn1.decode(type_name, der)
    assert asn1.encode(type_name, value) == der
    return value


def test_get_eim_package_request_plain_and_with_state_change(vectors):
    der = m.get_eim_package_request(EID)
    assert der.hex().upper().startswith(vectors["esipa_encodings"]["get_eim_package_request_prefix"])
    assert both_ways("EsipaMessageFromIpaToEim", der) == ("getEimPackageRequest", {"eidValue": EID})
    der = m.get_eim_package_request(EID, notify_state_change=True, state_change_cause=5, rplmn=b"\x62\xf2\x10")
    value = both_ways("EsipaMessageFromIpaToEim", der)[1]
    assert value["notifyStateChange"] is None and value["stateChangeCause"] == 5 and value["rPLMN"] == b"\x62\xf2\x10"


def test_real_package_parsed_and_kept_verbatim(vectors):
    raw = bytes.fromhex(vectors["real_get_eim_package_response"]["hex"])
    pkg = m.parse_get_eim_package_response(raw)
    assert isinstance(pkg, m.EuiccPackageRequest)
    assert pkg.raw == raw[4:]  # BF4F 8186 stripped, BF51 verbatim
    assert pkg.eim_id == "eIM" and pkg.eid == EID and pkg.counter_value == 1006
    assert pkg.eim_transaction_id == bytes.fromhex("F92B2FEE35632499E841CB754FDFD9F3")
    assert pkg.operations == (m.Psmo("enable", "8949449999999990023", False),)


def test_no_package_available(vectors):
    assert m.parse_get_eim_package_response(
        bytes.fromhex(vectors["esipa_encodings"]["no_eim_package_available"])
    ) == m.NoPackage(1)


def test_real_result_in_provide_eim_package_result(vectors):
    epr = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])
    parsed = m.parse_euicc_package_result(epr)
    assert parsed.kind == "signed" and parsed.seq_number == 20 and parsed.counter_value == 1006
    assert [(r.name, r.code) for r in parsed.results] == [("enableResult", 1)]
    der = m.provide_eim_package_result(EID, epr)
    assert der[-len(epr) :] == epr  # carried verbatim
    name, value = both_ways("EsipaMessageFromIpaToEim", der)
    assert name == "provideEimPackageResult" and value["eidValue"] == EID
    assert value["eimPackageResult"][0] == "euiccPackageResult"


def test_epr_and_notifications_and_errors_decode():
    epr = bytes.fromhex("BF5121A21F800365494D82100102030405060708090A0B0C0D0E0F108406010203040506")
    notif = other_signed_notification(1)
    der = m.provide_eim_package_result(EID, m.epr_and_notifications(epr, [notif]))
    v = asn1.decode("EsipaMessageFromIpaToEim", der)[1]
    assert v["eimPackageResult"][0] == "ePRAndNotifications"
    der = m.provide_eim_package_result(EID, m.eim_package_result_error(1, b"\x01\x02"))
    v = both_ways("EsipaMessageFromIpaToEim", der)[1]
    assert v["eimPackageResult"] == (
        "eimPackageResultResponseError",
        {"eimTransactionId": b"\x01\x02", "eimPackageResultErrorCode": 1},
    )


def test_profile_download_trigger_result_both_alternatives():
    der = m.provide_eim_package_result(
        EID, m.profile_download_trigger_result(b"\x09", error_reason=127, error_response=b"\x01")
    )
    v = both_ways("EsipaMessageFromIpaToEim", der)[1]
    kind, res = v["eimPackageResult"]
    assert kind == "profileDownloadTriggerResult" and res["eimTransactionId"] == b"\x09"
    assert res["profileDownloadTriggerResultData"][0] == "profileDownloadError"


def test_acknowledgements_and_empty_response(vectors):
    enc = vectors["esipa_encodings"]
    assert m.parse_provide_eim_package_result_response(
        bytes.fromhex(enc["provide_eim_package_result_ack_seq20"])
    ) == m.ProvideResultAnswer((20,))
    assert (
        m.parse_provide_eim_package_result_response(bytes.fromhex(enc["provide_eim_package_result_empty_response"]))
        == m.ProvideResultAnswer()
    )
    assert m.parse_provide_eim_package_result_response(bytes.fromhex("BF5003020102")).error == 2
    seq0 = asn1.encode("EsipaMessageFromEimToIpa", ("provideEimPackageResultResponse", ("eimAcknowledgements", [0, 1])))
    assert m.parse_provide_eim_package_result_response(seq0).acknowledgements == (0, 1)


def test_handle_notification_and_transfer_response_decode():
    pir_like = other_signed_notification(0)
    name, value = asn1.decode("EsipaMessageFromIpaToEim", m.handle_notification(pir_like))
    assert name == "handleNotificationEsipa" and value[0] == "pendingNotification"
    for alt in (m.EIM_PACKAGE_RECEIVED, m.transfer_error(2)):
        name, value = both_ways("EsipaMessageFromIpaToEim", m.transfer_eim_package_response(alt))
        assert name == "transferEimPackageResponse"


def test_indirect_download_requests_decode():
    der = m.initiate_authentication_request(bytes(range(16)), "smdp.example:8443", None, b"\x05")
    v = both_ways("EsipaMessageFromIpaToEim", der)[1]
    assert v["smdpAddress"] == "smdp.example:8443" and v["eimTransactionId"] == b"\x05"
    # CancelSessionRequestEsipa: the card's BF41 answer rides as the implicit [1]
    card_answer = tlv.encode(
        0xBF41,
        tlv.encode(
            0xA0,
            tlv.encode(0x30, bytes.fromhex("80011081010E") + b"\x06\x03\x2b\x06\x01") + tlv.encode(0x5F37, bytes(64)),
        ),
    )
    der = m.cancel_session_request(b"\x10", card_answer)
    assert der[:2] == b"\xbf\x41" and tlv.find(der, 0xA1).value == tlv.parse_exact(card_answer).value


def test_transfer_requests_and_unknown_packages():
    acks = asn1.encode("EsipaMessageFromEimToIpa", ("transferEimPackageRequest", ("eimAcknowledgements", [0, 5])))
    assert m.parse_transfer_eim_package_request(acks).seq_numbers == (0, 5)
    with pytest.raises(m.UnknownPackage):
        m.parse_get_eim_package_response(tlv.encode(0xBF4F, tlv.encode(0xBF60, b"")))
    with pytest.raises(m.UnknownPackage):  # acknowledgements are not a GetEimPackageResponse alternative
        m.parse_get_eim_package_response(tlv.encode(0xBF4F, tlv.encode(0xBF53, b"")))


def test_ipa_euicc_data_request_and_trigger():
    der = asn1.encode(
        "GetEimPackageResponse",
        (
            "ipaEuiccDataRequest",
            {
                "tagList": bytes.fromhex("BF20BF22A5A6A8A9"),
                "searchCriteriaNotification": ("seqNumber", 0),
                "eimTransactionId": b"\x07",
            },
        ),
    )
    req = m.parse_get_eim_package_response(der)
    assert req.tag_list == (0xBF20, 0xBF22, 0xA5, 0xA6, 0xA8, 0xA9)
    assert req.search_notification_seq == 0 and req.eim_transaction_id == b"\x07"
    der = asn1.encode(
        "GetEimPackageResponse",
        (
            "profileDownloadTriggerRequest",
            {"profileDownloadData": ("activationCode", "1$smdp.example$ABC"), "eimTransactionId": b"\x01"},
        ),
    )
    trig = m.parse_get_eim_package_response(der)
    assert trig.activation_code == "1$smdp.example$ABC" and trig.eim_transaction_id == b"\x01"


def test_tlv_vs_value_trap_both_ways():
    sig = bytes(range(64))
    assert m.strip_tlv_envelope(sig, 0x5F37, 64) == sig
    assert m.strip_tlv_envelope(tlv.encode(0x5F37, sig), 0x5F37, 64) == sig
    keyid = bytes(range(20))
    assert m.strip_tlv_envelope(tlv.encode(0x04, keyid), 0x04, 20) == keyid


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**31])
def test_integers_are_minimal_der(n):
    reference = asn1.encode("EimAcknowledgements", [n])  # BF53 L { 80 L V }
    assert tlv.children(reference)[0].raw == m.enc_int(0x80, n)
    assert m.dec_int(m.int_value(n)) == n


def test_bitstring_round_trip_named_bits():
    assert m.enc_bitstring(0x82, {0}) == bytes.fromhex("82020780")
    assert m.dec_bitstring(m.enc_bitstring(0x80, {1, 4})[2:]) == {1, 4}


def test_iccid_round_trip():
    assert m.iccid_to_str(m.iccid_to_bytes("8949449999999990920")) == "8949449999999990920"


parsers = [
    m.parse_get_eim_package_response,
    m.parse_transfer_eim_package_request,
    m.parse_provide_eim_package_result_response,
    m.parse_initiate_authentication_response,
    m.parse_authenticate_client_response,
    m.parse_get_bound_profile_package_response,
    m.parse_cancel_session_response,
    m.parse_euicc_package_result,
]


@given(st.binary(max_size=200), st.sampled_from(parsers))
def test_parsers_raise_only_decode_error_or_unknown_package(data, parser):
    try:
        parser(data)
    except (DecodeError, m.UnknownPackage):
        pass


@given(
    st.sampled_from([0xBF4F, 0xBF4E]),
    st.sampled_from([0xBF51, 0xBF52, 0xBF54, 0xBF53, 0x02, 0x30]),
    st.binary(max_size=120),
)
def test_package_parsers_on_well_framed_garbage(outer, inner, body):
    data = tlv.encode(outer, tlv.encode(inner, body))
    fn = m.parse_get_eim_package_response if outer == 0xBF4F else m.parse_transfer_eim_package_request
    try:
        fn(data)
    except (DecodeError, m.UnknownPackage):
        pass


@given(st.binary(max_size=40))
def test_package_transaction_id_never_raises(data):
    m.package_transaction_id(data)
