"""A lab SM-DP+ whose TLS certificate names ``smdp.test`` (a name no DNS knows) and answers to ``wrong.test`` too,
for the tests of a lab address map (``[relay] resolve`` in the eIM, ``es9.resolve`` in the IPA): the server is
reached at 127.0.0.1:<port> through the map, and TLS is what refuses the name the certificate does not carry.

A test module takes the module-scoped fixtures with ``pki, smdp = lab_fixtures(EID)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rsp.pki import LabPki, create_lab_pki
from smdpp.config import SmdppConfig
from smdpp.server import RunningServer, running_server

NAME = "smdp.test"  # on the certificate
WRONG_NAME = "wrong.test"  # an alias the server answers to, not on the certificate


def lab_pki(tmp_path_factory: pytest.TempPathFactory, eid: str) -> LabPki:
    """A NIST-curve lab PKI with one eUICC (``eid``) and a TLS certificate for :data:`NAME`."""
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=(eid,), hosts=(NAME,))


@contextmanager
def lab_smdp(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The SM-DP+ of ``pki`` on a free loopback port, answering to :data:`NAME` and :data:`WRONG_NAME`."""
    config = SmdppConfig(
        data_dir=tmp_path_factory.mktemp("smdp"),
        pki_dir=pki.root,
        port=0,
        address=NAME,
        aliases=(WRONG_NAME,),
        curves=("nist",),
    )
    with running_server(config) as srv:
        yield srv


def port_of(smdp: RunningServer) -> int:
    """The loopback port the SM-DP+ listens on."""
    return int(smdp.base_url.rsplit(":", 1)[1])


def lab_fixtures(eid: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The module-scoped fixtures ``pki`` (:func:`lab_pki` for ``eid``) and ``smdp`` (:func:`lab_smdp` of it)."""

    @pytest.fixture(scope="module")
    def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
        return lab_pki(tmp_path_factory, eid)

    @pytest.fixture(scope="module")
    def smdp(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
        with lab_smdp(pki, tmp_path_factory) as srv:
            yield srv

    return pki, smdp
