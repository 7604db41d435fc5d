"""Start real ``eim serve`` processes for tests (free port, own config file, log file) and stop them."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.envelope import json_items, json_result  # noqa: F401  (re-exported for the eIM tests)
from tests.services import free_port


def eim_command() -> list[str]:
    script = Path(sys.executable).parent / "eim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "eim.cli"]


@dataclass
class EimServer:
    proc: subprocess.Popen
    port: int
    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def esipa(self) -> str:
        return self.url + "/gsma/rsp2/asn1"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_config(
    path: Path,
    *,
    store_url: str,
    lab_pki: Path,
    port: int,
    data_dir: Path,
    extra: str = "",
    relay: bool = False,
    relay_extra: str = "",
) -> None:
    """``relay_extra``: more ``[relay]`` keys (one per line)."""
    path.write_text(
        f"""[eim]
eim_id = "eim.lab.test"
data_dir = "{data_dir}"
lab_pki = "{lab_pki}"

[store]
url = "{store_url}"

[http]
host = "127.0.0.1"
port = {port}

[operations]
sweep_interval_s = 0.5

[relay]
enabled = {"true" if relay else "false"}
{relay_extra}

[log]
level = "INFO"
json = true
{extra}
"""
    )


def start_eim(
    tmp: Path,
    *,
    store_url: str,
    lab_pki: Path,
    name: str = "eim",
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra_config: str = "",
    relay: bool = False,
    relay_config: str = "",
    timeout: float = 30.0,
) -> EimServer:
    """``relay``: ``[relay] enabled`` (the lab PKI's CA bundle verifies SM-DP+s); ``relay_config``: more keys."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / f"{name}.toml"
    write_config(
        cfg,
        store_url=store_url,
        lab_pki=lab_pki,
        port=port,
        data_dir=tmp / f"{name}-data",
        extra=extra_config,
        relay=relay,
        relay_extra=relay_config,
    )
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("EIM_CONFIG", None)
    return spawn_eim(cfg, port, tmp / f"{name}.log", full_env, server_env=env or {}, timeout=timeout)


def spawn_eim(
    cfg: Path,
    port: int,
    log: Path,
    env: dict[str, str],
    *,
    server_env: dict[str, str] | None = None,
    base_url: str | None = None,
    verify: ssl.SSLContext | bool = False,
    timeout: float = 30.0,
) -> EimServer:
    """``eim serve`` with ``cfg`` and the whole environment ``env``, its output in ``log``, once ``/healthz`` at
    ``base_url`` (default its plain-HTTP URL; ``verify`` for HTTPS) answers 200; killed if it does not."""
    with log.open("ab") as out:
        proc = subprocess.Popen([*eim_command(), "--config", str(cfg), "serve"], stdout=out, stderr=out, env=env)
    server = EimServer(proc, port, cfg, log, server_env or {})
    health = (base_url or server.url) + "/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"eim serve exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(health, verify=verify, timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"eim serve did not come up on {port}:\n{server.log_text()[-3000:]}")


def device_secret(config: Path, eid: str, env: dict[str, str]) -> str:
    """``eim device-secret set <eid>`` with ``config``: the device's new token."""
    out = subprocess.run(
        [*eim_command(), "--config", str(config), "device-secret", "set", eid],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def run_cli(server: EimServer | None, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    base = [*eim_command()]
    if server is not None or url is not None:
        base += ["--url", url or server.url]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
