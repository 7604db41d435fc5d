"""Fixtures of the SM-DP+ tests: one lab PKI (both curves, two eUICCs), a second PKI whose CI nobody trusts, and
a running SM-DP+ over real HTTPS on loopback with a fresh order store per test."""

from __future__ import annotations

import ssl

import pytest

from rsp.pki import create_lab_pki, lab_eid
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.smdpp.sim import Es9Client

EID1 = lab_eid(1)
EID2 = lab_eid(2)


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist", "brainpool"), eids=(EID1, EID2))


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory):
    """A PKI with its own CI: its eUICCs are not trusted by the SM-DP+."""
    return create_lab_pki(tmp_path_factory.mktemp("rogue"), curves=("nist", "brainpool"), eids=(EID1,))


@pytest.fixture
def smdp(lab_pki, tmp_path):
    config = SmdppConfig(data_dir=tmp_path / "data", pki_dir=lab_pki.root, port=0)
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def es9(smdp):
    client = Es9Client(smdp.base_url, verify=ssl.create_default_context(cafile=str(smdp.ca_bundle)))
    yield client
    client.close()
