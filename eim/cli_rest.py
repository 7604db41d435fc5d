"""``eim euicc | op | batch | notification``: the operator commands that drive a running eIM through its REST API
(docs/eim.md section 4; the eUICC registry, operations, batches and the notification outbox of ``/v1``). Output and
exit codes follow docs/cli.md; the parsers are added by :func:`eim.cli.parser`.

    eim euicc register EID ... | list [--label KEY=VALUE ...] [--state S] | show EID
    eim euicc label EID ... | remove EID [--force]
    eim op create EID KIND ... | list ... | show ID | cancel ID
    eim batch create KIND (--eid EID ... | --eids-file FILE) ... | show ID | cancel ID
    eim notification list [--status pending|failed] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eim.cli_common import EUICC_STATES, KINDS, STATUSES, Api, CliError, emit, paged
from rsp import cli_contract as cc


def op_line(o: dict[str, Any]) -> str:
    tail = ""
    if o.get("result_code") is not None:
        tail += f" code={o['result_code']}"
    if o.get("error"):
        tail += f" ({o['error']})"
    return f"{o['id']}  {o['eid']}  {o['kind']:<10} {o['status']:<11} attempts={o['attempts']}{tail}"


def euicc_line(e: dict[str, Any]) -> str:
    return (
        f"{e['eid']}  eim={e['eim_id']}  counter={e['counter_value']}  cert={'yes' if e['certificate_known'] else 'no'}"
        f"  binding={e['binding'] or '-'}  last_contact={e['last_contact'] or '-'}"
    )


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        text = args.params
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                raise CliError(f"--params: {exc}", 2) from None
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"--params: not JSON: {exc}", 2) from None
        if not isinstance(params, dict):
            raise CliError("--params: must be a JSON object", 2)
    if getattr(args, "activation_code", None):
        params["activationCode"] = args.activation_code
    return params


def _window(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.validity is not None:
        out["validity_s"] = args.validity
    if args.not_before:
        out["not_before"] = args.not_before
    return out


def cmd_euicc(args: argparse.Namespace, api: Api) -> int:
    if args.action == "register":
        body: dict[str, Any] = {"eid": args.eid, "counter_value": args.counter}
        if args.eim_id:
            body["eim_id"] = args.eim_id
        if args.association_token is not None:
            body["association_token"] = args.association_token
        if args.trusted_ci:
            body["trusted_ci"] = args.trusted_ci
        labels = {}
        for item in args.label or []:
            k, sep, v = item.partition("=")
            if not sep:
                raise CliError(f"--label {item!r}: expected key=value", 2)
            labels[k] = v
        if labels:
            body["labels"] = labels
        r = api.call("POST", "/v1/euiccs", "register eUICC", json=body)
        emit(args, r, ("registered " if r["created"] else "already registered ") + euicc_line(r["euicc"]))
    elif args.action == "list":
        params: dict[str, Any] = {"limit": 1000}
        if args.label:
            params["label"] = list(args.label)
        if args.state:
            params["state"] = args.state
        for e in paged(api, "/v1/euiccs", "list eUICCs", params, None, what="eUICCs"):
            emit(args, e, euicc_line(e))
    elif args.action == "label":
        changes: dict[str, str | None] = {k: None for k in args.unset or []}
        for item in args.set or []:
            k, sep, v = item.partition("=")
            if not sep:
                raise CliError(f"{item!r}: expected key=value", 2)
            changes[k] = v
        if not changes:
            raise CliError("euicc label: give key=value and/or --unset KEY", 2)
        r = api.call("PATCH", f"/v1/euiccs/{args.eid}", "relabel eUICC", json={"labels": changes})
        emit(args, r, f"{r['eid']}  labels={json.dumps(r['labels'], sort_keys=True)}")
    elif args.action == "remove":
        params = {"force": "true"} if args.force else {}
        r = api.call("DELETE", f"/v1/euiccs/{args.eid}", "remove eUICC", params=params)
        emit(
            args,
            r,
            f"removed {r['eid']}" + (f", cancelled {len(r['cancelled'])} operation(s)" if r["cancelled"] else ""),
        )
    else:
        r = api.call("GET", f"/v1/euiccs/{args.eid}", "show eUICC")
        emit(args, r, json.dumps(r, indent=2))
    return 0


def cmd_op(args: argparse.Namespace, api: Api) -> int:
    if args.action == "create":
        body = {"kind": args.kind, "params": _params(args), **_window(args)}
        r = api.call("POST", f"/v1/euiccs/{args.eid}/operations", "create operation", json=body)
        emit(args, r["operation"], "queued " + op_line(r["operation"]))
    elif args.action == "list":
        if args.limit is not None and args.limit < 1:
            raise CliError("op list: --limit must be at least 1", 2)
        params: dict[str, Any] = {"limit": min(args.limit or 1000, 1000)}
        for key in ("eid", "status", "kind"):
            if getattr(args, key):
                params[key] = getattr(args, key)
        if args.batch:
            params["batch_id"] = args.batch
        for o in paged(api, "/v1/operations", "list operations", params, args.limit, what="operations"):
            emit(args, o, op_line(o))
    elif args.action == "show":
        r = api.call("GET", f"/v1/operations/{args.id}", "show operation")
        emit(args, r, json.dumps(r, indent=2))
    else:
        r = api.call("POST", f"/v1/operations/{args.id}/cancel", "cancel operation")
        emit(args, r, "cancelled " + op_line(r))
    return 0


def cmd_batch(args: argparse.Namespace, api: Api) -> int:
    if args.action == "create":
        eids = list(args.eid or [])
        if args.eids_file:
            try:
                eids += [ln.strip() for ln in Path(args.eids_file).read_text().splitlines() if ln.strip()]
            except OSError as exc:
                raise CliError(f"--eids-file: {exc}", 2) from None
        if not eids:
            raise CliError("batch create: give --eid (repeatable) or --eids-file", 2)
        body = {"kind": args.kind, "params": _params(args), "eids": eids, **_window(args)}
        r = api.call("POST", "/v1/batches", "create batch", json=body)
    elif args.action == "cancel":
        r = api.call("POST", f"/v1/batches/{args.id}/cancel", "cancel batch")
        by_status = " ".join(f"{k}={v}" for k, v in sorted(r["by_status"].items()))
        emit(args, r, f"batch {r['id']}: cancelled {r['cancelled']} open operation(s); now {by_status}")
        return 0
    else:
        r = api.call("GET", f"/v1/batches/{args.id}", "show batch")
    refused = sum(1 for it in r["items"] if it["status"] == "refused") if args.action == "create" else 0
    if args.json:
        if refused:  # docs/cli.md: an answer that refused part of the request exits 1, the batch in data
            args.out.error(
                f"create batch: {refused} of {len(r['items'])} item(s) refused", {"step": "create batch", **r}
            )
            return cc.EXIT_REFUSED
        emit(args, r, "")
    else:
        print(f"batch {r['id']}  kind={r['kind']}  " + " ".join(f"{k}={v}" for k, v in sorted(r["summary"].items())))
        for it in r["items"]:
            print(
                f"  {it['index']:>5}  {it['eid']}  {it['status']:<11} {it['operation_id'] or '-'}"
                + (f"  ({it['error']})" if it.get("error") else "")
            )
        if refused:
            print(f"eim: create batch: {refused} of {len(r['items'])} item(s) refused", file=sys.stderr)
    return cc.EXIT_REFUSED if refused else 0


def notification_line(n: dict[str, Any]) -> str:
    seq = "-" if n.get("seq_number") is None else n["seq_number"]
    tail = f"  next={n['next_attempt_at']}" if n.get("next_attempt_at") else ""
    if n.get("last_error"):
        tail += f"  ({n['last_error']})"
    return (
        f"{n['id']:>6}  {n['status']:<7}  {n['kind']:<5}  {n['eid'] or '-'}  {n['address']}  seq={seq}"
        f"  attempts={n['attempts']}{tail}"
    )


def cmd_notification(args: argparse.Namespace, api: Api) -> int:
    """``notification list``: the outbox of notifications the eIM owes SM-DP+s (``GET /v1/notifications``)."""
    if args.limit < 1:
        raise CliError("notification list: --limit must be at least 1", 2)
    params: dict[str, Any] = {"limit": min(args.limit, 1000)}
    if args.status:
        params["status"] = args.status
    for n in paged(api, "/v1/notifications", "list notifications", params, args.limit, what="notifications"):
        emit(args, n, notification_line(n))
    if not args.json and not args.out.items:
        print(f"no {args.status or 'pending or failed'} notifications")
    return 0


def add_parsers(sub: Any) -> None:
    """``euicc``, ``op`` and ``batch``."""
    e = sub.add_parser("euicc", help="the eUICC registry").add_subparsers(dest="action", required=True)
    reg = e.add_parser("register", help="register an eUICC")
    reg.add_argument("eid")
    reg.add_argument("--eim-id")
    reg.add_argument("--association-token", type=int)
    reg.add_argument("--counter", type=int, default=0, help="last counter value the eUICC has seen (default 0)")
    reg.add_argument("--trusted-ci", help="CI SubjectKeyIdentifier (hex)")
    reg.add_argument("--label", action="append", help="key=value (repeatable)")
    el = e.add_parser("list", help="list registered eUICCs")
    el.add_argument("--label", action="append", help="key=value (repeatable: all must match)")
    el.add_argument(
        "--state",
        choices=EUICC_STATES,
        help="last contact: never seen, seen within 1 h / 24 h, or stale (no poll within its expected interval)",
    )
    show = e.add_parser("show", help="one eUICC")
    show.add_argument("eid")
    lab = e.add_parser("label", help="set (key=value) or remove (--unset KEY) labels of an eUICC")
    lab.add_argument("eid")
    lab.add_argument("set", nargs="*", metavar="KEY=VALUE")
    lab.add_argument("--unset", action="append", metavar="KEY")
    rm = e.add_parser("remove", help="remove an eUICC (refused while it has open operations, unless --force)")
    rm.add_argument("eid")
    rm.add_argument("--force", action="store_true", help="cancel its open operations first")

    o = sub.add_parser("op", help="operations").add_subparsers(dest="action", required=True)
    c = o.add_parser("create", help="queue an operation for one eUICC")
    c.add_argument("eid")
    c.add_argument("kind", choices=KINDS)
    _op_args(c)
    ls = o.add_parser("list", help="list operations")
    ls.add_argument("--eid")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("--batch")
    ls.add_argument("--limit", type=int, default=None, help="at most this many (default: all, paged)")
    for name in ("show", "cancel"):
        x = o.add_parser(name, help=f"{name} an operation")
        x.add_argument("id")

    b = sub.add_parser("batch", help="bulk operations").add_subparsers(dest="action", required=True)
    bc = b.add_parser("create", help="queue one operation for many eUICCs")
    bc.add_argument("kind", choices=KINDS)
    bc.add_argument("--eid", action="append", help="repeatable")
    bc.add_argument("--eids-file", help="one EID per line")
    _op_args(bc)
    bs = b.add_parser("show", help="a batch with per-item results")
    bs.add_argument("id")
    bx = b.add_parser("cancel", help="cancel every open operation of a batch")
    bx.add_argument("id")


def add_notification_parser(sub: Any) -> None:
    """``notification list``."""
    n = sub.add_parser("notification", help="notifications the eIM owes SM-DP+s (the outbox)").add_subparsers(
        dest="action", required=True
    )
    nl = n.add_parser("list", help="pending (waiting for delivery) and failed (refused, with the reason)")
    nl.add_argument("--status", choices=("pending", "failed"))
    nl.add_argument("--limit", type=int, default=100)


def _op_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="operation parameters: JSON text or @file (see docs/eim.md)")
    p.add_argument("--activation-code", help="download: shortcut for --params '{\"activationCode\": ...}'")
    p.add_argument("--validity", type=float, help="seconds until the operation expires")
    p.add_argument("--not-before", help="ISO 8601 time before which it is not handed out")
