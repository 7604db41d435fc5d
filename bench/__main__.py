"""``python -m bench`` (``make bench``): run the benchmark suite and write the Markdown report.

    python -m bench [--quick] [--only NAME[,NAME...]] [--fleet N] [--out docs/performance.md] [--merge FILE]

Benchmarks (names for ``--only``): ceiling (the eIM against the bare server of each transport, interleaved
rounds, eIM/bare ratios; ``--before COMMIT`` adds that commit's eIM for a before/after pair), eim (ESipa
throughput per binding and store, worker scaling), psmo (signed PSMO round trips over HTTP + SQLite against
the 1,200/s bar; ``--before COMMIT`` adds that commit's eIM, interleaved), variants (the
SQLite store's fsync cost: shipped store vs what-if variants, before/after), fleet (registry
size), fleet_summary (GET /v1/fleet and label filters with 1,000,000 eUICCs), dashboard (the
overview page /ui/ and every other page end to end through eim serve with 1,000,000 eUICCs), serial (profile
download over the serial line), air (bytes on the air per operation), air_download (bytes on
the air of an indirect 12 KB profile download through the whole lab), ipa (IPA footprint), ipa_cli (``ipa chip
info`` against the floor ``python -c "import cryptography.x509"``; ``--before COMMIT`` adds that commit's ipa),
smdpp (lab SM-DP+ downloads/s), smdpp_workers (the SM-DP+ over HTTPS with 1 and 2 worker processes).
The report goes to ``--out`` (default ``docs/performance.md``; with ``--only`` or
``--quick`` the default is ``build/performance-partial.md`` so a partial run never overwrites the published one)
and is printed. ``--merge FILE`` (with ``--only``): the sections re-run replace theirs in FILE, an earlier full
report (written back to FILE unless ``--out`` is given); its "Machine and run" gains a line for the re-run, the bars
at a glance are rebuilt and the findings are taken from ``bench/findings.md``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.common import REPO, Section, load, machine

NAMES = (
    "ceiling",
    "eim",
    "psmo",
    "variants",
    "fleet",
    "fleet_summary",
    "serial",
    "air",
    "air_download",
    "ipa",
    "ipa_cli",
    "smdpp",
    "smdpp_workers",
)
NAMES += ("dashboard",)  # the overview page /ui/ and every other page with 1,000,000 eUICCs (bench/dashboard.py)

HOW_TO = """\
## How to run

    make bench                                   # the whole suite (~10 min on 2 cores), rewrites this file
    .venv/bin/python -m bench --quick            # small sizes, short runs (~2 min), report in build/
    .venv/bin/python -m bench --only eim,serial  # some benchmarks only
    .venv/bin/python -m bench --only ceiling --bindings http --before HEAD~1  # before/after pair, interleaved
    .venv/bin/python -m bench --only psmo --before HEAD~1  # signed PSMO round trips, before/after interleaved
    .venv/bin/python -m bench.psmo_callgrind --commits .,HEAD~1  # the same, instructions per round trip (valgrind)
    .venv/bin/python -m bench.poll_callgrind --commits .,HEAD~1  # instructions per no-work poll (valgrind)
    .venv/bin/python -m bench --only fleet --fleet 200000  # registry size (default 1,000,000; ~3.5 min)
    .venv/bin/python -m bench --only fleet --merge docs/performance.md  # re-run one section into this file
    .venv/bin/python -m bench --only ipa_cli --before HEAD~3  # ipa chip info vs the floor, before/after pair

