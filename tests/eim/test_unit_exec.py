"""The shipped systemd unit's ExecStart line starts an eIM: `eim serve --config FILE` (global options after the
subcommand) as well as `eim --config FILE serve`. Before, the unit's form exited with 'unrecognized arguments'
and systemd restarted it in a loop."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx

from rsp.pki import create_lab_pki
from tests.eim.servers import eim_command, write_config
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def exec_start() -> list[str]:
    for line in (ROOT / "deploy" / "systemd" / "eim.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError("eim.service has no ExecStart")


def test_unit_exec_start_line_serves(tmp_path):
    argv = exec_start()
    assert Path(argv[0]).name == "eim" and "--config" in argv
    port = free_port()
    cfg = tmp_path / "eim.toml"
    pki = create_lab_pki(tmp_path / "pki", curves=("nist",))
    write_config(cfg, store_url=f"sqlite:///{tmp_path / 'eim.db'}", lab_pki=pki.root, port=port, data_dir=tmp_path)
    i = argv.index("--config")
    argv = [*eim_command(), *argv[1:i], "--config", str(cfg), *argv[i + 2 :]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_global_options_before_or_after_the_subcommand():
    from eim.cli import parser

    p = parser()
    assert p.parse_args(["serve", "--config", "a.toml"]).config == "a.toml"
    assert p.parse_args(["--config", "b.toml", "serve"]).config == "b.toml"
    args = p.parse_args(["euicc", "list", "--json", "--url", "http://h:1"])
    assert args.json is True and args.url == "http://h:1"
    assert p.parse_args(["--json", "euicc", "list"]).json is True
