"""rsp.bsp: SGP.22 §5.5 BSP known answers (pySim vectors), round trips, tamper detection, ReplaceSessionKeys."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsp import bsp, crypto, tlv
from rsp.bsp import BspError, BspProtector, BspUnprotector, SessionKeys


@pytest.fixture(scope="module")
def keys(vectors) -> SessionKeys:
    v = vectors["bsp_kdf"]
    return bsp.derive_session_keys(
        bytes.fromhex(v["shared_secret"]),
        bytes.fromhex(v["host_id"]),
        bytes.fromhex(v["eid"]),
        key_type=int(v["key_type"], 16),
        key_length=int(v["key_length"], 16),
    )


def _keys() -> SessionKeys:
    return SessionKeys(os.urandom(16), os.urandom(16), os.urandom(16))


def test_kdf_known_answer(vectors, keys):
    v = vectors["bsp_kdf"]
    assert keys.initial_mcv.hex() == v["expected_initial_mac_chaining_value"]
    assert keys.s_enc.hex() == v["expected_s_enc"]
    assert keys.s_mac.hex() == v["expected_s_mac"]
    assert "redacted" in repr(keys) and v["expected_s_enc"] not in repr(keys)


def test_segment_known_answer(vectors, keys):
    v = vectors["bsp_segment"]
    segs = BspProtector(keys).protect(int(v["tag"], 16), bytes.fromhex(v["plaintext"]))
    assert [s.hex() for s in segs] == [v["expected_protected_segment"]]
    assert BspUnprotector(keys).unprotect(segs[0]) == bytes.fromhex(v["plaintext"])


def test_kdf_from_real_ecdh_both_sides():
    for curve in ("nist", "brainpool"):
        dp, euicc = crypto.generate_key(curve), crypto.generate_key(curve)
        host_id, eid = b"\x80" * 8, bytes.fromhex("89049032123451234512345678901235")
        k1 = bsp.derive_session_keys(crypto.ecdh(dp, crypto.public_point(euicc)), host_id, eid)
        k2 = bsp.derive_session_keys(crypto.ecdh(euicc, crypto.public_point(dp)), host_id, eid)
        assert k1 == k2


def test_segment_sizes_and_counter_across_tags():
    k = _keys()
    p, u = BspProtector(k), BspUnprotector(k)
    big86 = os.urandom(5000)
    meta = os.urandom(2500)
    segs88 = p.protect(0x88, meta)
    segs86 = p.protect(0x86, big86)
    assert all(len(s) <= bsp.MAX_SEGMENT_SIZE for s in segs88 + segs86)
    assert max(len(s) for s in segs86) == bsp.MAX_SEGMENT_SIZE  # full segments use the whole 1020 bytes
    assert len(segs88) == 3 and len(segs86) == 5
    # MAC-only: the data travels in clear
    assert tlv.parse_exact(segs88[0]).value[:-8] == meta[: bsp.max_plaintext(0x88)]
    assert u.unprotect_all(segs88, expected_tag=0x88) == meta
    assert u.unprotect_all(segs86) == big86
    assert u.block_counter == p.block_counter == 1 + len(segs88) + len(segs86)


def test_mac_only_segments_advance_the_block_counter():
    """If 88 segments did not count, the following 86 would decrypt with the wrong ICV."""
    k = _keys()
    p = BspProtector(k)
    s88 = p.protect(0x88, b"meta")
    s86 = p.protect(0x86, b"A" * 40)
    u = BspUnprotector(k)
    u.unprotect(s88[0])
    assert u.unprotect(s86[0]) == b"A" * 40
    # a receiver that did not count the 88 segment (counter back at 1, MAC chain intact) decrypts garbage:
    # the MAC still verifies, but the first block (ICV from the counter) comes out wrong
    u2 = BspUnprotector(k)
    u2.unprotect(s88[0])
    u2.block_counter = 1
    try:
        out = u2.unprotect(s86[0])
    except BspError as exc:
        assert exc.kind == "padding"
    else:
        assert out != b"A" * 40


def test_errors_name_mac_padding_structure():
    k = _keys()
    seg = BspProtector(k).protect(0x87, b"\xbf\x24\x00")[0]
    tampered = bytearray(seg)
    tampered[5] ^= 1
    with pytest.raises(BspError, match="MAC") as exc:
        BspUnprotector(k).unprotect(bytes(tampered))
    assert exc.value.kind == "mac"
    with pytest.raises(BspError) as exc:
        BspUnprotector(k).unprotect(seg[:-1])
    assert exc.value.kind == "structure"
    with pytest.raises(BspError, match="not a BSP segment tag"):
        BspUnprotector(k).unprotect(b"\x85\x09" + bytes(9))
    with pytest.raises(BspError, match="multiple of 16"):
        BspUnprotector(k).unprotect(b"\x86\x0a" + bytes(10))
    with pytest.raises(BspError, match="expected a 86"):
        BspUnprotector(k).unprotect(seg, expected_tag=0x86)
    with pytest.raises(BspError, match="exceeds 1020"):
        BspUnprotector(k).unprotect(b"\x86\x82\x03\xf9" + bytes(0x3F9))
    # a correctly MACed segment whose plaintext is not padded 80 00..: forge it with the protector internals
    p = BspProtector(k)
    data = p._encrypt(1, bytes(16))  # all-zero block, no 80
    length = tlv.encode_length(len(data) + 8)
    mac = p._cmac(k.initial_mcv, 0x86, length, data)[:8]
    with pytest.raises(BspError, match="padded") as exc:
        BspUnprotector(k).unprotect(b"\x86" + length + data + mac)
    assert exc.value.kind == "padding"
    with pytest.raises(BspError, match="not a BSP segment tag"):
        BspProtector(k).protect(0x85, b"x")


def test_refused_segment_leaves_state_unchanged():
    k = _keys()
    p = BspProtector(k)
    s1, s2 = p.protect(0x86, b"one")[0], p.protect(0x86, b"two")[0]
    u = BspUnprotector(k)
    with pytest.raises(BspError):
        u.unprotect(s2)  # out of order: MAC chain does not match
    assert u.block_counter == 1
    assert u.unprotect(s1) == b"one" and u.unprotect(s2) == b"two"


def test_replay_and_reorder_rejected():
    k = _keys()
    p = BspProtector(k)
    segs = p.protect(0x86, os.urandom(3000))
    u = BspUnprotector(k)
    u.unprotect(segs[0])
    with pytest.raises(BspError, match="MAC"):
        u.unprotect(segs[0])  # replay
    with pytest.raises(BspError, match="MAC"):
        u.unprotect(segs[2])  # skip


def test_replace_session_keys_both_sides():
    session, ppk = _keys(), _keys()
    p = BspProtector(session)
    rsk = bsp.encode_replace_session_keys(ppk)
    assert rsk[:2] == b"\xbf\x26"
    configure = p.protect(0x87, b"\xbf\x24\x00")
    rsk_segs = p.protect(0x87, rsk)
    p.replace_session_keys(ppk)
    profile = os.urandom(2100)
    segs86 = p.protect(0x86, profile)
    # the 86 segments are protected with the PPKs: a receiver with only the session keys fails
    u = BspUnprotector(session)
    u.unprotect(configure[0])
    got_rsk = u.unprotect_all(rsk_segs)
    new_keys = bsp.decode_replace_session_keys(got_rsk)
    assert new_keys == ppk
    with pytest.raises(BspError, match="MAC"):
        u.unprotect(segs86[0])
    u.replace_session_keys(new_keys)
    assert u.unprotect_all(segs86) == profile
    # a pre-protected 86 run produced independently with the PPKs alone is identical
    assert BspProtector(ppk).protect(0x86, profile) == segs86


def test_decode_replace_session_keys_errors():
    with pytest.raises(BspError, match="lacks ppkCmac"):
        bsp.decode_replace_session_keys(tlv.encode(0xBF26, tlv.encode(0x80, bytes(16)) + tlv.encode(0x81, bytes(16))))
    with pytest.raises(BspError, match="expected BF26"):
        bsp.decode_replace_session_keys(tlv.encode(0xBF24, b""))
    with pytest.raises(BspError, match="structure"):
        bsp.decode_replace_session_keys(b"\xbf\x26\x05\x80")
    with pytest.raises(BspError, match="16 bytes"):
        bsp.decode_replace_session_keys(
            tlv.encode(0xBF26, tlv.encode(0x80, bytes(15)) + tlv.encode(0x81, bytes(16)) + tlv.encode(0x82, bytes(16)))
        )


def test_initialise_secure_channel_helpers():
    key = crypto.generate_key("nist")
    euicc_otpk = crypto.public_point(crypto.generate_key("nist"))
    smdp_otpk = crypto.public_point(crypto.generate_key("nist"))
    part = bsp.initialise_secure_channel_signed_part(bytes(16), b"\x80" * 8, smdp_otpk)
    assert part.startswith(bytes.fromhex("820101801000000000000000000000000000000000"))
    assert bytes.fromhex("a610800188810110840880808080808080805f4941") in part
    sig = crypto.sign(key, bsp.smdp_sign_input(part, euicc_otpk))
    isc = bsp.initialise_secure_channel(part, sig)
    t = tlv.parse_exact(isc)
    assert t.tag == 0xBF23
    cut = isc[t.header_len : -(3 + 64)]
    assert cut == part
    crypto.verify(key, cut + tlv.encode(0x5F49, euicc_otpk), tlv.require(isc, 0x5F37).value)


@given(tag=st.sampled_from([0x86, 0x87, 0x88]), chunks=st.lists(st.binary(max_size=2500), min_size=1, max_size=4))
def test_roundtrip_property(tag, chunks):
    k = _keys()
    p, u = BspProtector(k), BspUnprotector(k)
    for chunk in chunks:
        segs = p.protect(tag, chunk)
        assert all(len(s) <= bsp.MAX_SEGMENT_SIZE and s[0] == tag for s in segs)
        assert u.unprotect_all(segs) == chunk


@given(tag=st.sampled_from([0x86, 0x87, 0x88]), plaintext=st.binary(max_size=1100), data=st.data())
def test_any_flipped_byte_is_rejected(tag, plaintext, data):
    k = _KEYS
    seg = BspProtector(k).protect(tag, plaintext)[0]
    pos = data.draw(st.integers(0, len(seg) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(seg)
    bad[pos] ^= 1 << bit
    u = BspUnprotector(k)
    with pytest.raises(BspError):
        u.unprotect(bytes(bad))
    assert u.block_counter == 1 and u.mcv == k.initial_mcv


@given(garbage=st.binary(max_size=1100))
def test_random_bytes_raise_only_bsp_error(garbage):
    try:
        BspUnprotector(_KEYS).unprotect(garbage)
    except BspError:
        pass


_KEYS = _keys()
