"""deploy/install-system-deps.sh, which `make venv` runs first (docs/install.md): names every Debian package the
tests and the demo need, prints the one command to run when it cannot install them, and stays silent when all
are there. (As root it runs apt-get: `make fresh-check` proves that in a clean Debian chroot.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.deploy.units import ROOT

SCRIPT = ROOT / "deploy" / "install-system-deps.sh"
NEEDED = {"mosquitto", "postgresql", "chromium", "chromium-driver", "curl", "systemd", "autoconf", "automake",
          "libtool", "pkg-config", "python3-venv", "git"}  # fmt: skip


def shim(tmp_path: Path, installed: set[str], uid: int) -> dict[str, str]:
    """A PATH where dpkg-query knows only ``installed`` and id prints ``uid``; apt-get records its call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dpkg-query").write_text(
        "#!/bin/sh\nfor a; do pkg=$a; done\n"  # the package is the last argument
        'for p in $INSTALLED; do [ "$p" = "$pkg" ] && echo "install ok installed" && exit 0; done\nexit 1\n'
    )
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/apt-calls\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "INSTALLED": " ".join(sorted(installed))}


def test_as_a_user_it_prints_the_one_command_and_installs_nothing(tmp_path):
    env = shim(tmp_path, installed={"curl", "git"}, uid=1000)
    proc = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (command,) = [ln.strip() for ln in proc.stdout.splitlines() if "apt-get install" in ln]
    assert command.startswith("sudo apt-get install -y ")
    named = set(command.removeprefix("sudo apt-get install -y ").split())
    assert NEEDED - {"curl", "git"} <= named and not named & {"curl", "git"}
    assert not (tmp_path / "apt-calls").exists()


def test_silent_when_everything_is_installed_or_told_to_skip(tmp_path):
    env = shim(tmp_path, installed=NEEDED | {"openssl", "build-essential", "python3-dev"}, uid=0)
    proc = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    env = shim(tmp_path / "x", installed=set(), uid=0)
    proc = subprocess.run(["sh", str(SCRIPT)], env={**env, "SYSDEPS": "skip"}, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert not (tmp_path / "x" / "apt-calls").exists()
