"""IPA configuration: TOML + IPA_<SECTION>_<KEY> overrides, every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipa.config import ConfigError, IpaConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_file():
    cfg = parse_config("", {})
    assert cfg == IpaConfig()
    assert cfg.eim.binding == "auto" and cfg.device.block_size == 120


def test_file_and_env_overrides():
    cfg = parse_config(
        '[device]\nport = "/dev/ttyUSB2"\nblock_size = 200\n[eim]\nurl = "https://eim:8443"\n[poll]\ninterval = 30\n',
        {
            "IPA_DEVICE_BLOCK_SIZE": "64",
            "IPA_EIM_INSECURE": "true",
            "IPA_POLL_JITTER": "0.1",
            "HOME": "/x",
            "IPA_CONFIG": "/ignored",
        },
    )
    assert cfg.device.port == "/dev/ttyUSB2" and cfg.device.block_size == 64
    assert cfg.eim.url == "https://eim:8443" and cfg.eim.insecure is True
    assert cfg.poll.interval == 30.0 and cfg.poll.jitter == 0.1


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[device]\nprot = 1\n", {}, "unknown key device.prot"),
        ("[modem]\nport = 1\n", {}, r"unknown section \[modem\]"),
        ('[device]\nblock_size = "x"\n', {}, "device.block_size must be an integer"),
        ("[device]\nblock_size = 300\n", {}, "block_size must be 1..255"),
        ('[eim]\nbinding = "carrier-pigeon"\n', {}, "eim.binding"),
        ("", {"IPA_EIM_INSECURE": "maybe"}, "eim.insecure must be true or false"),
        ("", {"IPA_BOGUS": "1"}, "IPA_<SECTION>_<KEY>"),
        ('[ipa]\ntac = "zz"\n', {}, "hex"),
        ("device = 3\n", {}, "must be a \\[section\\]"),
        ("[device\n", {}, "not valid TOML"),
        ("[mqtt]\nretransmit_interval = -1.0\n", {}, "mqtt.retransmit_interval must be >= 0"),
        ("", {"IPA_MQTT_RETRANSMIT_INTERVAL": "9", "IPA_MQTT_RETRANSMIT_MAX_INTERVAL": "3"}, "retransmit_max_interval"),
        ("[eim]\ntimeout = 0.0\n", {}, "eim.timeout must be > 0"),
    ],
)
def test_errors_name_the_key(text, env, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text, env)


def test_example_config_parses():
    cfg = load_config(str(ROOT / "deploy" / "ipa.example.toml"), {})
    assert cfg.device.port == "/dev/ttyUSB2"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "nope.toml"), {})


@given(st.text(max_size=200))
def test_parser_only_raises_config_error(text):
    try:
        parse_config(text, {})
    except ConfigError:
        pass


@given(st.dictionaries(st.text(min_size=1, max_size=20).map(lambda s: "IPA_" + s), st.text(max_size=20), max_size=4))
def test_env_overrides_only_raise_config_error(env):
    try:
        parse_config("", env)
    except ConfigError:
        pass
