"""Smaller contracts: binding choice, poll delays, HTTP headers and TLS, CoAP block-wise, the ES9+ TLV-vs-value
trap, provisioning files (hypothesis), import footprint."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipa import messages as m
from ipa.config import IpaConfig, PollConfig
from ipa.es9 import Es9Client, Es9Error
from ipa.es10 import EimConfiguration
from ipa.esipa import EsipaError, choose_binding, open_transport, parse_url
from ipa.procedures.add_initial_eim import ProvisioningError, load_provisioning
from ipa.procedures.eim_package_retrieval import Outcome, next_delay
from rsp import asn1, tlv
from tests.ipa.conftest import EID, write_provisioning
from tests.ipa.peer import ScriptedEim, start_coap, start_http

ROOT = Path(__file__).resolve().parents[2]


def eim_config(fqdn="eim.example:8443", protocols=(0,)) -> EimConfiguration:
    return EimConfiguration(raw=b"", eim_id="e", fqdn=fqdn, supported_protocols=frozenset(protocols))


def test_choose_binding_from_the_euicc_and_local_config():
    cfg = IpaConfig()
    ep = choose_binding(cfg, eim_config())
    assert (ep.binding, ep.url) == ("http", "https://eim.example:8443")
    assert choose_binding(cfg, eim_config(protocols=(1,))).url == "coaps://eim.example:8443"
    assert choose_binding(cfg, eim_config(protocols=(4,))).binding == "mqtt"
    assert choose_binding(cfg, eim_config(protocols=(0, 4))).binding == "http"  # standard binding preferred
    cfg.eim.binding = "mqtt"
    assert choose_binding(cfg, eim_config(protocols=(0,))).url == "mqtt://eim.example:8443"
    cfg.eim.url = "coap://10.0.0.1:5683"
    with pytest.raises(ValueError, match="contradicts"):
        choose_binding(cfg, eim_config())
    cfg.eim.binding = "auto"
    assert choose_binding(cfg, None).binding == "coap"
    with pytest.raises(ValueError, match="no eIM address"):
        choose_binding(IpaConfig(), None)
    assert parse_url("https://[::1]:8443/x").host == "::1"
    with pytest.raises(ValueError):
        parse_url("ftp://x")


def test_next_delay_backoff_and_jitter():
    cfg = PollConfig(interval=60, min_interval=1, max_backoff=30, jitter=0.2)
    rng = random.Random(1)
    assert next_delay(cfg, Outcome.WORK, 0, rng) == 0
    idle = [next_delay(cfg, Outcome.IDLE, 0, rng) for _ in range(200)]
    assert 48 <= min(idle) < 52 and 68 < max(idle) <= 72
    fails = [next_delay(PollConfig(min_interval=1, max_backoff=30, jitter=0), Outcome.FAILED, n) for n in range(1, 8)]
    assert fails == [1, 2, 4, 8, 16, 30, 30]


async def test_http_headers_and_tls_verified_against_configured_ca(lab_pki):
    peer = ScriptedEim(lab_pki.eim_key(), None, EID)
    server = await start_http(peer, tls=(str(lab_pki.eimtls_cert_path), str(lab_pki.eimtls_key_path)))
    try:
        cfg = IpaConfig()
        cfg.eim.url = server.url
        cfg.eim.ca_file = str(lab_pki.ca_bundle_path)
        t = await open_transport(parse_url(server.url), cfg, EID)
        answer = await t.send(m.get_eim_package_request(EID))
        await t.close()
        assert answer == bytes.fromhex("BF4F03020101")
        h = server.headers[-1]
        assert h["content-type"] == "application/x-gsma-rsp-asn1"
        assert h["x-admin-protocol"] == "gsma/rsp/v2.1.0" and h["user-agent"] == "gsma-rsp-ipad"
        # without the CA: refused, the error names the ESipa function
        cfg.eim.ca_file = ""
        t = await open_transport(parse_url(server.url), cfg, EID)
        with pytest.raises(EsipaError, match=r"GetEimPackage: .*CERTIFICATE_VERIFY_FAILED"):
            await t.send(m.get_eim_package_request(EID))
        await t.close()
        # the explicit lab switch
        cfg.eim.insecure = True
        t = await open_transport(parse_url(server.url), cfg, EID)
        assert await t.send(m.get_eim_package_request(EID)) == bytes.fromhex("BF4F03020101")
        await t.close()
    finally:
        await server.stop()


async def test_coap_blockwise_both_directions(lab_pki):
    peer = ScriptedEim(lab_pki.eim_key(), None, EID)
    big_package = tlv.encode(0xBF52, tlv.encode(0x5C, b"\xa0") + tlv.encode(0x04, bytes(3000)))
    peer.queue(big_package)
    server = await start_coap(peer)
    try:
        cfg = IpaConfig()
        t = await open_transport(parse_url(server.url), cfg, EID)
        answer = await t.send(m.get_eim_package_request(EID))
        assert answer == tlv.encode(0xBF4F, big_package)  # > 1 KiB answer: Block2
        big_result = m.provide_eim_package_result(
            EID, tlv.encode(0xBF52, tlv.encode(0xA0, tlv.encode(0x81, b"a" * 2500)))
        )
        assert await t.send(big_result) is not None  # > 1 KiB request: Block1
        assert max(server.sizes) == len(big_result)
        await t.close()
    finally:
        await server.stop()


def mock_es9(values_only: bool):
    sig, keyid = bytes(range(64)), bytes(range(20))

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.headers["x-admin-protocol"] == "gsma/rsp/v2.1.0"
        assert body["header"]["functionRequesterIdentifier"]
        import base64

        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        if request.url.path.endswith("initiateAuthentication"):
            return httpx.Response(
                200,
                json={
                    "header": {"functionExecutionStatus": {"status": "Executed-Success"}},
                    "transactionId": "0A0B",
                    "serverSigned1": b64(b"\x30\x00"),
                    "serverSignature1": b64(sig if values_only else tlv.encode(0x5F37, sig)),
                    "euiccCiPKIdToBeUsed": b64(keyid if values_only else tlv.encode(0x04, keyid)),
                    "serverCertificate": b64(b"\x30\x00"),
                },
            )
        return httpx.Response(
            200,
            json={
                "header": {
                    "functionExecutionStatus": {
                        "status": "Failed",
                        "statusCodeData": {"subjectCode": "8.8.5", "reasonCode": "4.10", "message": "x"},
                    }
                }
            },
        )

    return httpx.MockTransport(handler), sig, keyid


@pytest.mark.parametrize("values_only", [False, True])
async def test_es9_tlv_vs_value_trap_both_ways(values_only):
    transport, sig, keyid = mock_es9(values_only)
    client = Es9Client(transport=transport)
    ok = await client.initiate_authentication("smdp.example", bytes(16), b"\xbf\x20\x00")
    assert ok.transaction_id == b"\x0a\x0b" and ok.server_signature1 == sig and ok.euicc_ci_pkid_to_be_used == keyid
    with pytest.raises(Es9Error) as err:
        await client.authenticate_client("smdp.example", b"\x0a\x0b", b"\xbf\x38\x00")
    assert (err.value.step, err.value.subject_code, err.value.reason_code) == ("authenticateClient", "8.8.5", "4.10")
    await client.close()


def test_provisioning_toml_and_der(lab_pki, tmp_path):
    path = write_provisioning(lab_pki, tmp_path, fqdn="eim.example:8443", protocols=("retrieveHttps", "proprietary"))
    der = load_provisioning(path)
    v = asn1.decode("AddInitialEimRequest", der)
    eim = v["eimConfigurationDataList"][0]
    assert eim["eimId"] == "lab-eim" and eim["eimFqdn"] == "eim.example:8443" and eim["associationToken"] == -1
    assert eim["eimPublicKeyData"][0] == "eimPublicKey" and eim["eimSupportedProtocol"] == (b"\x88", 5)
    # the same key given as the eIM certificate (eimCertificate) and as a certificate for eimPublicKey
    from cryptography.hazmat.primitives import serialization

    cert_path = lab_pki.cert_path("eim")
    spki = (
        lab_pki.eim_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "c.toml").write_text(
        f'[[eim]]\nid = "a"\ncertificate_pem = "{cert_path}"\n[[eim]]\nid = "b"\npublic_key_pem = "{cert_path}"\n'
        f'tls_certificate_pem = "{lab_pki.eimtls_cert_path}"\nindirect_profile_download = true\n'
    )
    a, b = asn1.decode("AddInitialEimRequest", load_provisioning(tmp_path / "c.toml"))["eimConfigurationDataList"]
    assert a["eimPublicKeyData"][0] == "eimCertificate"
    assert asn1.certificate_der(a["eimPublicKeyData"][1]) == lab_pki.cert("eim").public_bytes(
        serialization.Encoding.DER
    )
    assert asn1.encode("SubjectPublicKeyInfo", b["eimPublicKeyData"][1]) == spki
    assert b["trustedPublicKeyDataTls"][0] == "trustedCertificateTls" and b["indirectProfileDownload"] is None
    (tmp_path / "req.der").write_bytes(der)
    assert load_provisioning(tmp_path / "req.der") == der
    (tmp_path / "bad.der").write_bytes(der[:-3])
    with pytest.raises(ProvisioningError, match=r"bad\.der"):
        load_provisioning(tmp_path / "bad.der")
    (tmp_path / "nokey.toml").write_text('[[eim]]\nid = "x"\n')
    with pytest.raises(ProvisioningError, match=r"public_key_pem or eim\.certificate_pem is required"):
        load_provisioning(tmp_path / "nokey.toml")
    (tmp_path / "typo.toml").write_text('[[eim]]\nid = "x"\nfdqn = "a"\n')
    with pytest.raises(ProvisioningError, match="unknown eim key"):
        load_provisioning(tmp_path / "typo.toml")


@given(st.binary(max_size=300))
def test_provisioning_parser_only_raises_provisioning_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prov") / "p"
    path.write_bytes(data)
    try:
        load_provisioning(path)
    except ProvisioningError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "fqdn",
                "id_type",
                "counter_value",
                "association_token",
                "protocols",
                "euicc_ci_pkid",
                "indirect_profile_download",
                "public_key_pem",
                "zz",
            ]
        ),
        st.one_of(
            st.text(max_size=10), st.integers(-5, 300), st.booleans(), st.lists(st.text(max_size=12), max_size=3)
        ),
        max_size=8,
    )
)
def test_provisioning_toml_entries_only_raise_provisioning_error(tmp_path_factory, entry):
    import tomllib

    lines = ["[[eim]]"] + [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    path = tmp_path_factory.mktemp("prov") / "p.toml"
    path.write_text(text)
    try:
        der = load_provisioning(path)
    except ProvisioningError:
        return
    asn1.decode("AddInitialEimRequest", der)


def test_import_footprint_no_server_stack():
    """``import ipa.agent`` loads neither the binding libraries nor anything of the server side."""
    code = (
        "import sys, ipa.agent, ipa.cli; bad = [m for m in ('httpx', 'aiocoap', 'aiomqtt', 'paho', 'starlette', "
        "'uvicorn', 'fastapi', 'asyncpg', 'eim', 'smdpp', 'euicc', 'asn1tools') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_architecture_ipa_imports_only_rsp_and_bridge_interfaces():
    """ipa/ imports rsp and firmware_bridge.interfaces; concrete channels and their errors only in the CLI edge
    (ipa/cli.py and ipa/cli_report.py, which maps them to exit codes); never eim/smdpp."""
    import ast

    offenders = []
    for path in sorted((ROOT / "ipa").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ("eim", "smdpp", "tests"):
                    offenders.append(f"{path.name}: {name}")
                elif top in ("euicc", "firmware_bridge") and name != "firmware_bridge.interfaces":
                    if path.name not in ("cli.py", "cli_report.py"):
                        offenders.append(f"{path.name}: {name}")
    assert offenders == []
