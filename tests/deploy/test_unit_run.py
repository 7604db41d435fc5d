"""The units' ExecStart lines run as systemd runs them (Type=notify): READY=1 once serving, WATCHDOG=1 pings from
the event loop at half of WATCHDOG_USEC, STOPPING=1 and exit 0 on SIGTERM; the IPA's idle polls leave the journal
quiet at the unit's log level. Before, `eim serve` sent no notification (systemd would have killed a Type=notify
eIM at TimeoutStartSec) and neither process pinged a watchdog."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import httpx
import pytest

from euicc.card import SoftEuicc
from firmware_bridge.virtual_modem import VirtualModem
from rsp.pki import create_lab_pki
from tests.deploy.units import NotifySocket, console_script, exec_start, unit_environment
from tests.eim.servers import write_config
from tests.ipa.conftest import EID, EID_TEXT, write_provisioning
from tests.ipa.peer import ScriptedEim, start_http
from tests.services import free_port

WATCHDOG_USEC = "400000"  # pings every 0.2 s


def service_env(unit: str, notify: NotifySocket, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPA_", "EIM_"))}
    env.update(unit_environment(unit))
    env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=WATCHDOG_USEC, **overrides)
    return env


def test_eim_unit_notifies_ready_pings_the_watchdog_and_stops(tmp_path):
    argv = exec_start("eim.service")
    port = free_port()
    cfg = tmp_path / "eim.toml"
    pki = create_lab_pki(tmp_path / "pki", curves=("nist",))
    write_config(cfg, store_url=f"sqlite:///{tmp_path / 'eim.db'}", lab_pki=pki.root, port=port, data_dir=tmp_path)
    i = argv.index("--config")
    argv = [*console_script("eim"), *argv[1:i], "--config", str(cfg), *argv[i + 2 :]]
    notify = NotifySocket()
    proc = subprocess.Popen(
        argv, env=service_env("eim.service", notify), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert notify.wait_for("READY=1", 60), (notify.messages, proc.poll())
        # READY=1 means serving: the port answers now, without a retry loop
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert notify.wait_for("WATCHDOG=1", 10) and notify.wait_for("WATCHDOG=1", 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        notify.wait_for("STOPPING=1", 1)
        notify.close()
    assert proc.returncode == 0, out
    assert "STOPPING=1" in notify.messages


@pytest.mark.parametrize("verbose", [False, True], ids=["unit-level", "info"])
async def test_ipa_unit_runs_on_a_modem_notifies_and_keeps_idle_polls_out_of_the_journal(tmp_path, verbose):
    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID_TEXT,))
    card = SoftEuicc.create(pki.root, EID_TEXT, tmp_path / "card.cbor")
    peer = ScriptedEim(pki.eim_key(), None, EID)  # answers every poll: no package
    server = await start_http(peer)
    prov = write_provisioning(pki, tmp_path, fqdn=server.url.removeprefix("http://"))
    cfg = tmp_path / "ipa.toml"
    cfg.write_text(
        f'[eim]\nurl = "{server.url}"\nprovisioning_file = "{prov}"\n'
        f'[ipa]\nstate_file = "{tmp_path / "state.cbor"}"\n'
        "[poll]\ninterval = 0.2\nmin_interval = 0.1\njitter = 0\n"
    )
    argv = exec_start("ipa.service")
    argv = [*console_script("ipa"), *(["-v"] if verbose else []), *argv[1:]]
    notify = NotifySocket()
    loop = asyncio.get_running_loop()
    try:
        with VirtualModem(card) as vm:
            env = service_env("ipa.service", notify, IPA_CONFIG=str(cfg), IPA_DEVICE_PORT=vm.path)
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                assert await loop.run_in_executor(None, notify.wait_for, "READY=1", 60), notify.messages
                for _ in range(300):
                    if sum(r.name == "getEimPackageRequest" for r in peer.received) >= 4:
                        break
                    await asyncio.sleep(0.1)
                assert sum(r.name == "getEimPackageRequest" for r in peer.received) >= 4  # idle polls happened
                assert await loop.run_in_executor(None, notify.wait_for, "WATCHDOG=1", 10)
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert await loop.run_in_executor(None, notify.wait_for, "STOPPING=1", 2) or "STOPPING=1" in notify.messages
    finally:
        notify.close()
        await server.stop()
    assert proc.returncode == 0, err
    journal = err.decode().splitlines()
    # a bootstrap and several idle polls: at INFO (-v) the change to idle once, then nothing per poll
    assert [ln.split(": ", 1)[-1] for ln in journal if "poll:" in ln] == (
        ["poll: idle noEimPackageAvailable"] if verbose else []
    ), journal
    if not verbose:  # at the unit's level: start and stop
        assert [ln.split(": ", 1)[-1].split(":")[0] for ln in journal] == ["ipa running", "ipa stopped"], journal
