"""The EUM's permitted EID range (SGP.22 §4.5.2.1.0.2 / §4.5.2.2; SGP.26 v3 permittedEins 2.23.146.1.2.2.0).

The attacker's EUM below is written byte by byte (not with our lab generator, not with ``cryptography``'s
builder): a CI-signed EUM whose nameConstraints and permittedEins permit ``89049033`` and which issues an eUICC
certificate for the SGP.23 test EID ``89049032123451234512345678901235`` - an EID of another manufacturer. Its
shape follows the GSMA SGP.26 EUM as printed in bc-java pull request 564 (``X509v3 Name Constraints: critical,
Permitted: DirName: O = RSP Test EUM, serialNumber = 89049032``).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsp import tlv
from rsp.pki import (
    ChainError,
    EidRangeError,
    Role,
    check_eid_in_range,
    create_lab_pki,
    eid_check_digits,
    eid_range_of,
    issue_certificate,
    make_ci,
    verify_chain,
)
from rsp.pki.eid_range import PERMITTED_EINS_OID, encode_permitted_eins, parse_permitted_eins

T = tlv.encode
SGP23_EID1 = "89049032123451234512345678901235"  # SGP.23 #EID1, the EID of the SGP.26 eUICC certificate
SGP26 = "tests/data/sgp26"


# --- DER by hand --------------------------------------------------------------------------------------------------
def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return T(0x06, body)


def name(*attrs: tuple[str, str]) -> bytes:
    """Name: one RDN per attribute, UTF8String values (PrintableString for serialNumber, as X.520 requires)."""
    rdns = b""
    for at, value in attrs:
        tag = 0x13 if at == "2.5.4.5" else 0x0C
        rdns += T(0x31, T(0x30, oid(at) + T(tag, value.encode())))
    return T(0x30, rdns)


ORG, CN, SERIAL = "2.5.4.10", "2.5.4.3", "2.5.4.5"
ECDSA_SHA256 = T(0x30, oid("1.2.840.10045.4.3.2"))


def ext(ext_oid: str, value: bytes, critical: bool = False) -> bytes:
    return T(0x30, oid(ext_oid) + (T(0x01, b"\xff") if critical else b"") + T(0x04, value))


def ski(key: ec.EllipticCurvePublicKey) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(key).digest


def hand_cert(subject: bytes, issuer: bytes, key, issuer_key, extensions: list[bytes], serial: int = 7) -> bytes:
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    validity = T(0x30, T(0x17, b"250101000000Z") + T(0x17, b"491231235959Z"))
    tbs = T(
        0x30,
        T(0xA0, T(0x02, b"\x02"))
        + T(0x02, bytes([serial]))
        + ECDSA_SHA256
        + issuer
        + validity
        + subject
        + spki
        + T(0xA3, T(0x30, b"".join(extensions))),
    )
    sig = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return T(0x30, tbs + ECDSA_SHA256 + T(0x03, b"\x00" + sig))


def eum_cert(ci_cert: x509.Certificate, ci_key, eum_key, org: str, name_constraints: bytes, *more: bytes):
    """An EUM certificate of O=``org`` signed by the CI: CA (pathLen 0), keyCertSign + cRLSign, id-rspRole-eum,
    its key identifiers, the nameConstraints value ``name_constraints`` (critical), then the extensions ``more``."""
    exts = [
        ext("2.5.29.19", T(0x30, T(0x01, b"\xff") + T(0x02, b"\x00")), critical=True),  # CA, pathLen 0
        ext("2.5.29.15", T(0x03, b"\x01\x06"), critical=True),  # keyCertSign, cRLSign
        ext("2.5.29.32", T(0x30, T(0x30, oid("2.23.146.1.2.1.2"))), critical=True),  # id-rspRole-eum
        ext("2.5.29.14", T(0x04, ski(eum_key.public_key()))),
        ext("2.5.29.35", T(0x30, T(0x80, ski(ci_cert.public_key())))),
        ext("2.5.29.30", name_constraints, critical=True),
        *more,
    ]
    issuer = ci_cert.subject.public_bytes()
    der = hand_cert(name((ORG, org), (CN, "EUM")), issuer, eum_key.public_key(), ci_key, exts)
    return x509.load_der_x509_certificate(der)


def attacker_eum(ci_cert: x509.Certificate, ci_key, eum_key, *, permitted: str = "89049033", org="Attacker EUM"):
    nc_subtree = T(0x30, T(0xA4, name((ORG, org), (SERIAL, permitted))))  # GeneralSubtree { directoryName [4] }
    permitted_eins = ext(PERMITTED_EINS_OID, T(0x30, T(0x13, permitted.encode())))
    return eum_cert(ci_cert, ci_key, eum_key, org, T(0x30, T(0xA0, nc_subtree)), permitted_eins)  # permittedSubtrees


def euicc_under(eum: x509.Certificate, eum_key, eid: str, org: str = "Attacker EUM") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    exts = [
        ext("2.5.29.15", T(0x03, b"\x07\x80"), critical=True),  # digitalSignature
        ext("2.5.29.32", T(0x30, T(0x30, oid("2.23.146.1.2.1.1"))), critical=True),  # id-rspRole-euicc
        ext("2.5.29.14", T(0x04, ski(key.public_key()))),
        ext("2.5.29.35", T(0x30, T(0x80, ski(eum.public_key())))),
    ]
    der = hand_cert(
        name((ORG, org), (CN, "eUICC"), (SERIAL, eid)), eum.subject.public_bytes(), key.public_key(), eum_key, exts
    )
    return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def ci():
    return make_ci("nist")


@pytest.fixture(scope="module")
def attacker(ci):
    eum_key = ec.generate_private_key(ec.SECP256R1())
    return attacker_eum(ci[0], ci[1], eum_key), eum_key


def in_range_eid() -> str:
    body = "890490331234512345123456789012"
    return body + eid_check_digits(body)


def test_attackers_eum_cannot_vouch_for_another_manufacturers_eid(ci, attacker):
    eum, eum_key = attacker
    rng = eid_range_of(eum)
    assert [r.prefix for r in rng.permitted] == ["89049033"] and rng.permitted_eins == ("89049033",)
    # its own EID: the hand-written chain is accepted, so the refusal below is the range and nothing else
    own = euicc_under(eum, eum_key, in_range_eid())
    assert verify_chain(own, [eum], [ci[0]], Role.EUICC).leaf == own
    stolen = euicc_under(eum, eum_key, SGP23_EID1)
    with pytest.raises(ChainError) as err:
        verify_chain(stolen, [eum], [ci[0]], Role.EUICC)
    assert err.value.reason == "eid-range"
    assert "89049032123451234512345678901235 is not within the permitted range" in str(err.value)
    with pytest.raises(EidRangeError) as err2:
        check_eid_in_range(SGP23_EID1, eum, stolen)
    assert err2.value.reason == "outside"


def test_organisation_must_match_the_name_constraint(ci, attacker):
    """SGP.22 §4.5.2.2: the eUICC subject O is one the EUM's nameConstraints name for that prefix."""
    eum, eum_key = attacker
    other_org = euicc_under(eum, eum_key, in_range_eid(), org="Someone Else")
    with pytest.raises(ChainError, match="organisation 'Someone Else'"):
        verify_chain(other_org, [eum], [ci[0]], Role.EUICC)


