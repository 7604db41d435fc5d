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
