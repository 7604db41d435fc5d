"""eIM Configuration Operations end to end: a second `eim serve` with its own eimId and its own signing key (issued
by the lab CI), added to the card by the first eIM (addEim), listed, updated, then managing the card itself after
the IPA is pointed at it (hand-over), and deleting the first eIM."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from demo.procs import Service, free_port, tool, wait_port
from demo.stack import LabStack
from rsp import crypto
from rsp.pki import LabPki, Role, issue_certificate
from tests.e2e.conftest import assert_codes, card_eim, done, eim_euicc, start_stack, stop_stack

EIM2 = "eim.two"


def make_eim2_credentials(stack: LabStack) -> tuple[Path, Path]:
    """A second eIM signing key and certificate, issued by the lab CI the card trusts."""
    lab = LabPki.load(stack.pki)
    key = crypto.generate_key("nist")
    cert = issue_certificate(Role.EIM, key.public_key(), lab.ci_cert("nist"), lab.ci_key("nist"))
    d = stack.workdir / "eim2"
    d.mkdir(exist_ok=True)
    (d / "eim.key.pem").write_bytes(crypto.private_key_pem(key))
    (d / "eim.key.pem").chmod(0o600)
    from cryptography.hazmat.primitives.serialization import Encoding

    (d / "eim.cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return d / "eim.key.pem", d / "eim.cert.pem"


def start_eim2(stack: LabStack) -> tuple[LabStack, Service]:
    """`eim serve` #2 on its own port and store; returns a LabStack view whose REST calls go to it."""
    key, cert = make_eim2_credentials(stack)
    port = free_port()
    lab = LabPki.load(stack.pki)
    cfg = stack.workdir / "eim2.toml"
    cfg.write_text(
        f"""
[eim]
eim_id = "{EIM2}"
data_dir = "{stack.workdir / "eim2-data"}"
signing_key = "{key}"
signing_cert = "{cert}"
trusted_ci = ["{lab.cert_path(Role.CI, "nist")}"]

[http]
host = "127.0.0.1"
port = {port}

[relay]
ca_files = ["{stack.pki / "ca-bundle.pem"}"]

[operations]
sweep_interval_s = 0.5
"""
    )
    svc = Service("eim2", [tool("eim"), "--config", str(cfg), "serve"], stack.log("eim2")).start()
    stack.services["eim2"] = svc  # stopped with the stack, tails shown on failure
    wait_port(port, proc=svc.proc)
    view = dataclasses.replace(stack, eim_id=EIM2, ports=dict(stack.ports, eim_http=port), services={"eim": svc})
    view.wait_eim_ready()
    return view, svc


def ci_key_id_hex(lab: LabPki) -> str:
    kid = lab.ci_key_id("nist")
    return kid.hex() if isinstance(kid, bytes) else str(kid)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    s = start_stack(tmp_path_factory.mktemp("ecos"), "http")
    yield s
    stop_stack(s)


def test_list_add_update_hand_over_delete(stack: LabStack) -> None:
    # listEim from the first eIM: only itself
    op = done(stack, "eco", {"ecos": [{"listEim": {}}]})
    (listed,) = op["result"]["results"]
    assert [e["eimId"] for e in listed["eims"]] == [stack.eim_id]

    # addEim of the second eIM: its certificate, the card generates the association token
    eim2, _ = start_eim2(stack)
    lab = LabPki.load(stack.pki)
    cert_pem = Path(eim2.workdir / "eim2" / "eim.cert.pem").read_text()
    add = {
        "eimId": EIM2,
        "eimFqdn": f"127.0.0.1:{eim2.ports['eim_http']}",
        "eimIdType": "fqdn",
        "counterValue": 0,
        "associationToken": -1,
        "eimCertificate": cert_pem,
        "euiccCiPKId": ci_key_id_hex(lab),
        "indirectProfileDownload": True,
        "eimSupportedProtocol": ["eimRetrieveHttps"],
    }
    op = done(stack, "eco", {"ecos": [{"addEim": add}]})
    (added,) = op["result"]["results"]
    assert added["type"] == "addEimResult"
    token = added["associationToken"]
    on_card = card_eim(stack, EIM2)
    assert on_card is not None and on_card["association_token"] == token and on_card["counter"] == 0
    assert on_card["fqdn"] == add["eimFqdn"] and on_card["key"] == "certificate"
    assert [e["eim_id"] for e in stack.card()["eims"]] == [stack.eim_id, EIM2]

    # adding it again: associatedEimAlreadyExists(2), the card unchanged
    op = stack.run_op("eco", {"ecos": [{"addEim": dict(add, associationToken=-1)}]})
    assert op["result"]["results"][0]["code"] == 2, op
    assert (op["status"], op["result_code"]) == ("failed", 2), op
    assert len(stack.card()["eims"]) == 2

    # listEim shows both
    op = done(stack, "eco", {"ecos": [{"listEim": {}}]})
    assert [e["eimId"] for e in op["result"]["results"][0]["eims"]] == [stack.eim_id, EIM2]

    # updateEim: a new address for the second eIM (same port, host name form)
    new_fqdn = f"localhost:{eim2.ports['eim_http']}"
    op = done(stack, "eco", {"ecos": [{"updateEim": {"eimId": EIM2, "eimFqdn": new_fqdn}}]})
    assert_codes(op, ("updateEimResult", 0))
    assert card_eim(stack, EIM2)["fqdn"] == new_fqdn
    assert card_eim(stack, EIM2)["association_token"] == token  # the rest of the configuration kept

    # hand-over: the second eIM registers the eUICC, the IPA now talks to it
    eim2.association_token = token
    eim2.api("POST", "/v1/euiccs", {"eid": stack.eid, "eim_id": EIM2, "association_token": token, "counter_value": 0})
    stack.services["ipa"].stop()
    stack.start_ipa(env={"IPA_EIM_ID": EIM2, "IPA_EIM_URL": f"http://127.0.0.1:{eim2.ports['eim_http']}"})
    eim2.services["ipa"] = stack.services["ipa"]

    order = stack.smdp_order("ts48")
    op = done(eim2, "download", {"activationCode": order["activation_code"], "mode": "indirect"})
    assert order["iccid"] in str(op["result"])
    op = done(eim2, "psmo", {"psmos": [{"enable": {"iccid": order["iccid"]}}]})
    assert_codes(op, ("enableResult", 0))
    assert stack.card_profiles() == {order["iccid"]: "enabled"}
    assert card_eim(stack, EIM2)["counter"] == eim_euicc(eim2)["counter_value"] > 0

    # the second eIM deletes the first one; the card keeps only the second
    op = done(eim2, "eco", {"ecos": [{"deleteEim": {"eimId": stack.eim_id}}, {"listEim": {}}]})
    results = op["result"]["results"]
    assert (results[0]["type"], results[0]["code"]) == ("deleteEimResult", 0)
    assert [e["eimId"] for e in results[1]["eims"]] == [EIM2]
    assert [e["eim_id"] for e in stack.card()["eims"]] == [EIM2]

    # deleting it again: eimNotFound(1)
    op = eim2.run_op("eco", {"ecos": [{"deleteEim": {"eimId": stack.eim_id}}]})
    assert (op["result"]["results"][0]["type"], op["result"]["results"][0]["code"]) == ("deleteEimResult", 1), op
    assert (op["status"], op["result_code"]) == ("failed", 1), op
    assert [e["eim_id"] for e in stack.card()["eims"]] == [EIM2]
    assert card_eim(stack, EIM2)["counter"] == eim_euicc(eim2)["counter_value"]
