"""``make demo`` (docs/performance.md names it as the lab of its measurements): the demo's story, run for real.

``-o .venv/.installed`` tells make the venv is up to date, so the test never reinstalls the environment.
"""

from __future__ import annotations

from tests.docs.doccmds import ROOT, doc_cmd, run

MAKE_DEMO = doc_cmd("performance.md", "make demo")


def test_make_demo() -> None:
    out = run(MAKE_DEMO, ROOT, {"make demo": "make -o .venv/.installed demo"}, timeout=120).stdout
    for step in ("download profile 2 (direct", "switch to profile 2", "delete profile 1", "eUICC data request"):
        line = next((ln for ln in out.splitlines() if ln.startswith(step)), "")
        assert "done" in line, f"{step!r}: {line!r}\n{out}"
    assert "over ESipa/http" in out and "eIM REST API: http://127.0.0.1:" in out
    assert "eIM dashboard: http://127.0.0.1:" in out


def test_demo_over_https_with_a_device_certificate() -> None:
    """The README's `make demo BINDING=...` for the binding that authenticates the device by its TLS client
    certificate: the whole story, and no wait for a push the binding does not offer."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--binding", "https"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TLS client certificate for the IPA" in proc.stdout and "over ESipa/https" in proc.stdout
    assert "can push" not in proc.stdout
    for step in ("download profile 1 (indirect", "delete profile 1", "eUICC data request"):
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(step)), "")
        assert "done" in line, f"{step!r}: {line!r}\n{proc.stdout}"


def test_demo_keep_stops_every_service_on_sigterm(tmp_path) -> None:
    """`demo --keep` (README) leaves the services running until Ctrl-C; a SIGTERM (a service manager, `kill`) stops
    them the same way: afterwards no process of the lab is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    work = tmp_path / "lab"
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", "--workdir", str(work), "--keep"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def lab_pids() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != proc.pid:
                try:
                    cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if str(work) in cmd:
                    pids.append(int(entry))
        return pids

    try:
        out = []
        for line in proc.stdout:  # type: ignore[union-attr]
            out.append(line)
            if "services keep running" in line:
                break
        else:
            raise AssertionError("demo ended before keeping its services:\n" + "".join(out))
        running = lab_pids()
        assert len(running) >= 4, running  # SM-DP+, eIM, virtual modem, IPA
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 20
        while lab_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lab_pids() == [], "services left running after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in lab_pids():
            os.kill(pid, signal.SIGKILL)
