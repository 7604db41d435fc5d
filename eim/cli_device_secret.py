"""``eim device-secret set EID | remove EID | list [--file FILE]``: the per-device secrets of ESipa over HTTP(S)
(``[devices] secret_file``, :mod:`eim.bindings.device_secrets`).

``set`` makes a new random secret for the EID (replacing any previous one) and prints the device's token,
``<EID>.<secret>``, once, alone on stdout (``eim device-secret set EID > device.token``); the file keeps only a
salted hash. ``list`` prints EIDs, never secrets. A running eIM picks the change up within a second. Exit codes:
0 ok, 1 the file cannot be read, parsed or written (or the EID is not in it), 2 bad command line (malformed
EID, no file configured).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class DeviceSecretCliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


def add_parser(sub: Any) -> None:
    file_opt = argparse.ArgumentParser(add_help=False)
    file_opt.add_argument("--file", help="the device secret file (default: [devices] secret_file of the configuration)")
    d = sub.add_parser("device-secret", help="HTTP(S) device secrets (Authorization: Bearer)").add_subparsers(
        dest="action", required=True
    )
    ds = d.add_parser("set", parents=[file_opt], help="a new secret for a device; prints its token once")
    ds.add_argument("eid")
    dr = d.add_parser("remove", parents=[file_opt], help="remove a device's secret")
    dr.add_argument("eid")
    d.add_parser("list", parents=[file_opt], help="the EIDs that have a secret (never the secrets)")


def _path(args: argparse.Namespace) -> str:
    if args.file:
        return args.file
    from eim.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise DeviceSecretCliError(f"configuration: {exc}", 2) from None
    if not cfg.devices.secret_file:
        raise DeviceSecretCliError(
            "device-secret: no file: give --file or set [devices] secret_file in the configuration", 2
        )
    return cfg.devices.secret_file


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    from eim.cli import emit

    emit(args, obj, text)


def cmd_device_secret(args: argparse.Namespace) -> int:
    from eim.bindings.coap_psk import PskFileError, locked, read_psk_text, write_psk_file
    from eim.bindings.device_secrets import (
        DeviceSecretError,
        check_eid,
        new_token,
        parse_secret_file,
        remove_secret,
        set_secret,
    )

    step = f"device-secret {args.action}"
    try:
        if args.action != "list":
            try:
                check_eid(args.eid)
            except DeviceSecretError as exc:
                raise DeviceSecretCliError(f"{step}: {exc}", 2) from None
        path = _path(args)
        try:
            if args.action == "list":
                for eid in parse_secret_file(read_psk_text(path), path):
                    _emit(args, {"eid": eid}, eid)
                return 0
            with locked(path):
                if args.action == "set":
                    token, entry = new_token(args.eid)
                    text, replaced = set_secret(read_psk_text(path, missing_ok=True), args.eid, entry, path)
                else:
                    text, removed = remove_secret(read_psk_text(path), args.eid, path)
                    if not removed:
                        raise DeviceSecretCliError(f"{step}: {args.eid} is not in {path}", 1)
                warnings = write_psk_file(path, text, check=parse_secret_file)
        except (DeviceSecretError, PskFileError) as exc:
            raise DeviceSecretCliError(f"{step}: {exc}", 1) from None
        for warning in warnings:
            print(f"eim: warning: {warning}", file=sys.stderr)
        if args.action == "set":
            _emit(args, {"eid": args.eid, "file": path, "token": token, "replaced": replaced}, token)
            if not args.json:
                print(f"eim: {'replaced' if replaced else 'added'} the secret of {args.eid} in {path}", file=sys.stderr)
        elif not args.json:
            print(f"eim: removed the secret of {args.eid} from {path}", file=sys.stderr)
        return 0
    except DeviceSecretCliError as exc:
        if args.json:
            from eim.cli import CliError

            raise CliError(str(exc), exc.code) from None  # eim.cli.main writes the envelope
        print(f"eim: {exc}", file=sys.stderr)
        return exc.code
