"""The relay's lab address map ([relay] resolve): a lab SM-DP+ whose TLS certificate names ``smdp.test`` (a name
no DNS knows) reached at 127.0.0.1:<port> through the map, TLS still checked against the name; a name the
certificate does not carry is refused even when mapped to the same server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.config import ConfigError, load_config
from eim.relay import Es9PlusClient, Es9Relay, tls_context
from rsp import resolve
from rsp.pki import lab_eid
from smdpp import orders
from tests.eim.test_relay import Ipa, MemoryRelayStore, esipa
from tests.smdpp.sim import SimEuicc
from tests.smdpp_lab import lab_fixtures, port_of

EID = lab_eid(61)

pki, smdp = lab_fixtures(EID)


async def test_download_through_the_map_with_tls_checked_against_the_name(smdp, pki):
    table = resolve.parse({"smdp.test": f"127.0.0.1:{port_of(smdp)}"})
    client = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=10, resolve=table)
    try:
        order = orders.create_order(smdp.ctx.store, profile="ts48", smdp_address="smdp.test")
        ipa = Ipa(Es9Relay(MemoryRelayStore(), client), SimEuicc(pki, "nist", eid=EID))
        pir = await ipa.download("smdp.test", order.matching_id)
        assert pir[:2] == b"\xbf\x37" and order.iccid in ipa.card.profiles
        assert smdp.ctx.store.get(order.matching_id).state == "installed"  # the PIR reached it too
    finally:
        await client.aclose()


async def test_a_name_the_certificate_does_not_carry_is_refused(smdp, pki):
    port = port_of(smdp)
    table = resolve.parse({"wrong.test": f"127.0.0.1:{port}", "smdp.test:443": f"127.0.0.1:{port}"})
    client = Es9PlusClient(tls_context([smdp.ca_bundle]), timeout=10, resolve=table)
    try:
        ipa = Ipa(Es9Relay(MemoryRelayStore(), client), SimEuicc(pki, "nist", eid=EID))
        answer = await ipa.initiate("wrong.test")
        assert esipa(answer) == ("initiateAuthenticationErrorEsipa", 1)  # invalidDpAddress: TLS refused
        assert "certificate" in answer.failure.reason.lower() and not answer.failure.transient
        # the same server by its own name through the same map (a port-specific key): accepted
        ipa = Ipa(Es9Relay(MemoryRelayStore(), client), SimEuicc(pki, "nist", eid=EID))
        assert esipa(await ipa.initiate("smdp.test"))[0] == "initiateAuthenticationOkEsipa"
    finally:
        await client.aclose()


def test_relay_resolve_from_the_config_file_and_environment(tmp_path):
    path = tmp_path / "eim.toml"
    path.write_text('[relay]\nresolve = { "smdp.test" = "127.0.0.1:8443", "b.test:443" = "[::1]:9443" }\n')
    config = load_config(path, env={})
    assert resolve.parse(config.relay.resolve).lookup("b.test", 443) == ("::1", 9443)
    config = load_config(None, env={"EIM_RELAY_RESOLVE": "smdp.test=127.0.0.1:8443"})
    assert config.relay.resolve == {"smdp.test": "127.0.0.1:8443"}
    path.write_text('[relay]\nresolve = { "smdp.test" = "127.0.0.1" }\n')
    with pytest.raises(ConfigError, match=r"\[relay\] resolve: 'smdp.test'"):
        load_config(path, env={})
    path.write_text('[relay]\nresolve = "smdp.test"\n')
    with pytest.raises(ConfigError, match=r"\[relay\] resolve"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"\[relay\] resolve"):
        load_config(None, env={"EIM_RELAY_RESOLVE": "smdp.test:1:2=127.0.0.1:1"})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_malformed_relay_resolve_is_a_config_error_naming_the_key(text):
    try:
        config = load_config(None, env={"EIM_RELAY_RESOLVE": text})
    except ConfigError as exc:
        assert "[relay] resolve" in str(exc)
        return
    resolve.parse(config.relay.resolve)
