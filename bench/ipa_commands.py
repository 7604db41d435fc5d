"""Benchmark 5b: one-shot IPA commands - the wall time of ``ipa --json chip info`` (issue 17) against the floor.

Field scripts call ``ipa chip info`` in loops; the common C LPA answers it in 0.02-0.06 s through a modem. Each
contender is a fresh process, run in interleaved rounds (every contender once per round, the order rotating from
round to round), so that other work on the machine hits all of them alike; the report gives the median and the
lowest wall time and the median CPU time (user + system, from ``wait4``) of each; with ``instructions=True``
(``python -m bench --only ipa_cli --instructions``) also the instructions of one run of each under valgrind's
callgrind, a figure the machine's load does not move (the bar of issue 17 read as "at most half of before").

- *floor*: ``python -c "import cryptography.x509"`` - Python's start plus the crypto stack the software eUICC needs;
- *chip info, --card*: ``ipa --json --card STATE chip info`` (the in-process software eUICC of the issue);
- *chip info, modem*: ``ipa --json --port PTY chip info`` through the virtual modem (a pty at 115200 baud, the
  software eUICC as its SIM, served by this process);
- with ``before=COMMIT``: the same two commands from that commit's tree (``git archive``), for a before/after pair
  measured in the same rounds.

The commands run as the console script does (``rsp.launch.ipa``), from the tree under test, with a bytecode cache
(one warm-up run each writes it, as an installed package has one; ``PYTHONDONTWRITEBYTECODE`` is cleared for them).
Bar (issue 17): at most half of the 0.30 s the issue measured, i.e. 0.15 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PY, REPO, Section, fmt, versus

ISSUE_SECONDS = 0.30  # `ipa --json --card STATE chip info` as issue 17 measured it
BAR_SECONDS = ISSUE_SECONDS / 2
LAUNCH = "import sys; sys.argv[0] = 'ipa'; from rsp.launch import ipa; ipa()"


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    _, err = p.communicate()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[-4:])} exited {code}: {err.decode()[-1000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def _instructions(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Instructions one run executes (valgrind callgrind's "Collected"): the same on a busy machine as on an idle
    one, unlike wall and CPU time."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as out:
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", *cmd],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
    found = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    if p.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind of {' '.join(cmd[-4:])} exited {p.returncode}: {p.stderr[-1000:]}")
    return int(found.group(1))


def _copy_without_bytecode(repo: Path, target: Path) -> Path:
    """The packages ``ipa`` imports (rsp, ipa, firmware_bridge, euicc), copied without their ``__pycache__``."""
    import shutil

    for pkg in ("rsp", "ipa", "firmware_bridge", "euicc"):
        shutil.copytree(repo / pkg, target / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run(
    quick: bool = False, *, before: str | None = None, rounds: int | None = None, instructions: bool = False
) -> Section:
    from bench.ceiling import _tree
    from euicc.card import SoftEuicc
    from firmware_bridge.virtual_modem import VirtualModem
    from rsp.pki import create_lab_pki

    sec = Section("ipa_cli", "5b. IPA one-shot commands: chip info")
    rounds = rounds or (5 if quick else 21)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("IPA_")}
    eid = "89049032123451234512345678901235"
    with tempfile.TemporaryDirectory(prefix="bench-ipa-cli-") as tmpd, contextlib.ExitStack() as stack:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=[eid])
        SoftEuicc.create(pki.root, eid, tmp / "card.cbor")
        modem_card = SoftEuicc.create(pki.root, eid, tmp / "modem-card.cbor")
        vm = stack.enter_context(VirtualModem(modem_card, baud=115200))
        # the trees under test; "no cache": a copy without __pycache__, run with PYTHONDONTWRITEBYTECODE=1 (the
        # project's modules compiled at every start, as with an editable install in such an environment)
        trees = {"": (REPO, _copy_without_bytecode(REPO, tmp / "nocache"))}
        for commit in before.split(",") if before else []:
            trees[commit] = (stack.enter_context(_tree(commit)), stack.enter_context(_tree(commit)))
        nocache_env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        floor = [PY, "-c", "import cryptography.x509"]
        contenders: dict[str, tuple[list[str], Path, dict[str, str]]] = {"floor": (floor, REPO, env)}
        for commit, (tree, bare_tree) in trees.items():
            tag = f" ({commit})" if commit else ""
            state = tmp / f"state{len(contenders)}.cbor"
            card_cmd = [PY, "-c", LAUNCH, "--json", "--card", str(tmp / "card.cbor"), "--state", str(state)]
            contenders[f"chip info, --card{tag}"] = ([*card_cmd, "chip", "info"], tree, env)
            contenders[f"chip info, modem{tag}"] = (
                [PY, "-c", LAUNCH, "--json", "--port", vm.path, "--state", str(state), "chip", "info"],
                tree,
                env,
            )
            contenders[f"chip info, --card{tag}, no bytecode cache"] = (
                [*card_cmd, "chip", "info"],
                bare_tree,
                nocache_env,
            )
        line: dict[str, tuple[int, float]] = {}  # modem contenders: bytes and line seconds of one run
        for n, (cmd, cwd, e) in contenders.items():  # warm-up: the bytecode cache, the state file's first write
            b0, w0 = vm.stats.bytes_in + vm.stats.bytes_out, vm.stats.wire_seconds
            _timed(cmd, cwd, e)
            if "modem" in n:
                line[n] = (vm.stats.bytes_in + vm.stats.bytes_out - b0, vm.stats.wire_seconds - w0)
        names = list(contenders)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                w, c = _timed(*contenders[n])
                wall[n].append(w)
                cpu[n].append(c)
        # instructions: one run of each under valgrind (slow: about 20 s each), after the timed rounds
        counts = {n: _instructions(*contenders[n]) for n in names} if instructions else {}
    floor = statistics.median(wall["floor"])
    figures: dict = {"rounds": rounds, "floor_s": floor, "issue_s": ISSUE_SECONDS}
    rows = []
    for n in names:
        med = statistics.median(wall[n])
        key = re.sub(r"[^a-z0-9]+", "_", n.replace("chip info, ", "").lower()).strip("_")
        figures[f"{key}_s"] = med
        figures[f"{key}_cpu_s"] = statistics.median(cpu[n])
        rows.append(
            [
                n,
                med,
                min(wall[n]),
                statistics.median(cpu[n]),
                f"{med / floor:.2f}×",
                "-" if n == "floor" else f"{med / ISSUE_SECONDS:.2f}×",
                *([counts[n] / 1e6] if counts else []),
            ]
        )
        if counts:
            figures[f"{key}_instructions"] = counts[n]
    sec.figures = figures
    sec.add(
        f"Each command a fresh process, {rounds} interleaved rounds (the order rotating); wall and CPU (user + "
        'system) seconds. *floor*: `python -c "import cryptography.x509"`. *--card*: `ipa --json --card STATE chip '
        "info` (in-process software eUICC); *modem*: `ipa --json --port PTY chip info` through the virtual modem "
        "(115200 baud, software eUICC as its SIM, served by the benchmark's process). Run as the console script "
        "runs (`rsp.launch.ipa`) with a bytecode cache"
        + (f"; `(COMMIT)`: the same from that commit ({', '.join(before.split(','))})" if before else "")
        + ". *no bytecode cache*: the project's modules compiled at every start (a copy without `__pycache__`, "
        "`PYTHONDONTWRITEBYTECODE=1`: an editable install in an environment that sets it, which is how the issue's "
        "0.30 s was measured)."
        + (
            " *instructions*: one run of each under valgrind's callgrind (`--instructions`; the load of the machine "
            "does not change it)."
            if counts
            else ""
        )
    )
    sec.add("")
    sec.table(
        ["command", "median s", "lowest s", "CPU s (median)", "/ floor", f"/ issue's {ISSUE_SECONDS} s"]
        + (["instructions (M)"] if counts else []),
        rows,
    )
    card = statistics.median(wall["chip info, --card"])
    modem = statistics.median(wall["chip info, modem"])
    sec.add(
        f"- Bar, `ipa --json --card STATE chip info` (issue 17): {fmt(card)} s (floor {fmt(floor)} s, "
        f"{card / floor:.2f}× the floor; {card / ISSUE_SECONDS:.2f}× the issue's {ISSUE_SECONDS} s) → "
        f"{versus(card, BAR_SECONDS, higher_is_better=False)}"
    )
    card_cpu, floor_cpu = statistics.median(cpu["chip info, --card"]), statistics.median(cpu["floor"])
    sec.add(
        f"- CPU time (steadier than wall time on a shared machine): --card {fmt(card_cpu)} s, floor "
        f"{fmt(floor_cpu)} s ({card_cpu / floor_cpu:.2f}× the floor; {card_cpu / ISSUE_SECONDS:.2f}× the issue's "
        f"{ISSUE_SECONDS} s)"
    )
    sec.add(
        f"- Bar, `ipa --json --port PTY chip info` through the virtual modem: {fmt(modem)} s "
        f"({modem / floor:.2f}× the floor) → {versus(modem, BAR_SECONDS, higher_is_better=False)}"
    )
    for n, (nbytes, secs) in line.items():
        med = statistics.median(wall[n])
        sec.add(
            f"- The line itself, {n}: {nbytes:,} bytes in both directions, {fmt(secs)} s at 115200 baud (the virtual "
            f"modem's counters); the rest of the command: {fmt(med - secs)} s"
        )
    figures["line_s"] = line.get("chip info, modem", (0, 0.0))[1]
    for commit in trees:
        if not commit:
            continue
        for what, suffix in (("--card", ""), ("modem", ""), ("--card", ", no bytecode cache")):
            before_name, after_name = f"chip info, {what} ({commit}){suffix}", f"chip info, {what}{suffix}"
            old, new = statistics.median(wall[before_name]), statistics.median(wall[after_name])
            old_cpu, new_cpu = statistics.median(cpu[before_name]), statistics.median(cpu[after_name])
            ratios = [a / b for a, b in zip(wall[after_name], wall[before_name], strict=True)]
            sec.add(
                f"- before/after, chip info {what}{suffix}: {fmt(old)} s at {commit} → {fmt(new)} s "
                f"({new / old:.2f}×; per round {min(ratios):.2f}-{max(ratios):.2f}×); CPU {fmt(old_cpu)} → "
                f"{fmt(new_cpu)} s ({new_cpu / old_cpu:.2f}×)"
                + (
                    f"; instructions {counts[before_name] / 1e6:,.0f} M → {counts[after_name] / 1e6:,.0f} M "
                    f"({counts[after_name] / counts[before_name]:.2f}×; bar: at most half)"
                    if counts
                    else ""
                )
            )
    return sec
