"""An SGP.32 v1.0 IPA's indirect profile download through a real ``eim serve`` and its ES9+ relay to the real lab
SM-DP+, with the device authenticated the two HTTP ways: plain HTTP with a device secret (``Authorization: Bearer``)
and HTTPS with a device client certificate. The IPA is the v1.0 double (tests/eim/v10_ipa.py): every message it
sends carries the software eUICC's own output unchanged, in the v1.0 envelope; its InitiateAuthentication has no
eimTransactionId, so the eIM binds it to the device's one open download by the authenticated EID.

Without authentication (plain HTTP from a trusted network, the lab exemption) the eIM cannot bind that
InitiateAuthentication: the IPA gets ``invalidEimTransactionId`` (52), which the v1.0 IPA reads as a failure (the
same BF39 error alternative in both versions), nothing is relayed, and the operation records why.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ipa import messages as m
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from rsp.pki.device_tls import write_device_certificate
from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.server import running_server
from tests.eim.helpers import Card
from tests.eim.servers import EimServer, device_secret, spawn_eim, write_config
from tests.eim.test_serve import key_of
from tests.eim.v10_ipa import V10Ipa, indirect_download
from tests.services import free_port

EIDS = [lab_eid(i) for i in range(171, 174)]
CT = {"Content-Type": "application/x-gsma-rsp-asn1"}
IA_52 = bytes.fromhex("BF3903810134")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=EIDS)


@pytest.fixture(scope="module")
def smdp(lab, tmp_path_factory):
    with running_server(SmdppConfig(data_dir=tmp_path_factory.mktemp("smdp"), pki_dir=lab.root, port=0)) as server:
        yield server


@dataclass
class Eim:
    server: EimServer
    url: str
    verify: ssl.SSLContext | bool
    tokens: dict[str, str]
    certs: dict[str, tuple[Path, Path, Path]]

    @property
    def esipa(self) -> str:
        return self.url + "/gsma/rsp2/asn1"

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, verify=self.verify, timeout=20, **kw)


def start(lab, smdp, tmp: Path, *, tls: bool) -> Iterator[Eim]:
    """``eim serve`` with the relay on (the lab SM-DP+ allowed), device secrets and the device CA; unauthenticated
    devices are served from 127.0.0.1 only (the lab exemption); with ``tls`` HTTPS on the eIM's lab certificate."""
    certs = {eid: write_device_certificate(lab.root, eid, tmp / "devices") for eid in EIDS}
    port = free_port()
    cfg = tmp / "eim.toml"
    write_config(
        cfg,
        store_url=f"sqlite:///{tmp}/eim.db",
        lab_pki=lab.root,
        port=port,
        data_dir=tmp / "data",
        relay=True,
        relay_extra=f'timeout_s = 10\nallowed_smdp_addresses = ["{smdp.address}"]',
        extra=f"""
[devices]
trusted_networks = ["127.0.0.1/32"]
{f'client_ca = "{certs[EIDS[0]][2]}"' if tls else ""}
secret_file = "{tmp / "device-secrets"}"
""",
    )
    env = dict(os.environ)
    env.pop("EIM_CONFIG", None)
    if tls:
        env.update(EIM_HTTP_TLS_CERT=str(lab.eimtls_cert_path), EIM_HTTP_TLS_KEY=str(lab.eimtls_key_path))
    tokens = {eid: device_secret(cfg, eid, env) for eid in EIDS}
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(lab.ca_bundle_path)) if tls else False
    server = spawn_eim(cfg, port, tmp / "eim.log", env, base_url=url, verify=verify)
    eim = Eim(server, url, verify, tokens, certs)
    try:
        yield eim
    finally:
        server.stop()


@pytest.fixture(scope="module")
def plain(lab, smdp, tmp_path_factory):
    yield from start(lab, smdp, tmp_path_factory.mktemp("eim-http"), tls=False)


@pytest.fixture(scope="module")
def https(lab, smdp, tmp_path_factory):
    yield from start(lab, smdp, tmp_path_factory.mktemp("eim-https"), tls=True)


