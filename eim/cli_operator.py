"""``eim operator add NAME --role ROLE | rotate NAME | remove NAME | list`` - the operators of the REST API.

Edits the operators file locally (``--file``, default ``[api] operators_file``), under a lock, replacing it
atomically with mode 0600; running workers pick the change up within a second, no restart (``eim.api.auth``).
``add`` and ``rotate`` print the new token on stdout, once (the file keeps only its SHA-256): hand it to the
operator, e.g. ``eim operator add grafana --role read-only > grafana.token``. ``rotate`` keeps the role; the old
token stops working as soon as the workers have reloaded. ``list`` prints names and roles, never tokens.
Exit codes: 0 ok; 1 the file cannot be read, parsed or written, or the operator is (not) there; 2 bad command
line (malformed name or role, no file configured).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    file_opt = argparse.ArgumentParser(add_help=False)
    file_opt.add_argument("--file", help="the operators file (default: [api] operators_file of the configuration)")
    o = sub.add_parser("operator", help="operators of the REST API: name, role, token").add_subparsers(
        dest="action", required=True
    )
    a = o.add_parser("add", parents=[file_opt], help="add an operator; prints its new token once")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("read-only", "operator", "admin"))
    r = o.add_parser("rotate", parents=[file_opt], help="give an operator a new token (the old one stops working)")
    r.add_argument("name")
    rm = o.add_parser("remove", parents=[file_opt], help="remove an operator")
    rm.add_argument("name")
    o.add_parser("list", parents=[file_opt], help="names and roles (never tokens)")


def _path(args: argparse.Namespace, error: type[Exception]) -> str:
    if args.file:
        return args.file
    from eim.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise error(f"configuration: {exc}", 2) from None
    if not cfg.api.operators_file:
        raise error("operator: no operators file: give --file or set [api] operators_file in the configuration", 2)
    return cfg.api.operators_file


def cmd_operator(args: argparse.Namespace, error: type[Exception]) -> int:
    from eim.api import auth

    step = f"operator {args.action}"
    if args.action != "list":
        try:
            auth.check_name(args.name)
        except auth.OperatorsFileError as exc:
            raise error(f"{step}: {exc}", 2) from None
    path = _path(args, error)
    token = ""
    try:
        if args.action == "list":
            for e in auth.parse_operators_file(auth.read_text(path), path).values():
                _emit(args, {"name": e.name, "role": e.role.value}, f"{e.name}  {e.role.value}")
            return 0
        with auth.locked(path):
            text = auth.read_text(path, missing_ok=args.action == "add")
            entries = auth.parse_operators_file(text, path)
            if args.action == "add":
                if args.name in entries:
                    raise error(f"{step}: {args.name} is already in {path} (use `eim operator rotate`)", 1)
                token = auth.generate_token()
                entry = auth.OperatorEntry(args.name, auth.Role(args.role), auth.hash_token(token))
                text, _ = auth.set_operator(text, entry, path)
            elif args.action == "rotate":
                if args.name not in entries:
                    raise error(f"{step}: {args.name} is not in {path}", 1)
                token = auth.generate_token()
                entry = auth.OperatorEntry(args.name, entries[args.name].role, auth.hash_token(token))
                text, _ = auth.set_operator(text, entry, path)
            else:
                if args.name not in entries:
                    raise error(f"{step}: {args.name} is not in {path}", 1)
                text, _ = auth.remove_operator(text, args.name, path)
            auth.write_operators_file(path, text)
    except auth.OperatorsFileError as exc:
        raise error(f"{step}: {exc}", 1) from None
    if args.action == "remove":
        _emit(args, {"name": args.name, "file": path, "removed": True}, f"removed {args.name} from {path}")
        return 0
    role = args.role if args.action == "add" else entries[args.name].role.value
    _emit(args, {"name": args.name, "role": role, "file": path, "token": token}, token)  # stdout: the token only
    if not args.json:
        done = "added" if args.action == "add" else "gave a new token to"
        print(f"eim: {done} {args.name} ({role}) in {path}; the token is shown only now", file=sys.stderr)
    return 0


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    from eim.cli import emit

    emit(args, obj, text)
