"""``smdpp``: the lab SM-DP+ command line.

    smdpp serve --pki DIR --data DIR [--host H] [--port P] [--address ADDR] [--insecure-http] [--sgp26]
                [--curve nist|brainpool|both] [--workers N|auto]
    smdpp order create --data DIR [--profile NAME | --upp FILE [--profile-name N] [--service-provider S]
                       [--profile-class C]] [--eid EID] [--confirmation-code CC] [--expires 2h|ISO]
                       [--host ADDR] [--hold] [--matching-id ID] [--json]
    smdpp order show MATCHING_ID --data DIR [--json]
    smdpp order list --data DIR [--state STATE] [--eid EID] [--json]
    smdpp order release MATCHING_ID --data DIR
    smdpp order cancel MATCHING_ID --data DIR [--final available|unavailable]
    smdpp profile list [--data DIR] [--json]
    smdpp profile import FILE --data DIR [--name NAME] [--profile-name N] [--service-provider S]
                         [--profile-class C] [--json]
    smdpp notifications --data DIR [--json]

``--json`` (before or after the subcommand) prints the JSON-lines envelope of docs/cli.md: one ``item`` line per
listed order, profile or notification and a final ``lpa`` line (``{"count": N}`` after a listing, else the
object). Exit codes (docs/cli.md): 0 done, 1 the step failed (message names it), 2 bad arguments,
3 ``serve`` cannot listen.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rsp import cli_contract as cc
from smdpp import orders, profiles, upp
from smdpp.store import STATES, OrderStore, StoreError

DEFAULT_ADDRESS = "127.0.0.1:8443"
CURVES = {"nist": ("nist",), "brainpool": ("brainpool",), "both": ("nist", "brainpool")}


def _parser() -> argparse.ArgumentParser:
    p = cc.ContractParser(prog="smdpp", description="Lab SM-DP+ (SGP.22 v2.5 ES9+ over HTTPS)")
    cc.add_version(p)
    p.add_argument("--json", action="store_true", help="the JSON-lines envelope of docs/cli.md")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the SM-DP+")
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8443, help="listen port (default 8443, 0 = any free port)")
    s.add_argument("--pki", type=Path, help="lab PKI directory (rsp pki init)")
    s.add_argument("--data", type=Path, required=True, help="data directory (order store)")
    s.add_argument("--address", default="", help="SM-DP+ address in activation codes (default HOST:PORT)")
    s.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ADDR",
        help="another SM-DP+ address to accept in InitiateAuthentication (repeatable)",
    )
    s.add_argument("--insecure-http", action="store_true", help="plain HTTP, for debugging only")
    s.add_argument("--sgp26", action="store_true", help="present the GSMA SGP.26 test DPauth/DPpb/TLS credentials")
    s.add_argument("--curve", choices=sorted(CURVES), default="both", help="credential sets to offer")
    s.add_argument(
        "--workers",
        default="1",
        help="worker processes on the port, sharing the store (default 1; auto = one per CPU)",
    )
    s.add_argument("-v", "--verbose", action="count", default=0)

    o = sub.add_parser("order", help="download orders").add_subparsers(dest="order_cmd", required=True)
    c = o.add_parser("create", help="create a download order and print its activation code")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--profile", help=f"profile name (smdpp profile list; default {profiles.DEFAULT_PROFILE})")
    c.add_argument("--upp", type=Path, help="serve this profile package file (DER UPP, e.g. a TS.48 test profile)")
    _upp_metadata_args(c)
    c.add_argument("--eid", help="link the order to this EID")
    c.add_argument("--confirmation-code", help="require this confirmation code")
    c.add_argument("--expires", help="expiry: a duration (30m, 2h, 7d) or an ISO 8601 date-time")
    c.add_argument("--host", default=DEFAULT_ADDRESS, help=f"SM-DP+ address for the code (default {DEFAULT_ADDRESS})")
    c.add_argument("--hold", action="store_true", help="confirm but do not release (state confirmed)")
    c.add_argument("--matching-id", help="use this matchingId instead of a random one")
    for name in ("show", "release", "cancel"):
        x = o.add_parser(name)
        x.add_argument("matching_id")
        x.add_argument("--data", type=Path, required=True)
        if name == "cancel":
            x.add_argument("--final", choices=("available", "unavailable"), default="unavailable")
    ls = o.add_parser("list")
    ls.add_argument("--data", type=Path, required=True)
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--eid")

    pr = sub.add_parser("profile", help="test profiles").add_subparsers(dest="profile_cmd", required=True)
    pl = pr.add_parser("list")
    pl.add_argument("--data", type=Path, help="also list the packages imported into this data directory")
    pi = pr.add_parser("import", help="import a profile package file (DER UPP) to serve by name")
    pi.add_argument("file", type=Path)
    pi.add_argument("--data", type=Path, required=True)
    pi.add_argument("--name", help="profile name (default upp-<sha256 prefix>)")
    _upp_metadata_args(pi)

    n = sub.add_parser("notifications", help="notifications received")
    n.add_argument("--data", type=Path, required=True)
    cc.globals_after_subcommands(p, ("--json",))
    return p


def _upp_metadata_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile-name", help="profileName in the metadata (default: the package's profileType)")
    p.add_argument("--service-provider", default="Lab Operator", help="serviceProviderName in the metadata")
    p.add_argument("--profile-class", choices=upp.PROFILE_CLASSES, default="operational")


def _import(args: argparse.Namespace, path: Path, name: str | None = None) -> profiles.TestProfile:
    """Read and import a UPP file; raises upp.UppError naming the file and the check."""
    try:
        package = path.read_bytes()
    except OSError as exc:
        raise upp.UppError(f"cannot read {path}: {exc.strerror}") from None
    return profiles.import_upp(
        args.data,
        package,
        name=name,
        service_provider_name=args.service_provider,
        profile_name=args.profile_name,
        profile_class=args.profile_class,
        what=str(path),
    )


def _profile_line(p: profiles.TestProfile) -> str:
    if p.upp is not None:
        return f"{p.name:<11} {p.size:>7} bytes  class {p.profile_class:<11} ICCID {p.fixed_iccid}  {p.description}"
    return f"{p.name:<11} {p.size:>7} bytes  class {p.profile_class:<11} {p.description}"


def _print_order(d: dict, out: cc.Envelope) -> int:
    if out.json:
        return out.success(d)
    print(f"activation code: {d['activation_code']}")
    for key in (
        "matching_id",
        "state",
        "profile",
        "iccid",
        "eid",
        "bound_eid",
        "expires_at",
        "cc_required",
        "cc_attempts",
        "download_attempts",
        "last_error",
    ):
        if d.get(key) not in (None, False, 0) or key in ("state", "matching_id"):
            print(f"  {key}: {d[key]}")
    for ev in d.get("history", []):
        print(f"  {ev['at']}  {ev['state']:<11} {ev['detail']}")
    return 0


def _fail(out: cc.Envelope, step: str, exc: Exception | str, code: int) -> int:
    """The error line (stderr, and the final envelope line under --json); returns the exit code."""
    message = cc.step_message(step, str(exc))
    if out.json:
        out.error(message, {"step": step}, exit=code)
    print(f"smdpp {message}", file=sys.stderr)
    return code


def _listed(out: cc.Envelope, what: str) -> int:
    if out.json:
        return out.success({"count": out.items})
    if not out.items:
        print(f"no {what}")  # an empty listing says so (docs/cli.md)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = cc.parse_args(_parser(), argv)
    out = cc.Envelope(args.json, "smdpp")
    if args.cmd == "serve":
        return _serve(args, out)
    if args.cmd == "profile":
        if args.data is not None:
            profiles.use_data_dir(args.data)
        if args.profile_cmd == "import":
            try:
                imported = _import(args, args.file, args.name)
            except upp.UppError as exc:
                return _fail(out, "profile import", exc, cc.EXIT_USAGE)
            return out.success(imported.to_json(), _profile_line(imported))
        try:
            for p in profiles.all_profiles():
                out.item("profile", p.to_json(), _profile_line(p))
        except upp.UppError as exc:
            return _fail(out, "profile list", exc, cc.EXIT_REFUSED)
        return _listed(out, "profiles")
    profiles.use_data_dir(args.data)
    store = OrderStore.in_dir(args.data)
    try:
        if args.cmd == "notifications":
            for note in store.notifications(1000):
                d = note.to_json()
                out.item(
                    "notification",
                    d,
                    f"{d['received_at']} {d['kind']:<5} {d['event'] or '-':<8} ICCID {d['iccid'] or '-'} "
                    f"verified={d['verified']} {d['detail']}",
                )
            return _listed(out, "notifications")
        if args.order_cmd == "create":
            try:
                if args.upp is not None and args.profile is not None:
                    raise orders.OrderError("give --profile or --upp, not both")
                profile = args.profile or profiles.DEFAULT_PROFILE
                if args.upp is not None:
                    profile = _import(args, args.upp).name
                order = orders.create_order(
                    store,
                    profile=profile,
                    smdp_address=args.host,
                    eid=args.eid,
                    confirmation_code=args.confirmation_code,
                    expires=args.expires,
                    hold=args.hold,
                    matching_id=args.matching_id,
                )
            except (orders.OrderError, upp.UppError) as exc:
                return _fail(out, "order create", exc, cc.EXIT_USAGE)
            return _print_order(orders.order_json(store, order), out)
        if args.order_cmd == "list":
            for order in store.list(args.state, args.eid):
                d = orders.order_json(store, order)
                out.item(
                    "order",
                    d,
                    f"{d['matching_id']}  {d['state']:<11} {d['profile']:<10} ICCID {d['iccid']}  "
                    f"EID {d['eid'] or '-'}",
                )
            return _listed(out, "orders")
        try:
            if args.order_cmd == "show":
                order = store.require(args.matching_id)
            elif args.order_cmd == "release":
                order = store.release(args.matching_id)
            else:
                order = store.cancel(args.matching_id, args.final)
        except StoreError as exc:
            return _fail(out, f"order {args.order_cmd}", exc, cc.EXIT_REFUSED)
        return _print_order(orders.order_json(store, order, history=args.order_cmd == "show"), out)
    finally:
        store.close()


def _serve(args: argparse.Namespace, out: cc.Envelope) -> int:
    from smdpp.config import SmdppConfig
    from smdpp.credentials import CredentialsError
    from smdpp.server import serve

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.pki is None and not args.sgp26:
        return _fail(out, "serve", "give --pki DIR (a lab PKI from `rsp pki init`) or --sgp26", cc.EXIT_USAGE)
    from smdpp.workers import worker_count

    try:
        workers = worker_count(args.workers)
    except ValueError as exc:
        return _fail(out, "serve", exc, cc.EXIT_USAGE)
    config = SmdppConfig(
        data_dir=args.data,
        pki_dir=args.pki,
        host=args.host,
        port=args.port,
        address=args.address,
        aliases=tuple(args.alias),
        insecure_http=args.insecure_http,
        sgp26=args.sgp26,
        curves=CURVES[args.curve],
    )
    try:
        code = serve(config, workers)
    except CredentialsError as exc:
        return _fail(out, "serve", f"loading credentials failed: {exc}", cc.EXIT_REFUSED)
    except OSError as exc:
        return _fail(out, "serve", f"cannot listen on {args.host}:{args.port}: {exc}", cc.EXIT_CONNECTION)
    if code:
        return _fail(out, "serve", "worker processes kept dying (see the log)", cc.EXIT_REFUSED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
