"""``eim psk set EID (--key HEX | --generate) | remove EID | list [--file PSKFILE]``: the CoAPS (DTLS) device keys
(docs/esipa-bindings.md, *CoAPS*), edited locally (``--file``, default ``[coap] psk_file``); a running eIM picks the
change up within a second. ``set`` prints the key (hex) for the device's configuration, once; ``list`` prints EIDs,
never keys. Exit codes: 0 ok, 1 the file cannot be read, parsed or written (or the EID is not in it), 2 bad command
line (malformed EID or key, no file configured).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eim.cli_common import CliError, emit


def _psk_path(args: argparse.Namespace) -> str:
    if args.file:
        return args.file
    from eim.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(f"configuration: {exc}", 2) from None
    if not cfg.coap.psk_file:
        raise CliError("psk: no PSK file: give --file or set [coap] psk_file in the configuration", 2)
    return cfg.coap.psk_file


def _psk_key(args: argparse.Namespace) -> bytes:
    from eim.bindings.coap_psk import PskFileError, generate_key, key_from_hex

    if args.generate:
        return generate_key()
    text = sys.stdin.readline() if args.key == "-" else args.key
    try:
        return key_from_hex(text)
    except PskFileError as exc:
        raise CliError(f"psk set: --key: {exc}", 2) from None


def cmd_psk(args: argparse.Namespace) -> int:
    from eim.bindings.coap_psk import (
        PskFileError,
        check_eid,
        locked,
        parse_psk_file,
        read_psk_text,
        remove_psk,
        set_psk,
        write_psk_file,
    )
    from rsp.files import tighten_stdout

    step = f"psk {args.action}"
    if args.action != "list":
        try:
            check_eid(args.eid)
        except PskFileError as exc:
            raise CliError(f"{step}: {exc}", 2) from None
    key = _psk_key(args) if args.action == "set" else b""
    path = _psk_path(args)
    try:
        if args.action == "list":
            for eid in parse_psk_file(read_psk_text(path), path):
                emit(args, {"eid": eid}, eid)
            return 0
        with locked(path):
            if args.action == "set":
                text, replaced = set_psk(read_psk_text(path, missing_ok=True), args.eid, key, path)
            else:
                text, removed = remove_psk(read_psk_text(path), args.eid, path)
                if not removed:
                    raise CliError(f"{step}: {args.eid} is not in {path}", 1)
            warnings = write_psk_file(path, text)
    except PskFileError as exc:
        raise CliError(f"{step}: {exc}", 1) from None
    for warning in warnings:
        print(f"eim: warning: {warning}", file=sys.stderr)
    if args.action == "set":
        obj = {"eid": args.eid, "file": path, "key": key.hex(), "replaced": replaced}
        tighten_stdout()  # `> device.psk` was created by the shell with its umask: 0600 before the key is written
        emit(args, obj, key.hex())  # stdout holds nothing but the key: `eim psk set EID --generate > device.psk`
        if not args.json:
            print(f"eim: {'replaced' if replaced else 'added'} the key of {args.eid} in {path}", file=sys.stderr)
    else:
        emit(args, {"eid": args.eid, "file": path, "removed": True}, f"removed {args.eid} from {path}")
    return 0


def add_parser(sub: Any) -> None:
    """``psk set | remove | list``."""
    file_opt = argparse.ArgumentParser(add_help=False)
    file_opt.add_argument("--file", help="the PSK file (default: [coap] psk_file of the configuration)")
    k = sub.add_parser("psk", help="CoAPS (DTLS) device keys: EID:hexkey lines").add_subparsers(
        dest="action", required=True
    )
    ks = k.add_parser("set", parents=[file_opt], help="add or replace a device's key; prints the key once")
    ks.add_argument("eid")
    which = ks.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the key in hex, 16 bytes ('-' reads it from stdin)")
    which.add_argument("--generate", action="store_true", help="a new random 16-byte key")
    kr = k.add_parser("remove", parents=[file_opt], help="remove a device's key")
    kr.add_argument("eid")
    k.add_parser("list", parents=[file_opt], help="the EIDs that have a key (never the keys)")
