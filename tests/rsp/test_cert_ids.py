"""rsp.cert_ids: the key ids read from a certificate's DER equal cryptography's reading; bad DER is a DecodeError."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from rsp import cert_ids
from rsp.errors import DecodeError
from rsp.pki import authority_key_id, create_lab_pki, subject_key_id


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> list[bytes]:
    pki = create_lab_pki(
        tmp_path_factory.mktemp("cert-ids"), curves=("nist",), eids=("89049032123451234512345678901235",)
    )
    paths = sorted(pki.root.rglob("*.cert.der"))
    assert len(paths) >= 4  # CI, EUM, eUICC, SM-DP+ roles at least
    return [p.read_bytes() for p in paths]


def test_ids_equal_cryptographys(certs):
    from cryptography import x509

    for der in certs:
        cert = x509.load_der_x509_certificate(der)
        assert cert_ids.subject_key_id(der) == subject_key_id(cert)
        assert cert_ids.authority_key_id(der) == authority_key_id(cert)
        assert cert.public_bytes(serialization.Encoding.DER) == der


def test_a_certificate_without_extensions_has_no_ids():
    # SEQUENCE { tbsCertificate SEQUENCE { INTEGER 1 } } : no [3] extensions
    der = bytes.fromhex("3005" + "3003020101")
    assert cert_ids.subject_key_id(der) is None and cert_ids.authority_key_id(der) is None


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        bytes.fromhex("0400"),
        bytes.fromhex("3000"),
        bytes.fromhex("30050403020101"),
        bytes.fromhex("3009" + "3007" + "a305" + "3003" + "020101"),
    ],
)
def test_malformed_der_is_a_decode_error(der):
    with pytest.raises(DecodeError):
        cert_ids.subject_key_id(der)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_an_id_none_or_a_decode_error(data):
    for fn in (cert_ids.subject_key_id, cert_ids.authority_key_id):
        try:
            out = fn(data)
        except DecodeError:
            continue
        assert out is None or isinstance(out, bytes)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_flipped_certificates_never_crash(certs, data):
    der = bytearray(data.draw(st.sampled_from(certs)))
    cut = data.draw(st.integers(0, len(der)))
    i = data.draw(st.integers(0, len(der) - 1))
    der[i] ^= data.draw(st.integers(1, 255))
    for sample in (bytes(der), bytes(der[:cut])):
        try:
            cert_ids.authority_key_id(sample)
            cert_ids.subject_key_id(sample)
        except DecodeError:
            pass