Benchmarks start their own services on loopback (a private Mosquitto and PostgreSQL exactly like the tests,
`demo/services.py`), run the load in a separate process, and stop by themselves. Tests never assert timings;
`tests/bench/` only checks that every benchmark runs in a tiny configuration and reports its figures.
Figures move from machine to machine: compare ratios measured in one run.
"""


def run_one(name: str, args: argparse.Namespace) -> Section:
    quick = args.quick
    if name == "ceiling":
        from bench.ceiling import run

        return run(quick, before=args.before or None, bindings=tuple(args.bindings.split(",")))
    if name == "eim":
        from bench.eim import throughput

        return throughput(quick)
    if name == "psmo":
        from bench.psmo import run as psmo_run

        return psmo_run(quick, before=args.before or None)
    if name == "variants":
        from bench.eim import store_variants

        return store_variants(quick)
    if name == "fleet":
        from bench.eim import fleet_scale

        return fleet_scale(quick, size=args.fleet or (10_000 if quick else 1_000_000))
    if name == "fleet_summary":
        from bench.fleet_summary import run

        return run(quick, size=args.fleet or None)
    if name == "dashboard":
        from bench.dashboard import run

        return run(quick, size=args.fleet or None)
    if name == "serial":
        from bench.serial_download import run

        return run(quick)
    if name == "air":
        from bench.air import run

        return run(quick)
    if name == "air_download":
        from bench.air_download import run

        return run(quick)
    if name == "ipa":
        from bench.ipa_footprint import run

        return run(quick)
    if name == "ipa_cli":
        from bench.ipa_commands import run

        return run(quick, before=args.before or None, instructions=getattr(args, "instructions", False))
    if name == "smdpp":
        from bench.smdpp_download import run

        return run(quick)
    if name == "smdpp_workers":
        from bench.es9_load import run

        return run(quick)
    raise SystemExit(f"unknown benchmark {name!r}: choose from {', '.join(NAMES)}")


def report(
    sections: list[Section], info: dict[str, str], args: argparse.Namespace, seconds: float, extra: str = ""
) -> str:
    mode = "quick" if args.quick else "full"
    head = [
        "# Performance",
        "",
        "The figures of the benchmark suite (`bench/`, issues 9 and 18) against the bars of the issues, from the "
        "latest run of `make bench`. Section 0 measures the ceiling itself: each transport's bare server in the same "
        "run as the eIM. Ceilings of the bare building blocks on this kind of machine are in "
        "[ceilings.md](ceilings.md).",
        "",
        HOW_TO,
        "## Machine and run",
        "",
        f"- {info['nproc']} CPUs (`nproc`), {info['cpu']}, {info['memory']} RAM, Linux {info['kernel']}, "
        f"Python {info['python']}",
        f"- commit {info['commit']}, {info['date']}, {mode} run, {seconds / 60:.1f} min"
        + (f", only {args.only}" if args.only else ""),
        f"- load average at the start: {info['load']} (1/5/15 min); per benchmark: "
        + ", ".join(f"{s.name} {s.figures.get('_load', '?')}" for s in sections),
        "- The load generator, the servers, PostgreSQL and Mosquitto share the 2 cores: every throughput figure is "
        "server + client on one machine, and other work on the machine (the load average above) lowers them.",
        "",
    ]
    bars = [
        f"- {s.title.split('. ', 1)[0]}: " + line[2:].replace("Bar, ", "", 1)
        for s in sections
        for line in s.lines
        if line.startswith("- Bar,")
    ]
    if bars:
        head += ["## Bars at a glance", "", *bars, ""]
    body = [s.markdown() for s in sections]
    return "\n".join(head) + "\n" + "\n".join(body) + (("\n" + extra) if extra else "")


def _section_order(number: str) -> tuple[int, str]:
    """``"2b."`` -> ``(2, "b")``: numbered sections in the report's order (0, 1, 1b, 1c, 2, 2b, ...)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return int(digits or 0), number.rstrip(".").lstrip("0123456789")


