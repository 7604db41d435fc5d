"""ESipa over HTTPS with device authentication, on a real ``eim serve`` (uvicorn) on loopback, with real
certificates from the lab PKI (``rsp pki device-cert``) and device secrets made by ``eim device-secret``.

The server trusts only ``127.0.0.1/32`` for unauthenticated devices, and the attacker's requests leave from
``127.0.0.2`` (also loopback, but not in that list): the stand-in for a device on another host.
"""

from __future__ import annotations

import os
import ssl

import httpx
import pytest

from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from rsp.pki.device_tls import write_device_certificate
from tests.eim.helpers import get_eim_package_request, provide_result
from tests.eim.servers import device_secret, spawn_eim, write_config
from tests.services import free_port

EID_A = lab_eid(141)
EID_B = lab_eid(142)
AC = "1$smdp.example.com$MATCHING-ID-OF-A"
CT = {"Content-Type": "application/x-gsma-rsp-asn1"}
UNDEFINED = bytes.fromhex("BF4F0302017F")
INVALID_EID = bytes.fromhex("BF4F03020103")
NO_PACKAGE = bytes.fromhex("BF4F03020101")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    lab = create_lab_pki(tmp / "pki", curves=("nist",), eids=[EID_A, EID_B], hosts=("localhost",))
    certs = {eid: write_device_certificate(lab.root, eid, tmp / "devices") for eid in (EID_A, EID_B)}
    rogue = create_lab_pki(tmp / "rogue", curves=("nist",), eids=[EID_A])
    rogue_a = write_device_certificate(rogue.root, EID_A, tmp / "rogue-devices")
    port = free_port()
    cfg = tmp / "eim.toml"
    secrets = tmp / "device-secrets"
    write_config(
        cfg,
        store_url=f"sqlite:///{tmp}/eim.db",
        lab_pki=lab.root,
        port=port,
        data_dir=tmp / "data",
        extra=f"""
[devices]
trusted_networks = ["127.0.0.1/32"]
client_ca = "{certs[EID_A][2]}"
secret_file = "{secrets}"
""",
    )
    env = dict(
        os.environ,
        EIM_HTTP_TLS_CERT=str(lab.eimtls_cert_path),
        EIM_HTTP_TLS_KEY=str(lab.eimtls_key_path),
    )
    env.pop("EIM_CONFIG", None)
    tokens = {eid: device_secret(cfg, eid, env) for eid in (EID_A, EID_B)}
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(lab.ca_bundle_path))
    srv = spawn_eim(cfg, port, tmp / "eim.log", env, base_url=url, verify=verify)
    for eid in (EID_A, EID_B):
        assert httpx.post(url + "/v1/euiccs", json={"eid": eid}, verify=verify).status_code == 201
    r = httpx.post(
        f"{url}/v1/euiccs/{EID_A}/operations",
        json={"kind": "download", "params": {"activationCode": AC}},
        verify=verify,
    )
    assert r.status_code == 202, r.text
    try:
        yield {
            "url": url,
            "ca": str(lab.ca_bundle_path),
            "certs": certs,
            "rogue_a": rogue_a,
            "tokens": tokens,
            "op": r.json()["id"],
            "srv": srv,
        }
    finally:
        srv.stop()


