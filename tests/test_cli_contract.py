"""The CLI contract of docs/cli.md, run through the installed console scripts (rsp.launch -> each tool's main):
the JSON-lines envelope and the shared exit codes on each tool's main error paths, global options after the
subcommand, ``--version``, a reader that closes stdout early (``| head -1``) and Ctrl-C (SIGINT) in the middle of
``ipa download``, which must cancel the session on the card and at the SM-DP+."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsp import cli_contract as cc
from tests.services import free_port

BIN = Path(sys.executable).parent
TOOLS = ("ipa", "eim", "fwbridge", "smdpp", "euicc", "rsp")


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPA_", "EIM_"))}
    env.update(extra or {})
    return env


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout, env=tool_env(env)
    )


def final(proc: subprocess.CompletedProcess[str]) -> dict:
    """The last stdout line, checked to be the contract's final envelope line."""
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert lines, (proc.stdout, proc.stderr)
    for line in lines:
        assert set(line) == {"type", "payload"} and line["type"] in ("progress", "item", "lpa"), line
        assert set(line["payload"]) == {"code", "message", "data"}, line
    assert [x["type"] for x in lines].count("lpa") == 1 and lines[-1]["type"] == "lpa"
    return lines[-1]["payload"]


def assert_error(proc: subprocess.CompletedProcess[str], exit_code: int, *words: str) -> dict:
    assert proc.returncode == exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    payload = final(proc)
    assert payload["code"] == -1 and payload["data"]["exit"] == exit_code, payload
    for word in words:
        assert word in payload["message"], payload
    return payload


@pytest.mark.parametrize("tool", TOOLS)
def test_version_from_the_distribution(tool):
    proc = run(tool, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"{tool} {cc.version()}", proc
    assert cc.version() != "unknown"  # the test environment has the distribution installed


@pytest.mark.parametrize("tool", ["ipa", "eim", "fwbridge", "smdpp", "euicc"])
def test_usage_error_is_exit_2_with_the_envelope(tool):
    proc = run(tool, "--json", "no-such-command")
    assert_error(proc, cc.EXIT_USAGE, "usage: ")
    assert "invalid choice" in proc.stderr


def test_main_error_paths_each_tool(tmp_path):
    closed = free_port()
    # ipa: a port that is not there is a port error (3) naming the step, --json after the subcommand
    p = assert_error(run("ipa", "--port", "/dev/no-such-modem", "chip", "info", "--json"), cc.EXIT_CONNECTION)
    assert "/dev/no-such-modem" in p["message"] and p["data"]["step"] == "open port"
    # ipa: no device at all, a bad baud rate: usage (2), nothing opened
    assert_error(run("ipa", "--json", "chip", "info"), cc.EXIT_USAGE, "configuration: no device")
    for baud in ("0", "1", "12345"):
        assert_error(run("ipa", "--json", "--port", "/dev/x", "--baud", baud, "chip", "info"), 2, "baud")
    # ipa status without a state file: refused (1), and `poll` no longer needs --once to parse
    p = assert_error(run("ipa", "status", "--json", "--state", str(tmp_path / "none.cbor")), 1, "no state file")
    assert p["data"]["step"] == "status"
    proc = run("ipa", "--json", "poll")  # parsed (no "--once is required"); then no device: usage
    assert_error(proc, cc.EXIT_USAGE, "configuration: no device")
    # eim: nothing listening is a connection error (3), the global options after the subcommand
    assert_error(
        run("eim", "notification", "list", "--json", "--url", f"http://127.0.0.1:{closed}"),
        cc.EXIT_CONNECTION,
        "list notifications: cannot reach the eIM",
    )
    # eim: a CA file that is not there is a usage error (2)
    assert_error(
        run("eim", "--json", "--ca-file", str(tmp_path / "nope.pem"), "--url", "https://127.0.0.1:1", "euicc", "list"),
        cc.EXIT_USAGE,
        "--ca-file",
    )
    # eim serve: a TLS certificate that is not there is named, a configuration error (2), not a FileNotFoundError
    cfg = tmp_path / "eim.toml"
    cfg.write_text(f'[http]\nhost = "127.0.0.1"\nport = {closed}\ntls_cert = "{tmp_path}/no.pem"\ntls_key = "k"\n')
    proc = run("eim", "serve", "--config", str(cfg), "--json")
    assert_error(proc, cc.EXIT_USAGE, f"[http] tls_cert {tmp_path}/no.pem: No such file or directory")
    # fwbridge: the same missing port, the same exit code as ipa (3), --json before the subcommand now
    p = assert_error(run("fwbridge", "--json", "probe", "--port", "/dev/no-such-modem"), cc.EXIT_CONNECTION)
    assert p["data"]["step"] == "open port" and p["data"]["port"] == "/dev/no-such-modem"
    assert run("fwbridge", "probe", "--port", "/dev/x", "--baud", "1").returncode == cc.EXIT_USAGE
    # smdpp: an unknown order is refused (1)
    assert_error(run("smdpp", "order", "show", "NOPE", "--data", str(tmp_path / "d"), "--json"), 1, "no order")
    # euicc: a state file that is not there is a bad option value (2)
    assert_error(run("euicc", "--json", "show", "--state", str(tmp_path / "no.json")), 2, "show card")
    # rsp: malformed input, one line, exit 2, no traceback
    proc = run("rsp", "decode", "--auto", "ZZ")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_empty_listings_say_so(tmp_path):
    proc = run("smdpp", "order", "list", "--data", str(tmp_path / "d"))
    assert proc.returncode == 0 and proc.stdout.strip() == "no orders"
    proc = run("smdpp", "order", "list", "--data", str(tmp_path / "d"), "--json")
    assert proc.returncode == 0 and final(proc) == {"code": 0, "message": "success", "data": {"count": 0}}


def _closed_stdout(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run with a stdout pipe whose reader is already gone (what `| head -1` does once it has its line)."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], stdout=w, stderr=subprocess.PIPE, timeout=60, env=tool_env(env)
        )
    finally:
        os.close(w)
    return proc


def test_reader_closing_stdout_is_no_traceback(tmp_path):
    from euicc.card import SoftEuicc
    from rsp.pki import create_lab_pki
    from tests.ipa.conftest import EID_TEXT

    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID_TEXT,))
    SoftEuicc.create(pki.root, EID_TEXT, tmp_path / "card.cbor")
    psk = tmp_path / "coaps.psk"
    psk.write_text("89049032123451234512345678901235:" + "00" * 16 + "\n")
    cases = [
        ["rsp", "types", "--all"],
        ["smdpp", "profile", "list", "--json"],
        ["fwbridge", "profiles"],
        ["euicc", "show", "--state", str(tmp_path / "card.cbor")],
        ["ipa", "--json", "--card", str(tmp_path / "card.cbor"), "--state", str(tmp_path / "s.cbor"), "chip", "info"],
        ["eim", "psk", "list", "--file", str(psk)],
    ]
    for argv in cases:
        proc = _closed_stdout(argv)
        err = proc.stderr.decode()
        assert proc.returncode == cc.EXIT_PIPE, (argv, proc.returncode, err)
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, (argv, err)
    # and through a real `| head -1` in a shell with pipefail: the first line, then nothing on stderr
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{BIN / 'rsp'} types --all | head -1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=tool_env(),
    )
    assert len(proc.stdout.splitlines()) == 1 and proc.stderr == "" and proc.returncode == 0


