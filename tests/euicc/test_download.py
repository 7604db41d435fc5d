"""SGP.22 profile download on the software eUICC (AuthenticateServer, PrepareDownload, LoadBoundProfilePackage,
CancelSession) against an SM-DP+ half built from rsp (tests/euicc/smdp_side.py): success on both curves and
with pre-protected profile keys, every refusal with its exact code, and no profile left behind."""

from __future__ import annotations

import os

import pytest

from euicc import der
from rsp import asn1, crypto, tlv
from rsp.pki import Role, issue_certificate, make_ci
from tests.euicc.conftest import Es10Driver, download, make_card, new_profile
from tests.euicc.smdp_side import SmdpSide, segments

T = tlv.encode
SGP26 = os.path.join(os.path.dirname(__file__), "..", "data", "sgp26")


def pir_data(pir: bytes) -> dict:
    return asn1.decode("ProfileInstallationResult", pir)["profileInstallationResultData"]


def verify_pir(card, pir: bytes) -> None:
    data = tlv.require(pir, 0xBF27)
    crypto.verify(card.identity.euicc_cert, data.raw, tlv.require(pir, 0x5F37).value, what="euiccSignPIR")


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
@pytest.mark.parametrize("block_size", [120, 255])
def test_full_download_installs_a_disabled_profile_with_a_signed_pir(lab_pki, curve, block_size):
    card = make_card(lab_pki, curve=curve)
    driver = Es10Driver(card, block_size=block_size)
    smdp = SmdpSide(lab_pki, curve)
    profile = new_profile(1, notifications=[((0, 1, 2, 3), smdp.address), ((1, 3), "mno.example")], size=5000)
    pir = download(driver, smdp, profile)
    verify_pir(card, pir)
    data = pir_data(pir)
    assert data["transactionId"] == smdp.txid
    # smdpOid checked on the bytes: asn1tools 0.169 decodes OIDs under arc 2 with a second arc >= 40 wrongly
    # (2.999.32.10 -> 26.39.32.10), so the raw 06 value is compared
    assert tlv.require(pir, 0xBF27, 0x06).value == der.oid_bytes(lab_pki.smdp_oid)
    assert der.decode_oid(tlv.require(pir, 0xBF27, 0x06).value) == lab_pki.smdp_oid
    meta = data["notificationMetadata"]
    assert meta["notificationAddress"] == smdp.address and meta["iccid"] == profile.iccid
    assert meta["profileManagementOperation"] == (b"\x80", 1)  # notificationInstall
    alt, success = data["finalResult"]
    assert alt == "successResult" and success["simaResponse"] == bytes.fromhex("3007A00530038001" + "00")
    stored = card.state.profile(profile.iccid)
    assert stored is not None and not stored.enabled and stored.isdp_aid == success["aid"]
    assert stored.elements == profile.elements()
    # the PIR is pending under its seqNumber, retrievable and listed
    listed = asn1.decode("SGP32-RetrieveNotificationsListResponse", driver.call(bytes.fromhex("BF2B00")))
    assert listed[0] == "notificationList" and listed[1][0] == (
        "profileInstallationResult",
        asn1.decode("ProfileInstallationResult", pir),
    )


