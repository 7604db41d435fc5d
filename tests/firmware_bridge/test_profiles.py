"""Modem profiles chosen from ATI/AT+CGMM, and the profile-change detection behind the CFUN cycle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.profiles import GENERIC, PROFILES, get_profile, match_profile
from firmware_bridge.state_change import command_tag, profile_state_changed
from firmware_bridge.virtual_modem import MODELS
from rsp import tlv

T = tlv.encode


@pytest.mark.parametrize(
    "identity,name",
    [
        ("Quectel EG25 Revision: EG25GGBR07A08M2G", "quectel"),
        ("Quectel EG916Q-GL", "quectel"),
        ("Quectel EC20F Revision: EC20CEFAGR06A05M4G", "quectel-ec20"),
        ("Manufacturer: SIMCOM INCORPORATED Model: SIMCOM_SIM7600G-H", "simcom"),
        ("Sierra Wireless, Incorporated MC7455", "sierra"),
        ("Sierra Wireless, Incorporated EM7590", "sierra"),
        ("Sierra Wireless, Incorporated EM9191", "sierra-em9191"),
        ("Fibocom Wireless Inc. FM350-GL", "fibocom"),
        ("u-blox SARA-R410M-02B", "u-blox"),
        ("Telit LE910C1-EU", "telit"),
        ("WAVECOM MODEM MULTIBAND 900E 1800", "wavecom"),
        ("Dell DW5821e Snapdragon X20 LTE", "dell-dw5821e"),
        ("Huawei MS2372h-153", "huawei-ms2372"),
        ("Acme Radio 3000", "generic"),
        ("", "generic"),
    ],
)
def test_profile_from_identity(identity, name):
    assert match_profile(identity).name == name


def _plain_match(identity: str):
    """match_profile without its literal-prefix shortcut: every pattern tried."""
    import re

    for profile in PROFILES.values():
        if any(re.search(pat, identity, re.IGNORECASE) for pat in profile.match):
            return profile
    return GENERIC


def _example(pattern: str) -> str:
    """A text the pattern matches (\\d{n,m} -> n sevens, [abc] -> a)."""
    import re

    text = re.sub(r"\\d\{(\d)(,\d)?\}", lambda m: "7" * int(m.group(1)), pattern.replace("\\b", ""))
    return re.sub(r"\[(.)[^\]]*\]", r"\1", text).replace("\\d", "7").replace("-?", "-")


_PIECES = [_example(pat) for p in PROFILES.values() for pat in p.match]


@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=12), max_size=4).map(" ".join))
def test_the_prefix_shortcut_picks_what_every_pattern_would(identity):
    assert all(_plain_match(piece) is not GENERIC for piece in _PIECES)  # the examples do match
    assert match_profile(identity) is _plain_match(identity)
    assert match_profile(identity.lower()) is _plain_match(identity.lower())


def test_every_virtual_model_maps_to_a_profile_that_knows_it():
    expected = {
        "generic": "generic",
        "EG25-G": "quectel",
        "EC20": "quectel-ec20",
        "SIM7600G-H": "simcom",
        "MC7455": "sierra",
        "EM9191": "sierra-em9191",
        "FM350-GL": "fibocom",
        "SARA-R410M": "u-blox",
        "LE910C1": "telit",
        "G2150I": "wavecom",
        "DW5821e": "dell-dw5821e",
        "MS2372h": "huawei-ms2372",
    }
    for model in MODELS.values():
        assert match_profile(" ".join((*model.ati, model.model))).name == expected[model.name]


def test_profiles_are_data():
    assert set(p.routes[0] for p in PROFILES.values()) <= {"cgla", "csim"}
    assert all(set(p.routes) <= {"cgla", "csim"} and p.routes for p in PROFILES.values())
    assert GENERIC.recommended_block_size == 120
    assert get_profile("wavecom").recommended_block_size == 120
    assert get_profile("generic").with_overrides(block_size=255).recommended_block_size == 255
    assert get_profile("generic").with_overrides(block_size=255, max_apdu_hex=250).recommended_block_size == 120
    with pytest.raises(ValueError, match="unknown modem profile"):
        get_profile("nokia")


def test_command_tag():
    assert command_tag(bytes.fromhex("BF3E035C015A")) == 0xBF3E
    assert command_tag(bytes.fromhex("BF51820100")) == 0xBF51
    assert command_tag(bytes.fromhex("3003020100")) == 0x30
    assert command_tag(b"") is None
    assert command_tag(bytes.fromhex("BF8080")) is None  # tag runs off the end


def test_real_package_result_with_a_failed_enable_is_no_change(vectors):
    real = bytes.fromhex(vectors["real_euicc_package_result"]["hex"])  # enableResult iccidOrAidNotFound(1)
    assert not profile_state_changed(0xBF51, real)
    # The same result with enableResult ok(0): a change (the signature does not matter here).
    ok = bytes.fromhex(vectors["real_euicc_package_result"]["hex"].replace("30038301015F37", "30038301005F37"))
    assert profile_state_changed(0xBF51, ok)


@pytest.mark.parametrize(
    "tag,response,changed",
    [
        (0xBF31, "BF3103800100", True),
        (0xBF31, "BF3103800102", False),
        (0xBF32, "BF3203800100", True),
        (0xBF58, "BF5803020100", True),
        (0xBF5D, "BF5D03800105", False),  # catBusy
        (0xBF3E, "BF3E035A0100", False),  # not a state command
        (0xBF31, "BF3203800100", False),  # answer to another command
        (0xBF51, "BF5106A2048003654944", False),  # euiccPackageErrorUnsigned
    ],
)
def test_direct_state_commands(tag, response, changed):
    assert profile_state_changed(tag, bytes.fromhex(response)) is changed


def test_disable_and_rollback_results_in_a_package():
    def epr(results: bytes) -> bytes:
        data = T(0x30, T(0x80, b"eIM") + T(0x81, b"\x01") + T(0x83, b"\x05") + T(0x30, results))
        return T(0xBF51, T(0xA0, data + T(0x5F37, bytes(64))))

    assert profile_state_changed(0xBF51, epr(T(0x84, b"\x00")))
    assert profile_state_changed(0xBF51, epr(T(0x8C, b"\x00")))
    assert not profile_state_changed(0xBF51, epr(T(0x85, b"\x00")))  # delete changes no enabled profile
    assert not profile_state_changed(0xBF51, epr(T(0xBF2D, T(0xA0, b""))))


@given(st.sampled_from([0xBF31, 0xBF51, 0xBF58, 0xBF5A, None]), st.binary(max_size=200))
def test_fuzz_state_change_never_raises(tag, data):
    assert profile_state_changed(tag, data) in (True, False)
    command_tag(data)
