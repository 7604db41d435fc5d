"""Each console script says which extra it needs, in one line with exit 2, when that extra is not installed (a
device installs `sgp32-stack[ipa]` and still has an `eim` script). Run with site-packages off (`python -S`): the
standard library and this repository only, as on a machine without the extra's packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("command", "extra"), [("eim", "server"), ("smdpp", "server"), ("ipa", "ipa"), ("fwbridge", "ipa")]
)
def test_missing_extra_is_one_line_and_exit_2(command, extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", f"from rsp.launch import {command}; {command}()", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"{command}: this command needs the [{extra}] extra")
    assert f"pip install 'sgp32-stack[{extra}]'" in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["eim", "smdpp", "ipa", "fwbridge", "euicc", "rsp"])
def test_installed_scripts_run_through_the_launcher(command):
    script = Path(sys.executable).parent / command
    assert script.exists(), f"{command} is not installed as a console script"
    assert "rsp.launch" in script.read_text()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr
