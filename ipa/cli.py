"""``ipa``: the IoT Profile Assistant command line (daemon and field-technician commands).

    ipa [--config FILE] [--json] [--port /dev/ttyUSB2 [--baud N] [--route auto|csim|cgla] [--block-size N]
        | --card STATE] run | poll [--once] | status | chip info | profile list | notification list|process|remove SEQ
        | download -a 'LPA:1$...' [--confirmation-code CODE] [--ca-file PEM] [--insecure]
        | eim add-initial FILE | eim list

The global options may also follow the subcommand. Output and exit codes follow the contract of docs/cli.md
(:mod:`rsp.cli_contract`): ``--json`` prints one JSON object per line in the de-facto LPA shape,
``{"type":"progress","payload":{...}}`` while working and one ``{"type":"lpa","payload":{"code":0,"message":
"success","data":...}}`` at the end; an error is ``{"type":"lpa","payload":{"code":-1,"message":"<step>: <reason>",
"data":{"step":...,"exit":N}}}`` and exit N (1 refused, 2 usage, 3 port/connection, 4 timeout, 130 interrupted).
This module is the only place that imports concrete channels (``firmware_bridge``, ``euicc`` for ``--card``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from ipa import cli_report as report
from ipa.config import ConfigError, IpaConfig, load_config
from rsp import cli_contract as cc
from rsp import loopless

log = logging.getLogger("ipa.cli")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = cc.EXIT_OK, cc.EXIT_REFUSED, cc.EXIT_USAGE
GLOBAL_OPTIONS = ("--config", "--json", "--port", "--baud", "--route", "--block-size", "--card", "--state", "-v")


class Output(cc.Envelope):
    """The contract's envelope (rsp.cli_contract.Envelope) for ``ipa``."""

    def __init__(self, json_mode: bool, stream=None) -> None:
        super().__init__(json_mode, "ipa", stream)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = cc.ContractParser(prog="ipa", description="SGP.32 IoT Profile Assistant (IPAd)")
    cc.add_version(p)
    p.add_argument("--config", help="TOML configuration file (default: $IPA_CONFIG)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (LPA shape)")
    p.add_argument("--port", help="AT port of the modem (overrides device.port)")
    p.add_argument("--baud", type=int, help="baud rate of a UART port (overrides device.baudrate; USB ignores it)")
    p.add_argument("--route", choices=["auto", "csim", "cgla"], help="APDU route (overrides device.route)")
    p.add_argument("--block-size", type=int, help="STORE DATA block size 1..255 (overrides device.block_size)")
    p.add_argument("--card", help="lab: state file of an in-process software eUICC instead of a modem")
    p.add_argument("--state", help="IPA state file (overrides ipa.state_file)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the daemon: poll the eIM, run procedures, until SIGTERM")
    poll = sub.add_parser("poll", help="one eIM poll step (the card's result codes and listed profiles)")
    poll.add_argument("--once", action="store_true", help="one step (the default; kept for scripts)")
    sub.add_parser("status", help="the daemon's view from its state file: queue, last contact, backoff (no port)")
    chip = sub.add_parser("chip", help="eUICC information")
    chip.add_argument("action", choices=["info"])
    prof = sub.add_parser("profile", help="profiles on the eUICC")
    prof.add_argument("action", choices=["list"])
    notif = sub.add_parser("notification", help="pending notifications")
    notif.add_argument("action", choices=["list", "process", "remove"])
    notif.add_argument("seq", nargs="?", type=int, help="sequence number (remove)")
    dl = sub.add_parser("download", help="direct profile download from an SM-DP+ (ES9+)")
    dl.add_argument("-a", "--activation-code", required=True)
    dl.add_argument("-c", "--confirmation-code")
    dl.add_argument("--ca-file", help="CA bundle (PEM) for the SM-DP+'s TLS certificate (overrides es9.ca_file)")
    dl.add_argument(
        "--insecure", action="store_true", help="lab only: do not verify the SM-DP+'s TLS certificate (warns loudly)"
    )
    eim = sub.add_parser("eim", help="eIM configuration on the eUICC")
    eim.add_argument("action", choices=["add-initial", "list"])
    eim.add_argument("file", nargs="?", help="provisioning file (DER AddInitialEimRequest or TOML)")
    cc.globals_after_subcommands(p, GLOBAL_OPTIONS, argv)  # argv: only the subcommand used gets them
    return p