def test_both_forms_must_hold_when_both_are_present(ci):
    """nameConstraints permit 89049033 but permittedEins only 89049034: an EID in one form only is refused."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    # attacker_eum's certificate with a different permittedEins
    nc_subtree = T(0x30, T(0xA4, name((ORG, "Attacker EUM"), (SERIAL, "89049033"))))
    other_eins = ext(PERMITTED_EINS_OID, T(0x30, T(0x13, b"89049034")))
    eum = eum_cert(ci[0], ci[1], eum_key, "Attacker EUM", T(0x30, T(0xA0, nc_subtree)), other_eins)
    card = euicc_under(eum, eum_key, in_range_eid())
    with pytest.raises(ChainError, match="permittedEins 89049034"):
        verify_chain(card, [eum], [ci[0]], Role.EUICC)


def test_eum_without_a_range_vouches_for_no_eid(ci):
    """The old lab EUM (no range): a standard SM-DP+ refuses its eUICCs, so do we."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    eum = issue_certificate(Role.EUM, eum_key.public_key(), ci[0], ci[1], eid_prefixes=())
    assert not eid_range_of(eum).present
    key = ec.generate_private_key(ec.SECP256R1())
    card = issue_certificate(Role.EUICC, key.public_key(), eum, eum_key, eid=SGP23_EID1)
    with pytest.raises(ChainError, match="carries no permitted EID range") as err:
        verify_chain(card, [eum], [ci[0]], Role.EUICC)
    assert err.value.reason == "eid-range"


