"""The IPA's ES9+ client with a lab address map (es9.resolve): a lab SM-DP+ with a TLS certificate for
``smdp.test`` reached at 127.0.0.1:<port>; TLS is still checked against the name, so a name the certificate does
not carry is refused even when it is mapped to the same server."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa.config import ConfigError, parse_config
from ipa.es9 import Es9Client, Es9Error
from rsp import resolve
from rsp.pki import lab_eid
from tests.smdpp.sim import SimEuicc
from tests.smdpp_lab import lab_fixtures, port_of

EID = lab_eid(62)

pki, smdp = lab_fixtures(EID)


async def test_initiate_authentication_through_the_map(smdp, pki):
    port = port_of(smdp)
    card = SimEuicc(pki, "nist", eid=EID)
    verify = ssl.create_default_context(cafile=str(smdp.ca_bundle))
    config = parse_config(
        f'[es9]\nresolve = {{ "smdp.test" = "127.0.0.1:{port}", "wrong.test" = "127.0.0.1:{port}" }}\n'
    )
    client = Es9Client(verify=verify, timeout=10, resolve=resolve.parse(config.es9.resolve))
    try:
        ok = await client.initiate_authentication("smdp.test", card.get_challenge(), card.euicc_info1())
        assert len(ok.transaction_id) == 16 and len(ok.server_signature1) == 64
        with pytest.raises(Es9Error) as refused:  # mapped to the same server, but not the certificate's name
            await client.initiate_authentication("wrong.test", card.get_challenge(), card.euicc_info1())
        assert refused.value.step == "initiateAuthentication" and "certificate" in str(refused.value).lower()
    finally:
        await client.close()


def test_es9_resolve_config_is_checked_when_loaded():
    config = parse_config("", env={"IPA_ES9_RESOLVE": "smdp.test=127.0.0.1:8443, smdp.test:9443=[::1]:1"})
    assert resolve.parse(config.es9.resolve).lookup("smdp.test", 9443) == ("::1", 1)
    with pytest.raises(ConfigError, match=r"es9\.resolve: 'smdp\.test'"):
        parse_config('[es9]\nresolve = { "smdp.test" = "localhost" }\n')
    with pytest.raises(ConfigError, match=r"es9\.resolve"):
        parse_config('[es9]\nresolve = "smdp.test=127.0.0.1:1"\n')  # in the file it is a table
    with pytest.raises(ConfigError, match=r"es9\.resolve"):
        parse_config("", env={"IPA_ES9_RESOLVE": "smdp.test"})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_malformed_es9_resolve_is_a_config_error_naming_the_key(text):
    try:
        config = parse_config("", env={"IPA_ES9_RESOLVE": text})
    except ConfigError as exc:
        assert "es9.resolve" in str(exc)
        return
    resolve.parse(config.es9.resolve)  # what loaded is usable