def _read_until(proc: subprocess.Popen, want, timeout: float = 60) -> list[dict]:
    """JSON lines from proc.stdout until ``want(line)``; all lines read."""
    lines: list[dict] = []
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            lines.append(json.loads(raw))
            if want(lines[-1]):
                return lines
    raise AssertionError(f"not seen; lines so far: {lines}")


def test_ctrl_c_in_download_cancels_the_session_and_says_where(tmp_path):
    from euicc.card import SoftEuicc
    from firmware_bridge.virtual_modem import VirtualModem
    from rsp.pki import create_lab_pki
    from smdpp.config import SmdppConfig
    from smdpp.orders import create_order
    from smdpp.server import running_server
    from tests.ipa.conftest import EID_TEXT

    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID_TEXT,))
    card = SoftEuicc.create(pki.root, EID_TEXT, tmp_path / "card.cbor")
    with (
        running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=pki.root, port=0)) as smdp,
        VirtualModem(card, quirks="slow=0.05") as vm,
    ):
        order = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address)
        matching_id = order.activation_code.split("$")[2]
        proc = subprocess.Popen(
            [
                str(BIN / "ipa"),
                "download",
                "-a",
                order.activation_code,
                "--ca-file",
                str(smdp.ca_bundle),
                "--json",
                "--port",
                vm.path,
                "--state",
                str(tmp_path / "ipa.cbor"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=tool_env(),
            # Ctrl-C as in a terminal: a shell's background job (a CI run started with `&`) hands its children
            # SIGINT ignored, and Python keeps an ignored SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            seen = _read_until(
                proc,
                lambda ln: (
                    ln["payload"]["message"] == "LoadBoundProfilePackage"
                    and ln["payload"]["data"].get("segment", 0) >= 2
                ),
            )
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err_text = err.decode()
        lines = seen + [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        assert proc.returncode == cc.EXIT_INTERRUPTED, err_text
        assert "Traceback" not in err_text and "KeyboardInterrupt" not in err_text, err_text
        last = lines[-1]
        assert last["type"] == "lpa" and last["payload"]["code"] == -1, last
        data = last["payload"]["data"]
        assert data["exit"] == 130 and data["step"] == "LoadBoundProfilePackage" and data["segment"] >= 2
        assert data["segments"] >= data["segment"]
        assert data["cancelSessionReason"] == "postponed(1)" and data["smdpCancelled"] is True, data
        assert last["payload"]["message"].startswith("LoadBoundProfilePackage (segment ")
        assert "interrupted; session cancelled (postponed(1))" in last["payload"]["message"]
        steps = [ln["payload"]["message"] for ln in lines if ln["type"] == "progress"]
        assert steps[-2:] == ["CancelSession", "cancelSession"]
        # the SM-DP+ took the cancelSession: postponed puts the order back to released, usable again
        assert smdp.ctx.store.get(matching_id).state == "released"


def test_proc_locks_parser_reads_the_holder_and_skips_waiters():
    dev = os.makedev(0, 5)
    text = (
        "1: FLOCK  ADVISORY  WRITE 4242 00:05:1093 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 4343 00:05:1093 0 EOF\n"  # a waiter, not the holder
        "2: POSIX  ADVISORY  WRITE 77 00:05:9999 0 EOF\n"
        "3: OFDLCK ADVISORY  READ  -1 00:05:1093 0 EOF\n"
    )
    assert cc.parse_proc_locks(text, dev, 1093) == [4242]
    assert cc.parse_proc_locks(text, dev, 1) == []


@given(st.text(alphabet=st.sampled_from("0123456789abcdef: ->FLOCKWRITE\n"), max_size=400))
def test_proc_locks_parser_takes_any_text(text):
    pids = cc.parse_proc_locks(text, os.makedev(0, 5), 1093)
    assert all(isinstance(p, int) and p >= 0 for p in pids)


@given(st.text(max_size=80), st.text(max_size=80))
def test_step_is_named_once(step, reason):
    message = cc.step_message(step, f"{step}: {step}: {reason}")
    if step:
        assert message.startswith(f"{step}: ") and not message[len(step) + 2 :].startswith(f"{step}: ")


def test_modem_gone_mid_download_names_the_step_segment_and_at_command(tmp_path):
    from euicc.card import SoftEuicc
    from firmware_bridge.virtual_modem import VirtualModem
    from rsp.pki import create_lab_pki
    from smdpp.config import SmdppConfig
    from smdpp.orders import create_order
    from smdpp.server import running_server
    from tests.ipa.conftest import EID_TEXT

    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID_TEXT,))
    card = SoftEuicc.create(pki.root, EID_TEXT, tmp_path / "card.cbor")
    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=pki.root, port=0)) as smdp:
        vm = VirtualModem(card, quirks="slow=0.05")
        path = vm.start()
        order = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address)
        proc = subprocess.Popen(
            [
                *(str(BIN / "ipa"), "--json", "--port", path, "--state", str(tmp_path / "s.cbor"), "download"),
                *("-a", order.activation_code, "--ca-file", str(smdp.ca_bundle)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=tool_env(),
        )
        try:
            seen = _read_until(
                proc,
                lambda ln: (
                    ln["payload"]["message"] == "LoadBoundProfilePackage"
                    and ln["payload"]["data"].get("segment", 0) >= 2
                ),
            )
            vm.stop()  # the modem is unplugged
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = seen + [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    assert proc.returncode == cc.EXIT_CONNECTION, err.decode()
    payload = lines[-1]["payload"]
    assert payload["code"] == -1 and lines[-1]["type"] == "lpa", payload
    data = payload["data"]
    assert data["step"] == "LoadBoundProfilePackage" and data["segment"] >= 2 and data["exit"] == 3, data
    assert data["at"].startswith("AT+C"), data  # the AT command in flight (CGLA or CSIM)
    assert payload["message"].startswith(f"LoadBoundProfilePackage (segment {data['segment']}/{data['segments']}): ")
    assert payload["message"].count("LoadBoundProfilePackage") == 1 and "gone" in payload["message"], payload


def test_download_flags_ca_file_and_insecure_with_its_warning(tmp_path):
    from euicc.card import SoftEuicc
    from rsp.pki import create_lab_pki
    from smdpp.config import SmdppConfig
    from smdpp.orders import create_order
    from smdpp.server import running_server
    from tests.ipa.conftest import EID_TEXT

    pki = create_lab_pki(tmp_path / "pki", curves=("nist",), eids=(EID_TEXT,))
    SoftEuicc.create(pki.root, EID_TEXT, tmp_path / "card.cbor")
    card = ["--card", str(tmp_path / "card.cbor"), "--state", str(tmp_path / "s.cbor")]
    with running_server(SmdppConfig(data_dir=tmp_path / "smdp", pki_dir=pki.root, port=0)) as smdp:
        first = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address).activation_code
        proc = run("ipa", "download", "-a", first, "--json", *card)  # no CA: TLS refused, a connection error
        assert_error(proc, cc.EXIT_CONNECTION, "initiateAuthentication: ", "CERTIFICATE_VERIFY_FAILED")
        assert "WARNING" not in proc.stderr
        proc = run("ipa", "download", "-a", first, "--ca-file", str(smdp.ca_bundle), "--json", *card)
        assert proc.returncode == 0 and final(proc)["data"]["iccid"], proc.stderr
        second = create_order(smdp.ctx.store, profile="small", smdp_address=smdp.address).activation_code
        proc = run("ipa", "--json", *card, "download", "-a", second, "--insecure")
        assert proc.returncode == 0, proc.stderr
        assert "WARNING: --insecure: the SM-DP+'s TLS certificate is NOT verified" in proc.stderr
