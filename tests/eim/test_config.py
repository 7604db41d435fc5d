"""Configuration: the shipped example loads, environment overrides win, mistakes name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from eim.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_env_overrides():
    cfg = load_config(ROOT / "deploy" / "eim.example.toml", env={})
    assert cfg.eim.eim_id == "eim.example.com"
    assert cfg.store_url == "sqlite:////var/lib/eim/eim.db"
    assert cfg.api_url == "https://127.0.0.1:8443"
    env = {
        "EIM_STORE_URL": "postgresql://eim@db/eim",
        "EIM_HTTP_PORT": "9000",
        "EIM_MQTT_ENABLED": "yes",
        "EIM_RELAY_ALLOWED_SMDP_ADDRESSES": "a.example, b.example",
        "EIM_API_TOKEN": "t",
    }
    cfg = load_config(ROOT / "deploy" / "eim.example.toml", env=env)
    assert cfg.store_url == "postgresql://eim@db/eim" and cfg.http.port == 9000 and cfg.mqtt.enabled is True
    assert cfg.relay.allowed_smdp_addresses == ["a.example", "b.example"] and cfg.api.token == "t"


def test_defaults_without_a_file():
    cfg = load_config(None, env={})
    assert cfg.store_url.startswith("sqlite:///") and cfg.store_url.endswith("eim-data/eim.db")
    assert cfg.api_url == "http://127.0.0.1:8080" and cfg.coap.enabled is False


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[http]\nport = "x"\n', {}, "[http] port: must be an integer"),
        ('[store]\nurll = "x"\n', {}, "[store]: unknown key(s) urll"),
        ("[nope]\n", {}, "unknown section(s) nope"),
        ("", {"EIM_MQTT_ENABLED": "maybe"}, "[mqtt] enabled: must be true or false"),
        ('[operations]\ndefault_download_mode = "sideways"\n', {}, "default_download_mode"),
        ("[http\n", {}, "configuration file"),
    ],
)
def test_mistakes_name_the_key(tmp_path, text, env, message):
    f = tmp_path / "eim.toml"
    f.write_text(text)
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        load_config(f, env=env)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_coap_dtls_keys_from_file_and_environment(tmp_path):
    f = tmp_path / "eim.toml"
    f.write_text(
        '[coap]\nenabled = true\nhost = "192.0.2.10"\nplain = false\ndtls = true\ndtls_port = 15684\n'
        'psk_file = "/etc/eim/coaps.psk"\ndtls_max_sessions = 50\n'
    )
    c = load_config(f, env={}).coap
    assert (c.enabled, c.host, c.plain, c.dtls, c.dtls_port, c.psk_file, c.dtls_max_sessions) == (
        True,
        "192.0.2.10",
        False,
        True,
        15684,
        "/etc/eim/coaps.psk",
        50,
    )
    env = {"EIM_COAP_DTLS": "true", "EIM_COAP_PSK_FILE": "/tmp/k.psk", "EIM_COAP_DTLS_PORT": "6000"}
    c = load_config(None, env=env).coap
    assert (c.dtls, c.psk_file, c.dtls_port, c.plain, c.dtls_max_sessions) == (True, "/tmp/k.psk", 6000, True, 1024)
    example = load_config(ROOT / "deploy" / "eim.example.toml", env={}).coap
    assert example.dtls is False and example.psk_file == "/etc/eim/coaps.psk" and example.dtls_port == 5684


@pytest.mark.parametrize(
    ("coap", "message"),
    [
        ("dtls = true", "[coap] dtls = true needs psk_file"),
        ('dtls = true\npsk_file = "k"\ndtls_port = 1', "[coap] dtls_port: must be between 2 and 65535"),
        ('dtls = true\npsk_file = "k"\ndtls_port = 70000', "[coap] dtls_port: must be between 2 and 65535"),
        ('dtls = true\npsk_file = "k"\ndtls_port = 5683', "[coap] port and dtls_port must differ"),
        ('dtls = true\npsk_file = "k"\nhost = "0.0.0.0"', "[coap] dtls = true needs host to be one address"),
        ('dtls = true\npsk_file = "k"\nhost = "::"', "[coap] dtls = true needs host to be one address"),
        ("dtls_max_sessions = 0", "[coap] dtls_max_sessions: must be at least 1"),
        ('dtls = "sometimes"', "[coap] dtls: must be true or false"),
        ("psk_key_hex = '00'", "[coap]: unknown key(s) psk_key_hex"),
    ],
)
def test_coap_dtls_mistakes_name_the_key(tmp_path, coap, message):
    f = tmp_path / "eim.toml"
    f.write_text(f"[coap]\n{coap}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert message in str(err.value)


def test_coap_dtls_with_plain_off_may_share_the_port(tmp_path):
    f = tmp_path / "eim.toml"
    f.write_text('[coap]\nplain = false\ndtls = true\npsk_file = "k"\ndtls_port = 5683\n')
    c = load_config(f, env={}).coap
    assert (c.plain, c.dtls_port, c.port) == (False, 5683, 5683)
