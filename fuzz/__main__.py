"""``python -m fuzz [--seconds N] [--jobs J] [TARGET ...]``: coverage-guided fuzzing of the decoders with atheris.

Each target runs in its own process for ``--seconds`` (libFuzzer's ``-max_total_time``), starting from a corpus
of real messages (``fuzz/corpus/<target>``, seeded from the test vectors and the SGP.32 v1.0 captures in
``tests/data``) that grows as the fuzzer finds new paths. A crash or a broken property leaves the input in
``fuzz/findings/<target>/`` and makes the run exit 1. ``make fuzz`` runs every target (``FUZZ_SECONDS``, default
300 each); it is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def seeds(target: str) -> list[bytes]:
    """Real inputs to start from: every hex vector in tests/data that fits the target."""
    out: list[bytes] = []
    for name in ("vectors.json", "sgp32_v10_captures.json"):
        path = ROOT / "tests" / "data" / name
        if path.exists():
            _collect(json.loads(path.read_text()), out)
    if target == "activation_code":
        return [b"1$smdp.example.com$04386-AGYFT-A74Y8-3F815", b"LPA:1$rsp.example.com$$1.3.6.1.4.1.31746$1"]
    if target == "at_answer":
        return [b'+CSIM: 4,"9000"\r\nOK', b'+CSIM: 6,"619000"\r\nOK', b"ERROR"]
    if target == "euicc_package_result":
        return [s for s in out if s[:2] == b"\xbf\x51"] or out
    return out


def _collect(node: object, out: list[bytes]) -> None:
    if isinstance(node, dict):
        for v in node.values():
            _collect(v, out)
    elif isinstance(node, list):
        for v in node:
            _collect(v, out)
    elif isinstance(node, str) and len(node) >= 4 and len(node) % 2 == 0:
        try:
            out.append(bytes.fromhex(node))
        except ValueError:
            pass


def run_one(target: str) -> None:
    """In the child: hand the target to atheris with libFuzzer's arguments from sys.argv."""
    import atheris

    with atheris.instrument_imports():
        from fuzz.targets import TARGETS
    fn = TARGETS[target]
    atheris.Setup([sys.argv[0], *sys.argv[3:]], fn)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        run_one(args[1])
        return 0
    from fuzz.targets import TARGETS

    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", choices=[[], *TARGETS], default=[], metavar="TARGET")
    p.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "300")))
    a = p.parse_args(args)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz: atheris is not installed: pip install 'sgp32-stack[fuzz]' (make fuzz does it)", file=sys.stderr)
        return 2
    failed = []
    for target in a.targets or list(TARGETS):
        corpus = HERE / "corpus" / target
        findings = HERE / "findings" / target
        corpus.mkdir(parents=True, exist_ok=True)
        findings.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(target)):
            (corpus / f"seed-{i:03d}").write_bytes(seed)
        cmd = [
            sys.executable, "-m", "fuzz", "--child", target,
            f"-max_total_time={a.seconds}", f"-artifact_prefix={findings}/", "-print_final_stats=1", str(corpus),
        ]  # fmt: skip
        print(f"fuzz: {target}: {a.seconds} s from {len(list(corpus.iterdir()))} corpus inputs", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        stats = [ln for ln in proc.stderr.splitlines() if ln.startswith(("stat::number_of_executed_units", "#"))]
        print(f"fuzz: {target}: exit {proc.returncode}; {stats[-1] if stats else ''}", flush=True)
        if proc.returncode != 0:
            failed.append(target)
            print(proc.stderr[-4000:], file=sys.stderr)
    print(f"fuzz: {len(failed)} of {len(a.targets or TARGETS)} targets found a failure: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
