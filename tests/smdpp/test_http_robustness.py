"""Bad input at the HTTP layer and in every ES9+ field: a specific error, never a 500 or a traceback; the server
keeps serving and the store keeps its orders (hypothesis on every endpoint)."""

from __future__ import annotations

import base64
import json
import ssl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdpp import orders
from smdpp.config import SmdppConfig
from smdpp.es9plus import FUNCTIONS
from smdpp.server import running_server
from tests.smdpp.sim import Download, Es9Client, SimEuicc, status

FIELDS = {
    "initiateAuthentication": ["euiccChallenge", "euiccInfo1", "smdpAddress"],
    "authenticateClient": ["transactionId", "authenticateServerResponse"],
    "getBoundProfilePackage": ["transactionId", "prepareDownloadResponse"],
    "handleNotification": ["pendingNotification"],
    "cancelSession": ["transactionId", "cancelSessionResponse"],
}


def _failed(resp_json) -> tuple[str, str, str]:
    fes = resp_json["header"]["functionExecutionStatus"]
    assert fes["status"] == "Failed"
    scd = fes["statusCodeData"]
    assert scd["message"]
    assert "Traceback" not in scd["message"]
    return scd["subjectCode"], scd["reasonCode"], scd["message"]


def test_http_layer_errors(es9):
    http = es9.http
    r = http.post("/gsma/rsp2/es9plus/noSuchFunction", json={})
    assert r.status_code == 404 and "unknown ES9+ function" in r.json()["error"]
    r = http.get("/gsma/rsp2/es9plus/initiateAuthentication")
    assert r.status_code == 405
    r = http.post("/gsma/rsp2/es9plus/initiateAuthentication", content=b"<xml/>", headers={"Content-Type": "text/xml"})
    assert r.status_code == 415
    r = http.post(
        "/gsma/rsp2/es9plus/initiateAuthentication",
        content=b"{" + b" " * 1_100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = http.get("/nothing/here")
    assert r.status_code == 404


def test_success_headers(es9, smdp, lab_pki):
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, "X")
    r = es9.http.post(
        "/gsma/rsp2/es9plus/initiateAuthentication",
        json={
            "header": {"functionRequesterIdentifier": "t", "functionCallIdentifier": "1"},
            "euiccChallenge": base64.b64encode(dl.card.get_challenge()).decode(),
            "euiccInfo1": base64.b64encode(dl.card.euicc_info1()).decode(),
            "smdpAddress": smdp.address,
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json;charset=UTF-8"
    assert r.headers["x-admin-protocol"].startswith("gsma/rsp/v2.")
    body = r.json()
    assert body["header"]["functionExecutionStatus"]["status"] == "Executed-Success"
    assert len(bytes.fromhex(body["transactionId"])) == 16
    assert base64.b64decode(body["serverSignature1"])[:3] == b"\x5f\x37\x40"
    assert base64.b64decode(body["euiccCiPKIdToBeUsed"])[:2] == b"\x04\x14"


def test_malformed_json_and_base64(es9):
    for function in FUNCTIONS:
        for body in (b"not json", b"[1,2]", b"\xff\xfe", b'{"header": 5}', b"null"):
            r = es9.raw(function, body)
            assert r.status_code == 200
            _failed(r.json())
        for name in FIELDS[function]:
            fields = {f: "AAAA" for f in FIELDS[function]}
            if "transactionId" in fields:
                fields["transactionId"] = "00112233445566778899AABBCCDDEEFF"
            fields[name] = {"transactionId": "zz", "smdpAddress": 12345}.get(name, "%%%not base64%%%")
            code, resp = es9.call(function, **fields)
            assert code == 200
            message = _failed(resp)[2]
            assert name in message or "TransactionId" in message
        code, resp = es9.call(function)  # everything missing
        assert code == 200
        assert _failed(resp)[1] in ("2.2", "2.1")


def test_malformed_der_inside_valid_sessions(es9, smdp, lab_pki):
    order = orders.create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address)
    dl = Download(es9, SimEuicc(lab_pki), smdp.address, order.matching_id)
    dl.initiate()
    for junk in (b"", b"\xbf\x38\x05\xa0\x03\x30\x01", b"\xbf\x38\x02\xa1\x00", b"\x30\x00", bytes(300)):
        code, resp = es9.call(
            "authenticateClient",
            transactionId=dl.auth["transactionId"],
            authenticateServerResponse=base64.b64encode(junk).decode(),
        )
        assert code == 200
        assert _failed(resp)[0] in ("1.2", "8.10.1")
    pir = base64.b64encode(b"\xbf\x37\x03\xbf\x27\x00").decode()
    code, resp = es9.call("handleNotification", pendingNotification=pir)
    assert code == 200 and _failed(resp)[:2] == ("1.2", "2.1")


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=40)
    | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(function=st.sampled_from(sorted(FUNCTIONS)), data=st.data())
