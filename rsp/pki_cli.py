"""``rsp pki ...``: lab PKI and certificate checks on the command line (dispatched from ``rsp.cli``).

    rsp pki init DIR [--curve nist|brainpool|both] [--eid EID ...] [--host NAME ...] [--eid-prefix DIGITS ...]
    rsp pki show DIR [--json]
    rsp pki verify CERT --role ROLE --ca CI_CERT [--ca ...] [--untrusted CERT ...] [--at ISO-TIME]
                   (an eUICC is also checked against its EUM's permitted EID range, SGP.22 §4.5.2.2)
    rsp pki eid [BODY30 | --serial N]      (check digits / a valid lab EID)

Exit status: 0 success, 1 the step failed (message on stderr names it), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

from rsp import crypto
from rsp.pki.certs import (
    Role,
    eid_check_digits,
    eid_of,
    is_valid_eid,
    lab_eid,
    load_certificates,
    policies_of,
    subject_text,
)
from rsp.pki.chain import ChainError, verify_chain
from rsp.pki.eid_range import eid_range_of
from rsp.pki.lab import LabPki, LabPkiError, create_lab_pki

PROG = "rsp pki"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Lab PKI generation and RSP certificate checks.")
    sub = p.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create a complete lab PKI in DIR")
    init.add_argument("dir")
    init.add_argument(
        "--curve",
        choices=("nist", "brainpool", "both"),
        default="nist",
        help="curve(s) of the CI/EUM/eUICC/DPauth/DPpb/eIM keys (default nist); TLS keys are NIST",
    )
    init.add_argument(
        "--eid",
        action="extend",
        nargs="+",
        default=[],
        metavar="EID",
        help="32-digit EID with valid check digits; repeat for several (default: one lab EID)",
    )
    init.add_argument(
        "--host",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="DNS name for the TLS certificates (default localhost; 127.0.0.1 always added)",
    )

    init.add_argument(
        "--eid-prefix",
        action="extend",
        nargs="+",
        default=[],
        metavar="DIGITS",
        help="extra EID prefix the EUMs permit (always: 89999000 and the first 8 digits of each --eid)",
    )

    show = sub.add_parser("show", help="list the certificates of a lab PKI and verify each chain")
    show.add_argument("dir")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    ver = sub.add_parser("verify", help="verify a certificate chain for an RSP role")
    ver.add_argument("cert", help="leaf certificate (PEM or DER)")
    ver.add_argument("--role", required=True, choices=[r.value for r in Role])
    ver.add_argument(
        "--ca",
        action="append",
        required=True,
        metavar="FILE",
        help="trusted CI certificate(s) (PEM bundle or DER); repeatable",
    )
    ver.add_argument(
        "--untrusted",
        action="append",
        default=[],
        metavar="FILE",
        help="intermediate certificate(s), e.g. the EUM; repeatable",
    )
    ver.add_argument("--at", help="verification time (ISO 8601, default now)")

    eid = sub.add_parser("eid", help="compute EID check digits or make a valid lab EID")
    g = eid.add_mutually_exclusive_group(required=True)
    g.add_argument("body", nargs="?", help="first 30 digits (prints the full EID) or a 32-digit EID (checks it)")
    g.add_argument("--serial", type=int, help="print the lab EID 89999...<serial><check digits>")
    _add_device_cert(sub)
    return p


def _add_device_cert(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser(
        "device-cert", help="issue a TLS client certificate for an IPA (ESipa over HTTPS with mutual TLS)"
    )
    dev.add_argument("dir", help="lab PKI directory (its device CA tls/device-ca.cert.pem is made on first use)")
    dev.add_argument("--eid", required=True, help="the device's EID (subject serialNumber)")
    dev.add_argument("--out", help="where to write <EID>.cert.pem and <EID>.key.pem (default DIR/tls/devices)")
    dev.add_argument("--days", type=int, default=825, help="validity in days (default 825)")


def _cmd_device_cert(args: argparse.Namespace) -> int:
    from rsp.pki.device_tls import DeviceTlsError, write_device_certificate

    try:
        cert, key, ca = write_device_certificate(args.dir, args.eid, args.out, days=args.days)
    except DeviceTlsError as exc:
        return _fail("device-cert", exc)
    print(f"device certificate {cert}\ndevice key {key}\ndevice CA (the eIM's [devices] client_ca) {ca}")
    return 0


def _fail(step: str, exc: Exception | str) -> int:
    print(f"{PROG} {step}: {exc}", file=sys.stderr)
    return 1


def _cmd_init(args: argparse.Namespace) -> int:
    curves = ("nist", "brainpool") if args.curve == "both" else (args.curve,)
    t0 = time.perf_counter()
    try:
        pki = create_lab_pki(
            args.dir, curves=curves, eids=args.eid, hosts=args.host or ("localhost",), eid_prefixes=args.eid_prefix
        )
    except (LabPkiError, OSError) as exc:
        return _fail("init", exc)
    ms = (time.perf_counter() - t0) * 1000
    print(f"lab PKI written to {pki.root} in {ms:.0f} ms")
    for curve in pki.curves:
        print(f"  {curve:9s} CI key id (euiccCiPKId) {pki.ci_key_id(curve).hex().upper()}")
    print(f"  EIDs: {', '.join(pki.eids)}; EUM permitted EID prefixes: {', '.join(pki.eum_eid_prefixes)}")
    print(f"  TLS hosts: {', '.join(pki.hosts)} + 127.0.0.1; CA bundle: {pki.ca_bundle_path}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        pki = LabPki.load(args.dir)
    except LabPkiError as exc:
        return _fail("show", exc)
    rows = []
    failed = 0
    for label, role, curve, eid in pki.entries():
        try:
            cert = pki.cert(role, curve or "nist", eid)
            try:
                chain = pki.verify(role, curve or "nist", eid)
                status = f"ok (CI {chain.ci_key_id.hex().upper()})"
            except ChainError as exc:
                failed += 1
                status = f"FAILED: {exc}"
            rows.append(
                {
                    "label": label,
                    "role": role.value,
                    "curve": crypto.curve_name(cert),
                    "subject": subject_text(cert),
                    "eid": eid_of(cert) if role is Role.EUICC else None,
                    "policies": policies_of(cert),
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "cert": str(pki.cert_path(role, curve or "nist", eid)),
                    "key": str(pki.key_path(role, curve or "nist", eid)),
                    "status": status,
                }
            )
        except (LabPkiError, ValueError, crypto.CryptoError) as exc:
            failed += 1
            rows.append({"label": label, "role": role.value, "status": f"FAILED: {exc}"})
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(pki.root),
                    "curves": list(pki.curves),
                    "eids": list(pki.eids),
                    "eum_eid_prefixes": list(pki.eum_eid_prefixes),
                    "hosts": list(pki.hosts),
                    "ci_key_ids": pki.manifest["ci_key_ids"],
                    "smdp_oid": pki.smdp_oid,
                    "certificates": rows,
                },
                indent=2,
            )
        )
    else:
        print(
            f"lab PKI {pki.root}: curves {', '.join(pki.curves)}; EIDs {', '.join(pki.eids)}; "
            f"TLS hosts {', '.join(pki.hosts)}; SM-DP+ OID {pki.smdp_oid}"
        )
        for row in rows:
            if "subject" not in row:
                print(f"  {row['label']:50s} {row['status']}")
                continue
            print(f"  {row['label']:50s} {row['curve']:9s} until {row['not_after'][:10]}  {row['status']}")
            print(f"      {row['subject']}  ->  {row['cert']}")
    if failed:
        print(f"{PROG} show: {failed} certificate(s) failed verification", file=sys.stderr)
        return 1
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        leaf = crypto.load_certificate(args.cert)
        cis = [c for path in args.ca for c in load_certificates(path)]
        inter = [c for path in args.untrusted for c in load_certificates(path)]
    except crypto.CryptoError as exc:
        return _fail("verify", f"loading certificates: {exc}")
    at = None
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError:
            return _fail("verify", f"--at {args.at!r} is not an ISO 8601 time")
    try:
        chain = verify_chain(leaf, inter, cis, args.role, at)
    except ChainError as exc:
        return _fail("verify", exc)
    print(
        f"{args.cert}: OK as {chain.role.label}; CI key id {chain.ci_key_id.hex().upper()}; "
        f"chain of {len(chain.path)}; curve {chain.curve}"
    )
    if chain.role is Role.EUICC:
        print(f"EID {eid_of(leaf)} within the EUM's permitted range ({eid_range_of(chain.path[1]).describe()})")
    return 0


def _cmd_eid(args: argparse.Namespace) -> int:
    if args.serial is not None:
        try:
            print(lab_eid(args.serial))
        except ValueError as exc:
            return _fail("eid", exc)
        return 0
    body = args.body
    if len(body) == 32:
        if is_valid_eid(body):
            print(f"{body}: valid")
            return 0
        return _fail(
            "eid",
            f"{body}: check digits wrong (expected {eid_check_digits(body[:30])})"
            if body.isdigit()
            else f"{body}: not 32 digits",
        )
    try:
        print(body + eid_check_digits(body))
    except ValueError as exc:
        return _fail("eid", exc)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``rsp pki``; ``argv`` excludes the ``pki`` word. Returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    handler = {
        "init": _cmd_init,
        "show": _cmd_show,
        "verify": _cmd_verify,
        "eid": _cmd_eid,
        "device-cert": _cmd_device_cert,
    }[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
