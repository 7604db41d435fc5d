"""The README's "A first look by hand" commands, run as written (in a temporary directory), so the README
cannot rot. Background services are stopped afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent


def first_look_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## A first look by hand\n```\n(.*?)```", text, re.S)
    assert block, "README lost its 'A first look by hand' block"
    lines = []
    for line in block.group(1).splitlines():
        cmd = line.split("  #")[0].strip()
        if cmd and not cmd.startswith("make venv"):  # the venv is the one running the tests
            lines.append(cmd)
    return lines


def test_readme_first_look_runs_as_written(tmp_path):
    commands = first_look_commands()
    assert any(c.startswith("ipa ") for c in commands) and any(c.startswith("rsp decode") for c in commands)
    port = free_port()
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    for cmd in commands:
        cmd = cmd.replace("--port 8443", f"--port {port}")
        if cmd.startswith("ipa "):
            script += "for i in $(seq 50); do [ -e lab/modem ] && break; sleep 0.1; done\n"
        script += cmd + "\n"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "EID        89999000000000000000000000000130" in res.stdout  # ipa chip info through the virtual modem
    assert '"eimPackageError": 1' in res.stdout  # rsp decode --auto BF4F03020101
    assert (tmp_path / "lab" / "pki" / "manifest.json").exists() and (tmp_path / "lab" / "card.cbor").exists()
