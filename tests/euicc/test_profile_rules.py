"""Profile rules on the software eUICC: PSMOs (enable/disable/delete, fallback attribute), REFRESH and the
channel reset it causes, rollback, fallback, emergency profile, immediate enable, memory reset, and the
notifications each state change leaves (SGP.22 v2.5 §3.2/§3.5, SGP.32 v1.2 §3, §5.9)."""

from __future__ import annotations

import itertools

import pytest

from rsp import apdu, asn1, crypto, tlv
from tests.euicc.conftest import Es10Driver, add_initial_eim, download, eim_config, eim_package, make_card, new_profile
from tests.euicc.smdp_side import SmdpSide

T = tlv.encode
ENABLE, DISABLE, DELETE = 0xA3, 0xA4, 0xA5


class Lab:
    """A card with one lab eIM (token generated) and helpers to run PSMOs through signed packages."""

    def __init__(self, lab_pki, *profiles) -> None:
        self.pki = lab_pki
        self.card = make_card(lab_pki)
        self.driver = Es10Driver(self.card)
        for p in profiles:
            pir = download(self.driver, SmdpSide(lab_pki), p)
            assert (
                asn1.decode("ProfileInstallationResult", pir)["profileInstallationResultData"]["finalResult"][0]
                == "successResult"
            )
        spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
        answer = add_initial_eim(self.driver, eim_config("lab-eim", spki, counter=0, token=-1))
        self.token = tlv.require(answer, 0xA0, 0x84).value[0]
        self.counter = itertools.count(1)

    def package(self, ops: bytes) -> bytes:
        return eim_package(
            self.pki.eim_key("nist"), "lab-eim", self.card.state.eid, next(self.counter), ops, token=self.token
        )

    def psmo(self, ops: bytes) -> list:
        """Run PSMOs; re-open the channel if the card was reset by a REFRESH; return the decoded results."""
        result = self.driver.call(self.package(ops))
        if self.driver.channel.reset_detected:
            self.driver.reopen()
        alt, value = asn1.decode("EuiccPackageResult", result)
        assert alt == "euiccPackageResultSigned", (alt, value)
        return value["euiccPackageResultDataSigned"]["euiccResult"]

    def es10(self, command: bytes) -> bytes:
        data = self.driver.call(command)
        if self.driver.channel.reset_detected:
            self.driver.reopen()
        return data

    def states(self) -> dict[bytes, int]:
        return {p.iccid: p.state for p in self.card.state.profiles}


def op(tag: int, iccid: bytes, rollback: bool = False) -> bytes:
    return T(tag, T(0x5A, iccid) + (b"\x05\x00" if rollback else b""))


P1 = new_profile(1, notifications=[((1, 2, 3), "mno.example")])
P2 = new_profile(2)