def test_excluded_subtree_is_honoured(ci):
    eum_key = ec.generate_private_key(ec.SECP256R1())
    sub = lambda s: T(0x30, T(0xA4, name((ORG, "X"), (SERIAL, s))))  # noqa: E731
    eum = eum_cert(ci[0], ci[1], eum_key, "X", T(0x30, T(0xA0, sub("8904")) + T(0xA1, sub("89049032"))))
    with pytest.raises(EidRangeError, match="excluded"):
        check_eid_in_range(SGP23_EID1, eum)
    assert check_eid_in_range(in_range_eid(), eum).permitted[0].prefix == "8904"


@pytest.mark.parametrize(
    "path",
    [
        "CertificateIssuer/CERT_CI_ECDSA_NIST.der",
        "CertificateIssuer/CERT_CI_ECDSA_BRP.der",
        "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
        "DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der",
    ],
)
def test_sgp26_certificates_that_are_not_eums_carry_no_range(path):
    """The published SGP.26 files we hold have no EUM; none of them carries an EID range (nothing vouches)."""
    with open(f"{SGP26}/{path}", "rb") as fh:
        cert = x509.load_der_x509_certificate(fh.read())
    assert not eid_range_of(cert).present
    with pytest.raises(EidRangeError) as err:
        check_eid_in_range(SGP23_EID1, cert)
    assert err.value.reason == "no-range"


def test_lab_eum_profile_and_openssl_view(tmp_path):
    pki = create_lab_pki(tmp_path / "pki", eids=[SGP23_EID1], eid_prefixes=["1234"])
    eum = pki.eum_cert()
    assert pki.eum_eid_prefixes == ("89999000", "89049032", "1234")
    nc = eum.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert [g.value.rfc4514_string() for g in nc.value.permitted_subtrees] == [
        "2.5.4.5=89999000,O=sgp32-stack lab EUM",
        "2.5.4.5=89049032,O=sgp32-stack lab EUM",
        "2.5.4.5=1234,O=sgp32-stack lab EUM",
    ]
    pe = eum.extensions.get_extension_for_oid(x509.ObjectIdentifier(PERMITTED_EINS_OID))
    assert not pe.critical
    assert pe.value.value == bytes.fromhex("301A") + b"".join(T(0x13, p.encode()) for p in pki.eum_eid_prefixes)
    for eid in pki.eids:  # every lab eUICC is inside its EUM's range
        assert check_eid_in_range(eid, eum, pki.euicc_cert(eid)).present


def _rsp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rsp", "pki", *args], capture_output=True, text=True, check=False)


def test_rsp_pki_verify_refuses_the_out_of_range_euicc(tmp_path, ci, attacker):
    eum, eum_key = attacker
    files = {
        "ci.pem": ci[0].public_bytes(serialization.Encoding.PEM),
        "eum.der": eum.public_bytes(serialization.Encoding.DER),
        "stolen.der": euicc_under(eum, eum_key, SGP23_EID1).public_bytes(serialization.Encoding.DER),
        "own.der": euicc_under(eum, eum_key, in_range_eid()).public_bytes(serialization.Encoding.DER),
    }
    for n, data in files.items():
        (tmp_path / n).write_bytes(data)
    common = ["--role", "euicc", "--ca", str(tmp_path / "ci.pem"), "--untrusted", str(tmp_path / "eum.der")]
    bad = _rsp("verify", str(tmp_path / "stolen.der"), *common)
    assert bad.returncode == 1
    assert "rsp pki verify: certificate chain refused (eid-range)" in bad.stderr
    assert "89049032123451234512345678901235 is not within the permitted range" in bad.stderr
    good = _rsp("verify", str(tmp_path / "own.der"), *common)
    assert good.returncode == 0, good.stderr
    assert "within the EUM's permitted range (nameConstraints 89049033 (O=Attacker EUM); permittedEins 89049033)" in (
        good.stdout
    )


