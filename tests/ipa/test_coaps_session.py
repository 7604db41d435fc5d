"""The IPA's CoAPS transport against the eIM's real CoAPS binding on loopback: one DTLS handshake serves many
polls, and a session the eIM has forgotten (a restarted eIM) costs one failed request, then a new handshake."""

from __future__ import annotations

import gc
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.bindings.coap import CoapBinding
from eim.bindings.coap_psk import PskFile
from ipa.config import ConfigError, IpaConfig, load_psk, psk_from_hex, validate
from ipa.esipa import EsipaError
from tests.eim.test_bindings_coaps import Loop, Recorder, write_keys
from tests.eim.test_bindings_common import EID, NO_PACKAGE, SpecHandler, get_eim_package_request
from tests.services import free_port, require_dtls

KEY = bytes(range(32, 48))


@pytest.fixture
def loop():
    require_dtls()
    lp = Loop()
    try:
        yield lp
    finally:
        lp.close()


def test_one_handshake_for_many_polls_and_a_new_one_after_an_eim_restart(loop, tmp_path):
    from ipa.esipa.coap import CoapTransport

    psk_path = tmp_path / "psk"
    write_keys(psk_path, {EID: KEY})
    port = free_port(socket.SOCK_DGRAM)
    handler = Recorder(SpecHandler())

    def start() -> CoapBinding:
        binding = CoapBinding(handler, "127.0.0.1", port, psk=PskFile(psk_path))
        loop.run(binding.start())
        return binding

    binding = start()
    transport = CoapTransport(f"coaps://127.0.0.1:{port}", psk=KEY, psk_identity=EID.encode(), timeout=4)
    try:
        for _ in range(5):
            assert loop.run(transport.send(get_eim_package_request(EID))) == NO_PACKAGE
            gc.collect()  # what time between polls does: aiocoap drops a session nothing refers to
        (table,) = binding.dtls_sessions
        assert table.established == 1  # five polls, one handshake
        seen = len(handler.calls)

        loop.run(binding.stop())  # the eIM restarts and has lost every session
        binding = start()
        answers = []
        for _ in range(3):
            try:
                answers.append(loop.run(transport.send(get_eim_package_request(EID))))
            except EsipaError as exc:
                answers.append(exc)
        # at most one request is lost with the old session; then the IPA handshakes again and is served
        assert answers[-1] == NO_PACKAGE and answers[-2] == NO_PACKAGE
        (table,) = binding.dtls_sessions
        assert table.established == 1
        assert len(handler.calls) >= seen + 2
    finally:
        loop.run(transport.close())
        loop.run(binding.stop())


def test_psk_must_be_16_bytes_of_hex():
    assert psk_from_hex(KEY.hex(), "k") == KEY
    assert psk_from_hex(" " + KEY.hex().upper() + "\n", "k") == KEY
    for bad in ("", "00" * 15, "00" * 17, "00" * 32, "zz" * 16, "0" * 31):
        with pytest.raises(ConfigError, match="k"):
            psk_from_hex(bad, "k")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_psk_text_is_a_key_or_a_config_error_naming_it(text):
    try:
        key = psk_from_hex(text, "eim.psk_hex")
    except ConfigError as exc:
        assert "eim.psk_hex" in str(exc)
    else:
        assert len(key) == 16


def test_psk_file_and_hex_settings(tmp_path):
    cfg = IpaConfig()
    assert load_psk(cfg) is None
    path = tmp_path / "ipa.psk"
    path.write_text(KEY.hex() + "\n")
    cfg.eim.psk_file = str(path)
    assert load_psk(cfg) == KEY
    cfg.eim.psk_hex = KEY.hex()
    with pytest.raises(ConfigError, match="not both"):
        validate(cfg)
    cfg.eim.psk_file = str(tmp_path / "missing")
    cfg.eim.psk_hex = ""
    with pytest.raises(ConfigError, match=r"cannot read eim\.psk_file"):
        load_psk(cfg)
    path.write_bytes(b"\xff\xfe")
    cfg.eim.psk_file = str(path)
    with pytest.raises(ConfigError, match=r"eim\.psk_file"):
        load_psk(cfg)