def test_download_with_replace_session_keys(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    pir = download(driver, SmdpSide(lab_pki), new_profile(2, size=9000), ppk=True)
    assert pir_data(pir)["finalResult"][0] == "successResult"
    assert card.state.profile(new_profile(2).iccid).elements == new_profile(2, size=9000).elements()


def test_download_with_sgp26_certificates_when_the_test_ci_is_trusted(lab_pki):
    """An SM-DP+ with the GSMA SGP.26 test certificates: the card trusts the SGP.26 CI for verification and
    still signs under its lab CI."""
    ci = os.path.join(SGP26, "CertificateIssuer", "CERT_CI_ECDSA_NIST.pem")
    card = make_card(lab_pki, trusted_ci_paths=[ci])
    driver = Es10Driver(card)

    def read(*p):
        return open(os.path.join(SGP26, *p), "rb").read()

    smdp = SmdpSide(
        lab_pki,
        dpauth=crypto.load_certificate(read("DPauth", "CERT_S_SM_DPauth_ECDSA_NIST.der")),
        dpauth_key=crypto.load_private_key(read("DPauth", "SK_S_SM_DPauth_ECDSA_NIST.pem")),
        dppb=crypto.load_certificate(read("DPpb", "CERT_S_SM_DPpb_ECDSA_NIST.der")),
        dppb_key=crypto.load_private_key(read("DPpb", "SK_S_SM_DPpb_ECDSA_NIST.pem")),
    )
    info1 = asn1.decode("EUICCInfo1", driver.call(bytes.fromhex("BF2000")))
    assert bytes.fromhex("F54172BDF98A95D65CBEB88A38A1C11D800A85C3") in info1["euiccCiPKIdListForVerification"]
    assert info1["euiccCiPKIdListForSigning"] == [lab_pki.ci_key_id("nist")]
    pir = download(driver, smdp, new_profile(3))
    assert der.decode_oid(tlv.require(pir, 0xBF27, 0x06).value) == "2.999.10"
    # without trusting the SGP.26 CI the same SM-DP+ is refused
    other = Es10Driver(make_card(lab_pki))
    challenge = tlv.require(other.call(bytes.fromhex("BF2E00")), 0x80).value
    answer = other.call(smdp.authenticate_server_request(challenge))
    assert answer == T(0xBF38, T(0xA1, T(0x80, smdp.txid) + T(0x02, b"\x01")))


def auth_error(answer: bytes) -> int:
    alt, value = asn1.decode("SGP32-AuthenticateServerResponse", answer)
    assert alt == "authenticateResponseError"
    return value["authenticateErrorCode"]


def test_authenticate_server_refusals(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    smdp = SmdpSide(lab_pki)

    def challenge() -> bytes:
        return tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value

    # bad serverSignature1
    c = challenge()
    good = crypto.sign(smdp.dpauth_key, b"something else")
    assert auth_error(driver.call(smdp.authenticate_server_request(c, signature=good))) == 2
    # forged CERT.DPauth: same subject and key, issued by a CI the card does not trust
    rogue_ci, rogue_key = make_ci("nist")
    forged = issue_certificate(Role.DP_AUTH, smdp.dpauth_key.public_key(), rogue_ci, rogue_key)
    assert auth_error(driver.call(smdp.authenticate_server_request(challenge(), cert_der=SmdpSide.der(forged)))) == 1
    # a DPpb certificate offered as DPauth (wrong role)
    assert (
        auth_error(
            driver.call(smdp.authenticate_server_request(challenge(), cert_der=SmdpSide.der(lab_pki.dppb_cert("nist"))))
        )
        == 1
    )
    # one flipped byte in the certificate signature
    cert = bytearray(SmdpSide.der(smdp.dpauth))
    cert[-10] ^= 0x40
    assert auth_error(driver.call(smdp.authenticate_server_request(challenge(), cert_der=bytes(cert)))) == 1
    # challenge not the one issued, and no challenge at all
    challenge()
    assert auth_error(driver.call(smdp.authenticate_server_request(os.urandom(16)))) == 6
    assert auth_error(driver.call(smdp.authenticate_server_request(os.urandom(16)))) == 4
    # a CI the card does not sign under
    smdp_other_ci = SmdpSide(lab_pki, ci_pkid=b"\x11" * 20)
    assert auth_error(driver.call(smdp_other_ci.authenticate_server_request(challenge()))) == 7
    # the challenge is single use: a good request after a refusal is refused for lack of session
    c = challenge()
    driver.call(smdp.authenticate_server_request(os.urandom(16)))
    assert auth_error(driver.call(smdp.authenticate_server_request(c))) == 4
    assert card.state.profiles == [] and card.state.notifications == []


def prepared(lab_pki, curve="nist"):
    card = make_card(lab_pki, curve=curve)
    driver = Es10Driver(card)
    smdp = SmdpSide(lab_pki, curve)
    challenge = tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value
    smdp.check_authenticate_response(driver.call(smdp.authenticate_server_request(challenge)))
    return card, driver, smdp


def download_error(answer: bytes) -> int:
    alt, value = asn1.decode("SGP32-PrepareDownloadResponse", answer)
    assert alt == "downloadResponseError"
    return value["downloadErrorCode"]


def test_prepare_download_refusals(lab_pki):
    _card, driver, smdp = prepared(lab_pki)
    assert download_error(driver.call(smdp.prepare_download_request(signature=b"\x01" * 64))) == 2
    _card, driver, smdp = prepared(lab_pki)
    rogue_ci, rogue_key = make_ci("nist")
    forged = issue_certificate(Role.DP_PB, smdp.dppb_key.public_key(), rogue_ci, rogue_key)
    assert download_error(driver.call(smdp.prepare_download_request(cert_der=SmdpSide.der(forged)))) == 1
    _card, driver, smdp = prepared(lab_pki)
    other = os.urandom(16)
    assert download_error(driver.call(smdp.prepare_download_request(txid=other))) == 5
    _card, driver, smdp = prepared(lab_pki)
    assert download_error(driver.call(smdp.prepare_download_request(cc_required=True))) == 127
    ok = driver.call(smdp.prepare_download_request(cc_required=True, hash_cc=b"\x22" * 32))
    assert tlv.require(ok, 0xA0, 0x30, 0x04).value == b"\x22" * 32
    fresh = Es10Driver(make_card(lab_pki))
    no_session = T(
        0xBF21,
        T(0x30, T(0x80, b"\x01") + T(0x01, b"\x00"))
        + T(0x5F37, b"\x00" * 64)
        + SmdpSide.der(lab_pki.dppb_cert("nist")),
    )
    assert download_error(fresh.call(no_session)) == 4  # noSessionContext


def run_bpp(driver, bpp_segments):
    """Send segments until the card answers; returns (index of the answering segment, answer)."""
    for i, seg in enumerate(bpp_segments):
        answer = driver.call(seg)
        if answer:
            return i, answer
    return None, b""


def prepared_bpp(lab_pki, profile, *, ppk=False, **bind):
    card, driver, smdp = prepared(lab_pki)
    smdp.check_prepare_response(driver.call(smdp.prepare_download_request()))
    bpp = smdp.bind(profile, card.state.eid, ppk=ppk, **bind)
    return card, driver, smdp, segments(bpp)


@pytest.mark.parametrize("ppk", [False, True])
def test_one_flipped_byte_in_any_bpp_segment_leaves_no_profile(lab_pki, ppk):
    profile = new_profile(5, size=2500)
    _, _, _, template = prepared_bpp(lab_pki, profile, ppk=ppk)
    kinds = []
    for index in range(1, len(template)):
        seg = template[index]
        if seg[0] in (0xA1, 0xA3) and len(tlv.parse_one(seg + b"\x00" * 4000).raw) > len(seg):
            continue  # container headers carry no protected data
        card, driver, _smdp, segs = prepared_bpp(lab_pki, profile, ppk=ppk)
        seg = bytearray(segs[index])
        seg[len(seg) // 2] ^= 0x01  # inside the ciphertext/MAC (A0/A2: inside their 87)
        segs[index] = bytes(seg)
        where, answer = run_bpp(driver, segs)
        assert where == index
        data = pir_data(answer)
        alt, err = data["finalResult"]
        assert alt == "errorResult"
        assert err["errorReason"] == 8  # scp03tSecurityError
        expected_command = {0xA0: 1, 0x88: 2, 0xA2: 4, 0x86: 5}[segs[index][0]]
        assert err["bppCommandId"] == expected_command
        kinds.append(segs[index][0])
        verify_pir(card, answer)
        assert card.state.profiles == []
        assert [n.kind for n in card.state.notifications] == ["pir"]  # the error PIR is kept for the SM-DP+
        # the session is over: the next segment is refused without a BPP in progress
        if index + 1 < len(segs):
            assert driver.call_sw(segs[index + 1])[1] == 0x6985
    assert {0xA0, 0x88, 0x86} <= set(kinds)
    if ppk:
        assert 0xA2 in kinds


def test_initialise_secure_channel_refusals(lab_pki):
    profile = new_profile(6)
    card, driver, _smdp, segs = prepared_bpp(lab_pki, profile, smdp_sign=b"\x05" * 64)
    where, answer = run_bpp(driver, segs)
    assert where == 0
    assert pir_data(answer)["finalResult"] == ("errorResult", {"bppCommandId": 0, "errorReason": 2})
    card, driver, _smdp, segs = prepared_bpp(lab_pki, profile, txid=b"\x09" * 16)
    assert pir_data(run_bpp(driver, segs)[1])["finalResult"][1]["errorReason"] == 3
    card, driver, _smdp, segs = prepared_bpp(lab_pki, profile, remote_op=2)
    assert pir_data(run_bpp(driver, segs)[1])["finalResult"][1]["errorReason"] == 5
    assert card.state.profiles == []


def test_metadata_and_package_refusals(lab_pki):
    # ICCID already on the card
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    download(driver, SmdpSide(lab_pki), new_profile(7))
    pir = download(driver, SmdpSide(lab_pki), new_profile(7))
    assert pir_data(pir)["finalResult"] == ("errorResult", {"bppCommandId": 2, "errorReason": 9})
    # PPRs are not allowed by the card's empty RAT
    pir = download(driver, SmdpSide(lab_pki), new_profile(8, ppr=bytes([0x05, 0x60])))
    assert pir_data(pir)["finalResult"] == ("errorResult", {"bppCommandId": 2, "errorReason": 15})
    # ProfileHeader ICCID differs from the metadata
    pir = download(driver, SmdpSide(lab_pki), new_profile(9, header_iccid=new_profile(10).iccid))
    assert pir_data(pir)["finalResult"] == ("errorResult", {"bppCommandId": 5, "errorReason": 13})
    assert [p.iccid for p in card.state.profiles] == [new_profile(7).iccid]


def test_segments_out_of_order_are_a_structure_error(lab_pki):
    profile = new_profile(11)
    card, driver, _smdp, segs = prepared_bpp(lab_pki, profile)
    reordered = [segs[0], segs[2], *segs[1:2], *segs[3:]]  # A1 header before A0
    where, answer = run_bpp(driver, reordered)
    assert where == 1
    assert pir_data(answer)["finalResult"] == ("errorResult", {"bppCommandId": 1, "errorReason": 7})
    assert card.state.profiles == []


def test_cancel_session_is_signed_and_ends_the_session(lab_pki):
    card, driver, smdp = prepared(lab_pki)
    answer = driver.call(T(0xBF41, T(0x80, smdp.txid) + T(0x81, b"\x01")))
    signed = tlv.require(answer, 0xA0, 0x30)
    assert signed.raw == T(0x30, T(0x80, smdp.txid) + T(0x81, bytes.fromhex("8837200A")) + T(0x82, b"\x01"))
    crypto.verify(card.identity.euicc_cert, signed.raw, tlv.require(answer, 0xA0, 0x5F37).value)
    decoded = asn1.decode("SGP32-CancelSessionResponse", answer)
    assert decoded[0] == "cancelSessionResponseOk"
    # the session is gone: PrepareDownload has no context, CancelSession again is invalidTransactionId
    assert download_error(driver.call(smdp.prepare_download_request())) == 4
    assert driver.call(T(0xBF41, T(0x80, smdp.txid) + T(0x81, b"\x01"))) == bytes.fromhex("BF4103810105")


def test_bpp_segment_without_session_is_refused(lab_pki):
    profile = new_profile(12)
    _, _, _, segs = prepared_bpp(lab_pki, profile)
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    for seg in segs[:3]:
        assert driver.call_sw(seg)[1] == 0x6985
    assert card.state.notifications == []


def test_cross_curve_brainpool_card_with_a_nist_smdp(lab_pki):
    """The card signs under its brainpool CI while the SM-DP+ authenticates with NIST certificates (a CI the card
    verifies); the one-time key follows the curve of CERT.DPpb."""
    card = make_card(lab_pki, curve="brainpool")
    driver = Es10Driver(card)
    smdp = SmdpSide(lab_pki, "nist", ci_pkid=lab_pki.ci_key_id("brainpool"))
    pir = download(driver, smdp, new_profile(13))
    assert pir_data(pir)["finalResult"][0] == "successResult"
    assert len(smdp.euicc_otpk) == 65
    crypto.public_key_from_point(smdp.euicc_otpk, "nist")  # on P-256


def test_cancel_session_in_the_middle_of_a_bpp(lab_pki):
    profile = new_profile(14)
    card, driver, smdp, segs = prepared_bpp(lab_pki, profile)
    for seg in segs[:4]:
        assert driver.call(seg) == b""
    answer = driver.call(T(0xBF41, T(0x80, smdp.txid) + T(0x81, b"\x05")))  # loadBppExecutionError
    assert asn1.decode("SGP32-CancelSessionResponse", answer)[0] == "cancelSessionResponseOk"
    assert driver.call_sw(segs[4])[1] == 0x6985  # the BPP is gone with the session
    assert card.state.profiles == [] and card.state.notifications == []


def test_truncated_segment_during_a_bpp_is_a_structure_error(lab_pki):
    profile = new_profile(15)
    card, driver, _smdp, segs = prepared_bpp(lab_pki, profile)
    a3 = next(i for i, s in enumerate(segs) if s[0] == 0xA3)
    for seg in segs[: a3 + 1]:
        assert driver.call(seg) == b""
    answer = driver.call(b"\x86")  # a tag without a length
    assert pir_data(answer)["finalResult"] == ("errorResult", {"bppCommandId": 5, "errorReason": 7})
    assert card.state.profiles == []


def test_malformed_authenticate_server_requests_are_6a80(lab_pki):
    driver = Es10Driver(make_card(lab_pki))
    smdp = SmdpSide(lab_pki)
    challenge = tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value
    good = tlv.children(tlv.parse_exact(smdp.authenticate_server_request(challenge)))
    no_device_info = T(0xA0, T(0x80, b"MATCH"))
    assert driver.call_sw(T(0xBF38, b"".join(c.raw for c in good[:4]) + no_device_info))[1] == 0x6A80
    assert driver.call_sw(T(0xBF38, b"".join(c.raw for c in good[:3])))[1] == 0x6A80  # no certificate
    assert driver.call_sw(T(0xBF38, b"".join(c.raw for c in good[1:])))[1] == 0x6A80  # no serverSigned1