# --- properties ---------------------------------------------------------------------------------------------------
_CI = make_ci("nist")
_EUM_KEY = ec.generate_private_key(ec.SECP256R1())
_AT = dt.datetime.now(dt.UTC)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.text("0123456789", min_size=1, max_size=12),
    body=st.text("0123456789", min_size=30, max_size=30),
    force_inside=st.booleans(),
)
def test_random_eids_inside_and_outside_a_random_prefix(prefix, body, force_inside):
    if force_inside:
        body = (prefix + body)[:30]
    eid = body + eid_check_digits(body)
    eum = issue_certificate(Role.EUM, _EUM_KEY.public_key(), _CI[0], _CI[1], eid_prefixes=[prefix])
    inside = eid.startswith(prefix)
    try:
        check_eid_in_range(eid, eum)
        accepted = True
    except EidRangeError as exc:
        assert exc.reason == "outside"
        accepted = False
    assert accepted == inside


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.lists(st.text(max_size=12), max_size=4).map(lambda xs: b"")))
def test_malformed_permitted_eins_values_give_a_specific_error(data):
    try:
        prefixes = parse_permitted_eins(data)
    except EidRangeError as exc:
        assert exc.reason == "malformed" and "permittedEins" in str(exc)
    else:
        assert prefixes and all(p.isdigit() for p in prefixes)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text("0123456789", min_size=1, max_size=32), min_size=1, max_size=5))
def test_permitted_eins_round_trip(prefixes):
    assert parse_permitted_eins(encode_permitted_eins(prefixes)) == tuple(prefixes)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20).filter(lambda s: not (s.isascii() and s.isdigit() and 0 < len(s) <= 32)))
def test_non_digit_prefix_in_an_eum_is_malformed(bad):
    value = T(0x30, T(0x13, bad.encode("utf-8")))
    with pytest.raises(EidRangeError) as err:
        parse_permitted_eins(value)
    assert err.value.reason == "malformed"


def test_name_constraint_serial_number_that_is_no_prefix(ci):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EUM")]))
        .issuer_name(ci[0].subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_AT - dt.timedelta(hours=1))
        .not_valid_after(_AT + dt.timedelta(days=1))
        .add_extension(
            x509.NameConstraints(
                [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "89-04")]))], None
            ),
            critical=True,
        )
    )
    eum = builder.sign(ci[1], hashes.SHA256())
    with pytest.raises(EidRangeError, match="not an EID prefix") as err:
        check_eid_in_range(SGP23_EID1, eum)
    assert err.value.reason == "malformed"


