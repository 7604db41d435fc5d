"""``--sgp26`` (the GSMA SGP.26 test DPauth/DPpb/TLS credentials) and the ``smdpp`` command line, with the server
started as a real subprocess (``smdpp serve``)."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys

import httpx
import pytest
from cryptography.x509.oid import NameOID

from rsp import crypto
from smdpp import orders
from smdpp.certs import subject_key_id
from smdpp.config import SmdppConfig
from smdpp.credentials import load_sgp26, sgp26_dir
from smdpp.server import running_server
from tests.envelope import json_items, json_result
from tests.services import free_port, wait_port
from tests.smdpp.sim import Download, Es9Client, SimEuicc, status, unb64

SGP26_NIST_CI = bytes.fromhex("F54172BDF98A95D65CBEB88A38A1C11D800A85C3")
SGP26_BRP_CI = bytes.fromhex("C0BC70BA36929D43B467FF57570530E57AB8FCD8")


def test_sgp26_files_are_the_published_ones():
    creds = load_sgp26()
    assert set(creds.sets) == {SGP26_NIST_CI, SGP26_BRP_CI}
    assert creds.tls_host == "testsmdpplus1.example.com"
    tls = crypto.load_certificate(creds.tls_cert_file)
    assert tls.not_valid_after_utc.year == 2030
    for s in creds.sets.values():
        assert s.smdp_oid == "2.999.10"
    assert (sgp26_dir() / "PROVENANCE.md").exists()


@pytest.mark.parametrize("curve", ["nist", "brainpool"])
def test_download_with_sgp26_credentials(lab_pki, tmp_path, curve):
    """A lab eUICC that also trusts the SGP.26 test CI downloads from the SM-DP+ presenting SGP.26 DPauth/DPpb."""
    config = SmdppConfig(data_dir=tmp_path, pki_dir=lab_pki.root, port=0, sgp26=True)
    with running_server(config) as srv:
        sgp26_ci = {"nist": SGP26_NIST_CI, "brainpool": SGP26_BRP_CI}[curve]
        ctx = ssl.create_default_context(cafile=str(srv.ca_bundle))
        ctx.check_hostname = False  # the SGP.26 TLS certificate names testsmdpplus1.example.com, we dial 127.0.0.1
        client = Es9Client(srv.base_url, verify=ctx)
        try:
            order = orders.create_order(srv.ctx.store, profile="small", smdp_address=srv.address)
            card = SimEuicc(lab_pki, curve, verify_pkids=[sgp26_ci], trusted=[srv.credentials.sets[sgp26_ci].ci])
            dl = Download(client, card, srv.address, order.matching_id)
            auth = dl.initiate()
            server_cert = crypto.load_certificate(unb64(auth["serverCertificate"]))
            cn = server_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            assert cn == "TEST SM-DP+"
            assert unb64(auth["euiccCiPKIdToBeUsed"])[2:] == lab_pki.ci_key_id(curve)
            assert status(dl.authenticate()) == "Executed-Success"
            assert status(dl.get_bpp()) == "Executed-Success"
            assert dl.notify(dl.install()) == 204
            assert srv.ctx.store.get(order.matching_id).state == "installed"
            # a card trusting only the lab CI finds no DPauth it can verify
            lab_only = Download(client, SimEuicc(lab_pki, curve), srv.address, "X")
            subject, reason, _ = status(lab_only.initiate())
            assert (subject, reason) == ("8.8.4", "3.7")
        finally:
            client.close()
        assert subject_key_id(srv.credentials.sets[sgp26_ci].ci) == sgp26_ci


def _smdpp(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smdpp", *args], capture_output=True, text=True, timeout=60, **kw)


def test_cli_serve_order_download(lab_pki, tmp_path):
    data = tmp_path / "data"
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smdpp", "serve", "--pki", str(lab_pki.root), "--data", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_port(port, 20), "smdpp serve did not listen"
        created = _smdpp(
            "order",
            "create",
            "--data",
            str(data),
            "--profile",
            "ts48",
            "--host",
            address,
            "--confirmation-code",
            "8642",
            "--expires",
            "1h",
            "--json",
        )
        assert created.returncode == 0, created.stderr
        order = json_result(created.stdout)
        assert order["activation_code"] == f"1${address}${order['matching_id']}$$1"
        assert order["state"] == "released"
        client = Es9Client(f"https://{address}", verify=ssl.create_default_context(cafile=str(lab_pki.ca_bundle_path)))
        try:
            Download(client, SimEuicc(lab_pki, "brainpool"), address, order["matching_id"]).run(cc="8642")
            r = client.http.get(f"/v1/orders/{order['matching_id']}")
            assert r.json()["state"] == "installed"
        finally:
            client.close()
        shown = _smdpp("order", "show", order["matching_id"], "--data", str(data))
        assert shown.returncode == 0 and "state: installed" in shown.stdout and "installed on EID" in shown.stdout
        listed = _smdpp("order", "list", "--data", str(data), "--state", "installed", "--json")
        assert [o["matching_id"] for o in json_items(listed.stdout)] == [order["matching_id"]]
        notes = _smdpp("notifications", "--data", str(data), "--json")
        assert json_items(notes.stdout)[0]["verified"] is True
        bad = _smdpp("order", "create", "--data", str(data), "--profile", "nope")
        assert bad.returncode == 2 and "unknown profile" in bad.stderr
        missing = _smdpp("order", "show", "NOPE", "--data", str(data))
        assert missing.returncode == 1 and "no order" in missing.stderr
        # plain HTTP is refused by the TLS listener
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{address}/healthz", timeout=5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_cli_serve_stops_on_sigterm_while_a_client_keeps_a_connection_open(lab_pki, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smdpp",
            "serve",
            "--pki",
            str(lab_pki.root),
            "--data",
            str(tmp_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(lab_pki.ca_bundle_path)))
    try:
        assert wait_port(port, 20), "smdpp serve did not listen"
        assert client.get(f"https://127.0.0.1:{port}/healthz").status_code == 200  # kept alive, idle
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)  # before the fix it never exited while the idle TLS connection stayed open
        except subprocess.TimeoutExpired:
            pytest.fail("smdpp serve ignored SIGTERM while a keep-alive client was connected")
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_serve_refuses_without_credentials(tmp_path):
    r = _smdpp("serve", "--data", str(tmp_path))
    assert r.returncode == 2 and "--pki" in r.stderr
    r = _smdpp("serve", "--data", str(tmp_path), "--pki", str(tmp_path / "nothing"), "--port", "0")
    assert r.returncode == 1 and "manifest.json" in r.stderr


def test_insecure_http_mode(lab_pki, tmp_path):
    config = SmdppConfig(data_dir=tmp_path, pki_dir=lab_pki.root, port=0, insecure_http=True)
    with running_server(config) as srv:
        assert srv.base_url.startswith("http://")
        assert httpx.get(srv.base_url + "/healthz").json()["status"] == "ok"


def test_profile_list_cli():
    r = _smdpp("profile", "list", "--json")
    names = [p["name"] for p in json_items(r.stdout)]
    assert {"ts48", "ts48-ppk", "large"} <= set(names)


def test_running_server_is_its_base_url(lab_pki, tmp_path):
    config = SmdppConfig(data_dir=tmp_path, pki_dir=lab_pki.root, port=0)
    with running_server(config) as url:
        assert isinstance(url, str) and url == url.base_url and url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(url.ca_bundle))
        assert httpx.get(url + "/healthz", verify=ctx).json()["address"] == url.address
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", verify=ctx, timeout=2)
