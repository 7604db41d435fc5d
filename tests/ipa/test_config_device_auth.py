"""IPA configuration of ESipa device authentication: client certificate, device secret (ipa.config)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa.config import ConfigError, load_device_secret, parse_config
from rsp.pki import create_lab_pki, lab_eid
from rsp.pki.device_tls import write_device_certificate

EID = lab_eid(161)
TOKEN = EID + "." + "Ab_-" * 10 + "xyz"


def test_device_secret_inline_file_and_environment(tmp_path):
    assert load_device_secret(parse_config("", {})) is None
    assert load_device_secret(parse_config(f'[eim]\ndevice_secret = "{TOKEN}"', {})) == TOKEN
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert load_device_secret(parse_config(f'[eim]\ndevice_secret_file = "{f}"', {})) == TOKEN
    assert load_device_secret(parse_config("", {"IPA_EIM_DEVICE_SECRET": TOKEN})) == TOKEN


@pytest.mark.parametrize(
    "text, match",
    [
        ('[eim]\ndevice_secret = "hunter2"', r"eim\.device_secret must be the token"),
        ('[eim]\ndevice_secret_file = "/nonexistent/token"', r"cannot read eim\.device_secret_file"),
        (f'[eim]\ndevice_secret = "{TOKEN}"\ndevice_secret_file = "/x"', r"give one of them"),
        ('[eim]\ntls_client_cert = "/x.pem"', r"eim\.tls_client_cert and eim\.tls_client_key: give both"),
        ('[eim]\ntls_client_cert = "/x.pem"\ntls_client_key = "/y.pem"', r"eim\.tls_client_cert / eim\.tls_client_key"),
    ],
)
def test_mistakes_name_the_key(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text, {})


def test_secret_never_in_the_error():
    with pytest.raises(ConfigError) as info:
        parse_config('[eim]\ndevice_secret = "s3cr3t-value-of-the-device"', {})
    assert "s3cr3t" not in str(info.value)


def test_client_certificate_pair_loads_or_is_named(tmp_path):
    lab = create_lab_pki(tmp_path / "pki", curves=("nist",))
    cert, key, _ca = write_device_certificate(lab.root, EID)
    cfg = parse_config(f'[eim]\ntls_client_cert = "{cert}"\ntls_client_key = "{key}"', {})
    assert cfg.eim.tls_client_cert == str(cert)
    _cert, other_key, _ = write_device_certificate(lab.root, lab_eid(162))
    with pytest.raises(ConfigError, match=r"eim\.tls_client_cert / eim\.tls_client_key"):
        parse_config(f'[eim]\ntls_client_cert = "{cert}"\ntls_client_key = "{other_key}"', {})  # not its key


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_device_secret_key(value):
    try:
        cfg = parse_config("", {"IPA_EIM_DEVICE_SECRET": value})
    except ConfigError as exc:
        assert "eim.device_secret" in str(exc)
        if len(value.strip()) > 8:
            assert value.strip() not in str(exc)
        return
    assert load_device_secret(cfg) == (value.strip() or None)