def test_enable_raises_refresh_and_the_channel_is_reset(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    channel = lab.driver.channel
    result = lab.driver.call(lab.package(op(ENABLE, P1.iccid)))
    assert asn1.decode("EuiccPackageResult", result)[1]["euiccPackageResultDataSigned"]["euiccResult"] == [
        ("enableResult", 0)
    ]
    assert channel.reset_detected and not channel.is_open
    # the old channel is gone on the card: a STORE DATA there is answered 6881
    assert apdu.parse_response(channel.transmit_sync(bytes.fromhex("80E2910003BF2000"))).sw == 0x6881
    lab.driver.reopen()
    assert not channel.reset_detected
    assert tlv.require(channel.fci, 0xA5, 0xE1, 0x80).value == bytes([0x06, 0x40])  # enabledProfile bit
    assert lab.states() == {P1.iccid: 1, P2.iccid: 0}
    # enable notification for P1 to mno.example, signed over BF2F
    other = [n for n in lab.card.state.notifications if n.kind == "other"]
    assert [(n.event, n.address) for n in other] == [(1, "mno.example")]
    tbs = tlv.require(other[0].data, 0xBF2F)
    crypto.verify(lab.card.identity.euicc_cert, tbs.raw, tlv.require(other[0].data, 0x5F37).value)
    decoded = asn1.decode("SGP32-RetrieveNotificationsListResponse", lab.es10(bytes.fromhex("BF2B00")))
    assert [alt for alt, _ in decoded[1]] == [
        "profileInstallationResult",
        "profileInstallationResult",
        "otherSignedNotification",
    ]
    listed = asn1.decode("ListNotificationResponse", lab.es10(bytes.fromhex("BF280481020640")))  # enable only
    assert [m["notificationAddress"] for m in listed[1]] == ["mno.example"]


def test_psmo_result_codes(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    unknown = new_profile(99).iccid
    assert lab.psmo(op(ENABLE, unknown) + op(DISABLE, unknown) + op(DELETE, unknown)) == [
        ("enableResult", 1),
        ("disableResult", 1),
        ("deleteResult", 1),
    ]
    assert lab.psmo(op(DISABLE, P1.iccid)) == [("disableResult", 2)]  # profileNotInEnabledState
    assert lab.psmo(op(ENABLE, P1.iccid)) == [("enableResult", 0)]
    assert lab.psmo(op(ENABLE, P1.iccid)) == [("enableResult", 2)]  # profileNotInDisabledState
    assert lab.psmo(op(DELETE, P1.iccid)) == [("deleteResult", 2)]  # delete of the enabled profile
    assert P1.iccid in lab.states()
    assert lab.psmo(op(ENABLE, P2.iccid)) == [("enableResult", 0)]  # implicitly disables P1
    assert lab.states() == {P1.iccid: 0, P2.iccid: 1}
    assert lab.psmo(op(DISABLE, P2.iccid) + op(DELETE, P1.iccid)) == [("disableResult", 0), ("deleteResult", 0)]
    assert lab.states() == {P2.iccid: 0}
    events = [(n.event, n.iccid) for n in lab.card.state.notifications if n.kind == "other"]
    assert events == [(1, P1.iccid), (2, P1.iccid), (3, P1.iccid)]  # enable, disable, delete of P1 only
    seqs = [n.seq for n in sorted(lab.card.state.notifications, key=lambda n: n.seq)]
    assert seqs == sorted(set(seqs))  # never reused


def test_listprofileinfo_psmo_with_search_and_taglist(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    request = T(0xBF2D, T(0xA0, T(0x5A, P2.iccid)) + T(0x5C, bytes.fromhex("5A929F70")))
    assert lab.psmo(request) == [
        (
            "listProfileInfoResult",
            (
                "profileInfoListOk",
                [{"iccid": P2.iccid, "profileState": 0, "profileName": "Lab profile 2", "fallbackAttribute": False}],
            ),
        )
    ]
    bad = T(0xBF2D, T(0xA0, T(0x5A, b"\x01\x02")))
    assert lab.psmo(bad) == [("listProfileInfoResult", ("profileInfoListError", 1))]
    by_class = asn1.decode("SGP32-ProfileInfoListResponse", lab.es10(T(0xBF2D, T(0xA0, T(0x95, b"\x02")))))
    assert len(by_class[1]) == 2


def test_rollback_after_enable_with_rollback_flag(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    assert lab.es10(bytes.fromhex("BF58038001FF")) == bytes.fromhex("BF5803020101")  # rollbackNotAllowed
    assert lab.psmo(op(ENABLE, P1.iccid)) == [("enableResult", 0)]
    result = lab.driver.call(lab.package(op(ENABLE, P2.iccid, rollback=True)))
    lab.driver.reopen()
    original_seq = asn1.decode("EuiccPackageResult", result)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    assert lab.states() == {P1.iccid: 0, P2.iccid: 1}
    answer = lab.es10(bytes.fromhex("BF58038001FF"))
    assert lab.driver.channel.is_open  # re-opened after the REFRESH
    decoded = asn1.decode("ProfileRollbackResponse", answer)
    assert decoded["cmdResult"] == 0
    epr = tlv.require(answer, 0xBF51)
    data = decoded["eUICCPackageResult"][1]["euiccPackageResultDataSigned"]
    assert data["euiccResult"] == [("enableResult", 0), ("rollbackResult", 0)]
    assert data["counterValue"] == 2 and data["seqNumber"] > original_seq
    signed = tlv.require(epr, 0xA0, 0x30)
    crypto.verify(
        lab.card.identity.euicc_cert, signed.raw + T(0x84, bytes([lab.token])), tlv.require(epr, 0xA0, 0x5F37).value
    )
    assert lab.states() == {P1.iccid: 1, P2.iccid: 0}
    pending_eprs = [n.seq for n in lab.card.state.notifications if n.kind == "epr"]
    assert original_seq not in pending_eprs and data["seqNumber"] in pending_eprs
    assert lab.es10(bytes.fromhex("BF58038001FF")) == bytes.fromhex("BF5803020101")  # used up


def test_rollback_authorisation_ends_when_the_result_is_delivered_or_a_new_package_comes(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    result = lab.driver.call(lab.package(op(ENABLE, P1.iccid, rollback=True)))
    lab.driver.reopen()
    seq = asn1.decode("EuiccPackageResult", result)[1]["euiccPackageResultDataSigned"]["seqNumber"]
    # the profile a rollback would return to is protected... here there was none; delete of P2 is fine
    assert lab.card.state.rollback is not None
    lab.es10(T(0xBF30, T(0x80, bytes([seq]))))
    assert lab.card.state.rollback is None
    lab.psmo(op(ENABLE, P2.iccid, rollback=True))
    assert lab.psmo(op(DELETE, P1.iccid)) == [("deleteResult", 0)]  # new package: authorisation ended
    assert lab.es10(bytes.fromhex("BF58038001FF")) == bytes.fromhex("BF5803020101")


def test_delete_of_the_rollback_target_is_refused(lab_pki):
    lab = Lab(lab_pki, P1, P2)
    lab.psmo(op(ENABLE, P1.iccid))
    lab.driver.call(lab.package(op(ENABLE, P2.iccid, rollback=True) + op(DELETE, P1.iccid)))
    lab.driver.reopen()
    assert P1.iccid in lab.states()  # rollback target kept (rollbackNotAvailable in the same package)
    rb = lab.card.state.rollback
    assert rb is not None and rb.previous_iccid == P1.iccid
    result = asn1.decode(
        "SGP32-RetrieveNotificationsListResponse",
        lab.driver.call(T(0xBF2B, T(0xA0, T(0x80, bytes([lab.card.state.rollback.epr_seq]))))),
    )
    assert result[0] == "euiccPackageResultList"
    assert result[1][0][1]["euiccPackageResultDataSigned"]["euiccResult"] == [("enableResult", 0), ("deleteResult", 20)]


def test_fallback_mechanism(lab_pki):
    no_fallback = new_profile(3, fallback_allowed=False)
    lab = Lab(lab_pki, P1, P2, no_fallback)
    assert lab.es10(bytes.fromhex("BF5D038001FF")) == bytes.fromhex("BF5D03800106")  # fallbackNotAvailable
    assert lab.psmo(T(0xA8, T(0x5A, no_fallback.iccid))) == [("setFallbackAttributeResult", 2)]
    assert lab.psmo(T(0xA9, b"")) == [("unsetFallbackAttributeResult", 2)]  # noFallbackAttribute
    assert lab.psmo(op(ENABLE, P1.iccid) + T(0xA8, T(0x5A, P2.iccid))) == [
        ("enableResult", 0),
        ("setFallbackAttributeResult", 0),
    ]
    info = asn1.decode("SGP32-ProfileInfoListResponse", lab.es10(T(0xBF2D, T(0xA0, T(0x5A, P2.iccid)))))
    assert info[1][0]["fallbackAttribute"] is True
    assert lab.es10(bytes.fromhex("BF5E038001FF")) == bytes.fromhex("BF5E03800107")  # not in fallback
    assert lab.es10(bytes.fromhex("BF5D038001FF")) == bytes.fromhex("BF5D03800100")
    assert lab.states()[P2.iccid] == 1 and lab.card.state.fallback_active
    assert lab.es10(bytes.fromhex("BF5D038001FF")) == bytes.fromhex("BF5D03800102")  # already enabled
    assert lab.psmo(T(0xA9, b"")) == [("unsetFallbackAttributeResult", 3)]  # fallbackProfileEnabled
    assert lab.psmo(op(DELETE, P1.iccid)) == [("deleteResult", 21)]  # returnFallbackProfile
    assert lab.es10(bytes.fromhex("BF5E038001FF")) == bytes.fromhex("BF5E03800100")
    assert lab.states() == {P1.iccid: 1, P2.iccid: 0, no_fallback.iccid: 0}
    assert lab.psmo(T(0xA9, b"")) == [("unsetFallbackAttributeResult", 0)]


def test_emergency_profile(lab_pki):
    emergency = new_profile(4, ecall=True)
    lab = Lab(lab_pki, P1, emergency)
    assert lab.psmo(op(ENABLE, emergency.iccid)) == [("enableResult", 3)]  # only through the ES10b function
    lab.psmo(op(ENABLE, P1.iccid))
    assert lab.es10(bytes.fromhex("BF5C038001FF")) == bytes.fromhex("BF5C03800102")  # not enabled
    assert lab.es10(bytes.fromhex("BF5B038001FF")) == bytes.fromhex("BF5B03800100")
    assert lab.states() == {P1.iccid: 0, emergency.iccid: 1}
    assert lab.es10(bytes.fromhex("BF5B038001FF")) == bytes.fromhex("BF5B03800102")
    # eUICC packages are refused while the emergency profile is in use: ecallActive, signed, not stored
    result = lab.driver.call(lab.package(T(0xA6, b"")))
    assert tlv.require(result, 0xA1, 0x30, 0x02).value == bytes([104])
    assert lab.es10(bytes.fromhex("BF5D038001FF")) == bytes.fromhex("BF5D03800168")  # fallback: ecallActive
    assert lab.es10(bytes.fromhex("BF6404820207 80".replace(" ", ""))) == bytes.fromhex("BF6403800168")
    assert lab.es10(bytes.fromhex("BF5C038001FF")) == bytes.fromhex("BF5C03800100")
    assert lab.states() == {P1.iccid: 1, emergency.iccid: 0}
    no_emergency = Lab(lab_pki)
    assert no_emergency.es10(bytes.fromhex("BF5B03800100")) == bytes.fromhex("BF5B03800108")  # ecallNotAvailable


def test_immediate_enable_after_download(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    assert driver.call(bytes.fromhex("BF5A03800100")) == bytes.fromhex("BF5A03800101")  # not configured
    smdp = SmdpSide(lab_pki)
    configure = T(0xBF59, T(0x80, b"") + T(0x82, smdp.address.encode()))
    assert driver.call(configure) == bytes.fromhex("BF5903800100")
    assert driver.call(bytes.fromhex("BF5A03800100")) == bytes.fromhex("BF5A03800104")  # noSessionContext
    download(driver, smdp, P1)
    assert driver.call(bytes.fromhex("BF5A038001FF")) == bytes.fromhex("BF5A03800100")
    assert driver.channel.reset_detected  # refreshFlag TRUE
    driver.reopen()
    assert {p.iccid: p.state for p in card.state.profiles} == {P1.iccid: 1}
    assert driver.call(bytes.fromhex("BF5A03800100")) == bytes.fromhex("BF5A03800104")  # used up
    # restricted to the configured SM-DP+: a profile from elsewhere is not enabled immediately
    download(driver, SmdpSide(lab_pki, address="other-smdp.example"), P2)
    assert driver.call(bytes.fromhex("BF5A03800100")) == bytes.fromhex("BF5A03800101")
    # once an eIM is associated, the local configuration is refused
    spki = crypto.public_key_spki_der(lab_pki.eim_cert("nist").public_key())
    add_initial_eim(driver, eim_config("e", spki))
    assert driver.call(configure) == bytes.fromhex("BF5903800102")  # associatedEimAlreadyExists


@pytest.mark.parametrize(("options", "left"), [("0780", {2}), ("027C", {1}), ("05E0", set())])
def test_memory_reset(lab_pki, options, left):
    test_profile = new_profile(5, profile_class=0)
    lab = Lab(lab_pki, P1, test_profile)
    by_number = {1: P1.iccid, 2: test_profile.iccid}
    lab.psmo(op(ENABLE, P1.iccid))
    answer = lab.es10(T(0xBF64, T(0x82, bytes.fromhex(options))))
    decoded = asn1.decode("SGP32-EuiccMemoryResetResponse", answer)
    assert decoded["resetResult"] == 0
    assert set(lab.states()) == {by_number[n] for n in left}
    if options == "027C":  # bits 1..5: test profiles, default DP, eIM configuration
        assert decoded["resetEimResult"] == 0 and lab.card.state.eims == []
    operational_left = P1.iccid in lab.states()
    again = asn1.decode("SGP32-EuiccMemoryResetResponse", lab.es10(T(0xBF64, T(0x82, bytes.fromhex("0780")))))
    assert again["resetResult"] == (0 if operational_left else 1)  # nothingToDelete the second time
    assert P1.iccid not in lab.states()


def test_set_default_dp_address_and_configured_addresses(lab_pki):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    assert driver.call(T(0xBF65, T(0x80, b"smdp.lab.example"))) == bytes.fromhex("BF6503800100")
    assert asn1.decode("EuiccConfiguredAddressesResponse", driver.call(bytes.fromhex("BF3C00"))) == {
        "defaultDpAddress": "smdp.lab.example",
        "rootDsAddress": "lpa.ds.gsma.com",
    }
    assert driver.call(bytes.fromhex("BF5F00")) == bytes.fromhex("BF5F03810101")
    assert driver.call(bytes.fromhex("BF420480020780")) == bytes.fromhex("BF4203800101")
