"""``euicc`` command line: create, inspect and poke a software eUICC (state file).

::

    euicc new   --pki DIR --eid EID --state FILE [--curve nist|brainpool] [--trust-ci PEM ...] [--default-dp ADDR]
    euicc new   --euicc-cert FILE --euicc-key FILE --eum-cert FILE --ci FILE [--ci ...] --state FILE [--eid EID]
                [--trust-ci PEM ...] [--default-dp ADDR]       # an outside identity (another test PKI, SGP.26)
    euicc show  --state FILE [--json]
    euicc apdu  --state FILE HEX [HEX ...]     # raw APDUs in one card session (channels live within the call)
    euicc es10  --state FILE HEX [--block-size N]  # one ES10 command: open channel, SELECT ISD-R, STORE DATA

Errors name the step that failed and exit with the codes of docs/cli.md: 2 for a bad command line, option value
or state file, 1 when the card refused an ES10 command. ``--json`` (before or after the subcommand) prints the
JSON-lines envelope of docs/cli.md; ``euicc --version``. ``show`` never prints the private key. ICCIDs
are printed as digits (``8949449999999990007``), as the other tools print them; ``--json`` keeps ``iccid`` in the
wire form (EF.ICCID, nibble-swapped hex) and adds ``iccid_digits``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from euicc import state as state_mod
from euicc.state import CLASS_NAMES, EVENT_NAMES, EuiccState
from rsp import cli_contract as cc
from rsp import iccid as iccid_codec
from rsp.errors import RspError


class CliError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:  # 2: usage (docs/cli.md)
        self.code = code
        super().__init__(message)


def _hex(text: str, what: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise CliError(f"{what}: {text!r} is not hexadecimal") from None
    if not data:
        raise CliError(f"{what}: empty")
    return data


def summary(st: EuiccState) -> dict:
    """Everything ``euicc show`` prints (no key material)."""
    from euicc.identity import Identity

    ident = Identity.from_state(st)
    return {
        "eid": st.eid.hex().upper(),
        "curve": st.curve,
        "ci_key_ids_verification": [k.hex().upper() for k in ident.ci_pkids_for_verification()],
        "ci_key_ids_signing": [k.hex().upper() for k in ident.ci_pkids_for_signing()],
        "default_dp_address": st.default_dp_address,
        "root_ds_address": st.root_ds_address,
        "profiles": [
            {
                "iccid": p.iccid.hex().upper(),  # the wire form (EF.ICCID, nibble-swapped), for scripts
                "iccid_digits": iccid_codec.from_bcd(p.iccid),  # as every other tool prints it
                "isdp_aid": p.isdp_aid.hex().upper(),
                "state": "enabled" if p.enabled else "disabled",
                "class": CLASS_NAMES.get(p.profile_class, str(p.profile_class)),
                "name": p.profile_name,
                "service_provider": p.service_provider_name,
                "fallback": p.fallback_attribute,
                "emergency": p.ecall_indication,
            }
            for p in st.profiles
        ],
        "eims": [
            {
                "eim_id": e.eim_id,
                "fqdn": e.fqdn,
                "counter": e.counter,
                "association_token": e.association_token,
                "key": "certificate" if (e.public_key_data or b"")[:1] == b"\xa1" else "spki",
            }
            for e in st.eims
        ],
        "pending_notifications": [
            {
                "seq": n.seq,
                "kind": n.kind,
                "event": EVENT_NAMES.get(n.event) if n.event is not None else None,
                "address": n.address,
                "iccid": n.iccid.hex().upper() if n.iccid else None,
                "iccid_digits": iccid_codec.from_bcd(n.iccid) if n.iccid else None,
                "eim_id": n.eim_id,
            }
            for n in sorted(st.notifications, key=lambda n: n.seq)
        ],
        "next_seq": st.next_seq,
        "immediate_enable": {
            "enabled": st.immediate_enable.flag,
            "smdp_address": st.immediate_enable.smdp_address,
            "smdp_oid": st.immediate_enable.smdp_oid,
        },
        "rollback_authorised": st.rollback is not None,
        "fallback_active": st.fallback_active,
        "emergency_active": st.emergency_active,
    }


def _print_human(info: dict) -> None:
    print(f"EID {info['eid']} ({info['curve']})")
    print(f"  default SM-DP+: {info['default_dp_address'] or '-'}   root SM-DS: {info['root_ds_address']}")
    print(f"profiles ({len(info['profiles'])}):")
    for p in info["profiles"]:
        flags = [f for f, on in (("fallback", p["fallback"]), ("emergency", p["emergency"])) if on]
        extra = f"  [{', '.join(flags)}]" if flags else ""
        print(f"  ICCID {p['iccid_digits']:<20}  {p['state']:8}  {p['class']:12}  {p['name']!r}{extra}")
    print(f"eIMs ({len(info['eims'])}):")
    for e in info["eims"]:
        print(f"  {e['eim_id']!r}  counter {e['counter']}  token {e['association_token']}  fqdn {e['fqdn'] or '-'}")
    print(f"pending notifications ({len(info['pending_notifications'])}):")
    for n in info["pending_notifications"]:
        what = n["event"] or ""
        iccid = f"ICCID {n['iccid_digits']}" if n["iccid_digits"] else ""
        print(f"  seq {n['seq']:<5} {n['kind']:5} {what:8} {n['address'] or n['eim_id'] or ''}  {iccid}".rstrip())
    print(
        f"next seqNumber {info['next_seq']}; rollback authorised: {info['rollback_authorised']}; "
        f"fallback active: {info['fallback_active']}; emergency active: {info['emergency_active']}"
    )


def cmd_new(args) -> int:
    from euicc.card import SoftEuicc

    imported = [args.euicc_cert, args.euicc_key, args.eum_cert]
    if args.pki is None:
        missing = [
            flag
            for flag, value in (
                ("--euicc-cert", args.euicc_cert),
                ("--euicc-key", args.euicc_key),
                ("--eum-cert", args.eum_cert),
                ("--ci", args.ci),
            )
            if not value
        ]
        if missing:
            raise CliError(f"give --pki DIR, or an outside identity (missing {', '.join(missing)})")
        return _cmd_import(args)
    if any(imported) or args.ci:
        raise CliError("--pki and --euicc-cert/--euicc-key/--eum-cert/--ci exclude each other")
    if args.eid is None:
        raise CliError("--eid is required with --pki")
    card = SoftEuicc.create(
        args.pki,
        args.eid,
        args.state,
        curve=args.curve,
        trusted_ci_paths=args.trust_ci or (),
        default_dp_address=args.default_dp,
    )
    print(f"created eUICC {card.state.eid.hex().upper()} ({card.state.curve}) in {args.state}")
    return 0


def _cmd_import(args) -> int:
    from euicc.card import SoftEuicc
    from euicc.provision import import_state

    st = import_state(
        args.euicc_cert,
        args.euicc_key,
        args.eum_cert,
        args.ci,
        eid=args.eid,
        trusted_ci_paths=args.trust_ci or (),
        default_dp_address=args.default_dp,
    )
    card = SoftEuicc(st, args.state)
    state_mod.save(st, card.state_path)
    print(f"created eUICC {st.eid.hex().upper()} ({st.curve}) in {args.state} from {args.euicc_cert}")
    return 0


def cmd_show(args) -> int:
    info = summary(state_mod.load(args.state))
    if args.json:
        return cc.Envelope(True, "euicc").success(info)
    _print_human(info)
    return 0


def cmd_apdu(args) -> int:
    from euicc.card import SoftEuicc

    card = SoftEuicc.load(args.state)
    for text in args.hex:
        command = _hex(text, "APDU")
        print(card.process(command).hex().upper())
        if card.take_refresh():
            print("# card raised REFRESH: card reset, all logical channels closed", file=sys.stderr)
            card.reset()
    return 0


def cmd_es10(args) -> int:
    from euicc.card import SoftEuicc
    from euicc.channel import ChannelError, LocalApduChannel
    from ipa.es10 import Es10Client, Es10Error

    card = SoftEuicc.load(args.state)
    command = _hex(args.hex, "ES10 command")

    async def run() -> bytes:
        channel = LocalApduChannel(card)
        await channel.open()
        try:
            return await Es10Client(channel, block_size=args.block_size).call(command)
        finally:
            if not channel.reset_detected:
                await channel.close()

    try:
        data = asyncio.run(run())
    except (ChannelError, Es10Error) as exc:
        raise CliError(f"ES10 command: {exc}", cc.EXIT_REFUSED) from None
    print(data.hex().upper())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = cc.ContractParser(prog="euicc", description="software SGP.32 eUICC (lab card)")
    cc.add_version(parser)
    parser.add_argument("--json", action="store_true", help="the JSON-lines envelope of docs/cli.md")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("new", help="create a card from the lab PKI or from an outside identity")
    p.add_argument("--pki", help="lab PKI directory (rsp pki init)")
    p.add_argument("--eid", help="32-digit EID (required with --pki; with an import it must match the certificate)")
    p.add_argument("--euicc-cert", metavar="FILE", help="import: eUICC certificate (PEM or DER)")
    p.add_argument("--euicc-key", metavar="FILE", help="import: eUICC private key (PEM or DER, PKCS#8 or SEC1)")
    p.add_argument("--eum-cert", metavar="FILE", help="import: EUM certificate (PEM or DER)")
    p.add_argument(
        "--ci", action="append", default=[], metavar="FILE", help="import: CI certificate(s) (PEM bundle or DER)"
    )
    p.add_argument("--state", required=True, help="state file to create")
    p.add_argument("--curve", default="nist", choices=["nist", "brainpool"])
    p.add_argument("--trust-ci", nargs="+", metavar="PEM", help="extra trusted CI certificates (e.g. SGP.26 test CI)")
    p.add_argument("--default-dp", metavar="ADDR", help="default SM-DP+ address")
    p.add_argument("--force", action="store_true", help="overwrite an existing state file")
    p.set_defaults(func=cmd_new)
    p = sub.add_parser("show", help="print EID, profiles, eIMs, counters and pending notifications")
    p.add_argument("--state", required=True)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("apdu", help="send raw APDUs (one card session)")
    p.add_argument("--state", required=True)
    p.add_argument("hex", nargs="+", help="command APDU in hex")
    p.set_defaults(func=cmd_apdu)
    p = sub.add_parser("es10", help="send one ES10 command through a logical channel to the ISD-R")
    p.add_argument("--state", required=True)
    p.add_argument("hex", help="ES10 command TLV in hex, e.g. BF2200")
    p.add_argument("--block-size", type=int, default=120, choices=range(1, 256), metavar="1..255")
    p.set_defaults(func=cmd_es10)
    cc.globals_after_subcommands(parser, ("--json",))
    return parser


STEPS = {"new": "create card", "show": "show card", "apdu": "send APDU", "es10": "send ES10 command"}


def main(argv: list[str] | None = None) -> int:
    args = cc.parse_args(build_parser(), argv)
    step = STEPS.get(args.command, args.command)
    try:
        if args.command == "new" and not args.force:
            from pathlib import Path

            if Path(args.state).exists():
                raise CliError(f"state file {args.state} exists (use --force to overwrite)")
        return args.func(args)
    except BrokenPipeError:
        raise  # the reader closed stdout: rsp.cli_contract.guard (exit 0, quiet)
    except (CliError, RspError, OSError) as exc:
        code = exc.code if isinstance(exc, CliError) else cc.EXIT_USAGE
        if args.json:
            cc.Envelope(True, "euicc").error(f"{step}: {exc}", {"step": step}, exit=code)
        print(f"euicc: {step}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
