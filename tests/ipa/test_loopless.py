"""One-shot ES10 commands on a local card run without an event loop (ipa.loopless, docs/performance.md 5b)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from euicc.card import SoftEuicc
from rsp import loopless
from tests.ipa.conftest import EID_TEXT

ROOT = Path(__file__).resolve().parents[2]

# runs `ipa` in a fresh interpreter and reports which heavy modules the command imported
PROBE = (
    "import json, sys; from ipa.cli import main; rc = main(sys.argv[1:]); "
    "print(json.dumps({'rc': rc, 'asyncio': 'asyncio' in sys.modules, 'x509': 'cryptography.x509' in sys.modules}))"
)


def _probe(*args: str) -> tuple[dict, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    answer, modules = proc.stdout.splitlines()
    return json.loads(answer), json.loads(modules)


def test_chip_info_on_a_card_imports_neither_asyncio_nor_x509_and_binds_the_state(lab_pki, tmp_path):
    SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    state = tmp_path / "ipa.cbor"
    answer, modules = _probe("--json", "--card", str(tmp_path / "card.cbor"), "--state", str(state), "chip", "info")
    assert modules == {"rc": 0, "asyncio": False, "x509": False}
    data = answer["payload"]["data"]
    assert data["eidValue"] == EID_TEXT
    info2 = data["EUICCInfo2"]  # the CI key ids, read from the certificates' DER (rsp.cert_ids)
    ci_ski = lab_pki.ci_certs()[0].extensions.get_extension_for_oid
    from cryptography.x509.oid import ExtensionOID

    assert info2["euiccCiPKIdListForVerification"] == [ci_ski(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest.hex()]
    # the state file was written without a loop, and is tied to this card (issue 17)
    assert cbor2.loads(state.read_bytes())["eid"] == bytes.fromhex(EID_TEXT)


def test_chip_info_through_a_modem_runs_without_asyncio(lab_pki, tmp_path):
    from firmware_bridge.virtual_modem import VirtualModem

    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    with VirtualModem(card, baud=115200) as vm:
        args = ("--json", "--port", vm.path, "--state", str(tmp_path / "ipa.cbor"))
        answer, modules = _probe(*args, "chip", "info")
        assert modules == {"rc": 0, "asyncio": False, "x509": False}
        assert answer["payload"]["data"]["eidValue"] == EID_TEXT
        answer, modules = _probe(*args, "profile", "list")
        assert modules["rc"] == 0 and not modules["asyncio"] and answer["payload"]["data"] == []


def test_a_command_that_signs_still_works_on_the_lazily_loaded_identity(lab_pki, tmp_path):
    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor")
    again = SoftEuicc.load(tmp_path / "card.cbor")
    assert again.identity.ci_pkids_for_signing() == card.identity.ci_pkids_for_signing()
    assert again.identity.key.private_numbers() == card.identity.key.private_numbers()


def test_run_returns_the_value_of_a_coroutine_that_never_waits():
    async def answer() -> int:
        return await loopless.blocking(lambda: 42)

    assert loopless.run(answer()) == 42


class _Port:
    """An awaitable that suspends, as a read on a serial port or a socket would."""

    def __await__(self):
        yield "the port"


def test_run_refuses_a_coroutine_that_waits_and_runs_its_cleanup():
    cleaned = []

    async def reader() -> None:
        try:
            await _Port()
        finally:
            cleaned.append(True)

    with pytest.raises(loopless.NeedsLoop, match="waited for 'the port': it needs an event loop"):
        loopless.run(reader())
    assert cleaned == [True]


async def test_blocking_goes_to_a_thread_under_a_loop():
    import threading

    main = threading.get_ident()
    assert loopless.loop_running()
    assert await loopless.blocking(threading.get_ident) != main
