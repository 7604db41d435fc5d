"""``fwbridge``: the firmware bridge's command line.

- ``fwbridge probe --port DEV [--json] [--baud N] [--profile NAME]``: what works on this modem (exit codes in
  :data:`firmware_bridge.probe.EXIT_CODES`, the shared ones of docs/cli.md: 1 no route reaches the ISD-R, 3 port
  missing or busy - the message names the process holding it -, 4 no usable AT answer). ``--json`` (before or after
  the subcommand) prints the contract's envelope: one final ``lpa`` line whose ``data`` is the report.
- ``fwbridge virtual-modem --card STATE_FILE [--link PATH] [--quirks NAME,...] [--baud N] [--model NAME]``: a modem
  on a pseudo-terminal with the software eUICC as its SIM; prints the device path on the first line of stdout and
  the byte counters on exit (SIGINT / SIGTERM).
- ``fwbridge profiles`` / ``fwbridge quirks``: list modem profiles, virtual-modem models and quirk names.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from firmware_bridge.probe import EXIT_CODES, EXIT_PORT, EXIT_USAGE, format_report, probe
from firmware_bridge.profiles import PROFILES
from rsp import cli_contract as cc

log = logging.getLogger("firmware_bridge.cli")

DEFAULT_CARD_FACTORY = "euicc.card:SoftEuicc.load"


def _parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items())
    p = cc.ContractParser(prog="fwbridge", description="APDUs to an eUICC over a modem's AT port.")
    cc.add_version(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv: every AT line)")
    p.add_argument("--json", action="store_true", help="the JSON-lines envelope of docs/cli.md (probe)")
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser(
        "probe",
        help="report the modem, the routes that work, the EID, the recommended profile and block size",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + codes,
    )
    pr.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB2")
    pr.add_argument("--baud", type=_baud, default=115200, help="baud rate (USB modems ignore it)")
    pr.add_argument("--profile", choices=sorted(PROFILES), help="modem profile (default: from ATI / AT+CGMM)")
    pr.add_argument("--timeout", type=float, default=10.0, help="deadline of one AT exchange, seconds")

    from firmware_bridge.virtual_modem import MODELS, Quirks

    vm = sub.add_parser(
        "virtual-modem",
        help="serve a virtual modem on a pseudo-terminal",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="quirks: " + ", ".join(Quirks.names()) + "\nmodels: " + ", ".join(MODELS),
    )
    vm.add_argument("--card", required=True, help="state file of the software eUICC")
    vm.add_argument("--link", help="keep a symlink to the pty here (stable across re-plugs)")
    vm.add_argument("--quirks", default="", help="comma-separated quirks, e.g. no-cgla,csim-limit=250,slow=0.1")
    vm.add_argument("--baud", type=_baud, help="throttle both directions to an N-baud 8N1 line and count bytes")
    vm.add_argument("--model", default="generic", help="identity (ATI/AT+CGMM) and built-in quirks of a real modem")
    vm.add_argument(
        "--card-factory",
        default=DEFAULT_CARD_FACTORY,
        help="MODULE:CALLABLE that turns --card into a CardLink (default: %(default)s)",
    )

    sub.add_parser("profiles", help="list the modem profiles")
    sub.add_parser("quirks", help="list the virtual modem's quirks and models")
    cc.globals_after_subcommands(p, ("-v", "--json"))
    return p


def _baud(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value not in cc.BAUD_RATES:
        raise argparse.ArgumentTypeError(f"{value} is not a serial baud rate (e.g. 9600, 115200, 921600)")
    return value


def _resolve(spec: str) -> Callable[[str], Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--card-factory must be MODULE:CALLABLE, not {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _cmd_probe(args: argparse.Namespace) -> int:
    out = cc.Envelope(args.json, "fwbridge")
    report = asyncio.run(probe(args.port, baudrate=args.baud, profile=args.profile, timeout=args.timeout))
    data = report.to_dict()
    holder = None
    if report.exit_code == EXIT_PORT and any("locked" in f.error for f in report.failures):
        holder = cc.lock_holder(args.port)
        data["holder"] = holder
    if not args.json:
        print(format_report(report) + (f"\nport held by {holder}" if holder else ""))
        return report.exit_code
    if report.exit_code == 0:
        return out.success(data)
    first = report.failures[0] if report.failures else None
    reason = first.error if first else EXIT_CODES[report.exit_code]
    if holder:
        reason += f" (held by {holder})"
    step = first.step if first else "probe"
    return out.error(cc.step_message(step, reason), {**data, "step": step}, exit=report.exit_code)


def _cmd_virtual_modem(args: argparse.Namespace) -> int:
    from firmware_bridge.virtual_modem import Quirks, VirtualModem

    try:
        quirks = Quirks.parse(args.quirks)
        factory = _resolve(args.card_factory)
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"fwbridge virtual-modem: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        card = factory(args.card)
    except Exception as exc:  # whatever the factory raises, say which step failed
        print(f"fwbridge virtual-modem: cannot load the card from {args.card}: {exc}", file=sys.stderr)
        return 1
    try:
        modem = VirtualModem(card, quirks, args.baud, model=args.model, link=args.link)
    except ValueError as exc:
        print(f"fwbridge virtual-modem: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    path = modem.start()
    print(path, flush=True)
    print(
        f"virtual modem {modem.model.name} on {path}"
        + (f" (link {args.link})" if args.link else "")
        + (f", quirks {modem.quirks.describe()}" if modem.quirks.describe() else "")
        + (f", {args.baud} baud" if args.baud else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        modem.stop()
        print(f"virtual modem stopped: {modem.stats.summary()}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = cc.parse_args(_parser(), argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.cmd == "probe":
        return _cmd_probe(args)
    if args.cmd == "virtual-modem":
        return _cmd_virtual_modem(args)
    if args.cmd == "profiles":
        for p in PROFILES.values():
            print(f"{p.name:<15} routes {','.join(p.routes):<10} block {p.recommended_block_size:<4} {p.description}")
        return 0
    from firmware_bridge.virtual_modem import MODELS, Quirks

    print("quirks:", ", ".join(Quirks.names()))
    for m in MODELS.values():
        print(f"model {m.name:<12} {m.manufacturer} {m.model}" + (f" [{m.quirks}]" if m.quirks else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