def merge(
    old: str, sections: list[Section], info: dict[str, str], args: argparse.Namespace, seconds: float, extra: str
) -> str:
    """``old`` (a full report) with the blocks of ``sections`` replaced (matched by their number, e.g. ``2.``), a
    line in "Machine and run" for this re-run, the bars at a glance rebuilt, and ``extra`` as the findings."""
    blocks: list[list[str]] = [[]]
    for line in old.splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)

    def key(block: list[str]) -> str:
        return block[0].split(" ", 2)[1] if block and block[0].startswith("## ") else ""

    new = {s.title.split(" ", 1)[0]: s.markdown().rstrip("\n").splitlines() for s in sections}
    out: list[list[str]] = []
    in_findings = False
    for block in blocks:
        k = key(block)
        if block and block[0].startswith("## Findings"):
            in_findings = True  # the findings (and what follows them) come from bench/findings.md ...
        if in_findings and not k[:1].isdigit():
            continue  # ... but a numbered section placed after them is a section of the report: kept
        if block and block[0] == "## How to run":
            block = [*HOW_TO.rstrip("\n").splitlines(), ""]
        elif block and block[0] == "## Machine and run":
            while block and not block[-1].strip():
                block.pop()
            block.append(
                f"- re-run and merged: {args.only} at {info['date']}, commit {info['commit']}, "
                f"{seconds / 60:.1f} min, on {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; "
                f"load average at the start {info['load']}; per benchmark: "
                + ", ".join(f"{s.name} {s.figures.get('_load', '?')}" for s in sections)
            )
            block.append("")
        elif k in new:
            block = [*new.pop(k), ""]
        out.append(block)
    for lines in new.values():  # sections the old report did not have
        out.append([*lines, ""])
    numbered = sorted((b for b in out if key(b)[:1].isdigit()), key=lambda b: _section_order(key(b)))
    out = [b for b in out if not key(b)[:1].isdigit()] + numbered
    bars = [
        f"- {key(b).rstrip('.')}: " + line[2:].replace("Bar, ", "", 1)
        for b in out
        for line in b
        if line.startswith("- Bar,")
    ]
    glance = ["## Bars at a glance", "", *bars, ""] if bars else []
    text: list[str] = []
    for b in out:
        if b and b[0] == "## Bars at a glance":
            continue
        if glance and key(b)[:1].isdigit():  # the bars at a glance go before the first numbered section
            text += glance
            glance = []
        text += b
    return "\n".join(text).rstrip("\n") + "\n" + (("\n" + extra) if extra else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="registered eUICCs for the fleet benchmark (default 1000000; 10000 with --quick)",
    )
    ap.add_argument(
        "--before",
        default="",
        help="ceiling, psmo, ipa_cli: also run the eIM / the ipa of this commit (before/after pair)",
    )
    ap.add_argument("--bindings", default="http,coap,mqtt", help="ceiling: the bindings measured")
    ap.add_argument(
        "--instructions", action="store_true", help="ipa_cli: also count instructions (valgrind callgrind, slow)"
    )
    ap.add_argument("--out", default="", help="report file (default docs/performance.md for a full run)")
    ap.add_argument("--append", default="", help="Markdown file appended verbatim to the report (recorded runs)")
    ap.add_argument("--merge", default="", help="with --only: replace the sections re-run in this earlier full report")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the services and workers started so far are stopped (no orphans)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    for n in names:
        if n not in NAMES:
            ap.error(f"unknown benchmark {n!r}: choose from {', '.join(NAMES)}")
    if args.merge and not args.only:
        ap.error("--merge needs --only (the sections to re-run)")
    out = (
        Path(args.out)
        if args.out
        else Path(args.merge)
        if args.merge
        else (
            REPO / "docs" / "performance.md"
            if not (args.quick or args.only)
            else REPO / "build" / "performance-partial.md"
        )
    )
    info = machine()
    print(f"bench: {', '.join(names)} on {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}", flush=True)
    t0 = time.perf_counter()
    sections = []
    for n in names:
        t = time.perf_counter()
        print(f"[{n}]", flush=True)
        section = run_one(n, args)
        section.figures["_load"] = load()
        sections.append(section)
        print(f"[{n}] {time.perf_counter() - t:.0f} s", flush=True)
    findings = Path(__file__).with_name("findings.md")
    extra = findings.read_text() if findings.exists() and not args.quick else ""
    if args.append:
        extra += "\n" + Path(args.append).read_text()
    if args.merge:
        text = merge(Path(args.merge).read_text(), sections, info, args, time.perf_counter() - t0, extra)
    else:
        text = report(sections, info, args, time.perf_counter() - t0, extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print(text)
    print(f"report written to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
