"""Secrets and state are created 0600 in 0700 directories whatever the umask: the eIM store (with its WAL and
shared-memory files), the IPA state file, the lab PKI's keys, and `eim psk set ... > file`."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eim.store.sqlite import SqliteStore
from ipa.state import StateStore
from rsp.files import private_dir, private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o000)  # the worst case: everything the process creates is world-writable unless it says so
    try:
        yield
    finally:
        os.umask(old)


def test_private_dir_and_file(tmp_path, loose_umask):
    target = tmp_path / "a" / "b" / "secret"
    assert private_file(target) is False
    assert mode(target) == 0o600 and mode(target.parent) == 0o700 and mode(target.parent.parent) == 0o700
    target.chmod(0o644)
    assert private_file(target) is True and mode(target) == 0o600
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    assert private_dir(existing) == existing and mode(existing) == 0o755  # an administrator's directory stays


def test_eim_store_and_its_wal_are_0600(tmp_path, loose_umask):
    db = tmp_path / "data" / "eim.db"

    async def go():
        store = SqliteStore(str(db))
        await store.open()
        await store.close()

    asyncio.run(go())
    files = [p for p in db.parent.iterdir() if p.name.startswith("eim.db")]
    assert db in files
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(db.parent) == 0o700


def test_existing_world_readable_store_is_tightened(tmp_path, caplog):
    db = tmp_path / "eim.db"
    db.touch()
    db.chmod(0o644)

    async def go():
        store = SqliteStore(str(db))
        await store.open()
        await store.close()

    asyncio.run(go())
    assert mode(db) == 0o600
    assert any("0600" in r.getMessage() for r in caplog.records)


def test_ipa_state_file_and_directory(tmp_path, loose_umask):
    path = tmp_path / "var" / "ipa" / "state.cbor"

    async def go():
        st = StateStore(path)
        await st.commit()
        await st.aclose()

    asyncio.run(go())
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_eim_psk_set_into_a_shell_redirect_is_0600(tmp_path):
    out = tmp_path / "device.psk"
    psk = tmp_path / "psk.txt"
    eid = "89049032123451234512345678901235"
    script = f"umask 022; {sys.executable} -m eim.cli psk set {eid} --generate --file {psk} > {out}"
    subprocess.run(["sh", "-c", script], check=True, capture_output=True, timeout=60)
    assert len(out.read_text().strip()) == 32  # the 16-byte key in hex, and nothing else
    assert mode(out) == 0o600 and mode(psk) == 0o600


def test_lab_pki_directory_0700_and_keys_0600(tmp_path, loose_umask):
    from rsp.pki import create_lab_pki

    root = tmp_path / "pki"
    create_lab_pki(root, curves=("nist",), hosts=("localhost",))
    assert mode(root) == 0o700
    keys = list(root.rglob("*.key.pem"))
    assert keys and {mode(k) for k in keys} == {0o600}
    assert {mode(d) for d in root.rglob("*") if d.is_dir()} == {0o700}