def make_channel(config: IpaConfig):
    """The ApduChannel for the configured device (modem port or lab software eUICC)."""
    if config.device.card:
        from euicc.card import SoftEuicc
        from euicc.channel import LocalApduChannel

        try:
            card = SoftEuicc.load(config.device.card)
        except Exception as exc:  # the eUICC's own state errors
            raise ConfigError(f"device: cannot load the software eUICC {config.device.card}: {exc}") from None
        return LocalApduChannel(card), None
    if not config.device.port:
        raise ConfigError("no device: give --port /dev/ttyUSBx (device.port) or --card STATE_FILE (device.card)")
    from firmware_bridge.channel import AtApduChannel

    if loopless.loop_running():
        from firmware_bridge.at import AtEngine
    else:  # a one-shot command run without an event loop (main, _loopless): blocking reads, same deadlines
        from firmware_bridge.at_blocking import BlockingAtEngine as AtEngine

    engine = AtEngine(config.device.port, baudrate=config.device.baudrate, long_timeout=config.device.apdu_timeout)
    return AtApduChannel(engine, config.device.modem or None, config.device.route), engine


def _setup_logging(verbose: int, json_mode: bool) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"):
        fmt = "%(name)s: %(message)s"  # systemd adds time and priority
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


async def _with_agent(
    config: IpaConfig, out: Output, fn, *, bootstrap: bool = True, state: str | None = None, progress: bool = True
):
    from ipa.agent import Agent

    channel, engine = make_channel(config)
    if engine is not None:
        await engine.open()
    agent = Agent(config, channel, progress=out.progress if progress else None, state_path=state)
    try:
        await agent.start(bootstrap=bootstrap)
        return await fn(agent)
    finally:
        await agent.close()
        if engine is not None:
            await engine.close()


async def _cmd_chip_info(agent) -> tuple[Any, str]:
    es10 = agent.es10
    info2 = await es10.get_euicc_info2()
    addrs = await es10.get_euicc_configured_addresses()
    eims = await es10.get_eim_configuration_data()
    data = {
        "eidValue": agent.ctx.eid.hex().upper(),
        "EuiccConfiguredAddresses": {
            "defaultDpAddress": addrs.default_dp_address,
            "rootDsAddress": addrs.root_ds_address,
        },
        "EUICCInfo2": info2.to_json(),
        "eimConfigurationData": [e.to_json() for e in eims],
    }
    human = (
        f"EID        {data['eidValue']}\nSVN        {info2.svn}\nfirmware   {info2.firmware_version}\n"
        f"IoT        {', '.join(info2.iot_versions) or '-'}\ndefault DP {addrs.default_dp_address or '-'}\n"
        f"eIMs       {', '.join(e.eim_id for e in eims) or '-'}"
    )
    return data, human


def _profiles_human(profiles) -> str:
    if not profiles:
        return "no profiles"
    return "\n".join(
        f"{p.iccid}  {p.to_json()['profileState']:<8}  {p.to_json()['profileClass'] or '-':<12}  "
        f"{p.service_provider_name or ''} {p.profile_name or ''}".rstrip()
        for p in profiles
    )


async def run_command(args: argparse.Namespace, config: IpaConfig, out: Output) -> int:
    cmd = args.command
    try:
        if cmd == "run":
            from ipa.cli_daemon import run_daemon  # loaded for `run` only

            return await run_daemon(config, out, args.state)
        if cmd == "poll":

            async def poll(agent):
                r = await agent.poll_once()
                return r

            r = await _with_agent(config, out, poll, state=args.state)
            data = {"outcome": r.outcome.value, "detail": r.detail, "package": r.package}
            if r.outcome.value == "failed":
                return out.error(
                    cc.step_message("GetEimPackage", r.detail),
                    {"step": "GetEimPackage", **data},
                    exit=report.poll_failure_exit(r.detail),
                )
            return report.poll_result(out, data)
        if cmd == "chip":
            data, human = await _with_agent(config, out, _cmd_chip_info, bootstrap=False, state=args.state)
            return out.success(data, human)
        if cmd == "profile":
            profiles = await _with_agent(
                config, out, lambda a: a.es10.get_profiles_info(), bootstrap=False, state=args.state
            )
            return out.success([p.to_json() for p in profiles], _profiles_human(profiles))
        if cmd in ("notification", "download", "eim"):
            from ipa import cli_commands

            handler = {"notification": cli_commands.notification, "download": cli_commands.download}
            return await handler.get(cmd, cli_commands.eim)(args, config, out)
    except BrokenPipeError:
        raise  # the reader closed stdout: rsp.cli_contract.guard (exit 0, quiet)
    except loopless.cancelled_error():  # Ctrl-C (asyncio.run cancels this task): say where, after the cleanup ran
        return out.error(cc.step_message(out.last_step or cmd, "interrupted"), out.where(), exit=cc.EXIT_INTERRUPTED)
    except ConfigError as exc:
        return out.error(f"configuration: {exc}", {"step": "configuration"}, exit=cc.EXIT_USAGE)
    except Exception as exc:
        return _error_exit(exc, out)
    return EXIT_USAGE