def esipa_client(eim: Eim, *, token: str | None = None) -> httpx.AsyncClient:
    headers = dict(CT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(verify=eim.verify, headers=headers, timeout=30)


def post(client: httpx.AsyncClient, url: str):
    async def send(message: bytes) -> tuple[int, bytes]:
        r = await client.post(url, content=message)
        return r.status_code, r.content

    return send


async def ready(lab, eim: Eim, eid: str, smdp) -> tuple[Card, orders.Order, str]:
    card = Card(lab, eid)
    await card.open()
    card.token = await card.associate(key_of(lab), counter_value=1)
    r = eim.api("POST", "/v1/euiccs", json={"eid": eid, "association_token": card.token, "counter_value": 1})
    assert r.status_code == 201, r.text
    order = orders.create_order(smdp.ctx.store, profile="ts48", smdp_address=smdp.address)
    r = eim.api(
        "POST",
        f"/v1/euiccs/{eid}/operations",
        json={"kind": "download", "params": {"activationCode": f"1${smdp.address}${order.matching_id}"}},
    )
    assert r.status_code == 202, r.text
    return card, order, r.json()["id"]


async def trigger(ipa: V10Ipa) -> bytes:
    """Poll until the eIM hands out the download trigger (an eUICC data request may come first)."""
    for _ in range(5):
        got = await ipa.step()
        if isinstance(got, bytes):
            assert got[:2] == b"\xbf\x54", got.hex()
            return got
        assert got is not None, "the eIM handed out nothing"
    raise AssertionError("no download trigger after 5 polls")


def wait_for(what: str, predicate, eim: Eim, deadline_s: float = 30.0):
    deadline = time.monotonic() + deadline_s
    while not (value := predicate()):
        assert eim.server.proc.poll() is None, f"eim serve exited while waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{eim.server.log_text()[-3000:]}"
        time.sleep(0.05)
    return value


async def completes(lab, smdp, eim: Eim, eid: str, client: httpx.AsyncClient) -> None:
    card, order, op_id = await ready(lab, eim, eid, smdp)
    ipa = V10Ipa(card, post(client, eim.esipa))
    dl = await indirect_download(ipa, await trigger(ipa))
    assert dl.failed is None, (dl.failed, dl.answers)
    bf39, bf3b, bf3a, bf3d = dl.sent
    assert tlv.find(bf39, 0x82) is None and bf39[:2] == b"\xbf\x39"  # the v1.0 form: no eimTransactionId
    assert [a[0] for a in dl.answers] == [200, 200, 200, 204]
    # the eUICC's signed answers travelled unchanged: the SM-DP+ verified them and bound the profile to this card
    assert tlv.children(tlv.parse_exact(bf3b))[1].tag == 0xBF38 and bf3a[:2] == b"\xbf\x3a" and dl.pir is not None
    assert tlv.find(bf3d, 0xA0).value == dl.pir
    assert [p.iccid for p in card.card.state.profiles] == [m.iccid_to_bytes(order.iccid)]
    op = eim.api("GET", f"/v1/operations/{op_id}").json()
    assert op["status"] == "done", op
    assert op["result"]["profileInstallationResult"]["ok"] is True
    wait_for("the PIR at the SM-DP+", lambda: smdp.ctx.store.get(order.matching_id).state == "installed", eim)


async def test_v10_download_over_http_with_a_device_secret(lab, smdp, plain):
    async with esipa_client(plain, token=plain.tokens[EIDS[0]]) as client:
        await completes(lab, smdp, plain, EIDS[0], client)


async def test_v10_download_over_https_with_a_client_certificate(lab, smdp, https):
    cert, key, _ = https.certs[EIDS[1]]
    ctx = ssl.create_default_context(cafile=str(lab.ca_bundle_path))
    ctx.load_cert_chain(str(cert), str(key))
    async with httpx.AsyncClient(verify=ctx, headers=CT, timeout=30) as client:
        await completes(lab, smdp, https, EIDS[1], client)


async def test_v10_download_without_authentication_fails_and_says_why(lab, smdp, plain):
    """Plain HTTP from 127.0.0.1 (trusted for unauthenticated devices): the poll is served, but the v1.0
    InitiateAuthentication names no download and no device: 52, nothing relayed. The IPA reports the failure with
    the eIM's answer as errorResponse (v1.0 form); the operation ends failed and its error says why."""
    async with httpx.AsyncClient(headers=CT, timeout=30) as client:
        card, order, op_id = await ready(lab, plain, EIDS[2], smdp)
        ipa = V10Ipa(card, post(client, plain.esipa))
        dl = await indirect_download(ipa, await trigger(ipa))
    assert dl.failed == "InitiateAuthentication" and dl.answers[0] == (200, IA_52)
    report = dl.sent[-1]
    assert tlv.find(report, 0xBF54, 0x30, 0x80).value == IA_52  # BF50 { BF54 { 82, 30 { 80 errorResponse } } }
    assert dl.answers[-1] == (200, bytes.fromhex("BF5000"))  # accepted: the v1.0 answer without acknowledgements
    op = plain.api("GET", f"/v1/operations/{op_id}").json()
    assert op["status"] == "failed", op
    assert "InitiateAuthentication answered invalidEimTransactionId (52)" in op["error"]
    assert "not authenticated" in op["error"] and "device secret" in op["error"]
    assert op["result"]["profileDownloadError"]["errorResponse"].upper() == IA_52.hex().upper()
    assert card.card.state.profiles == []
    assert smdp.ctx.store.get(order.matching_id).state not in ("downloaded", "installed")


def test_a_v10_profile_download_error_with_its_error_response_is_read_as_v10():
    """v1.0's profileDownloadError is ``30 { [80 errorResponse] }`` (automatic tags, no reason); v1.2's is
    ``30 { 80 reason, [04 errorResponse] }``. Before, a v1.0 one carrying the eIM's answer went down the v1.2 path
    (its 80 read as the reason INTEGER) and got a v1.2 answer the v1.0 IPA cannot read."""
    from eim.esipa import v10
    from rsp import asn1

    txid = tlv.encode(0x82, bytes(16))
    v10_error = tlv.encode(0xBF50, tlv.encode(0xBF54, txid + tlv.encode(0x30, tlv.encode(0x80, IA_52))))
    v12_error = tlv.encode(
        0xBF50,
        tlv.encode(0x5A, bytes(16))
        + tlv.encode(0xBF54, txid + tlv.encode(0x30, bytes.fromhex("80017F") + tlv.encode(0x04, IA_52))),
    )
    assert v10.recognise(0xBF50, v10_error) and not v10.recognise(0xBF50, v12_error)
    v12_no_eid = tlv.encode(0xBF50, tlv.encode(0xBF54, txid + tlv.encode(0x30, bytes.fromhex("80017F"))))
    assert not v10.recognise(0xBF50, v12_no_eid)  # a short 80 is v1.2's reason code
    alt, value = asn1.decode("V10-ProvideEimPackageResult", v10_error)
    assert alt == "profileDownloadTriggerResult"
    assert value["profileDownloadTriggerResultData"] == ("profileDownloadError", {"errorResponse": IA_52})
    # and what the IPA got is a failure in v1.0 terms: the error alternative of the same BF39 CHOICE
    assert asn1.decode("V10-EsipaMessageFromEimToIpa", IA_52) == (
        "initiateAuthenticationResponseEsipa",
        ("initiateAuthenticationErrorEsipa", 52),
    )
