"""The card's reading of a real-world Unprotected Profile Package (euicc/profile_package.py): the GSMA TS.48
generic test profile's ProfileHeader carries its ICCID as plain digits (TCA SAIP), StoreMetadata as EF.ICCID
(nibble-swapped, SGP.22); PEs of types the card does not know are skipped unless mandated; malformed packages are
refused with peProcessingError(12) and nothing is installed. Every case runs the full ES10b download."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from euicc import profile_package as pp
from rsp import asn1, tlv
from tests.euicc.conftest import Es10Driver, download, make_card
from tests.euicc.smdp_side import SmdpSide, iccid_bcd
from tests.euicc.smdp_side import TestProfile as Profile
from tests.euicc.upp_sample import SERVICES, header, pe, plain, ts48_body

T = tlv.encode
ICCID = "8949449999999990007"  # the ICCID of the interop report: the plain header form pads it with F


def install(lab_pki, package: bytes, iccid: str = ICCID):
    card = make_card(lab_pki)
    driver = Es10Driver(card)
    profile = Profile(iccid=iccid_bcd(iccid), package=package)
    pir = download(driver, SmdpSide(lab_pki), profile)
    return card, asn1.decode("ProfileInstallationResult", pir)["profileInstallationResultData"]["finalResult"]


def test_header_iccid_in_plain_digits_as_real_packages_have_it_installs(lab_pki):
    """The interop finding: a TS.48 UPP (plain header ICCID) was refused with dataMismatch(13)."""
    package = header(plain(ICCID)) + b"".join(ts48_body())
    assert 12_000 <= len(package) <= 100_000
    card, result = install(lab_pki, package)
    assert result[0] == "successResult", result
    stored = card.state.profile(iccid_bcd(ICCID))
    assert stored is not None and stored.elements == package


def test_header_iccid_in_ef_iccid_order_still_installs(lab_pki):
    card, result = install(lab_pki, header(iccid_bcd(ICCID)) + b"".join(ts48_body()))
    assert result[0] == "successResult"
    assert card.state.profile(iccid_bcd(ICCID)) is not None


@pytest.mark.parametrize("form", [plain, iccid_bcd])
def test_a_header_naming_another_iccid_is_a_data_mismatch(lab_pki, form):
    card, result = install(lab_pki, header(form("8949449999999990015")) + b"".join(ts48_body()))
    assert result == ("errorResult", {"bppCommandId": 5, "errorReason": 13})
    assert card.state.profiles == []


def test_unknown_pe_types_are_skipped_unless_mandated(lab_pki):
    body = ts48_body()
    future = pe(0xBF30, 40, T(0x80, b"new"), mandated=False)  # a PE type of a later SAIP version
    package = header(plain(ICCID)) + b"".join([*body[:-1], future, body[-1]])
    card, result = install(lab_pki, package)
    assert result[0] == "successResult"
    assert card.state.profiles[0].elements == package
    mandated = header(plain(ICCID)) + b"".join([*body[:-1], pe(0xBF30, 40, mandated=True), body[-1]])
    card, result = install(lab_pki, mandated)
    assert result == ("errorResult", {"bppCommandId": 5, "errorReason": 12})
    assert card.state.profiles == []


@pytest.mark.parametrize(
    "case",
    ["no-end", "after-end", "second-header", "major-4", "unknown-service", "no-pe-header", "short-iccid"],
)
def test_malformed_packages_are_a_pe_processing_error(lab_pki, case):
    body = ts48_body()
    head = header(plain(ICCID))
    package = {
        "no-end": head + b"".join(body[:-1]),
        "after-end": head + b"".join(body) + pe(0xA9, 50),
        "second-header": head + b"".join(body[:3]) + head + b"".join(body[3:]),
        "major-4": header(plain(ICCID), major=4) + b"".join(body),
        "unknown-service": header(plain(ICCID), services=SERVICES + bytes.fromhex("9F2000")) + b"".join(body),
        "no-pe-header": head + T(0xB3, T(0x83, b"x")) + b"".join(body),
        "short-iccid": T(0xA0, T(0x80, b"\x02") + T(0x81, b"\x03") + T(0x83, b"\x89\x00")) + b"".join(body),
    }[case]
    card, result = install(lab_pki, package)
    assert result == ("errorResult", {"bppCommandId": 5, "errorReason": 12})
    assert card.state.profiles == []


def test_header_iccid_matching_rules():
    md = iccid_bcd(ICCID)
    assert pp.header_iccid_matches(plain(ICCID), md)
    assert pp.header_iccid_matches(md, md)
    assert not pp.header_iccid_matches(plain("8949449999999990015"), md)
    assert not pp.header_iccid_matches(bytes(10), md)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_give_a_specific_refusal(data):
    try:
        package = pp.parse(data)
    except pp.ProfilePackageError as exc:
        assert exc.reason == 12 and str(exc)
    else:
        assert package.elements[-1].tag == pp.TAG_END


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(min_value=0, max_value=40))
def test_damaged_real_shape_packages_never_raise_anything_else(junk, at):
    good = header(plain(ICCID)) + b"".join(ts48_body()[:3]) + pe(0xAA, 31)
    data = good[:at] + junk + good[at:]
    try:
        pp.check_against_metadata(pp.parse(data), iccid_bcd(ICCID))
    except pp.ProfilePackageError as exc:
        assert exc.reason in (12, 13)