def test_permitted_eins_alone_as_sgp22_v3_eums_carry_it(ci):
    """An EUM with only the v3 extension (no nameConstraints): the range is read from permittedEins."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    exts = [
        ext("2.5.29.19", T(0x30, T(0x01, b"\xff") + T(0x02, b"\x00")), critical=True),
        ext("2.5.29.14", T(0x04, ski(eum_key.public_key()))),
        ext(PERMITTED_EINS_OID, T(0x30, T(0x13, b"89049032") + T(0x13, b"8904903300")), critical=True),
    ]
    eum = x509.load_der_x509_certificate(
        hand_cert(name((ORG, "V3"), (CN, "EUM")), ci[0].subject.public_bytes(), eum_key.public_key(), ci[1], exts)
    )
    rng = check_eid_in_range(SGP23_EID1, eum)
    assert rng.permitted == () and rng.permitted_eins == ("89049032", "8904903300")
    with pytest.raises(EidRangeError, match=r"permittedEins 89049032, 8904903300"):
        check_eid_in_range(in_range_eid(), eum)  # 8904903312... starts with neither


def test_rsp_pki_init_refuses_a_bad_prefix_and_shows_the_range(tmp_path):
    bad = _rsp("init", str(tmp_path / "a"), "--eid-prefix", "8904x")
    assert bad.returncode == 1 and "invalid EID prefix '8904x'" in bad.stderr
    assert not (tmp_path / "a" / "manifest.json").exists()
    good = _rsp("init", str(tmp_path / "b"), "--eid-prefix", "8904903")
    assert good.returncode == 0 and "EUM permitted EID prefixes: 89999000, 8904903" in good.stdout
    shown = _rsp("show", str(tmp_path / "b"), "--json")
    assert shown.returncode == 0

    assert json.loads(shown.stdout)["eum_eid_prefixes"] == ["89999000", "8904903"]


def test_the_eims_key_ring_refuses_the_out_of_range_euicc(ci, attacker):
    """eim's EuiccKeys (results and notifications) applies the EUM's range, and a CI key id when one is named."""
    from cryptography.hazmat.primitives import serialization

    from eim.packages.euicc_package import EuiccKeys, ResultRejected

    eum, eum_key = attacker

    def der(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.DER)

    keys = EuiccKeys([ci[0]])
    own = euicc_under(eum, eum_key, in_range_eid())
    assert keys.public_key(in_range_eid(), der(own), der(eum)) is not None
    stolen = euicc_under(eum, eum_key, SGP23_EID1)
    with pytest.raises(ResultRejected) as exc:
        keys.public_key(SGP23_EID1, der(stolen), der(eum))
    assert exc.value.cause == "certificate" and "range" in exc.value.reason
    assert EuiccKeys([ci[0]], eid_range=False).public_key(SGP23_EID1, der(stolen), der(eum)) is not None
    with pytest.raises(ResultRejected) as exc:
        EuiccKeys([ci[0]]).public_key(in_range_eid(), der(own), der(eum), ci_key_id=bytes(20))
    assert exc.value.cause == "certificate"


@pytest.mark.parametrize(
    ("eid", "shown"),
    [
        ("8904" + "0" * 27, "'8904" + "0" * 27 + "'"),  # 31 digits inside the prefix
        ("8904" + "0" * 29, "'8904" + "0" * 29 + "'"),  # 33 digits
        ("8904" + "0" * 27 + "A", "'8904" + "0" * 27 + "A'"),  # a letter
        ("8904" + "\uff10" * 28, "'8904" + "\uff10" * 28 + "'"),  # fullwidth digits: isdigit, but not ASCII
        ("8904" + "\u0663" * 28, "'8904" + "\u0663" * 28 + "'"),  # Arabic-Indic digits, likewise
        ("8904" + "0" * 46, "'8904" + "0" * 36 + "'"),  # 50 digits: the message shows the first 40
        (b"8904" + b"0" * 28, "\"b'8904" + "0" * 28 + "'\""),  # 32 ASCII digits, but bytes
        (89040000000000000000000000000000, "'89040000000000000000000000000000'"),  # a number
    ],
)
def test_an_eid_that_is_not_32_ascii_digits_is_outside_any_range(ci, eid, shown):
    """Only 32 ASCII decimal digits are an EID: anything else is refused before the prefixes are compared, even when
    it starts with a permitted prefix (a 31-digit or non-ASCII "EID" under ``8904`` must not pass)."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    eum = issue_certificate(Role.EUM, eum_key.public_key(), ci[0], ci[1], eid_prefixes=["8904"])
    assert check_eid_in_range("8904" + "0" * 28, eum).present  # the same prefix with 32 ASCII digits is inside
    with pytest.raises(EidRangeError) as err:
        check_eid_in_range(eid, eum)  # type: ignore[arg-type]
    assert err.value.reason == "outside"
    assert str(err.value) == f"EID {shown} is not 32 decimal digits"


def test_the_organisation_refusal_names_every_organisation_the_matching_subtrees_permit(ci):
    """Two nameConstraints subtrees match the EID (``8904`` for O=Alpha, ``89049033`` for O=Beta): an eUICC
    certificate of O=Gamma is refused, naming the first matching prefix and both organisations, sorted."""
    eum_key = ec.generate_private_key(ec.SECP256R1())
    sub = lambda o, s: T(0x30, T(0xA4, name((ORG, o), (SERIAL, s))))  # noqa: E731
    eum = eum_cert(ci[0], ci[1], eum_key, "Alpha", T(0x30, T(0xA0, sub("Beta", "89049033") + sub("Alpha", "8904"))))
    eid = in_range_eid()
    assert check_eid_in_range(eid, eum, euicc_under(eum, eum_key, eid, org="Alpha")).present
    with pytest.raises(EidRangeError) as err:
        check_eid_in_range(eid, eum, euicc_under(eum, eum_key, eid, org="Gamma"))
    assert err.value.reason == "outside"
    assert str(err.value) == (
        "eUICC certificate organisation 'Gamma' is not the one the EUM's nameConstraints name for EID prefix "
        "89049033 (Alpha, Beta)"
    )