def test_fuzz_every_endpoint(es9, smdp, function, data):
    store = smdp.ctx.store
    if not store.list():
        orders.create_order(store, profile="small", smdp_address=smdp.address)
    before = store.dump()
    kind = data.draw(st.sampled_from(["bytes", "json", "fields"]))
    if kind == "bytes":
        r = es9.raw(function, data.draw(st.binary(max_size=300)))
    elif kind == "json":
        r = es9.raw(function, json.dumps(data.draw(_json_values)).encode())
    else:
        fields = {name: data.draw(_json_values) for name in FIELDS[function] if data.draw(st.booleans())}
        r = es9.raw(function, json.dumps({"header": {}, **fields}).encode())
    assert r.status_code in (200, 204)
    if r.status_code == 200:
        _failed(r.json())
    assert store.dump() == before
    assert es9.http.get("/healthz").json()["status"] == "ok"


def test_operator_api(es9, smdp):
    http = es9.http
    r = http.post("/v1/orders", json={"profile": "small", "confirmation_code": "12", "expires": "2h"})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["state"] == "released" and order["activation_code"].startswith(f"1${smdp.address}$")
    r = http.get(f"/v1/orders/{order['matching_id']}")
    assert r.status_code == 200 and r.json()["history"][-1]["state"] == "released"
    assert [o["matching_id"] for o in http.get("/v1/orders").json()] == [order["matching_id"]]
    assert http.get("/v1/orders", params={"state": "installed"}).json() == []
    for bad, word in (
        ({"profile": "nope"}, "profile"),
        ({"eid": "123"}, "eid"),
        ({"expires": "yesterday"}, "expires"),
        ({"hold": "yes"}, "hold"),
        ({"colour": "red"}, "unknown"),
        ({"matching_id": "a$b"}, "matching"),
        ({"smdp_address": 5}, "smdp_address"),
        ({"smdp_address": "a b"}, "smdp address"),
        ({"confirmation_code": ""}, "confirmation_code"),
        ({"profile": None}, "profile"),
    ):
        r = http.post("/v1/orders", json=bad)
        assert r.status_code == 400 and word in r.json()["error"], (bad, r.text)
    assert http.post("/v1/orders", content=b"{oops", headers={"Content-Type": "application/json"}).status_code == 400
    assert http.get("/v1/orders/NOPE").status_code == 404
    assert http.get("/v1/orders", params={"state": "bogus"}).status_code == 400
    r = http.post(f"/v1/orders/{order['matching_id']}/release")
    assert r.status_code == 409
    r = http.post(f"/v1/orders/{order['matching_id']}/cancel", json={"final_state": "available"})
    assert r.status_code == 200 and r.json()["state"] == "available"
    assert http.post("/v1/orders/NOPE/cancel").status_code == 404
    held = http.post("/v1/orders", json={"hold": True}).json()
    assert held["state"] == "confirmed" and held["profile"] == "ts48"
    assert http.post(f"/v1/orders/{held['matching_id']}/release").json()["state"] == "released"
    assert {p["name"] for p in http.get("/v1/profiles").json()} >= {"ts48", "large"}
    assert len(smdp.ctx.store.list()) == 2
    assert status  # the helper module is importable alongside


def test_smdp_address_is_exact_unless_aliased(es9, smdp, lab_pki, tmp_path):
    port = smdp.config.port
    for other in (f"localhost:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
        dl = Download(es9, SimEuicc(lab_pki), other, "X")
        assert status(dl.initiate())[:2] == ("8.8.1", "3.8")
    dl = Download(es9, SimEuicc(lab_pki), smdp.address.upper(), "X")
    assert status(dl.initiate()) == "Executed-Success"  # case-insensitive compare
    config = SmdppConfig(data_dir=tmp_path, pki_dir=lab_pki.root, port=0, aliases=("LOCALHOST:9", "smdp.lab:9"))
    with running_server(config) as url:
        client = Es9Client(url, verify=ssl.create_default_context(cafile=str(url.ca_bundle)))
        try:
            for alias in ("localhost:9", "smdp.lab:9", url.address):
                resp = Download(client, SimEuicc(lab_pki), alias, "X").initiate()
                assert status(resp) == "Executed-Success"
                assert alias.encode() in base64.b64decode(resp["serverSigned1"])  # serverAddress echoes it
        finally:
            client.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.dictionaries(
        st.sampled_from(["profile", "eid", "confirmation_code", "expires", "hold", "matching_id", "smdp_address", "x"]),
        _json_values,
        max_size=5,
    )
)
def test_fuzz_operator_api(es9, smdp, body):
    before = smdp.ctx.store.list()
    r = es9.http.post("/v1/orders", json=body)
    assert r.status_code in (201, 400), r.text
    after = smdp.ctx.store.list()
    if r.status_code == 400:
        assert r.json()["error"]
        assert after == before
    else:
        assert len(after) == len(before) + 1
        assert r.json()["activation_code"].startswith("1$")
