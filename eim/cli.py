"""``eim``: run an eIM worker, and drive a running one through its REST API.

    eim serve [--config FILE] [--insecure-no-operator-auth]
    eim [--url URL] [--token TOKEN] [--json] euicc register EID [--association-token N] [--counter N] ...
    eim euicc list [--label KEY=VALUE ...] [--state S] | show EID
    eim euicc label EID [KEY=VALUE ...] [--unset KEY] | remove EID [--force]
    eim op create EID KIND [--params JSON|@FILE] [--activation-code AC] [--validity SECONDS] [--not-before ISO]
    eim op list [--eid EID] [--status S] [--kind K] [--batch ID] [--limit N] | show ID | cancel ID
    eim batch create KIND (--eid EID ... | --eids-file FILE) [--params ...] | show ID | cancel ID
    eim notification list [--status pending|failed] [--limit N]
    eim psk set EID (--key HEX | --generate) | remove EID | list   [--file PSKFILE]
    eim operator add NAME --role read-only|operator|admin | rotate NAME | remove NAME | list   [--file FILE]
    eim device-secret set EID | remove EID | list   [--file FILE]   (eim.cli_device_secret)

Operator commands talk to the REST API (``--url``, default ``[api] url`` of the configuration, else
``http://127.0.0.1:8080``; ``--ca-file PEM`` to verify an https URL), so they work against any worker of a
fleet. Output and exit codes follow docs/cli.md (:mod:`rsp.cli_contract`): ``--json`` prints the LPA envelope,
one ``"type":"item"`` line per element of a listing and one final ``"type":"lpa"`` line (the object, or
``{"count": N}`` after a listing; an error is ``code -1`` with ``data.exit``). Exit codes: 0 ok, 1 the eIM refused
the request (its message is printed), 2 bad command line or configuration, 3 the eIM could not be reached,
4 it did not answer in time. Global options may follow the subcommand.

``eim psk`` edits the CoAPS device keys locally (``--file``, default ``[coap] psk_file``); a running eIM picks the
change up within a second. ``set`` prints the key (hex) for the device's configuration, once; ``list`` prints
EIDs, never keys. Exit codes: 0 ok, 1 the file cannot be read, parsed or written (or the EID is not in it),
2 bad command line (malformed EID or key, no file configured).
"""

from __future__ import annotations

import argparse
import sys

from eim.cli_common import EUICC_STATES, KINDS, STATUSES, Api, CliError, emit, paged  # noqa: F401 (re-exported)
from eim.cli_psk import cmd_psk
from eim.cli_rest import (
    cmd_batch,
    cmd_euicc,
    cmd_notification,
    cmd_op,
    euicc_line,
    notification_line,
    op_line,
)
from rsp import cli_contract as cc

__all__ = [  # re-exported: eim.cli_operator, eim.cli_device_secret and tests import them from here
    "KINDS",
    "STATUSES",
    "Api",
    "CliError",
    "cmd_batch",
    "cmd_euicc",
    "cmd_notification",
    "cmd_op",
    "cmd_psk",
    "emit",
    "euicc_line",
    "main",
    "notification_line",
    "op_line",
    "paged",
    "parser",
]


# ------------------------------------------------------------------------------------------------ commands
def cmd_serve(args: argparse.Namespace) -> int:
    from eim import logs
    from eim.config import ConfigError, load_config
    from eim.serve import run

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(f"configuration: {exc}", 2) from None
    logs.setup(config.log.level, config.log.json)
    for key, path in (("[http] tls_cert", config.http.tls_cert), ("[http] tls_key", config.http.tls_key)):
        try:
            if path:
                open(path, "rb").close()
        except OSError as exc:
            raise CliError(f"serve: configuration: {key} {path}: {exc.strerror}", 2) from None
    try:
        run(config, insecure_no_auth=args.insecure_no_operator_auth)
    except ConfigError as exc:
        raise CliError(f"serve: {exc}", 2) from None
    except OSError as exc:  # a configured file that is not there ([http] tls_cert ...), or the port is taken
        if exc.filename or isinstance(exc, FileNotFoundError | PermissionError):
            raise CliError(f"serve: configuration: cannot read {exc.filename or 'a file'}: {exc.strerror}", 2) from None
        raise CliError(f"serve: cannot listen: {exc}", cc.EXIT_CONNECTION) from None
    except KeyboardInterrupt:
        pass
    return 0


# ------------------------------------------------------------------------------------------------ parser
def parser() -> argparse.ArgumentParser:
    p = cc.ContractParser(prog="eim", description="SGP.32 eIM: server and operator commands")
    cc.add_version(p)
    p.add_argument("--config", help="TOML configuration (also EIM_CONFIG)")
    p.add_argument("--url", help="REST API of a running eIM (default: [api] url, else http://127.0.0.1:8080)")
    p.add_argument("--ca-file", help="CA bundle (PEM) to verify an https --url (default: the system's CAs)")
    p.add_argument("--token", help="operator bearer token (default: [api] token / EIM_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = p.add_subparsers(dest="command", required=True)

    sv = sub.add_parser("serve", help="run an eIM worker (HTTP + enabled CoAP/MQTT bindings)")
    sv.add_argument(
        "--insecure-no-operator-auth",
        action="store_true",
        help="serve the operator API on a non-loopback address without operator tokens (anyone reaching the "
        "port may queue work); without it such a configuration is refused",
    )

    from eim import cli_rest

    cli_rest.add_parsers(sub)
    from eim.cli_psk import add_parser as add_psk_parser

    add_psk_parser(sub)
    from eim.cli_device_secret import add_parser as add_device_secret_parser

    add_device_secret_parser(sub)
    cli_rest.add_notification_parser(sub)
    from eim.cli_operator import add_parser as add_operator_parser

    add_operator_parser(sub)
    _global_options_after_subcommands(p)
    return p


GLOBAL_OPTIONS = ("--config", "--url", "--ca-file", "--token", "--json")


def _global_options_after_subcommands(root: argparse.ArgumentParser) -> None:
    """The global options are also accepted after the subcommand (``eim serve --config FILE``, the form of the
    systemd unit, as well as ``eim --config FILE serve``): the shared helper of the CLI contract."""
    cc.globals_after_subcommands(root, GLOBAL_OPTIONS)


def main(argv: list[str] | None = None) -> int:
    args = cc.parse_args(parser(), argv)
    args.out, args.result = cc.Envelope(args.json, "eim"), None
    try:
        rc = _run(args)
    except CliError as exc:
        if args.json:
            args.out.error(str(exc), {"step": str(exc).partition(": ")[0]}, exit=exc.code)
        print(f"eim: {exc}", file=sys.stderr)
        return exc.code
    if args.json and rc == 0 and args.command != "serve":
        args.out.success(args.result if args.result is not None else {"count": args.out.items})
    return rc


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "psk":
        return cmd_psk(args)
    if args.command == "operator":
        from eim.cli_operator import cmd_operator

        return cmd_operator(args, CliError)
    if args.command == "device-secret":
        from eim.cli_device_secret import cmd_device_secret

        return cmd_device_secret(args)
    url, token = args.url, args.token
    if url is None or token is None:
        from eim.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise CliError(f"configuration: {exc}", 2) from None
        url = url or cfg.api_url
        token = token if token is not None else (cfg.api.token or None)
    api = Api(url, token, ca_file=args.ca_file)
    handler = {"euicc": cmd_euicc, "op": cmd_op, "batch": cmd_batch, "notification": cmd_notification}[args.command]
    return handler(args, api)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
