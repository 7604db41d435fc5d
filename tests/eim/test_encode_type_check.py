"""Two encodes skip asn1tools' Python-type walk (``rsp.asn1.encode(..., check_types=False)``) and keep the constraint
checks: the EuiccPackageSigned the eIM signs (built from parameters checked when queued) and the DER re-encode check
of a received EuiccPackageResult (the decoder's own output). These tests hold each to the fully checked encode:
the same bytes, or an error on both sides, for valid and out-of-constraint values and for malformed results."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eim.packages import psmo
from eim.packages.common import ParamError
from eim.packages.euicc_package import euicc_package_signed, parse_euicc_package_result
from rsp import asn1
from rsp.errors import EncodeError, RspError
from tests.eim.test_result_fast_path import epr

ICCID = st.text(alphabet="0123456789", min_size=18, max_size=20)
PSMO = st.one_of(
    st.just({"getRAT": {}}),
    st.just({"unsetFallbackAttribute": {}}),
    st.builds(lambda i, rb: {"enable": {"iccid": i, **({"rollback": True} if rb else {})}}, ICCID, st.booleans()),
    st.builds(lambda n, i: {n: {"iccid": i}}, st.sampled_from(["disable", "delete", "setFallbackAttribute"]), ICCID),
    st.builds(lambda i: {"listProfileInfo": {"iccid": i}}, ICCID),
    st.just({"listProfileInfo": {}}),
)


def full(eim_id: str, eid: str, counter: int, txid: bytes, package: tuple[str, list]) -> bytes | None:
    from eim.packages.common import eid_to_bytes

    value = {
        "eimId": eim_id,
        "eidValue": eid_to_bytes(eid),
        "counterValue": counter,
        "eimTransactionId": txid,
        "euiccPackage": package,
    }
    try:
        return asn1.encode("EuiccPackageSigned", value)
    except EncodeError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    eim_id=st.text(min_size=0, max_size=140),
    eid=st.text(alphabet="0123456789ABCDEF", min_size=32, max_size=32),
    counter=st.one_of(st.integers(0, 2**31 - 1), st.integers(-(2**40), 2**40)),
    txid=st.binary(min_size=0, max_size=20),
    items=st.lists(PSMO, min_size=1, max_size=5),
)
def test_package_encode_is_the_fully_checked_one(eim_id, eid, counter, txid, items):
    try:
        package = psmo.euicc_package(psmo.validate({"psmos": items}))
    except ParamError:
        return
    expected = full(eim_id, eid, counter, txid, package)
    try:
        got = euicc_package_signed(eim_id, eid, counter, txid, package)
    except EncodeError:
        got = None
    assert got == expected


@st.composite
def epr_loose(draw) -> bytes:
    """An EuiccPackageResult encoded WITHOUT the constraint checks: eimIds of 0-140 characters, transaction ids of
    0-20 bytes (the schema says 1-128 and 1-16), so that the re-encode check meets values it must refuse."""
    eim_id = draw(st.text(alphabet="ab.", min_size=0, max_size=140))
    txid = draw(st.one_of(st.none(), st.binary(min_size=0, max_size=20)))
    if draw(st.booleans()):
        body = {"eimId": eim_id, **({} if txid is None else {"eimTransactionId": txid})}
        return asn1.encode("EuiccPackageResult", ("euiccPackageErrorUnsigned", body), strict=False)
    data = {"eimId": eim_id, "counterValue": draw(st.integers(0, 2**31 - 1)), "seqNumber": 1}
    if txid is not None:
        data["eimTransactionId"] = txid
    data["euiccResult"] = [("getRATResult", [])]
    sig = draw(st.binary(min_size=64, max_size=64))
    value = ("euiccPackageResultSigned", {"euiccPackageResultDataSigned": data, "euiccSignEPR": sig})
    return asn1.encode("EuiccPackageResult", value, strict=False)


def _same_check(raw: bytes) -> None:
    """The re-encode check with and without the type walk: accepted by both or refused by both."""
    try:
        value = asn1.decode("EuiccPackageResult", raw)
    except RspError:
        return
    try:
        checked = asn1.encode("EuiccPackageResult", value) == raw
    except RspError:
        checked = False
    try:
        parse_euicc_package_result(raw)
        refused = ""
    except RspError as exc:
        refused = str(exc)
    # refused by the re-encode check exactly when the fully checked encode does not give back the bytes (the parse
    # may still refuse a value that passes it for its own reasons, e.g. an alternative it does not know)
    assert ("not DER" in refused) == (not checked)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(epr(), epr_loose()),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.sampled_from(["keep", "keep", "flip", "cut", "add"]),
)
def test_result_reencode_check_refuses_what_the_checked_one_refuses(raw, at, byte, how):
    if how == "flip" and raw:
        i = at % len(raw)
        raw = raw[:i] + bytes([byte]) + raw[i + 1 :]
    elif how == "cut" and raw:
        raw = raw[: at % len(raw)]
    elif how == "add":
        i = at % (len(raw) + 1)
        raw = raw[:i] + bytes([byte]) + raw[i:]
    _same_check(raw)


@settings(max_examples=200, deadline=None)
@given(epr())
def test_result_reencode_check_accepts_der(raw):
    assert asn1.encode("EuiccPackageResult", asn1.decode("EuiccPackageResult", raw)) == raw
    parse_euicc_package_result(raw)  # accepted: no DecodeError