def client(s, *, cert=None, source="127.0.0.2", token=None) -> httpx.AsyncClient:
    ctx = ssl.create_default_context(cafile=s["ca"])
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    headers = dict(CT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.AsyncHTTPTransport(verify=ctx, local_address=source)
    return httpx.AsyncClient(transport=transport, headers=headers, timeout=10)


def euicc(s, eid):
    return httpx.get(f"{s['url']}/v1/euiccs/{eid}", verify=ssl.create_default_context(cafile=s["ca"])).json()


def operation(s):
    return httpx.get(f"{s['url']}/v1/operations/{s['op']}", verify=ssl.create_default_context(cafile=s["ca"])).json()


async def test_over_https(server):
    """One server, the attacks in order, then the device itself (the package can be taken only once)."""
    s = server
    esipa = s["url"] + "/gsma/rsp2/asn1"
    before_a = euicc(s, EID_A)
    assert before_a["last_contact"] is None and before_a["binding"] is None

    # 1. no credentials from a peer outside trusted_networks: the undefinedError, no activation code, no trace
    async with client(s) as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_A))
        assert (r.status_code, r.content) == (200, UNDEFINED)
        error_result = provide_result(EID_A, bytes.fromhex("A00302017F"))
        r = await c.post(esipa, content=error_result)
        assert (r.status_code, r.content) == (200, bytes.fromhex("BF500302017F"))
    assert euicc(s, EID_A) == before_a and operation(s)["status"] == "queued"

    # 2. a good certificate for B asking about A: invalidEid, A untouched
    async with client(s, cert=s["certs"][EID_B]) as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_A))
        assert (r.status_code, r.content) == (200, INVALID_EID)
    assert euicc(s, EID_A) == before_a and operation(s)["status"] == "queued"

    # 3. a certificate for A from another CA: the TLS handshake fails
    async with client(s, cert=s["rogue_a"]) as c:
        with pytest.raises(httpx.HTTPError):
            r = await c.post(esipa, content=get_eim_package_request(EID_A))
            raise AssertionError(f"served with a rogue certificate: {r.status_code} {r.content.hex()}")

    # 4. device secrets: a wrong one gets 401, B's own token asking about A gets invalidEid
    wrong = EID_A + "." + "A" * 43
    async with client(s, token=wrong) as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_A))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    async with client(s, token=s["tokens"][EID_B]) as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_A))
        assert (r.status_code, r.content) == (200, INVALID_EID)
        r = await c.post(esipa, content=get_eim_package_request(EID_B))
        assert (r.status_code, r.content) == (200, NO_PACKAGE)
    assert euicc(s, EID_A) == before_a and operation(s)["status"] == "queued"
    assert euicc(s, EID_B)["binding"] == "http"

    # 5. loopback (127.0.0.1, the lab exemption) without credentials is served: B has nothing
    async with client(s, source="127.0.0.1") as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_B))
        assert (r.status_code, r.content) == (200, NO_PACKAGE)

    # 6. A with its own certificate, from outside: gets its download trigger with the activation code
    async with client(s, cert=s["certs"][EID_A]) as c:
        r = await c.post(esipa, content=get_eim_package_request(EID_A))
        assert r.status_code == 200 and tlv.children(r.content)[0].tag == 0xBF54 and AC.encode() in r.content
    assert euicc(s, EID_A)["binding"] == "http" and operation(s)["status"] == "in_progress"

    # the operator API on the same port needs no client certificate
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=s["ca"])) as c:
        assert (await c.get(s["url"] + "/healthz")).status_code == 200
    assert "allow_unauthenticated" not in s["srv"].log_text()


async def test_the_ipa_authenticates_with_its_certificate_or_its_secret(server, tmp_path):
    """The IPA's own HTTP transport (ipa.esipa.open_transport) with each method from its configuration. It
    connects from 127.0.0.1, where it would be served without credentials too; asking about the other eUICC
    shows the eIM saw the identity (invalidEid), and a wrong secret is refused before any ESipa answer."""
    from ipa.config import parse_config
    from ipa.esipa import Endpoint, EsipaError, open_transport

    s = server
    port = int(s["url"].rsplit(":", 1)[1])
    endpoint = Endpoint("http", "https", "127.0.0.1", port)
    cert, key, _ = s["certs"][EID_B]
    token_file = tmp_path / "token"
    token_file.write_text(s["tokens"][EID_B] + "\n")
    token_file.chmod(0o600)
    configs = [
        f'[eim]\nca_file = "{s["ca"]}"\ntls_client_cert = "{cert}"\ntls_client_key = "{key}"',
        f'[eim]\nca_file = "{s["ca"]}"\ndevice_secret_file = "{token_file}"',
    ]
    for text in configs:
        t = await open_transport(endpoint, parse_config(text, {}), bytes.fromhex(EID_B))
        try:
            assert await t.send(get_eim_package_request(EID_B)) == NO_PACKAGE
            assert await t.send(get_eim_package_request(EID_A)) == INVALID_EID
        finally:
            await t.close()
    wrong = EID_B + "." + "B" * 43
    t = await open_transport(
        endpoint, parse_config(f'[eim]\nca_file = "{s["ca"]}"\ndevice_secret = "{wrong}"', {}), bytes.fromhex(EID_B)
    )
    try:
        with pytest.raises(EsipaError, match="401"):
            await t.send(get_eim_package_request(EID_B))
    finally:
        await t.close()
    # a token for another eUICC is a configuration mistake the IPA names before it sends anything
    with pytest.raises(EsipaError, match=r"eim\.device_secret"):
        await open_transport(
            endpoint,
            parse_config(f'[eim]\ndevice_secret = "{s["tokens"][EID_A]}"', {}),
            bytes.fromhex(EID_B),
        )
