"""The pure checks of result verification (``eim.packages.euicc_package``): the eUICC key is verified for the EID
it is used for on every use (cache or not), each echo check and the signature check refuse with their own cause,
and what the parser accepts is cut from the received bytes exactly (hypothesis)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.packages.common import association_token_tlv
from eim.packages.euicc_package import (
    EuiccKeys,
    ResultRejected,
    parse_euicc_package_result,
    verify_outcome,
)
from rsp import asn1, crypto, tlv
from rsp.errors import DecodeError
from rsp.pki import create_lab_pki, lab_eid
from tests.conftest import DATA

EIDS = [lab_eid(i) for i in range(51, 53)]
EIM_ID = "eim.lab.test"
TOKEN = 7
TXID = bytes(range(16))
COUNTER = 12


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), eids=EIDS)


def der(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def signed_epr(key, *, eim_id: str = EIM_ID, counter: int = COUNTER, txid: bytes | None = TXID, token=TOKEN) -> bytes:
    """An EuiccPackageResultSigned as an eUICC writes it, signed over DER(data) || 84 L token."""
    value = {"eimId": eim_id, "counterValue": counter, "seqNumber": 3, "euiccResult": [("enableResult", 0)]}
    if txid is not None:
        value["eimTransactionId"] = txid
    data = asn1.encode("EuiccPackageResultDataSigned", value)
    sig = crypto.sign(key, data + association_token_tlv(token))
    return tlv.encode(0xBF51, tlv.encode(0xA0, data + tlv.encode(0x5F37, sig)))


def check(outcome, key, **kw):
    args = dict(public_key=key, association_token=TOKEN, eim_id=EIM_ID, counter_value=COUNTER, eim_transaction_id=TXID)
    args.update(kw)
    verify_outcome(outcome, **args)


# ---------------------------------------------------------------------------------------------------- identity
def test_a_key_verified_for_one_eid_never_serves_another(lab):
    """The cache saves the chain work only: A's certificate, verified (and cached) for A, is refused for B on
    the first and on every later use."""
    keys = EuiccKeys(lab.ci_certs())
    a_cert, eum = der(lab.euicc_cert(EIDS[0])), der(lab.eum_cert())
    key = keys.public_key(EIDS[0], a_cert, eum)
    assert crypto.public_point(key) == crypto.public_point(lab.euicc_key(EIDS[0]))
    for _ in range(2):
        with pytest.raises(ResultRejected) as exc:
            keys.public_key(EIDS[1], a_cert, eum)
        assert exc.value.cause == "certificate_eid" and EIDS[0] in exc.value.reason
    assert keys.public_key(EIDS[0], a_cert, eum) is not None  # A still gets its key (cached)


def test_a_certificate_not_chaining_to_a_trusted_ci_is_refused(lab, tmp_path):
    other = create_lab_pki(tmp_path / "other", eids=EIDS[:1])
    keys = EuiccKeys(lab.ci_certs())
    with pytest.raises(ResultRejected) as exc:
        keys.public_key(EIDS[0], der(other.euicc_cert(EIDS[0])), der(other.eum_cert()))
    assert exc.value.cause == "certificate"
    with pytest.raises(ResultRejected) as exc:
        EuiccKeys([]).public_key(EIDS[0], der(lab.euicc_cert(EIDS[0])), der(lab.eum_cert()))
    assert exc.value.cause == "certificate"


# ---------------------------------------------------------------------------------------------------- each check
def test_the_genuine_result_verifies(lab):
    key = lab.euicc_key(EIDS[0])
    check(parse_euicc_package_result(signed_epr(key)), key.public_key())


@pytest.mark.parametrize(
    ("kw", "check_kw", "cause"),
    [
        ({"eim_id": "eim.other"}, {}, "eim_id"),
        ({"counter": COUNTER + 1}, {}, "counter"),
        ({"txid": os.urandom(16)}, {}, "transaction_id"),
        ({}, {"association_token": TOKEN + 1}, "signature"),
        ({}, {"public_key": "other"}, "signature"),
    ],
)
def test_each_check_refuses_with_its_cause(lab, kw, check_kw, cause):
    key = lab.euicc_key(EIDS[0])
    outcome = parse_euicc_package_result(signed_epr(key, **kw))
    if check_kw.get("public_key") == "other":
        check_kw = {"public_key": lab.euicc_key(EIDS[1]).public_key()}
    with pytest.raises(ResultRejected) as exc:
        check(outcome, key.public_key(), **check_kw)
    assert exc.value.cause == cause


def test_a_signed_result_without_a_verified_key_is_refused(lab):
    """No key (the eUICC's certificate is not known or did not verify): never accepted, cause ``certificate``."""
    key = lab.euicc_key(EIDS[0])
    outcome = parse_euicc_package_result(signed_epr(key))
    with pytest.raises(ResultRejected) as exc:
        check(outcome, None)
    assert exc.value.cause == "certificate" and exc.value.reason


def test_the_refusal_names_the_signature_that_failed(lab):
    """euiccSignEPR for a result, euiccSignEPE for a signed error: the reason says which one did not verify."""
    key, other = lab.euicc_key(EIDS[0]), lab.euicc_key(EIDS[1]).public_key()
    with pytest.raises(ResultRejected) as exc:
        check(parse_euicc_package_result(signed_epr(key)), other)
    assert exc.value.cause == "signature"
    assert exc.value.reason == "euiccSignEPR does not verify with the given nist key"
    data = asn1.encode(
        "EuiccPackageErrorDataSigned",
        {"eimId": EIM_ID, "counterValue": COUNTER, "eimTransactionId": TXID, "euiccPackageErrorCode": 4},
    )
    sig = crypto.sign(key, data + association_token_tlv(TOKEN))
    error = parse_euicc_package_result(tlv.encode(0xBF51, tlv.encode(0xA1, data + tlv.encode(0x5F37, sig))))
    check(error, key.public_key())
    with pytest.raises(ResultRejected) as exc:
        check(error, other)
    assert exc.value.cause == "signature"
    assert exc.value.reason == "euiccSignEPE does not verify with the given nist key"


def test_unsigned_error_must_echo_the_transaction_id(lab):
    body = tlv.encode(0x80, EIM_ID.encode())
    bare = parse_euicc_package_result(tlv.encode(0xBF51, tlv.encode(0xA2, body)))
    with pytest.raises(ResultRejected) as exc:
        check(bare, None)
    assert exc.value.cause == "transaction_id"
    named = parse_euicc_package_result(tlv.encode(0xBF51, tlv.encode(0xA2, body + tlv.encode(0x82, TXID))))
    check(named, None)  # the echo holds; whether it may end anything is the caller's rule (authenticated EID)


# ---------------------------------------------------------------------------------------------------- fuzz
_KEY = crypto.generate_key("nist")
_GENUINE = signed_epr(_KEY)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(signature=st.one_of(st.binary(min_size=64, max_size=64), st.binary(max_size=100)))
def test_a_random_signature_over_a_valid_result_is_refused(signature):
    genuine = parse_euicc_package_result(_GENUINE)
    forged_bytes = tlv.encode(0xBF51, tlv.encode(0xA0, genuine.signed_part + tlv.encode(0x5F37, signature)))
    forged = parse_euicc_package_result(forged_bytes)
    assert forged.signed_part == genuine.signed_part and forged.signature == signature
    with pytest.raises(ResultRejected) as exc:
        check(forged, _KEY.public_key())
    assert exc.value.cause == "signature"


def _mutations():
    base = st.sampled_from([_GENUINE, bytes.fromhex(_REAL)])
    flip = st.tuples(base, st.integers(0, 200), st.integers(1, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    )
    cut = st.tuples(base, st.integers(0, 200), st.binary(max_size=4)).map(
        lambda t: t[0][: t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) :]
    )
    return st.one_of(flip, cut, st.binary(max_size=120), st.binary(max_size=60).map(lambda b: b"\xbf\x51" + b))


# the real captured EuiccPackageResult (tests/data/vectors.json "real_euicc_package_result")
_REAL = json.loads((DATA / "vectors.json").read_text())["real_euicc_package_result"]["hex"]


@settings(max_examples=500)
@given(raw=_mutations())
def test_whatever_the_parser_accepts_is_cut_from_the_received_bytes(raw):
    """Either a DecodeError, or: the bytes are exactly one BF51 in DER (they re-encode to themselves), and the
    signed part and the signature are the received bytes, cut, not rebuilt."""
    try:
        outcome = parse_euicc_package_result(raw)
    except DecodeError:
        return
    assert asn1.encode("EuiccPackageResult", asn1.decode("EuiccPackageResult", raw)) == raw
    inner = tlv.children(tlv.parse_exact(raw))[0]
    if outcome.signed:
        assert inner.value == outcome.signed_part + tlv.encode(0x5F37, outcome.signature)
        assert tlv.parse_exact(outcome.signed_part).tag == 0x30
    else:
        assert outcome.signed_part == b"" and inner.tag == 0xA2


def test_a_cached_chain_past_its_validity_is_never_used(lab):
    """The cache saves chain work only while the certificates are valid: an entry whose validity has passed is
    dropped and the chain verified again (here the stale entry holds another card's certificate: never returned)."""
    import datetime as dt
    import hashlib

    keys = EuiccKeys(lab.ci_certs())
    a_cert, eum = der(lab.euicc_cert(EIDS[0])), der(lab.eum_cert())
    genuine = crypto.public_point(keys.public_key(EIDS[0], a_cert, eum))
    [ident] = keys._cache
    assert ident == hashlib.sha256(b"|".join((EIDS[0].encode(), a_cert, eum, b""))).digest()
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    # the stale entry names the right EID but holds another card's key: used, it would be returned as is
    other_key = lab.euicc_cert(EIDS[1]).public_key()
    keys._cache[ident] = (EIDS[0], other_key, past, past + dt.timedelta(days=1))
    assert crypto.public_point(keys.public_key(EIDS[0], a_cert, eum)) == genuine
    assert crypto.public_point(other_key) != genuine
    assert keys._cache[ident][3] > dt.datetime.now(dt.UTC)


class _ChainSpy:
    """Counts the chain verifications ``EuiccKeys`` asks for (the work its cache exists to save)."""

    def __init__(self, monkeypatch):
        import rsp.pki.chain

        self.calls = 0
        real = rsp.pki.chain.verify_chain

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(rsp.pki.chain, "verify_chain", counting)


def test_a_cached_chain_is_used_up_to_the_exact_instants_of_its_validity(lab, monkeypatch):
    """Certificate validity includes notBefore and notAfter (RFC 5280 §4.1.2.5): the cached chain serves at both
    instants without being verified again; one microsecond after notAfter it is dropped, verified again at that
    time and refused as expired."""
    import datetime as dt

    spy = _ChainSpy(monkeypatch)
    path = [lab.euicc_cert(EIDS[0]), lab.eum_cert(), *lab.ci_certs()]
    valid_from = max(c.not_valid_before_utc for c in path)
    valid_to = min(c.not_valid_after_utc for c in path)
    at = [valid_from]
    keys = EuiccKeys(lab.ci_certs(), clock=lambda: at[0])
    a_cert, eum = der(lab.euicc_cert(EIDS[0])), der(lab.eum_cert())
    genuine = crypto.public_point(lab.euicc_key(EIDS[0]))
    assert crypto.public_point(keys.public_key(EIDS[0], a_cert, eum)) == genuine and spy.calls == 1
    assert crypto.public_point(keys.public_key(EIDS[0], a_cert, eum)) == genuine and spy.calls == 1
    at[0] = valid_to
    assert crypto.public_point(keys.public_key(EIDS[0], a_cert, eum)) == genuine and spy.calls == 1
    at[0] = valid_to + dt.timedelta(microseconds=1)
    with pytest.raises(ResultRejected) as exc:
        keys.public_key(EIDS[0], a_cert, eum)
    assert exc.value.cause == "certificate" and "(expired)" in exc.value.reason and spy.calls == 2
    # a clock set back before notBefore does not get the chain from the cache either
    at[0] = valid_from
    keys.public_key(EIDS[0], a_cert, eum)
    at[0] = valid_from - dt.timedelta(microseconds=1)
    with pytest.raises(ResultRejected) as exc:
        keys.public_key(EIDS[0], a_cert, eum)
    assert exc.value.cause == "certificate" and "(not-yet-valid)" in exc.value.reason and spy.calls == 4


def test_the_chain_cache_is_bounded(lab, monkeypatch):
    """At ``MAX_CACHED`` entries the cache starts again: a chain cached before that is verified again."""
    spy = _ChainSpy(monkeypatch)
    keys = EuiccKeys(lab.ci_certs())
    keys.MAX_CACHED = 2
    eum = der(lab.eum_cert())
    uses = [(EIDS[0], None), (EIDS[0], _ci_key_id(lab)), (EIDS[1], None)]  # the CI key id named: another entry
    for eid, ci_key_id in uses:  # three entries: the third starts the cache again
        keys.public_key(eid, der(lab.euicc_cert(eid)), eum, ci_key_id)
    assert spy.calls == 3
    keys.public_key(EIDS[1], der(lab.euicc_cert(EIDS[1])), eum)  # the entry kept
    assert spy.calls == 3
    keys.public_key(EIDS[0], der(lab.euicc_cert(EIDS[0])), eum)  # dropped when the third came: verified again
    assert spy.calls == 4
    assert len(keys._cache) <= keys.MAX_CACHED


def _ci_key_id(lab) -> bytes:
    from cryptography import x509

    [ci] = lab.ci_certs()
    return ci.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_an_euicc_certificate_without_its_eum_is_refused_naming_the_missing_issuer(lab):
    """No EUM certificate known (``eum_cert`` None): nothing links the eUICC certificate to a CI."""
    with pytest.raises(ResultRejected) as exc:
        EuiccKeys(lab.ci_certs()).public_key(EIDS[0], der(lab.euicc_cert(EIDS[0])), None)
    assert exc.value.cause == "certificate"
    assert exc.value.reason.startswith("eUICC certificate refused: ")
    assert "which is not a trusted CI" in exc.value.reason and "nor a given intermediate" in exc.value.reason


def test_the_eid_check_runs_on_a_cache_hit_too(lab):
    """A cached entry is for the EID its key was verified for; were one to name another EID (here planted), the
    use is refused: the check compares on every call, it is not skipped because the chain work was cached."""
    keys = EuiccKeys(lab.ci_certs())
    a_cert, eum = der(lab.euicc_cert(EIDS[0])), der(lab.eum_cert())
    keys.public_key(EIDS[0], a_cert, eum)
    [ident] = keys._cache
    _eid, key, valid_from, valid_to = keys._cache[ident]
    keys._cache[ident] = (EIDS[1], key, valid_from, valid_to)
    with pytest.raises(ResultRejected) as exc:
        keys.public_key(EIDS[0], a_cert, eum)
    assert exc.value.cause == "certificate_eid" and EIDS[1] in str(exc.value)
