"""rsp.crypto: TR-03111 r||s ECDSA on P-256 / brainpoolP256r1, checked against two real captured signatures."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from rsp import crypto, tlv
from rsp.crypto import SignatureError
from tests.conftest import DATA

# The same EuiccPackageResult was stored twice by the eUICC (its pending EPR list held a second copy with a
# different signature over the same data): docs/protocol-notes.md, from onomondo-eim commit cf805336.
SECOND_EPR_SIGNATURE = bytes.fromhex(
    "0523BFA5A4F0CAAA1D42637520E2DEF2DDC96FBE775342BB13D3D6EB6AD91995"
    "1354FB59082675038D949131ECF3AF272F771A085E3C2099DC45C897E9808022"
)


_KEY = crypto.generate_key("nist")  # for the property tests below


def test_curve_constants_match_openssl():
    crypto._self_check()


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
def test_sign_verify_roundtrip(curve):
    key = crypto.generate_key(curve)
    sig = crypto.sign(key, b"hello rsp")
    assert len(sig) == 64
    crypto.verify(key.public_key(), b"hello rsp", sig)
    crypto.verify(crypto.public_point(key), b"hello rsp", sig, curve=curve)
    with pytest.raises(SignatureError, match="does not verify"):
        crypto.verify(key.public_key(), b"hello rsq", sig)
    other = crypto.generate_key(curve)
    assert not crypto.is_valid_signature(other, b"hello rsp", sig)


def test_curve_names():
    assert crypto.curve_name(crypto.generate_key("nist")) == "nist"
    assert crypto.curve_name(crypto.generate_key("brainpool").public_key()) == "brainpool"
    assert crypto.curve_name("prime256v1") == "nist"
    assert isinstance(crypto.curve_object("brainpoolP256r1"), ec.BrainpoolP256R1)
    with pytest.raises(crypto.CryptoError, match="unknown curve"):
        crypto.curve_object("secp384r1")
    with pytest.raises(crypto.CryptoError, match="not an RSP curve"):
        crypto.curve_name(ec.generate_private_key(ec.SECP384R1()))


def test_signature_format_errors():
    key = crypto.generate_key()
    with pytest.raises(SignatureError, match="64 bytes"):
        crypto.verify(key, b"x", b"\x01" * 63)
    with pytest.raises(SignatureError, match="out of range"):
        crypto.verify(key, b"x", b"\x00" * 64)
    with pytest.raises(SignatureError, match="out of range"):
        crypto.verify(key, b"x", b"\xff" * 64)


def test_raw_der_conversion_roundtrip():
    key = crypto.generate_key()
    raw = crypto.sign(key, b"m")
    der = crypto.raw_to_der_signature(raw)
    assert der[0] == 0x30
    assert crypto.der_to_raw_signature(der) == raw
    with pytest.raises(SignatureError):
        crypto.der_to_raw_signature(b"\x30\x00garbage")


def test_ecdh_agrees_both_curves():
    for curve in ("nist", "brainpool"):
        a, b = crypto.generate_key(curve), crypto.generate_key(curve)
        s1 = crypto.ecdh(a, crypto.public_point(b))
        s2 = crypto.ecdh(b, a.public_key())
        assert s1 == s2 and len(s1) == 32
    with pytest.raises(crypto.CryptoError, match="curve mismatch"):
        crypto.ecdh(crypto.generate_key("nist"), crypto.generate_key("brainpool").public_key())


def test_key_loading_pem_der_and_errors(tmp_path):
    key = crypto.generate_key("brainpool")
    pem = crypto.private_key_pem(key)
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "k.der").write_bytes(crypto.private_key_der(key))
    for src in (pem, tmp_path / "k.pem", str(tmp_path / "k.der")):
        loaded = crypto.load_private_key(src)
        assert crypto.public_point(loaded) == crypto.public_point(key)
    spki = crypto.public_key_spki_der(key)
    assert crypto.public_point(crypto.load_public_key(spki)) == crypto.public_point(key)
    assert crypto.curve_name(crypto.load_public_key(spki)) == "brainpool"
    with pytest.raises(crypto.KeyLoadError, match="not a private key"):
        crypto.load_private_key(b"not a key")
    with pytest.raises(crypto.KeyLoadError, match="cannot read"):
        crypto.load_private_key(tmp_path / "missing.pem")
    with pytest.raises(crypto.CryptoError, match="not on"):
        crypto.public_key_from_point(b"\x04" + b"\x01" * 64)


# --- real signatures --------------------------------------------------------------------------------------------


def _eim_package(vectors):
    v = vectors["real_get_eim_package_response"]
    raw = bytes.fromhex(v["hex"])
    req = tlv.require(raw, 0xBF51)  # GetEimPackageResponse BF4F -> euiccPackageRequest BF51
    signed = tlv.require(req, 0x30).raw
    sig = tlv.require(req, 0x5F37).value
    return v, signed, sig


def test_real_eim_signature_verifies_with_sample_cert(vectors):
    v, signed, sig = _eim_package(vectors)
    cert = crypto.load_certificate(DATA / "sample_eim_cert_nist.pem")
    assert crypto.public_point(cert).hex().upper() == v["eim_public_key_uncompressed"]
    # signed input = DER(EuiccPackageSigned) cut from the received bytes || 84 01 <associationToken=1>
    signed_input = signed + tlv.encode(0x84, b"\x01")
    assert signed_input.hex().upper() == v["signed_input_hex"]
    crypto.verify(cert, signed_input, sig, what="eimSignature")
    # the same check with the key given as a 65-byte point and as a public key object
    crypto.verify(bytes.fromhex(v["eim_public_key_uncompressed"]), signed_input, sig, curve="nist")
    crypto.verify(cert.public_key(), signed_input, sig)


def test_real_eim_signature_fails_on_any_flipped_bit(vectors):
    _, signed, sig = _eim_package(vectors)
    cert = crypto.load_certificate(DATA / "sample_eim_cert_nist.pem")
    signed_input = signed + b"\x84\x01\x01"
    for pos in (0, 5, len(signed_input) // 2, len(signed_input) - 1):
        bad = bytearray(signed_input)
        bad[pos] ^= 0x01
        with pytest.raises(SignatureError, match="eimSignature does not verify"):
            crypto.verify(cert, bytes(bad), sig, what="eimSignature")
    for pos in (0, 31, 32, 63):
        bad_sig = bytearray(sig)
        bad_sig[pos] ^= 0x80
        assert not crypto.is_valid_signature(cert, signed_input, bytes(bad_sig))
    # without the association token suffix it does not verify
    assert not crypto.is_valid_signature(cert, signed, sig)


def _epr(vectors):
    v = vectors["real_euicc_package_result"]
    raw = bytes.fromhex(v["hex"])
    a0 = tlv.require(raw, 0xA0)  # EuiccPackageResult BF51 -> euiccPackageResultSigned A0
    signed = tlv.require(a0, 0x30).raw
    sig = tlv.require(a0, 0x5F37).value
    return v, signed, sig


def test_real_euicc_sign_epr_recovers_one_key_over_documented_input(vectors):
    """The eUICC key is not published. ECDSA public-key recovery over the documented signed input gives two
    candidates per signature; the two real signatures the eUICC made over that same input (the EPR and its
    second copy in the pending EPR list) share exactly one candidate - which would not happen (except with
    negligible probability) if the signed input were wrong."""
    v, signed, sig = _epr(vectors)
    signed_input = signed + tlv.encode(0x84, b"\x01")
    assert signed_input.hex().upper() == v["signed_input_hex"]
    cands1 = {crypto.public_point(k) for k in crypto.recover_public_keys(signed_input, sig, "nist")}
    cands2 = {crypto.public_point(k) for k in crypto.recover_public_keys(signed_input, SECOND_EPR_SIGNATURE)}
    assert 1 <= len(cands1) <= 4 and 1 <= len(cands2) <= 4
    common = cands1 & cands2
    assert len(common) == 1
    euicc_point = common.pop()
    crypto.verify(euicc_point, signed_input, sig, curve="nist", what="euiccSignEPR")
    crypto.verify(euicc_point, signed_input, SECOND_EPR_SIGNATURE, curve="nist")
    # variants of the input without the 84 01 01 suffix (or with another token) do not verify with that key
    for variant in (signed, signed + b"\x84\x01\x00", signed + b"\x84\x01\x02", signed + tlv.encode(0x5F37, sig)):
        assert not crypto.is_valid_signature(euicc_point, variant, sig)
    # and recovery over a wrong input yields candidates that do not agree between the two signatures
    wrong1 = {crypto.public_point(k) for k in crypto.recover_public_keys(signed, sig)}
    wrong2 = {crypto.public_point(k) for k in crypto.recover_public_keys(signed, SECOND_EPR_SIGNATURE)}
    assert not wrong1 & wrong2


def test_recovery_finds_own_key_both_curves():
    for curve in ("nist", "brainpool"):
        key = crypto.generate_key(curve)
        sig = crypto.sign(key, b"payload")
        points = [crypto.public_point(k) for k in crypto.recover_public_keys(b"payload", sig, curve)]
        assert crypto.public_point(key) in points
        digest = hashlib.sha256(b"payload").digest()
        points2 = [crypto.public_point(k) for k in crypto.recover_public_keys(digest, sig, curve, prehashed=True)]
        assert crypto.public_point(key) in points2


@given(data=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_flipped_signature_bit_never_verifies(data, flip):
    key = _KEY
    sig = bytearray(crypto.sign(key, data))
    sig[flip // 8] ^= 1 << (flip % 8)
    assert not crypto.is_valid_signature(key, data, bytes(sig))


@given(garbage=st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64)))
def test_random_signature_bytes_never_verify(garbage):
    """Random bytes as a signature: verify() always raises SignatureError (never passes, never another error)."""
    with pytest.raises(SignatureError):
        crypto.verify(_KEY, b"data", garbage)
    assert not crypto.is_valid_signature(_KEY, b"data", garbage)


def _der_near_misses():
    real = crypto.raw_to_der_signature(crypto.sign(_KEY, b"m"))
    flip = st.tuples(st.integers(0, len(real) - 1), st.integers(1, 255)).map(
        lambda t: real[: t[0]] + bytes([real[t[0]] ^ t[1]]) + real[t[0] + 1 :]
    )
    return st.one_of(st.just(real), flip, st.binary(max_size=80), st.binary(max_size=70).map(lambda b: b"\x30" + b))


@given(blob=_der_near_misses())
def test_der_signature_decode_raises_or_round_trips(blob):
    """der_to_raw_signature of arbitrary bytes: SignatureError, or 64 bytes r||s that encode back to exactly the
    input (only DER is accepted)."""
    try:
        raw = crypto.der_to_raw_signature(blob)
    except SignatureError:
        return
    assert len(raw) == 64
    assert crypto.raw_to_der_signature(raw) == blob
