"""Fixtures for the software eUICC tests: a lab PKI (both curves), cards, an ES10 driver over the real APDU path,
eIM package signing and full downloads through tests/euicc/smdp_side.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from rsp import apdu, crypto, tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.euicc.smdp_side import SmdpSide, TestProfile, iccid_bcd, segments

T = tlv.encode
DATA = Path(__file__).resolve().parent.parent / "data"
REAL_EID = "89044045118427484800000000011628"
LAB_EID = lab_eid(7)
SAMPLE_EIM_CERT = DATA / "sample_eim_cert_nist.pem"


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist", "brainpool"), eids=(LAB_EID, REAL_EID))


class Es10Driver:
    """Sends ES10 commands through LocalApduChannel exactly as an IPA does (STORE DATA chains, GET RESPONSE)."""

    def __init__(self, card: SoftEuicc, block_size: int = 120, style: str = "lpac") -> None:
        self.card = card
        self.block_size = block_size
        self.channel = LocalApduChannel(card, style)
        self.channel.open_sync()

    def reopen(self) -> None:
        self.channel.open_sync()

    def call(self, command: bytes) -> bytes:
        """Send one ES10 command; return the response data; assert 9000 on every block."""
        data, sw = self.call_sw(command)
        assert sw == 0x9000, f"ES10 {command[:3].hex()} answered {sw:04X}"
        return data

    def call_sw(self, command: bytes) -> tuple[bytes, int]:
        blocks = apdu.store_data_chain(command, 0, self.block_size)
        for i, blk in enumerate(blocks):
            resp = apdu.parse_response(self.channel.transmit_sync(blk))
            if resp.sw != 0x9000:
                return resp.data, resp.sw
            if i < len(blocks) - 1:
                assert resp.data == b""
        return resp.data, resp.sw


def make_card(pki, eid: str = LAB_EID, curve: str = "nist", state_path=None, **kw) -> SoftEuicc:
    return SoftEuicc.create(pki.root, eid, state_path, curve=curve, **kw)


@pytest.fixture
def card(lab_pki):
    return make_card(lab_pki)


@pytest.fixture
def driver(card):
    return Es10Driver(card)


def eim_config(
    eim_id: str,
    key_data: bytes,
    *,
    counter: int | None = 0,
    token: int | None = -1,
    fqdn: str | None = "eim.lab.example",
    certificate: bool = False,
    extra: bytes = b"",
) -> bytes:
    """EimConfigurationData content (no outer tag). ``key_data``: SPKI DER or certificate DER."""
    body = T(0x80, eim_id.encode())
    if fqdn is not None:
        body += T(0x81, fqdn.encode())
    if counter is not None:
        body += T(0x83, _int(counter))
    if token is not None:
        body += T(0x84, _int(token))
    inner = tlv.parse_exact(key_data)
    body += T(0xA5, T(0xA1 if certificate else 0xA0, inner.value))
    return body + extra


def _int(value: int) -> bytes:
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(length, "big", signed=True)


def add_initial_eim(driver: Es10Driver, *configs: bytes) -> bytes:
    return driver.call(T(0xBF57, T(0xA0, b"".join(T(0x30, c) for c in configs))))


def eim_package(
    key,
    eim_id: str,
    eid: bytes,
    counter: int,
    operations: bytes,
    *,
    token: int | None = 1,
    txid: bytes | None = None,
    eco: bool = False,
) -> bytes:
    """A signed EuiccPackageRequest (BF51) as an eIM builds it (protocol brief §3)."""
    signed = T(
        0x30,
        T(0x80, eim_id.encode())
        + T(0x5A, eid)
        + T(0x81, _int(counter))
        + (T(0x82, txid) if txid is not None else b"")
        + T(0xA1 if eco else 0xA0, operations),
    )
    suffix = T(0x84, _int(token)) if token is not None else b""
    return T(0xBF51, signed + T(0x5F37, crypto.sign(key, signed + suffix)))


def download(driver: Es10Driver, smdp: SmdpSide, profile: TestProfile, *, ppk: bool = False) -> bytes:
    """A complete profile download; returns the last LoadBoundProfilePackage answer (the PIR)."""
    challenge = tlv.require(driver.call(bytes.fromhex("BF2E00")), 0x80).value
    smdp.check_authenticate_response(driver.call(smdp.authenticate_server_request(challenge)))
    smdp.check_prepare_response(driver.call(smdp.prepare_download_request()))
    bpp = smdp.bind(profile, driver.card.state.eid, ppk=ppk)
    answer = b""
    for seg in segments(bpp):
        answer = driver.call(seg)
        if answer:
            break
    return answer


def new_profile(n: int = 1, **kw) -> TestProfile:
    return TestProfile(iccid=iccid_bcd(f"894400000000000{n:04d}"), name=f"Lab profile {n}", **kw)


@pytest.fixture
def rng_bytes():
    return os.urandom
