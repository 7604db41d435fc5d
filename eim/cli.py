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
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rsp import cli_contract as cc

KINDS = ("psmo", "eco", "download", "euicc_data")
STATUSES = ("queued", "in_progress", "done", "failed", "expired", "cancelled")
EUICC_STATES = ("never_seen", "seen_1h", "seen_24h", "stale")  # GET /v1/euiccs?state= (eim.api.fleet)


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        self.code = code
        super().__init__(message)


# ------------------------------------------------------------------------------------------------ HTTP
class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0, ca_file: str | None = None) -> None:
        import ssl

        import httpx

        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        verify: Any = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"--ca-file {ca_file}: {exc}", cc.EXIT_USAGE) from None
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=verify)

    def call(self, method: str, path: str, step: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self.client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise CliError(f"{step}: the eIM at {self.url} did not answer in time: {exc}", cc.EXIT_TIMEOUT) from None
        except httpx.HTTPError as exc:
            raise CliError(f"{step}: cannot reach the eIM at {self.url}: {exc}", cc.EXIT_CONNECTION) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise CliError(f"{step}: the eIM answered {r.status_code}: {msg or r.text[:300]}", 1)
        return body


# ------------------------------------------------------------------------------------------------ output
def emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    """One result: an element of a listing (``list`` actions: an ``item`` line now) or the command's object (the
    final ``lpa`` line, written by :func:`main`)."""
    out: cc.Envelope = getattr(args, "out", None) or cc.Envelope(args.json, "eim")
    args.out = out
    if getattr(args, "action", None) == "list":
        out.item(args.command, obj, human)
    elif args.json:
        args.result = obj
    else:
        print(human, flush=True)


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


def notification_line(n: dict[str, Any]) -> str:
    seq = "-" if n.get("seq_number") is None else n["seq_number"]
    tail = f"  next={n['next_attempt_at']}" if n.get("next_attempt_at") else ""
    if n.get("last_error"):
        tail += f"  ({n['last_error']})"
    return (
        f"{n['id']:>6}  {n['status']:<7}  {n['kind']:<5}  {n['eid'] or '-'}  {n['address']}  seq={seq}"
        f"  attempts={n['attempts']}{tail}"
    )


def paged(
    api: Api, path: str, step: str, params: dict[str, Any], limit: int | None, *, what: str = "items"
) -> Iterator[dict[str, Any]]:
    """The items of a paged listing of the REST API, following its ``next`` cursor to the end, or at most
    ``limit``: then a line on stderr says that the list stopped early (when more exist)."""
    shown = 0
    while True:
        r = api.call("GET", path, step, params=params)
        items = r["items"]
        taken = items if limit is None else items[: limit - shown]
        for item in taken:
            yield item
            shown += 1
        more = bool(r.get("next"))
        if limit is not None and shown >= limit:
            if len(taken) < len(items):
                more = True
            elif more:  # a full last page: is anything after it?
                more = bool(api.call("GET", path, step, params={**params, "cursor": r["next"], "limit": 1})["items"])
            if more:
                print(f"stopped after {shown} {what} (--limit {limit}); there are more", file=sys.stderr)
            return
        if not more:
            return
        params["cursor"] = r["next"]


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
    from eim.cli_device_secret import add_parser as add_device_secret_parser

    add_device_secret_parser(sub)
    n = sub.add_parser("notification", help="notifications the eIM owes SM-DP+s (the outbox)").add_subparsers(
        dest="action", required=True
    )
    nl = n.add_parser("list", help="pending (waiting for delivery) and failed (refused, with the reason)")
    nl.add_argument("--status", choices=("pending", "failed"))
    nl.add_argument("--limit", type=int, default=100)
    from eim.cli_operator import add_parser as add_operator_parser

    add_operator_parser(sub)
    _global_options_after_subcommands(p)
    return p


GLOBAL_OPTIONS = ("--config", "--url", "--ca-file", "--token", "--json")


def _global_options_after_subcommands(root: argparse.ArgumentParser) -> None:
    """The global options are also accepted after the subcommand (``eim serve --config FILE``, the form of the
    systemd unit, as well as ``eim --config FILE serve``): the shared helper of the CLI contract."""
    cc.globals_after_subcommands(root, GLOBAL_OPTIONS)


def _op_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="operation parameters: JSON text or @file (see docs/eim.md)")
    p.add_argument("--activation-code", help="download: shortcut for --params '{\"activationCode\": ...}'")
    p.add_argument("--validity", type=float, help="seconds until the operation expires")
    p.add_argument("--not-before", help="ISO 8601 time before which it is not handed out")


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
