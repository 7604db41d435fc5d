"""The notification parser and verifier (``eim.packages.notification``), the SM-DP+ address classes
(``eim.smdp_addresses``), the refusal log limiter and the new ``[relay]`` keys, fed by hypothesis: a random
signature is always rejected, malformed or altered notifications are refused with a cause and a reason and
nothing enters the outbox, address classification never raises, every key value loads or names the key."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eim.interfaces import EsipaRejected, RequestContext
from eim.packages import notification as nv
from eim.packages.euicc_package import EuiccKeys
from rsp import crypto, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.helpers import lab_admission, make_env
from tests.eim.test_dispatcher_flows import RecordingRelay, make_pir
from tests.eim.test_notification_forgery import handle
from tests.smdpp.sim import SimEuicc

T = tlv.encode
EID_A = lab_eid(141)
ICCID = "8949449999999990920"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("verify-pki"), curves=("nist",), eids=(EID_A,))


# ---------------------------------------------------------------- the parser and verifier, fed by hypothesis
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    signature=st.binary(min_size=64, max_size=64),
    seq=st.integers(0, 2**31),
    address=st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,10}){0,3}(:[1-9][0-9]{0,3})?", fullmatch=True),
)
def test_a_random_signature_is_always_rejected(lab, signature, seq, address):
    card = SimEuicc(lab, "nist", eid=EID_A)
    meta = T(0xBF2F, T(0x80, seq.to_bytes(5, "big")) + T(0x81, b"\x06\x40") + T(0x0C, address.encode()))
    raw = T(0x30, meta + T(0x5F37, signature) + card.cert_der + card.eum_der)
    parts = nv.parse(raw)
    assert (parts.signed, parts.signature, parts.address) == (meta, signature, address)
    with pytest.raises(nv.NotificationRejected) as exc:
        nv.verify_other(parts, EuiccKeys(lab.ci_certs()), EID_A)
    assert exc.value.cause == "signature" and exc.value.reason.startswith("euiccNotificationSignature")
    pir = T(0xBF37, T(0xBF27, T(0x80, bytes(16)) + meta + T(0xA2, T(0xA0, b""))) + T(0x5F37, signature))
    with pytest.raises(nv.NotificationRejected) as exc:
        nv.verify_pir(nv.parse(pir), lab.euicc_cert(EID_A, "nist"), EID_A)
    assert exc.value.cause == "signature" and exc.value.reason.startswith("euiccSignPIR")


@st.composite
def mutated(draw, base: bytes):
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


def test_malformed_and_altered_notifications_are_refused_with_a_reason(store_url, lab):
    """Random bytes and alterations of a genuine notification, into HandleNotification and
    ePRAndNotifications-like lists: each is refused with a specific cause, nothing is stored in the outbox, the
    eIM keeps serving (the genuine one is still taken afterwards)."""
    from eim.store import open_store

    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        env = make_env(store, lab, relay=RecordingRelay(lab), admission=lab_admission(["smdp.example.com"]))
        runner.run(env.service.register_euicc(EID_A))
        genuine = SimEuicc(lab, "nist", eid=EID_A, seq=90).other_notification(3, ICCID, "smdp.example.com")
        pir = make_pir(lab, EID_A, bytes(16))

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            note=st.one_of(st.binary(max_size=120), mutated(genuine), mutated(pir)),
            ctx=st.sampled_from([RequestContext("http"), RequestContext("mqtt", "t", EID_A)]),
        )
        def probe(note, ctx):
            if note in (genuine, pir):
                return
            taken = runner.run(env.rp.pending_notification(note, ctx.eid_hint))
            assert not taken.acknowledged or taken.cause in ("address", "unforwardable"), taken
            assert taken.cause and taken.reason
            acks = runner.run(env.rp.notifications([note], EID_A))
            assert acks == [] or taken.cause in ("address", "unforwardable")
            try:
                answer = runner.run(env.handle(handle(note), ctx))
            except EsipaRejected as exc:
                assert exc.http_status in (400, 403) and exc.message
            else:
                assert answer is None

        probe()
        assert runner.run(store.list_notifications()) == []
        assert runner.run(env.handle(handle(genuine))) is None
        [row] = runner.run(store.list_notifications())
        assert row.notification == genuine
        audit = runner.run(store.list_audit(limit=5000))
        causes = {a.detail["cause"] for a in audit if a.action == "notification" and a.outcome != "queued"}
        assert causes <= {"malformed", "compact", "signature", "certificate", "eid_mismatch", "unattributed"} | {
            "address",
            "unforwardable",
            "unknown_euicc",
        }
        runner.run(store.close())
    finally:
        runner.close()


def test_a_signed_pir_with_an_unknown_final_result_is_refused_as_malformed(store_url, lab):
    """A PIR whose finalResult is neither successResult [0] nor errorResult [1] (here [2], found by the property
    test above), correctly signed by the eUICC: refused as malformed with a reason, nothing stored, the eIM keeps
    serving (it raised TypeError before)."""
    from eim.store import open_store

    runner = asyncio.Runner()
    try:
        store = open_store(store_url)
        runner.run(store.open())
        env = make_env(store, lab, relay=RecordingRelay(lab), admission=lab_admission(["smdp.example.com"]))
        runner.run(env.service.register_euicc(EID_A))
        pir = make_pir(lab, EID_A, bytes(16))
        data = tlv.require(pir, 0xBF27, what="PIR").raw
        final = data.index(b"\xa2\x18\xa0\x16")
        forged = data[: final + 2] + b"\xa2" + data[final + 3 :]
        sig = crypto.sign(lab.euicc_key(EID_A, "nist"), forged)
        note = tlv.encode(0xBF37, forged + tlv.encode(0x5F37, sig))
        for binding_eid in (None, EID_A):
            taken = runner.run(env.rp.pending_notification(note, binding_eid))
            assert not taken.acknowledged and taken.cause == "malformed", taken
            assert "finalResult" in (taken.reason or "")
        assert runner.run(store.list_notifications()) == []
        runner.run(store.close())
    finally:
        runner.close()


# ---------------------------------------------------------------- the [relay] keys
@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(
        [
            "allow_private_addresses",
            "max_pending_notifications_per_eid",
            "notification_rate_per_eid_per_hour",
            "notification_burst_per_eid",
        ]
    ),
    value=st.one_of(st.text(max_size=12), st.integers(-5, 10**6).map(str), st.sampled_from(["true", "no", "1.5"])),
)
def test_relay_keys_load_or_name_the_key(key, value):
    from eim.config import ConfigError, load_config

    try:
        cfg = load_config(None, env={f"EIM_RELAY_{key.upper()}": value})
    except ConfigError as exc:
        assert key in str(exc) or "notification_burst_per_eid" in str(exc)
        return
    r = cfg.relay
    assert isinstance(r.allow_private_addresses, bool)
    assert r.max_pending_notifications_per_eid >= 0 and r.notification_rate_per_eid_per_hour >= 0
    from eim.app import make_outbox

    make_outbox(cfg, None, None)  # what loads can be used: no ValueError from the outbox's admission


# ---------------------------------------------------------------- small parts
def test_refusals_are_logged_once_per_cause_and_interval(caplog):
    import logging

    from eim.logs import RateLimitedLog

    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("eim.esipa.notifications"), 60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="eim.esipa.notifications"):
        logged = [limiter.warning("signature", "notification refused", {"cause": "signature"}) for _ in range(5)]
        logged.append(limiter.warning("rate", "notification refused", {"cause": "rate"}))
        now[0] = 61.0
        logged.append(limiter.warning("signature", "notification refused", {"cause": "signature"}))
    assert logged == [True, False, False, False, False, True, True]
    records = [r for r in caplog.records if r.name == "eim.esipa.notifications"]
    assert [(r.cause, r.suppressed) for r in records] == [("signature", 0), ("rate", 0), ("signature", 4)]


@settings(max_examples=300, deadline=None)
@given(address=st.one_of(st.text(max_size=40), st.from_regex(r"[0-9a-fx.]{1,20}(:[0-9]{1,5})?", fullmatch=True)))
def test_address_classes_never_raise(address):
    from eim.smdp_addresses import SmdpAddressPolicy, address_class

    kind = address_class(address)
    assert kind in (None, "never", "loopback", "private")
    strict, lab = SmdpAddressPolicy.of(), SmdpAddressPolicy.of(allow_private=True, allow_loopback=True)
    assert (strict.refusal(address) is None) == (kind is None)
    assert (lab.refusal(address) is None) == (kind != "never")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "never"),
        ("169.254.169.254:80", "never"),
        ("2852039166", "never"),
        ("0xa9.0xfe.0xa9.0xfe", "never"),
        ("0.0.0.0", "never"),
        ("224.0.0.1", "never"),
        ("127.0.0.1:8443", "loopback"),
        ("127.1", "loopback"),
        ("localhost", "loopback"),
        ("smdp.localhost:1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1:443", "private"),
        ("100.64.0.1", "private"),
        ("smdp.example.com", None),
        ("8.8.8.8", None),
    ],
)
def test_address_classes(address, kind):
    from eim.smdp_addresses import address_class

    assert address_class(address) == kind


def test_pir_with_an_unknown_final_result_alternative_is_a_decode_error():
    """Found by the property test above: a PIR whose finalResult is an alternative the schema does not know decoded
    to ``(None, raw bytes)`` and the summary indexed the bytes (TypeError, an internal error)."""
    from eim.packages import download
    from rsp.errors import DecodeError

    pir = (
        b"\xbf7\x81\x94\xbf'N\x80\x10" + bytes(16) + b"\xbf/\x19\x80\x01\t\x81\x02\x07\x80\x0c\x10smdp.example.com"
        b"\x06\x04\x887 \n\xa2\x18\xa2\x16O\x10\xa0\x00\x00\x05Y\x10\x10\xff\xff\xff\xff\x89\x00\x00\x11"
        b"\x00\x04\x020\x00"
        b"_7@" + bytes(64)
    )
    with pytest.raises(DecodeError):
        download.pir_summary(pir)


# ---------------------------------------------------------------- attribution of a PIR, each refusal with its cause
async def test_pir_attribution_refusals_name_their_cause(lab):
    """verify_pir of the intake: an unregistered eUICC, no stored certificate, no way to verify it, a stored chain
    that no longer holds - each refused with its own cause; the genuine PIR verifies for its EID only."""
    from types import SimpleNamespace

    from eim.esipa.notification_intake import NotificationIntake
    from eim.packages.euicc_package import ResultRejected

    class Store:
        def __init__(self, euiccs) -> None:
            self.euiccs = euiccs

        async def get_euicc(self, eid):
            return self.euiccs.get(eid)

    def broken(_euicc):
        raise ResultRejected("the stored chain no longer holds", "certificate")

    def garbled(_euicc):
        raise ValueError("stored certificate does not parse")

    def key_of(_euicc):
        return lab.euicc_key(EID_A).public_key()

    parts = nv.parse(make_pir(lab, EID_A, bytes(16)))
    known = SimpleNamespace(euicc_certificate=b"stored certificate")
    unknown = SimpleNamespace(euicc_certificate=None)
    for euiccs, public_key_of, cause, words in (
        ({}, key_of, "unknown_euicc", "not registered"),
        ({EID_A: unknown}, key_of, "certificate", "not known"),
        ({EID_A: known}, None, "certificate", "not known"),
        ({EID_A: known}, broken, "certificate", "no longer holds"),
        ({EID_A: known}, garbled, "certificate", "does not parse"),
    ):
        intake = NotificationIntake(Store(euiccs), EuiccKeys([]), public_key_of=public_key_of)
        with pytest.raises(nv.NotificationRejected) as exc:
            await intake.verify_pir(parts, EID_A)
        assert exc.value.cause == cause and words in exc.value.reason, (cause, exc.value.reason)
    note = await NotificationIntake(Store({EID_A: known}), EuiccKeys([]), public_key_of=key_of).verify_pir(parts, EID_A)
    assert (note.eid, note.kind, note.raw) == (EID_A, "pir", parts.raw)


async def test_other_notification_attribution_refusals_name_their_cause(lab, monkeypatch):
    """verify_other of the intake: an EID the caller attributes it to that is not the one the binding
    authenticated (compared case-insensitively: topics may carry hex digits in either case), an unregistered
    eUICC; what passes goes to the signature check for the upper-case EID."""
    from eim.esipa import notification_intake
    from eim.esipa.notification_intake import NotificationIntake

    class Store:
        def __init__(self, eids) -> None:
            self.eids = set(eids)

        async def get_euicc(self, eid):
            return object() if eid in self.eids else None

    checked = []
    monkeypatch.setattr(notification_intake.nv, "verify_other", lambda parts, keys, eid: checked.append(eid) or eid)
    hexa = "89abcdef" * 4
    parts = nv.parse(SimEuicc(lab, "nist", eid=EID_A, seq=5).other_notification(3, ICCID, "smdp.example.com"))
    intake = NotificationIntake(Store([EID_A, hexa.upper()]), EuiccKeys([]))
    with pytest.raises(nv.NotificationRejected) as exc:
        await intake.verify_other(parts, EID_A, hexa.upper())
    assert exc.value.cause == "eid_mismatch" and EID_A in exc.value.reason
    assert await intake.verify_other(parts, hexa, hexa.upper()) == hexa.upper()
    assert await intake.verify_other(parts, hexa.upper(), hexa) == hexa.upper()
    assert await intake.verify_other(parts, None, EID_A) == EID_A
    assert await intake.verify_other(parts, None, None) == EID_A  # the certificate's EID
    with pytest.raises(nv.NotificationRejected) as exc:
        await NotificationIntake(Store([]), EuiccKeys([])).verify_other(parts, EID_A, None)
    assert exc.value.cause == "unknown_euicc" and EID_A in exc.value.reason
    assert checked == [hexa.upper(), hexa.upper(), EID_A, EID_A]


def test_verify_pir_takes_only_a_pir_and_names_the_eid_upper_case(lab):
    key = lab.euicc_key(EID_A).public_key()
    other = nv.parse(SimEuicc(lab, "nist", eid=EID_A, seq=5).other_notification(3, ICCID, "smdp.example.com"))
    with pytest.raises(nv.NotificationRejected) as exc:
        nv.verify_pir(other, key, EID_A)
    assert exc.value.cause == "malformed" and exc.value.reason
    txid = bytes(range(16))
    pir = nv.parse(make_pir(lab, EID_A, txid))
    note = nv.verify_pir(pir, key, "89abcdef" * 4)
    assert note.eid == "89ABCDEF" * 4 and note.transaction_id == txid and note.kind == "pir"
    # the refusal names the signature that failed
    wrong = lab.euicc_key(EID_A).public_key()
    other_key = crypto.generate_key("nist").public_key()
    with pytest.raises(nv.NotificationRejected) as exc:
        nv.verify_pir(pir, other_key, EID_A)
    assert exc.value.cause == "signature" and exc.value.reason.startswith("euiccSignPIR")
    keys = EuiccKeys(lab.ci_certs())
    note = nv.verify_other(other, keys, EID_A)
    assert note.transaction_id is None and note.eid == EID_A and nv.verify_pir(pir, wrong, EID_A).raw == pir.raw
    import dataclasses

    with pytest.raises(nv.NotificationRejected) as exc:
        nv.verify_other(dataclasses.replace(other, signature=bytes(64)), keys, EID_A)
    assert exc.value.cause == "signature" and exc.value.reason.startswith("euiccNotificationSignature")


def test_a_pir_has_no_certificate_to_name_an_eid(lab):
    pir = nv.parse(make_pir(lab, EID_A, bytes(16)))
    with pytest.raises(nv.NotificationRejected) as exc:
        nv.certificate_eid(pir)
    assert exc.value.cause == "malformed" and exc.value.reason


def test_ip_literals_of_both_families_are_read():
    import ipaddress

    from eim.smdp_addresses import ip_of, loopback_only

    assert ip_of("::1") == ipaddress.IPv6Address("::1") and ip_of("fe80::1") == ipaddress.IPv6Address("fe80::1")
    assert ip_of("10.0.0.1") == ipaddress.IPv4Address("10.0.0.1") and ip_of("0x7f.1") == ipaddress.IPv4Address(
        "127.0.0.1"
    )
    assert ip_of("smdp.example.com") is None
    assert loopback_only(["::1", "[::1]", "127.0.0.1", "localhost"]) and not loopback_only(["::1", "0.0.0.0"])
