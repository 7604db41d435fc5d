"""Known-answer vectors: real captured traffic and hand-checked encodings decode and re-encode byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsp import asn1, tlv
from rsp.errors import DecodeError

# The eIM public key of the onomondo-eim sample (vectors.json `real_get_eim_package_response`).
EIM_POINT = (
    "04FE584A6F450459574AECA195D0299737F74C89BA2D36DF9286EC25D973037A0FBA70D14DF3E1F7D0A305E57B95B731C4"
    "DE218D2D7F9F22113ED5D18C2E3DDF1C"
)
# AddInitialEimRequest as in onomondo-ipa contrib/sample_eim_cfg.ber (protocol brief §4): eimId "eIM",
# eimFqdn "127.0.0.1:8000", counterValue 1, associationToken -1, eimPublicKey = SPKI (id-ecPublicKey, P-256).
ADD_INITIAL_EIM = (
    "BF577CA07A3078800365494D810E3132372E302E302E313A383030308301018401FFA55BA059301306072A8648CE3D0201"
    "06082A8648CE3D030107034200" + EIM_POINT
)

# vectors.json `esipa_encodings` key -> the type it is an encoding of
ESIPA_VECTOR_TYPES = {
    "no_eim_package_available": "GetEimPackageResponse",
    "provide_eim_package_result_ack_seq20": "ProvideEimPackageResultResponse",
    "provide_eim_package_result_empty_response": "ProvideEimPackageResultResponse",
    "get_eim_configuration_data_all": "GetEimConfigurationDataRequest",
    "immediate_enable_refresh_false": "ImmediateEnableRequest",
    "euicc_memory_reset_delete_operational": "SGP32-EuiccMemoryResetRequest",
    "psmo_list_listProfileInfo_getRAT_configureImmediateEnable_setDefaultDpAddress_a.b": "EuiccPackage",
    "eco_list_deleteEim_x_listEim": "EuiccPackage",
    "ipa_euicc_data_request_in_get_eim_package_response": "GetEimPackageResponse",
    "profile_download_trigger_activation_code": "ProfileDownloadTriggerRequest",
    "ipa_capabilities_indirect_https_retrieve": "IpaCapabilities",
    "initiate_authentication_error_invalidDpAddress": "InitiateAuthenticationResponseEsipa",
    "authenticate_client_error_noEligibleProfile": "AuthenticateClientResponseEsipa",
    "get_bpp_error_invalidTransactionId": "GetBoundProfilePackageResponseEsipa",
    "cancel_session_ok": "CancelSessionResponseEsipa",
}


def _roundtrip(type_name: str, data: bytes):
    value = asn1.decode(type_name, data)
    assert asn1.encode(type_name, value) == data
    return value


def test_real_get_eim_package_response(vectors):
    data = bytes.fromhex(vectors["real_get_eim_package_response"]["hex"])
    alt, pkg = _roundtrip("GetEimPackageResponse", data)
    assert alt == "euiccPackageRequest"
    signed = pkg["euiccPackageSigned"]
    assert signed["eimId"] == "eIM"
    assert signed["counterValue"] == 1006
    assert signed["eidValue"].hex() == "89044045118427484800000000011628"
    assert signed["eimTransactionId"].hex().upper() == "F92B2FEE35632499E841CB754FDFD9F3"
    assert signed["euiccPackage"] == ("psmoList", [("enable", {"iccid": bytes.fromhex("989444999999990920F3")})])
    assert len(pkg["eimSignature"]) == 64
    # The signed input is DER(EuiccPackageSigned) || 84 01 01: our encoding of the signed part matches it.
    expected = bytes.fromhex(vectors["real_get_eim_package_response"]["signed_input_hex"])
    assert asn1.encode("EuiccPackageSigned", signed) + bytes.fromhex("840101") == expected
    # The same bytes as an ESipa message: exactly one BF4F tag on the wire.
    msg = _roundtrip("EsipaMessageFromEimToIpa", data)
    assert msg[0] == "getEimPackageResponse"
    assert data[:2] == b"\xbf\x4f" and data[4:6] == b"\xbf\x51"


def test_real_euicc_package_result(vectors):
    data = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])
    alt, res = _roundtrip("EuiccPackageResult", data)
    assert alt == "euiccPackageResultSigned"
    signed = res["euiccPackageResultDataSigned"]
    assert signed["seqNumber"] == 20
    assert signed["euiccResult"] == [("enableResult", 1)]
    expected = bytes.fromhex(vectors["real_euicc_package_result"]["signed_input_hex"])
    assert asn1.encode("EuiccPackageResultDataSigned", signed) + bytes.fromhex("840101") == expected
    # Also valid as the ES10b LoadEuiccPackage response alias.
    assert asn1.decode("LoadEuiccPackageResponse", data) == (alt, res)


def test_provide_eim_package_result_v12_rewrap(vectors):
    """v1.2 ProvideEimPackageResult carrying the real EPR: BF50 { 5A eid, BF51 ... } (single tags)."""
    epr = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])
    value = {
        "eidValue": bytes.fromhex("89044045118427484800000000011628"),
        "eimPackageResult": ("euiccPackageResult", asn1.decode("EuiccPackageResult", epr)),
    }
    data = asn1.encode("ProvideEimPackageResult", value)
    assert data[:3] == bytes.fromhex("BF507F")
    assert data[3:21] == bytes.fromhex("5A1089044045118427484800000000011628")
    assert data[21:] == epr
    assert asn1.decode("EsipaMessageFromIpaToEim", data) == ("provideEimPackageResult", value)


@pytest.mark.parametrize("key", sorted(ESIPA_VECTOR_TYPES))
def test_esipa_encodings(vectors, key):
    data = bytes.fromhex(vectors["esipa_encodings"][key])
    _roundtrip(ESIPA_VECTOR_TYPES[key], data)


def test_every_esipa_encoding_is_covered(vectors):
    keys = set(vectors["esipa_encodings"]) - {"source", "get_eim_package_request_prefix"}
    assert keys == set(ESIPA_VECTOR_TYPES)


def test_get_eim_package_request_prefix(vectors):
    eid = bytes.fromhex("89044045118427484800000000011628")
    data = bytes.fromhex(vectors["esipa_encodings"]["get_eim_package_request_prefix"]) + eid
    assert _roundtrip("GetEimPackageRequest", data) == {"eidValue": eid}
    assert asn1.encode("EsipaMessageFromIpaToEim", ("getEimPackageRequest", {"eidValue": eid})) == data


def test_esipa_vector_values():
    assert asn1.decode("GetEimPackageResponse", bytes.fromhex("BF4F03020101")) == ("eimPackageError", 1)
    assert asn1.decode("ProvideEimPackageResultResponse", bytes.fromhex("BF5006BF5303800114")) == (
        "eimAcknowledgements",
        [20],
    )
    assert asn1.decode("SGP32-EuiccMemoryResetRequest", bytes.fromhex("BF640482020780")) == {
        "resetOptions": (b"\x80", 1)
    }
    assert asn1.decode("CancelSessionResponseEsipa", bytes.fromhex("BF4102A000")) == ("cancelSessionOk", {})
    psmos = asn1.decode("EuiccPackage", bytes.fromhex("A011BF2D00A600A7028000BF65058003612E62"))
    assert psmos == (
        "psmoList",
        [
            ("listProfileInfo", {}),
            ("getRAT", {}),
            ("configureImmediateEnable", {"immediateEnableFlag": None}),
            ("setDefaultDpAddress", {"defaultDpAddress": "a.b"}),
        ],
    )


def test_add_initial_eim_sample():
    data = bytes.fromhex(ADD_INITIAL_EIM)
    value = _roundtrip("AddInitialEimRequest", data)
    (cfg,) = value["eimConfigurationDataList"]
    assert cfg["eimId"] == "eIM"
    assert cfg["eimFqdn"] == "127.0.0.1:8000"
    assert cfg["counterValue"] == 1
    assert cfg["associationToken"] == -1
    alt, spki = cfg["eimPublicKeyData"]
    assert alt == "eimPublicKey"
    assert spki["algorithm"]["algorithm"] == "1.2.840.10045.2.1"
    assert spki["subjectPublicKey"] == (bytes.fromhex(EIM_POINT), 520)


def test_tagged_choice_single_tag_on_the_wire():
    """The double-tag trap: a use-site [N] over `T ::= [N] CHOICE` gives one [N], never two."""
    value = ("getEimPackageResponse", ("eimPackageError", 1))
    assert asn1.encode("EsipaMessageFromEimToIpa", value).hex().upper() == "BF4F03020101"
    rollback = {"cmdResult": 0, "eUICCPackageResult": ("euiccPackageErrorUnsigned", {"eimId": "x"})}
    encoded = asn1.encode("ProfileRollbackResponse", rollback)
    assert encoded.hex().upper() == "BF580B020100BF5105A203800178"
    assert asn1.decode("ProfileRollbackResponse", encoded) == rollback


def test_cancel_session_request_esipa_single_inner_tag():
    """CancelSessionRequestEsipa: BF41 { 80 txid, A1 { <ES10b response alternative> } } - no inner BF41."""
    value = {
        "transactionId": b"\x01\x02",
        "cancelSessionResponse": ("cancelSessionResponseError", 5),
    }
    data = asn1.encode("CancelSessionRequestEsipa", value)
    assert data.hex().upper() == "BF410980020102A103810105"
    assert asn1.decode("CancelSessionRequestEsipa", data) == value


def test_unknown_choice_alternative_is_preserved():
    data = bytes.fromhex("BF4F038F0101")  # a newer eimPackage alternative [15]
    value = asn1.decode("GetEimPackageResponse", data)
    assert value == (None, bytes.fromhex("8F0101"))
    assert asn1.encode("GetEimPackageResponse", value) == data


def test_unknown_top_level_alternative_is_an_error():
    with pytest.raises(DecodeError) as err:
        asn1.decode("EsipaMessageFromEimToIpa", bytes.fromhex("BF7703020101"))
    assert err.value.type_name == "EsipaMessageFromEimToIpa"
    assert "BF77" in str(err.value)


def test_trailing_bytes_rejected(vectors):
    data = bytes.fromhex(vectors["real_get_eim_package_response"]["hex"])
    with pytest.raises(DecodeError) as err:
        asn1.decode("GetEimPackageResponse", data + b"\x00")
    assert err.value.position == len(data)


def test_truncated_input_names_type_and_position(vectors):
    data = bytes.fromhex(vectors["real_get_eim_package_response"]["hex"])
    with pytest.raises(DecodeError) as err:
        asn1.decode("GetEimPackageResponse", data[:-1])
    assert err.value.type_name == "GetEimPackageResponse"
    assert err.value.position is not None


def test_guess_types_by_leading_tag():
    assert asn1.guess_types(bytes.fromhex("BF4F03020101")) == [
        "GetEimPackageRequest",
        "GetEimPackageResponse",
        "EsipaMessageFromIpaToEim",
        "EsipaMessageFromEimToIpa",
        "V10-EsipaMessageFromIpaToEim",  # SGP.32 v1.0 wrappers last: ties go to the v1.2 types
        "V10-EsipaMessageFromEimToIpa",
    ]
    assert asn1.guess_types(bytes.fromhex("BF5000"))[-3:] == [
        "EsipaMessageFromEimToIpa",
        "V10-EsipaMessageFromIpaToEim",
        "V10-EsipaMessageFromEimToIpa",
    ]
    assert "V10-ProvideEimPackageResult" in asn1.guess_types(bytes.fromhex("BF5000"))
    assert "EuiccPackageRequest" in asn1.guess_types(bytes.fromhex("BF5100"))
    assert asn1.guess_types(b"") == []
    assert asn1.guess_types(b"\xbf") == []


def test_top_level_types_all_known():
    names = set(asn1.type_names())
    assert set(asn1.TOP_LEVEL_TYPES) <= names
    assert not any(n.endswith("-Body") for n in names)


@pytest.mark.parametrize(
    ("oid", "content_hex"),
    [
        ("2.999.32.10", "8837200a"),  # first subidentifier 1079 >= 80: arc 2, second arc 999 (X.690 8.19.4)
        ("2.40.1", "7801"),
        ("1.3.6.1.4.1.31746", "2b0601040181f802"),
        ("0.39", "27"),
        ("2.23.146.1.2.1.4", "67811201020104"),
    ],
)
def test_object_identifiers_decode_per_x690(oid, content_hex):
    der = asn1.encode("ConfigureImmediateProfileEnablingRequest", {"defaultSmdpOid": oid})
    assert der.hex().endswith("81" + f"{len(content_hex) // 2:02x}" + content_hex)
    assert asn1.decode("ConfigureImmediateProfileEnablingRequest", der)["defaultSmdpOid"] == oid


def test_object_identifier_with_padding_byte_is_refused():
    with pytest.raises(DecodeError):
        asn1.decode("ConfigureImmediateProfileEnablingRequest", bytes.fromhex("BF590481028001"))


V10_CAPTURES = json.loads((Path(__file__).parents[1] / "data" / "sgp32_v10_captures.json").read_text())


# the eIM's v1.2 error answers have no v1.0 form (see test_v10_forms_differ_where_the_findings_say)
V10_FORMS = [m for m in V10_CAPTURES["messages"] if not m["hex"].startswith("BF500302")]


@pytest.mark.parametrize("message", V10_FORMS, ids=lambda m: m["name"])
def test_v10_captures_decode_and_reencode_byte_identical(message):
    """Every real SGP.32 v1.0 message (onomondo-ipa, tests/data/PROVENANCE.md) decodes with the v1.0 wrapper of its
    direction and encodes back to the same bytes."""
    data = bytes.fromhex(message["hex"])
    wrapper = "V10-EsipaMessageFromIpaToEim" if message["direction"] == "ipa->eim" else "V10-EsipaMessageFromEimToIpa"
    value = asn1.decode(wrapper, data)
    assert value[0] is not None
    assert asn1.encode(wrapper, value) == data


def test_v10_forms_differ_where_the_findings_say():
    """The v1.0 ePRAndNotifications does not decode as v1.2; its BF51 is the same type in both (signed bytes)."""
    [result] = [m for m in V10_CAPTURES["messages"] if m["name"].endswith("ePRAndNotifications enable")]
    data = bytes.fromhex(result["hex"])
    with pytest.raises(DecodeError):
        asn1.decode("ProvideEimPackageResult", data)
    alt, value = asn1.decode("V10-ProvideEimPackageResult", data)
    assert alt == "ePRAndNotifications"
    assert value["notificationList"][0] == "euiccPackageResultList"
    epr = tlv.find(data, 0x30, 0xBF51).raw
    assert asn1.encode("EuiccPackageResult", value["euiccPackageResult"]) == epr
    assert asn1.encode("V10-ProvideEimPackageResultResponse", {}) == bytes.fromhex("BF5000")
    # what a v1.0 IPA reads from the v1.2 error answer: a response without acknowledgements, i.e. success
    assert asn1.decode("V10-ProvideEimPackageResultResponse", bytes.fromhex("BF500302017F")) == {}
