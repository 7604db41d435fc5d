"""The ``ipa`` command line as a field technician runs it: real processes, JSON lines in the LPA shape, exit codes.
Devices: ``--card`` (in-process software eUICC) and ``--port`` (the virtual modem on a real pseudo-terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from euicc.card import SoftEuicc
from firmware_bridge.virtual_modem import VirtualModem
from smdpp.config import SmdppConfig
from smdpp.orders import create_order
from smdpp.server import running_server
from tests.ipa.conftest import EID_TEXT, ICCID_A, ICCID_B, seed_profiles, write_provisioning

ROOT = Path(__file__).resolve().parents[2]


def ipa(*args: str, env: dict | None = None, timeout: float = 60) -> tuple[int, list[dict], str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IPA_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "ipa.cli", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr


@pytest.fixture
def card_file(lab_pki, tmp_path) -> Path:
    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    seed_profiles(card)
    return tmp_path / "card.cbor"


def test_chip_info_profile_list_and_eim_bootstrap(card_file, lab_pki, tmp_path):
    state = ["--state", str(tmp_path / "ipa.cbor")]
    rc, lines, _ = ipa("--json", "--card", str(card_file), *state, "chip", "info")
    assert rc == 0 and len(lines) == 1 and lines[0]["type"] == "lpa"
    payload = lines[0]["payload"]
    assert payload["code"] == 0 and payload["message"] == "success"
    assert payload["data"]["eidValue"] == EID_TEXT
    assert payload["data"]["EUICCInfo2"]["svn"] == "2.5.0" and payload["data"]["eimConfigurationData"] == []

    rc, lines, _ = ipa("--json", "--card", str(card_file), *state, "profile", "list")
    assert rc == 0
    assert [(p["iccid"], p["profileState"]) for p in lines[-1]["payload"]["data"]] == [
        (ICCID_A, "enabled"),
        (ICCID_B, "disabled"),
    ]

    prov = write_provisioning(
        lab_pki, tmp_path, fqdn="eim.lab.example:8443", protocols=("retrieveHttps", "proprietary")
    )
    rc, lines, _ = ipa("--json", "--card", str(card_file), *state, "eim", "add-initial", str(prov))
    assert rc == 0 and lines[-1]["payload"]["data"] == {"associationToken": [1]}
    assert [ln["payload"]["message"] for ln in lines[:-1]] == ["AddInitialEim"]  # progress line first
    rc, lines, _ = ipa("--json", "--card", str(card_file), *state, "eim", "list")
    eims = lines[-1]["payload"]["data"]
    assert rc == 0 and eims[0]["eimId"] == "lab-eim" and eims[0]["eimFqdn"] == "eim.lab.example:8443"
    assert eims[0]["eimSupportedProtocol"] == ["eimRetrieveHttps", "eimProprietary"]
    # a second bootstrap is refused by the card, named
    rc, lines, _ = ipa("--json", "--card", str(card_file), *state, "eim", "add-initial", str(prov))
    assert rc == 1 and lines[-1]["payload"]["code"] == -1
    assert lines[-1]["payload"]["message"].startswith("AddInitialEim: card answered")
    assert lines[-1]["payload"]["data"]["step"] == "AddInitialEim"


def test_notification_list_process_remove(card_file, tmp_path):
    from euicc import notifications
    from euicc.state import EVENT_ENABLE
    from ipa import messages as m

    card = SoftEuicc.load(card_file)
    for _ in range(2):
        notifications.other_signed(card.ctx, EVENT_ENABLE, "smdp.lab.example", m.iccid_to_bytes(ICCID_A))
    card.save()
    args = ["--json", "--card", str(card_file), "--state", str(tmp_path / "ipa.cbor")]
    rc, lines, _ = ipa(*args, "notification", "list")
    assert rc == 0 and [(n["seqNumber"], n["profileManagementOperation"]) for n in lines[-1]["payload"]["data"]] == [
        (0, ["enable"]),
        (1, ["enable"]),
    ]
    rc, lines, _ = ipa(*args, "notification", "remove", "0")
    assert rc == 0 and lines[-1]["payload"]["data"] == {"seqNumber": 0, "removed": True}
    rc, lines, _ = ipa(*args, "notification", "remove", "0")
    assert rc == 1 and "nothingToDelete(1)" in lines[-1]["payload"]["message"]
    # process: no eIM reachable -> the notification stays, the error names the ESipa step
    rc, lines, _ = ipa(*args, "notification", "process", env={"IPA_EIM_URL": "http://127.0.0.1:1"})
    assert rc == 1 and lines[-1]["payload"]["data"] == {"delivered": 0, "pending": 1, "exit": 1}
    assert [n.seq for n in SoftEuicc.load(card_file).state.notifications] == [1]


def test_direct_download_through_the_virtual_modem(lab_pki, tmp_path):
    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    with (
        running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=lab_pki.root, port=0)) as smdp,
        VirtualModem(card, quirks="refresh-reset=0.1") as vm,
    ):
        ac = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address).activation_code
        rc, lines, err = ipa(
            "--json",
            "--port",
            vm.path,
            "--state",
            str(tmp_path / "ipa.cbor"),
            "download",
            "-a",
            f"LPA:{ac}",
            env={"IPA_ES9_CA_FILE": str(smdp.ca_bundle)},
        )
        assert rc == 0, err
        steps = [ln["payload"]["message"] for ln in lines if ln["type"] == "progress"]
        assert steps[:4] == ["GetEUICCChallenge", "initiateAuthentication", "AuthenticateServer", "authenticateClient"]
        assert "LoadBoundProfilePackage" in steps and steps[-1] == "handleNotification"
        assert lines[-1]["payload"]["data"]["iccid"] == "8949000013000000011"
        assert [(n.kind, n.verified) for n in smdp.ctx.store.notifications()] == [("pir", True)]
        assert smdp.ctx.store.get(ac.split("$")[2]).state == "installed"
        assert card.state.notifications == []  # PIR removed after the SM-DP+ took it
        rc, lines, err = ipa(
            "--json",
            "--port",
            vm.path,
            "--route",
            "csim",
            "--block-size",
            "16",
            "--state",
            str(tmp_path / "ipa.cbor"),
            "profile",
            "list",
        )
        assert rc == 0, err
        assert [p["iccid"] for p in lines[-1]["payload"]["data"]] == ["8949000013000000011"]
        # the same activation code again: the SM-DP+ refuses, the error names the step and the server's codes
        rc, lines, _ = ipa(
            "--json",
            "--port",
            vm.path,
            "--state",
            str(tmp_path / "ipa.cbor"),
            "download",
            "-a",
            ac,
            env={"IPA_ES9_CA_FILE": str(smdp.ca_bundle)},
        )
        assert rc == 1
        err = lines[-1]["payload"]
        assert err["code"] == -1 and err["data"]["step"] == "authenticateClient"
        assert err["data"]["code"] and "/" in err["data"]["codeName"]  # subjectCode/reasonCode


def test_human_mode_download_progress_and_tls_refused_without_ca(lab_pki, tmp_path):
    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    del card
    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=lab_pki.root, port=0)) as smdp:
        ac = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address).activation_code
        rc, _out, err = ipa(
            "--card", str(tmp_path / "card.cbor"), "--state", str(tmp_path / "ipa.cbor"), "download", "-a", ac
        )
        assert rc == 3 and "certificate verify failed" in err.lower() and "initiateAuthentication" in err  # TLS: 3
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ipa.cli",
                "--card",
                str(tmp_path / "card.cbor"),
                "--state",
                str(tmp_path / "ipa.cbor"),
                "download",
                "-a",
                ac,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, IPA_ES9_CA_FILE=str(smdp.ca_bundle)),
        )
        assert proc.returncode == 0
        assert "... LoadBoundProfilePackage segment=" in proc.stderr
        assert "profile 8949000013000000011 installed" in proc.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["chip", "info"], {}, "configuration: no device"),
        (["--card", "/nonexistent/card.cbor", "chip", "info"], {}, "device: cannot load the software eUICC"),
        (["--card", "x", "--block-size", "0", "chip", "info"], {}, "--block-size must be 1..255"),
        (["chip", "info"], {"IPA_DEVICE_ROUTE": "pigeon"}, "device.route"),
        (["--card", "x", "download", "-a", "1$$X"], {}, "activation code"),
    ],
)
def test_errors_are_named_and_exit_non_zero(args, env, message, tmp_path):
    rc, lines, _ = ipa("--json", *args, env=env)
    assert rc != 0
    assert lines[-1]["type"] == "lpa" and lines[-1]["payload"]["code"] == -1
    assert message in lines[-1]["payload"]["message"]


async def run_ipa(*args: str, env: dict) -> tuple[int, list[dict], str]:
    import asyncio

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IPA_")}
    full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ipa.cli",
        *args,
        cwd=ROOT,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, [json.loads(x) for x in out.decode().splitlines() if x.strip()], err.decode()


async def test_poll_once_bootstraps_and_runs_a_package(make_rig):
    rig = await make_rig("http")
    env = {
        "IPA_EIM_URL": rig.config.eim.url,
        "IPA_EIM_PROVISIONING_FILE": rig.config.eim.provisioning_file,
        "IPA_IPA_STATE_FILE": rig.config.ipa.state_file,
    }
    card = ["--card", str(rig.card.state_path)]
    rc, lines, err = await run_ipa("--json", *card, "poll", "--once", env=env)
    assert rc == 0, err
    assert lines[-1]["payload"]["data"] == {"outcome": "idle", "detail": "noEimPackageAvailable", "package": None}
    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    rc, lines, err = await run_ipa("--json", *card, "poll", "--once", env=env)
    assert rc == 0, err
    assert lines[-1]["payload"]["data"]["outcome"] == "work"
    assert [ln["payload"]["message"] for ln in lines if ln["type"] == "progress"][:2] == [
        "LoadEuiccPackage",
        "EuiccPackageResult",
    ]
    assert rig.peer.result_kinds() == ["ePRAndNotifications"] and rig.peer.epr_verified == [True]
    rig.peer.drop = lambda name, der: True
    rc, lines, _ = await run_ipa("--json", *card, "poll", "--once", env=env)
    assert rc == 1 and lines[-1]["payload"]["message"].startswith("GetEimPackage: ")
    assert "HTTP 503" in lines[-1]["payload"]["message"]


async def test_poll_shows_the_cards_result_codes_and_listed_profiles(make_rig):
    """docs/cli.md: `ipa poll` reports what the eUICC answered per operation - a refused enable is not `success`
    (exit 1, the code named), and a listProfileInfo shows the profiles, not `listProfileInfoResult: null`."""
    rig = await make_rig("http")
    env = {
        "IPA_EIM_URL": rig.config.eim.url,
        "IPA_EIM_PROVISIONING_FILE": rig.config.eim.provisioning_file,
        "IPA_IPA_STATE_FILE": rig.config.ipa.state_file,
    }
    card = ["--card", str(rig.card.state_path)]
    rc, lines, err = await run_ipa("--json", *card, "poll", env=env)  # bootstrap; `--once` is optional
    assert rc == 0, err
    rig.peer.queue(rig.peer.psmo(rig.peer.enable("89490000000000000099")))  # no such profile
    rc, lines, err = await run_ipa("--json", *card, "poll", env=env)
    assert rc == 1, err
    final = lines[-1]["payload"]
    assert final["code"] == -1 and final["data"]["exit"] == 1 and final["data"]["step"] == "EuiccPackageResult"
    assert final["message"] == "EuiccPackageResult: the eUICC refused: enableResult iccidOrAidNotFound(1)"
    assert final["data"]["euiccPackageResult"]["results"] == [
        {"name": "enableResult", "code": 1, "codeName": "iccidOrAidNotFound(1)"}
    ]
    assert rig.peer.result_kinds()[-1] == "euiccPackageResult"  # the result still went to the eIM
    rig.peer.queue(rig.peer.psmo(rig.peer.list_profiles()))
    rc, lines, err = await run_ipa("--json", *card, "poll", env=env)
    assert rc == 0, err
    (entry,) = lines[-1]["payload"]["data"]["euiccPackageResult"]["results"]
    assert entry["name"] == "listProfileInfoResult" and entry["code"] == 0
    assert [(p["iccid"], p["profileState"]) for p in entry["profiles"]] == [(ICCID_A, "enabled"), (ICCID_B, "disabled")]
    # ipa status reads the state file the daemon keeps, without the card
    rc, lines, err = await run_ipa("--json", "status", env=env)
    assert rc == 0, err
    status = lines[-1]["payload"]["data"]
    assert status["eid"] == EID_TEXT and status["lastContact"] is not None and status["failures"] == 0
    assert status["queue"] == [] and status["binding"] == "auto"
    # an eIM that cannot be reached is a connection failure (3), not a refusal (1)
    rc, lines, err = await run_ipa("--json", *card, "poll", env={**env, "IPA_EIM_URL": "http://127.0.0.1:1"})
    assert rc == 3, (lines, err)
    assert lines[-1]["payload"]["data"]["exit"] == 3 and lines[-1]["payload"]["message"].startswith("GetEimPackage: ")


def test_port_busy_names_the_process_holding_it(tmp_path):
    """pyserial locks the port with flock; a second program gets `PortBusy`. The message names the holder (from
    /proc/locks), not only a hint about ModemManager; exit 3 (port)."""
    import fcntl

    master, slave = os.openpty()
    path = os.ttyname(slave)
    holder = os.open(path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what `ipa run` holds through pyserial (exclusive=True)
    try:
        rc, lines, _ = ipa("--json", "--port", path, "--state", str(tmp_path / "s.cbor"), "chip", "info")
    finally:
        os.close(holder)
        os.close(slave)
        os.close(master)
    assert rc == 3
    payload = lines[-1]["payload"]
    assert payload["data"]["step"] == "lock port" and payload["data"]["exit"] == 3
    assert payload["data"]["holder"].startswith(f"pid {os.getpid()} (")
    assert f"is held by pid {os.getpid()}" in payload["message"]
