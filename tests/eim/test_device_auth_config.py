"""``[devices]`` configuration, ``eim device-secret`` and the start-up warning of ``eim serve``."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.device_secrets import DeviceSecretFile, parse_secret_file
from eim.config import ConfigError, load_config
from rsp.pki import create_lab_pki, lab_eid
from tests.eim.servers import eim_command, start_eim
from tests.envelope import json_result

EID = lab_eid(151)


def test_devices_defaults_and_environment(tmp_path):
    d = load_config(None, env={}).devices
    assert (d.allow_unauthenticated, d.trusted_networks, d.client_ca, d.secret_file) == (
        False,
        ["127.0.0.0/8", "::1/128"],
        "",
        "",
    )
    env = {
        "EIM_DEVICES_ALLOW_UNAUTHENTICATED": "true",
        "EIM_DEVICES_TRUSTED_NETWORKS": "127.0.0.1/32, 10.1.0.0/16",
        "EIM_DEVICES_SECRET_FILE": "/etc/eim/device-secrets",
    }
    d = load_config(None, env=env).devices
    assert d.allow_unauthenticated and d.trusted_networks == ["127.0.0.1/32", "10.1.0.0/16"]
    assert d.secret_file == "/etc/eim/device-secrets"
    assert load_config(None, env={"EIM_DEVICES_TRUSTED_NETWORKS": ""}).devices.trusted_networks == []


@pytest.mark.parametrize(
    "text, message",
    [
        ('[devices]\ntrusted_networks = ["127.0.0.1/33"]', r"\[devices\] trusted_networks: '127.0.0.1/33'"),
        ('[devices]\ntrusted_networks = "loopback"', r"\[devices\] trusted_networks: 'loopback'"),
        ("[devices]\ntrusted_networks = [1]", r"\[devices\] trusted_networks: must be a list"),
        ('[devices]\nallow_unauthenticated = "maybe"', r"\[devices\] allow_unauthenticated: must be true"),
        ('[devices]\nclient_ca = "/x/ca.pem"', r"\[devices\] client_ca: client certificates need HTTPS"),
        ("[devices]\nallow_unauthenticated_devices = true", r"\[devices\]: unknown key"),
    ],
)
def test_devices_mistakes_name_the_key(tmp_path, text, message):
    f = tmp_path / "eim.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f, env={})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=3))
def test_trusted_networks_config_key(entries):
    env = {"EIM_DEVICES_TRUSTED_NETWORKS": ",".join(e.replace(",", "") for e in entries)}
    try:
        cfg = load_config(None, env=env)
    except ConfigError as exc:
        assert "[devices] trusted_networks" in str(exc)
        return
    assert isinstance(cfg.devices.trusted_networks, list)


def run(*args, json_out=False):
    cmd = [*eim_command(), *(["--json"] if json_out else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_device_secret_cli(tmp_path):
    f = tmp_path / "secrets"
    first = run("device-secret", "set", EID, "--file", str(f))
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith(EID + ".") and token.split(".")[1] not in f.read_text()
    assert f.stat().st_mode & 0o077 == 0
    assert DeviceSecretFile(f).verify(token) == EID
    again = run("device-secret", "set", EID, "--file", str(f), json_out=True)
    obj = json_result(again.stdout)  # the JSON-lines envelope of docs/cli.md
    assert obj["replaced"] and obj["token"] != token and DeviceSecretFile(f).verify(token) is None
    assert run("device-secret", "list", "--file", str(f)).stdout.split() == [EID]
    assert run("device-secret", "set", "1234", "--file", str(f)).returncode == 2
    removed = run("device-secret", "remove", EID, "--file", str(f))
    assert removed.returncode == 0 and parse_secret_file(f.read_text()) == {}
    missing = run("device-secret", "remove", EID, "--file", str(f))
    assert missing.returncode == 1 and "is not in" in missing.stderr
    f.write_text("not a secret line\n")
    broken = run("device-secret", "set", EID, "--file", str(f))
    assert broken.returncode == 1 and "line 1" in broken.stderr and f.read_text() == "not a secret line\n"
    assert run("device-secret", "list", "--config", str(tmp_path / "none.toml")).returncode == 2


def test_serve_warns_once_when_unauthenticated_devices_are_allowed(tmp_path):
    lab = create_lab_pki(tmp_path / "pki", curves=("nist",))
    server = start_eim(
        tmp_path,
        store_url=f"sqlite:///{tmp_path}/eim.db",
        lab_pki=lab.root,
        extra_config="[devices]\nallow_unauthenticated = true\n",
    )
    server.stop()
    assert server.log_text().count("allow_unauthenticated = true") == 1
    quiet = start_eim(tmp_path, name="quiet", store_url=f"sqlite:///{tmp_path}/q.db", lab_pki=lab.root)
    quiet.stop()
    assert "allow_unauthenticated" not in quiet.log_text()
