"""Installs that fit their machine (`make install-check`, run by `make fresh-check`; ~1 min, so outside `make
test`): the wheel built from this tree, installed with each extra into a fresh virtual environment from the
package index. The device set (`[ipa]`) runs `ipa` and leaves the server stack out (`eim serve` names the missing
extra, exit 2); the server set (`[server]`) runs `eim`. Prints the size of each environment (docs/install.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.deploy.units import ROOT

SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "asyncpg", "prometheus_client", "httptools")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("sgp32_stack-*.whl")
    return whl


def install(tmp_path: Path, wheel: Path, extra: str) -> Path:
    env_dir = tmp_path / f"venv-{extra}"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[{extra}]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env_dir


def run(env_dir: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(env_dir / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, cwd="/", timeout=60
    )


def site_packages(env_dir: Path) -> Path:
    (sp,) = env_dir.glob("lib/python3*/site-packages")
    return sp


def test_device_install_runs_the_ipa_and_leaves_the_server_out(tmp_path, wheel):
    env_dir = install(tmp_path, wheel, "ipa")
    sp = site_packages(env_dir)
    assert [p for p in SERVER_ONLY if (sp / p).exists()] == []
    assert run(env_dir, "ipa", "--help").returncode == 0
    assert run(env_dir, "fwbridge", "--help").returncode == 0
    proc = run(env_dir, "eim", "serve", "--config", "/nonexistent.toml")
    assert proc.returncode == 2 and "[server]" in proc.stderr + proc.stdout, proc.stderr
    tooling = sum(du(sp / p) for p in ("pip", "setuptools", "pkg_resources", "_distutils_hack") if (sp / p).exists())
    print(f"\ndevice install [ipa]: venv {du(env_dir) / 1e6:.1f} MB, of it pip/setuptools {tooling / 1e6:.1f} MB")


def test_server_install_runs_the_eim(tmp_path, wheel):
    env_dir = install(tmp_path, wheel, "server")
    assert run(env_dir, "eim", "--help").returncode == 0
    assert run(env_dir, "smdpp", "--help").returncode == 0
    print(f"\nserver install [server]: venv {du(env_dir) / 1e6:.1f} MB")
