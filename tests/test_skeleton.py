"""The core framing helpers that every package builds on."""

from rsp import apdu, tlv


def test_store_data_chain_blocks_and_numbers():
    cmd = bytes(range(256)) + bytes(44)  # 300 bytes
    chain = apdu.store_data_chain(cmd, channel=1, block_size=120)
    assert [c[:4].hex() for c in chain] == ["81e21100", "81e21101", "81e29102"]
    assert b"".join(apdu.parse_command(c).data for c in chain) == cmd


def test_cla_channels_0_to_19():
    assert apdu.cla_for_channel(0x80, 1) == 0x81
    assert apdu.cla_for_channel(0x00, 4) == 0x40
    assert apdu.cla_for_channel(0x80, 19) == 0xCF
    for ch in range(20):
        assert apdu.channel_from_cla(apdu.cla_for_channel(0x80, ch)) == ch


def test_tlv_cut_signed_part_from_real_result(vectors):
    raw = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])
    signed = tlv.require(raw, 0xA0, 0x30)
    expected = bytes.fromhex(vectors["real_euicc_package_result"]["signed_input_hex"])
    assert signed.raw + bytes.fromhex("840101") == expected


def test_check_structure_refuses_nested_overruns_and_deep_nesting():
    import pytest

    from rsp.errors import DecodeError

    assert tlv.check_structure(bytes.fromhex("BF4F03020101")).tag == 0xBF4F
    with pytest.raises(DecodeError, match="runs past the end"):
        tlv.check_structure(bytes.fromhex("30 04 30 02 A6 05 00 00".replace(" ", "")))  # child overruns parent
    with pytest.raises(DecodeError):
        tlv.check_structure(bytes.fromhex("3003300101"))  # grandchild length 1 with no byte left
    deep = b"\x05\x00"
    for _ in range(40):
        deep = tlv.encode(0x30, deep)
    with pytest.raises(DecodeError, match="nested deeper"):
        tlv.check_structure(deep)


def test_check_structure_on_random_bytes_raises_only_decode_error():
    from hypothesis import given
    from hypothesis import strategies as st

    from rsp.errors import DecodeError

    @given(st.binary(max_size=64))
    def check(data):
        try:
            top = tlv.check_structure(data)
        except DecodeError:
            return
        assert data.startswith(top.raw)

    check()


def test_iccid_codec_on_the_real_capture_and_round_trips():
    from hypothesis import given
    from hypothesis import strategies as st

    from rsp import iccid

    # the ICCID in the real EuiccPackageRequest of vectors.json (enable { 5A 0A 989444999999990920F3 })
    assert iccid.from_bcd(bytes.fromhex("989444999999990920F3")) == "8949449999999990023"
    assert iccid.to_bcd("8949449999999990023").hex().upper() == "989444999999990920F3"

    @given(st.text(alphabet="0123456789", min_size=18, max_size=20))
    def round_trip(digits):
        assert iccid.from_bcd(iccid.to_bcd(digits)) == digits

    round_trip()
    import pytest

    with pytest.raises(ValueError):
        iccid.to_bcd("1" * 21)
    with pytest.raises(ValueError):
        iccid.to_bcd("89494499999999900Z3")


def test_tag_list_parsing_and_malformed_lists():
    import pytest

    from rsp.errors import DecodeError

    assert tlv.parse_tag_list(bytes.fromhex("5CA5A6A8BF2281")) == (0x5C, 0xA5, 0xA6, 0xA8, 0xBF22, 0x81)
    assert tlv.parse_tag_list(b"") == ()
    with pytest.raises(DecodeError, match="truncated"):
        tlv.parse_tag_list(bytes.fromhex("5ABF"))
    with pytest.raises(DecodeError, match="longer than 3"):
        tlv.parse_tag_list(bytes.fromhex("BF818181"))