def _error_exit(exc: Exception, out: Output) -> int:
    """The final line and exit code of a command that failed with ``exc``. The error classes are imported here,
    on the error path only: a command imports just the modules it uses (a fast ``chip info``), and an exception
    of a module that was never imported cannot have been raised."""
    from ipa.es9 import Es9Error
    from ipa.es10 import CardChanged, Es10Error
    from ipa.esipa import EsipaError
    from ipa.procedures.add_initial_eim import ProvisioningError
    from ipa.procedures.context import ProcedureError

    try:
        raise exc
    except ProvisioningError as exc:
        return out.error(f"provisioning file: {exc}", {"step": "provisioning file"}, exit=cc.EXIT_USAGE)
    except Es10Error as exc:
        return out.error(
            cc.step_message(exc.step, str(exc)),
            {
                **out.where(),
                "step": exc.step,
                "sw": f"{exc.sw:04X}" if exc.sw else None,
                "code": exc.code,
                "codeName": exc.code_name,
            },
        )
    except EsipaError as exc:
        text = str(exc).lower()
        if exc.status is not None:  # the eIM answered (HTTP status, CoAP code): it refused
            code = cc.EXIT_REFUSED
        else:
            code = cc.EXIT_TIMEOUT if "timed out" in text or "timeout" in text else cc.EXIT_CONNECTION
        return out.error(cc.step_message(exc.step, str(exc)), {"step": exc.step, "status": exc.status}, exit=code)
    except Es9Error as exc:
        return out.error(
            cc.step_message(exc.step, str(exc)),
            {"step": exc.step, "subjectCode": exc.subject_code, "reasonCode": exc.reason_code},
            exit=report.es9_exit(exc),
        )
    except ProcedureError as exc:
        return out.error(report.procedure_message(exc), {"step": exc.step, "code": exc.code, "codeName": exc.code_name})
    except CardChanged as exc:
        return out.error(
            f"GetEID: {exc}; nothing was sent to it. Check the SIM and modem, then start the IPA again",
            {"step": "GetEID", "expectedEid": exc.expected.hex().upper(), "foundEid": (exc.found or b"").hex().upper()},
        )
    except Exception as exc:  # the firmware bridge's own errors name their step (the AT command)
        log.debug("unexpected error", exc_info=True)
        return report.device_error(out, exc)


#: one-shot commands that only talk ES10 to the card (no eIM, no SM-DP+, no timers)
LOOPLESS_COMMANDS = {
    ("chip", "info"),
    ("profile", "list"),
    ("notification", "list"),
    ("notification", "remove"),
    ("eim", "list"),
}


def _loopless(args: argparse.Namespace, config: IpaConfig) -> bool:
    """Can this command run without an event loop (:mod:`rsp.loopless`)? A one-shot ES10 command talks only to
    the card: the in-process software eUICC answers in this thread, a modem through
    :class:`~firmware_bridge.at_blocking.BlockingAtEngine` (blocking reads with the AT engine's deadlines), and
    the state file is written in this thread."""
    return (args.command, getattr(args, "action", None)) in LOOPLESS_COMMANDS


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = cc.parse_args(parser, argv)
    out = Output(args.json)
    _setup_logging(args.verbose, args.json)
    try:
        config = load_config(args.config)
        if args.port:
            config.device.port, config.device.card = args.port, ""
        if args.baud is not None:
            config.device.baudrate = args.baud
        if config.device.baudrate not in cc.BAUD_RATES:
            raise ConfigError(
                f"--baud / device.baudrate {config.device.baudrate} is not a serial baud rate "
                f"(one of {', '.join(map(str, sorted(cc.BAUD_RATES)))})"
            )
        if getattr(args, "ca_file", None):
            config.es9.ca_file = args.ca_file
        if getattr(args, "insecure", False):
            config.es9.insecure = True
            print(
                "ipa: WARNING: --insecure: the SM-DP+'s TLS certificate is NOT verified; anyone on the path can "
                "impersonate it. Lab use only.",
                file=sys.stderr,
                flush=True,
            )
        if args.card:
            config.device.card = args.card
        if args.route:
            config.device.route = args.route
        if args.block_size is not None:
            if not 1 <= args.block_size <= 255:
                raise ConfigError("--block-size must be 1..255")
            config.device.block_size = args.block_size
        if args.state:
            config.ipa.state_file = args.state
    except ConfigError as exc:
        return out.error(f"configuration: {exc}", {"step": "configuration"}, exit=cc.EXIT_USAGE)
    if args.command == "status":
        return report.status(config, out)
    try:
        if _loopless(args, config):  # nothing can wait: the same coroutines, run without importing asyncio
            return loopless.run(run_command(args, config, out))
        import asyncio

        return asyncio.run(run_command(args, config, out))
    except KeyboardInterrupt:  # loopless: Ctrl-C (the coroutines' cleanup ran); asyncio: a second Ctrl-C
        return out.error(
            cc.step_message(out.last_step or args.command, "interrupted"), out.where(), exit=cc.EXIT_INTERRUPTED
        )


if __name__ == "__main__":
    sys.exit(main())
