"""`rsp`: field tool for the RSP core - decode/encode ESipa, ES10 and ES9+ messages; lab PKI (`rsp pki`).

    rsp decode --type GetEimPackageResponse BF4F03020101     # JSON on stdout
    rsp decode --auto BF4F03020101                           # {"type": ..., "value": ...}
    rsp encode --type GetEimPackageResponse '{"eimPackageError": 1}'
    rsp types [--all]
    rsp pki ...                                              # see `rsp pki --help`

HEX/JSON may be given as ``-`` to read stdin. Errors print one line naming the step and exit with status 2 (the
input is a bad option value: the exit codes of docs/cli.md, shared by every tool); ``rsp --version``. The JSON
shape is described in docs/asn1.md and :mod:`rsp.asn1.jsonval`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

EXIT_ERROR = 2


class CliError(Exception):
    """One-line error for the user; the message names the step that failed."""


def _read_arg(arg: str) -> str:
    if arg == "-":
        return sys.stdin.read()
    return arg


def _parse_hex(text: str, step: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    if not cleaned:
        raise CliError(f"{step}: no hex input")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise CliError(f"{step}: input is not hex ({cleaned[:40]!r})") from None


def _decode_error_line(step: str, type_name: str, exc) -> str:
    where = f" at byte {exc.position}" if exc.position is not None else ""
    return f"{step}: {type_name}{where}: {exc.reason}"


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _cmd_decode(args) -> int:
    from rsp import asn1
    from rsp.asn1.jsonval import to_json
    from rsp.errors import DecodeError

    data = _parse_hex(_read_arg(args.data), "rsp decode")
    if args.type:
        try:
            value = asn1.decode(args.type, data, strict=args.strict)
        except DecodeError as exc:
            raise CliError(_decode_error_line("rsp decode", args.type, exc)) from None
        _print_json(to_json(args.type, value))
        return 0

    candidates = asn1.guess_types(data)
    if not candidates:
        tag = data[:3].hex().upper()
        raise CliError(f"rsp decode --auto: no top-level ESipa/ES10/ES9+ type starts with tag {tag} (see `rsp types`)")
    # Rank the candidates that decode: no unknown CHOICE alternative anywhere, then SIZE/value constraints met,
    # then re-encodes byte-identical; ties keep the guess_types() order (SGP.32 forms before SGP.22 ones).
    best = None
    failures: list[str] = []
    for name in candidates:
        try:
            value = asn1.decode(name, data)
        except DecodeError as exc:
            failures.append(_decode_error_line(name, name, exc).split(": ", 1)[1])
            continue
        try:
            asn1.decode(name, data, strict=True)
            strict_ok = True
        except DecodeError:
            strict_ok = False
        try:
            exact = asn1.encode(name, value, strict=False) == data
        except asn1.EncodeError:
            exact = False
        score = (not _has_unknown(value), strict_ok, exact)
        if best is None or score > best[0]:
            best = (score, name, value)
    if best is None:
        raise CliError(f"rsp decode --auto: none of {', '.join(candidates)} decodes: {failures[0]}")
    _, name, value = best
    _print_json({"type": name, "value": to_json(name, value)})
    return 0


def _has_unknown(value) -> bool:
    """True if a CHOICE somewhere in the value is an alternative the schema does not know."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] is None:
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_unknown(v) for v in value)
    return False


def _cmd_encode(args) -> int:
    from rsp import asn1
    from rsp.asn1.jsonval import from_json
    from rsp.errors import EncodeError

    text = _read_arg(args.json)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"rsp encode: input is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    try:
        value = from_json(args.type, obj)
        data = asn1.encode(args.type, value, strict=not args.lenient)
    except EncodeError as exc:
        raise CliError(f"rsp encode: {args.type}: {exc.reason}") from None
    sys.stdout.write(data.hex().upper() + "\n")
    return 0


def _cmd_types(args) -> int:
    from rsp import asn1
    from rsp.asn1.catalog import EIM_PACKAGE_TYPES, V10_ESIPA_TYPES

    if args.all:
        for name in asn1.type_names():
            sys.stdout.write(name + "\n")
        return 0
    groups = (
        ("ESipa", asn1.ESIPA_TYPES),
        ("eIM packages", EIM_PACKAGE_TYPES),
        ("ES10a/b/c", asn1.ES10_TYPES),
        ("ES9+/ES11", asn1.ES9_TYPES),
        ("ESipa, SGP.32 v1.0 forms", V10_ESIPA_TYPES),
    )
    for title, names in groups:
        sys.stdout.write(f"# {title}\n")
        for name in names:
            tags = ",".join(sorted(t.hex().upper() for t in asn1.leading_tags(name)))
            sys.stdout.write(f"{name}\t{tags}\n")
    return 0


def _run_pki(argv: list[str]) -> int:
    for module_name in ("rsp.pki_cli", "rsp.pki.cli"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in (module_name, module_name.rsplit(".", 1)[0]):
                raise
            continue
        result = module.main(argv)
        return int(result or 0)
    raise CliError("rsp pki: the lab PKI commands are not available in this installation (rsp.pki_cli missing)")


def build_parser() -> argparse.ArgumentParser:
    from rsp import cli_contract as cc

    parser = cc.ContractParser(
        prog="rsp",
        description="SGP.32/SGP.22 RSP field tool: decode/encode ESipa, ES10 and ES9+ messages; lab PKI.",
    )
    cc.add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="{decode,encode,types,pki}")
    sub.required = True

    dec = sub.add_parser("decode", help="decode DER/BER hex to JSON")
    which = dec.add_mutually_exclusive_group(required=True)
    which.add_argument("--type", "-t", metavar="T", help="ASN.1 type name as in the spec (see `rsp types`)")
    which.add_argument("--auto", action="store_true", help="guess among the top-level types by the leading tag")
    dec.add_argument("--strict", action="store_true", help="also enforce SIZE/value constraints (with --type)")
    dec.add_argument("data", metavar="HEX", help="hex bytes, or - for stdin")
    dec.set_defaults(func=_cmd_decode)

    enc = sub.add_parser("encode", help="encode JSON to DER hex")
    enc.add_argument("--type", "-t", metavar="T", required=True, help="ASN.1 type name as in the spec")
    enc.add_argument("--lenient", action="store_true", help="do not enforce SIZE/value constraints")
    enc.add_argument("json", metavar="JSON", help="the value as JSON (see docs/asn1.md), or - for stdin")
    enc.set_defaults(func=_cmd_encode)

    types = sub.add_parser("types", help="list the top-level message types and their tags")
    types.add_argument("--all", action="store_true", help="list every type name the codec knows")
    types.set_defaults(func=_cmd_types)

    sub.add_parser("pki", help="lab PKI (see `rsp pki --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "pki":
            return _run_pki(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except CliError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:  # `rsp types | head -1`: the reader has what it wanted (docs/cli.md: exit 0, quiet)
        from rsp.cli_contract import EXIT_PIPE, _silence_stdout

        _silence_stdout()
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
