"""The EID the CoAP binding takes from a request (:func:`eim.bindings.coap._dtls_eid`): the PSK identity the DTLS
handshake authenticated, never anything on plain CoAP, and a refusal (never an unauthenticated request) for a
coaps remote that carries no identity. The remotes are shaped like aiocoap's (``scheme``,
``authenticated_claims``); the handshake itself is tested in ``test_bindings_coaps.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiocoap import error

from eim.bindings.coap import _dtls_eid

EID = "89049032123451234512345678901235"


def request(**remote):
    return SimpleNamespace(remote=SimpleNamespace(**remote))


def test_the_psk_identity_of_a_coaps_session_is_the_eid():
    assert _dtls_eid(request(scheme="coaps", authenticated_claims=[EID])) == EID
    # the first identity that is a string (aiocoap may put credential objects first)
    assert _dtls_eid(request(scheme="coaps", authenticated_claims=[object(), EID, "other"])) == EID


def test_plain_coap_authenticates_nobody_whatever_it_claims():
    assert _dtls_eid(request(scheme="coap", authenticated_claims=[EID])) is None
    assert _dtls_eid(request(authenticated_claims=[EID])) is None
    assert _dtls_eid(request(scheme="COAPS", authenticated_claims=[EID])) is None


@pytest.mark.parametrize("claims", [None, [], [object()], [b"89049032123451234512345678901235"]])
def test_a_coaps_session_without_an_identity_is_refused(claims):
    remote = {"scheme": "coaps"} if claims is None else {"scheme": "coaps", "authenticated_claims": claims}
    with pytest.raises(error.Unauthorized):
        _dtls_eid(request(**remote))
