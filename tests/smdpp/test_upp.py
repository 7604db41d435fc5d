"""The lab SM-DP+ serves a profile package file a user gives it (``smdpp order create --upp FILE``, ``smdpp profile
import``, ``POST /v1/profiles``): a package in the real TS.48 shape (ProfileHeader ICCID in plain digits) installs
byte for byte on the software eUICC; files that are no profile package are refused with a message naming the file
and the check, and nothing is stored."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from ipa.es10 import Es10Client
from smdpp import orders, profiles, upp
from smdpp.profiles import iccid_to_bcd
from smdpp.store import OrderStore
from tests.envelope import json_items, json_result
from tests.euicc.upp_sample import ts48_upp
from tests.smdpp.conftest import EID1
from tests.smdpp.lpa import LpaDownload

ICCID = "8949449999999990007"


def _smdpp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smdpp", *args], capture_output=True, text=True, timeout=60)


def test_cli_order_from_a_upp_file(tmp_path):
    data = tmp_path / "data"
    path = tmp_path / "TS48V5-generic.der"
    path.write_bytes(ts48_upp(ICCID))
    r = _smdpp("order", "create", "--data", str(data), "--upp", str(path), "--service-provider", "GSMA", "--json")
    assert r.returncode == 0, r.stderr
    order = json_result(r.stdout)
    assert order["iccid"] == ICCID and order["profile"].startswith("upp-") and order["state"] == "released"
    listed = _smdpp("profile", "list", "--data", str(data), "--json")
    imported = [p for p in json_items(listed.stdout) if p["source"] == "file"]
    assert imported == [
        {
            "name": order["profile"],
            "description": imported[0]["description"],
            "size": len(path.read_bytes()),
            "iccid_prefix": "",
            "service_provider_name": "GSMA",
            "profile_name": "GSMA Generic eUICC Test Profile",
            "profile_class": "operational",
            "pre_protected": False,
            "source": "file",
            "iccid": ICCID,
        }
    ]
    # the same file again: the same profile, a second order for the same ICCID
    again = _smdpp("order", "create", "--data", str(data), "--upp", str(path), "--json")
    assert again.returncode == 0 and json_result(again.stdout)["profile"] == order["profile"]
    human = _smdpp("profile", "list", "--data", str(data))
    assert f"ICCID {ICCID}" in human.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not a profile", "not a profile package"),
        (bytes.fromhex("3003800101"), "must start with a ProfileHeader"),
        (ts48_upp(ICCID)[:-9], "does not end with the End PE"),
    ],
)
def test_cli_refuses_files_that_are_no_package(tmp_path, content, message):
    data = tmp_path / "data"
    path = tmp_path / "bad.der"
    path.write_bytes(content)
    r = _smdpp("order", "create", "--data", str(data), "--upp", str(path))
    assert r.returncode == 2
    assert str(path) in r.stderr and message in r.stderr
    assert not (data / "upp").exists() or list((data / "upp").iterdir()) == []
    store = OrderStore.in_dir(data)
    try:
        assert store.list() == []
    finally:
        store.close()
    missing = _smdpp("profile", "import", str(tmp_path / "nope.der"), "--data", str(data))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_name_never_changes_its_package(tmp_path):
    upp.import_upp(tmp_path, ts48_upp(ICCID), name="ts48-file")
    with pytest.raises(upp.UppError, match="already taken"):
        upp.import_upp(tmp_path, ts48_upp("8949449999999990015"), name="ts48-file")
    with pytest.raises(upp.UppError, match="built-in"):
        profiles.import_upp(tmp_path, ts48_upp(ICCID), name="ts48")


def test_header_iccid_in_either_digit_order():
    assert upp.header_iccid(bytes.fromhex("8949449999999990007F")) == ICCID
    assert upp.header_iccid(iccid_to_bcd(ICCID)) == ICCID
    with pytest.raises(upp.UppError):
        upp.header_iccid(bytes.fromhex("ABCDEF0123456789ABCD"))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_import_or_give_a_specific_error(tmp_path, data):
    try:
        info = upp.import_upp(tmp_path, data)
    except upp.UppError as exc:
        assert str(exc)
    else:
        assert upp.load_package(tmp_path, info) == data


async def test_a_ts48_upp_imported_over_http_installs_byte_for_byte(smdp, lab_pki):
    package = ts48_upp(ICCID)
    verify = ssl.create_default_context(cafile=str(smdp.ca_bundle))
    async with httpx.AsyncClient(base_url=smdp.base_url, verify=verify, timeout=30) as http:
        bad = await http.post("/v1/profiles", json={"upp": base64.b64encode(b"junk").decode()})
        assert bad.status_code == 400 and "not a profile package" in bad.json()["error"]
        r = await http.post("/v1/profiles", json={"upp": base64.b64encode(package).decode(), "name": "ts48-real"})
        assert r.status_code == 201 and r.json()["iccid"] == ICCID
        assert "ts48-real" in [p["name"] for p in (await http.get("/v1/profiles")).json()]
        created = await http.post("/v1/orders", json={"profile": "ts48-real"})
        assert created.status_code == 201
        order = created.json()
        assert order["iccid"] == ICCID
    card = SoftEuicc.create(lab_pki.root, EID1, None)
    es10 = Es10Client(LocalApduChannel(card, "lpac"), 120)
    await es10.open()
    async with httpx.AsyncClient(base_url=smdp.base_url, verify=verify, timeout=30) as http:
        pir = await LpaDownload(es10, http, smdp.address).run(order["matching_id"])
    assert pir[:2] == b"\xbf\x37"
    installed = card.state.profile(iccid_to_bcd(ICCID))
    assert installed is not None and installed.elements == package
    assert smdp.ctx.store.get(order["matching_id"]).state == "installed"
    # orders.create_order takes the imported profile by name in-process as well
    again = orders.create_order(smdp.ctx.store, profile="ts48-real", smdp_address=smdp.address)
    assert again.iccid == ICCID


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.dictionaries(
        st.sampled_from(["upp", "name", "service_provider_name", "profile_name", "profile_class", "x"]),
        _JSON | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        max_size=4,
    )
)
def test_post_profiles_with_malformed_bodies_gets_400_and_stores_nothing(es9, smdp, body):
    """Whatever JSON arrives, POST /v1/profiles answers 400 naming the problem, nothing is stored, the server
    keeps serving (a body that is a real package is not among these: st.binary(64) is no TS.48 package)."""
    folder = smdp.ctx.config.data_dir / "upp"
    before = sorted(folder.glob("*")) if folder.exists() else []
    r = es9.http.post("/v1/profiles", json=body)
    assert r.status_code == 400 and r.json()["error"]
    assert (sorted(folder.glob("*")) if folder.exists() else []) == before
    assert es9.http.get("/healthz").status_code == 200
