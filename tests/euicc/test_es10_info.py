"""Informational ES10 functions decoded with the project's ASN.1 codec (round trip of every encoding the card
builds by hand), plus the DER helpers against independent encoders."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import example, given
from hypothesis import strategies as st

from euicc import der
from rsp import asn1, tlv
from rsp.pki import Role, verify_chain
from tests.euicc.conftest import LAB_EID, Es10Driver, make_card


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
def test_euicc_info_1_and_2(lab_pki, curve):
    card = make_card(lab_pki, curve=curve)
    driver = Es10Driver(card)
    raw1 = driver.call(bytes.fromhex("BF2000"))
    info1 = asn1.decode("EUICCInfo1", raw1)
    assert info1["svn"] == bytes([2, 5, 0])
    assert info1["euiccCiPKIdListForSigning"] == [lab_pki.ci_key_id(curve)]
    assert set(info1["euiccCiPKIdListForVerification"]) == {lab_pki.ci_key_id("nist"), lab_pki.ci_key_id("brainpool")}
    assert asn1.encode("EUICCInfo1", info1) == raw1
    raw2 = driver.call(bytes.fromhex("BF2200"))
    info2 = asn1.decode("SGP32-EUICCInfo2", raw2)
    assert asn1.encode("SGP32-EUICCInfo2", info2) == raw2  # hand-built DER is canonical
    assert info2["ipaMode"] == 0  # ipad
    assert info2["iotSpecificInfo"] == {
        "iotVersion": [bytes([1, 2, 0])],
        "ecallSupported": None,
        "fallbackSupported": None,
    }
    assert raw2.endswith(bytes.fromhex("900100B40BA005040301020081008200"))
    assert info2["euiccCiPKIdListForSigning"] == info1["euiccCiPKIdListForSigning"]
    ext = {t.tag: t.value for t in tlv.iter_tlvs(info2["extCardResource"])}
    assert ext[0x81] == b"\x00" and int.from_bytes(ext[0x82], "big") > 0


def test_get_eid_challenge_and_certs(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    assert asn1.decode("GetEuiccDataResponse", driver.call(bytes.fromhex("BF3E035C015A"))) == {
        "eidValue": bytes.fromhex(LAB_EID)
    }
    assert driver.call_sw(bytes.fromhex("BF3E035C014F"))[1] == 0x6A80
    c1 = asn1.decode("GetEuiccChallengeResponse", driver.call(bytes.fromhex("BF2E00")))["euiccChallenge"]
    c2 = asn1.decode("GetEuiccChallengeResponse", driver.call(bytes.fromhex("BF2E00")))["euiccChallenge"]
    assert len(c1) == 16 and c1 != c2
    certs = driver.call(bytes.fromhex("BF5600"))
    alt, _ = asn1.decode("GetCertsResponse", certs)
    assert alt == "certs"
    eum = tlv.require(certs, 0xA0, 0xA5)
    euicc = tlv.require(certs, 0xA0, 0xA6)
    eum_der = tlv.encode(0x30, eum.value)
    euicc_der = tlv.encode(0x30, euicc.value)
    chain = verify_chain(euicc_der, [eum_der], lab_pki.ci_certs(), Role.EUICC)
    assert chain.ci_key_id == lab_pki.ci_key_id("nist")
    assert LAB_EID in x509.load_der_x509_certificate(euicc_der).subject.rfc4514_string()
    assert driver.call(bytes.fromhex("BF5603800101")) == bytes.fromhex("BF5603810101")  # invalidCiPKId
    by_id = driver.call(tlv.encode(0xBF56, tlv.encode(0x80, lab_pki.ci_key_id("nist"))))
    assert by_id == certs


def test_rat_and_empty_lists(lab_pki):
    driver = Es10Driver(make_card(lab_pki))
    assert asn1.decode("GetRatResponse", driver.call(bytes.fromhex("BF4300"))) == {"rat": []}
    assert asn1.decode("ListNotificationResponse", driver.call(bytes.fromhex("BF2800"))) == (
        "notificationMetadataList",
        [],
    )
    assert asn1.decode("GetEimConfigurationDataResponse", driver.call(bytes.fromhex("BF5500"))) == {
        "eimConfigurationDataList": []
    }
    assert driver.call(bytes.fromhex("BF2B05A0038001FF")) == bytes.fromhex("BF2B02A000")  # seq -1: no such entry


@given(st.integers(-(2**40), 2**40))
@example(-128)
@example(-129)
@example(128)
@example(-1)
def test_der_integers_are_minimal_and_round_trip(value):
    encoded = der.integer(0x02, value)
    assert der.decode_int(tlv.parse_exact(encoded).value) == value
    # X.690 8.3.2: the shortest two's complement; -128 is one octet (80), 128 two (00 80)
    minimal = (value if value >= 0 else ~value).bit_length() // 8 + 1
    assert len(der.int_bytes(value)) == minimal


@given(st.sets(st.integers(0, 30)))
def test_der_bit_strings_round_trip(bits):
    encoded = der.bit_string(0x03, bits)
    assert der.decode_bits(tlv.parse_exact(encoded).value) == bits
    if bits:
        assert encoded[-1] != 0  # no trailing zero octet


@pytest.mark.parametrize("oid", ["2.999.32.10", "2.999.10", "1.3.6.1.4.1.31746", "2.23.146.1.2.1.4", "0.9.2342"])
def test_der_oids_match_cryptography(oid):
    content = der.oid_bytes(oid)
    from cryptography.x509.oid import ObjectIdentifier

    assert ObjectIdentifier(oid).dotted_string == der.decode_oid(content)
    # the DER of the OID inside a certificate policy written by cryptography contains the same content octets
    assert tlv.encode(0x06, content) in _policy_der(oid)


def _policy_der(oid: str) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(oid), None)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
