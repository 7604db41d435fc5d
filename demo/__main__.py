"""`make demo`: the whole SGP.32 story on loopback, as an operator would drive it.

Creates a lab PKI, starts the lab SM-DP+ and the eIM, creates a software eUICC behind a virtual modem on a
pseudo-terminal, bootstraps the eIM on the card (AddInitialEim), starts the IPA on that pseudo-terminal, and then,
through the eIM's REST API: downloads a profile (indirect), enables it, lists profiles, downloads a second one
(direct), switches, disables, deletes, and runs an eUICC data request. Prints a timeline and a summary.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo.procs import CommandFailed
from demo.stack import BINDINGS, LabStack, iccid_from_card

#: the bindings over which the eIM pushes (CoAP/CoAPS Observe, MQTT); over HTTP(S) the IPA polls
PUSH_BINDINGS = ("coap", "coaps", "mqtt")


class Timeline:
    def __init__(self, binding: str) -> None:
        self.t0 = time.monotonic()
        self.binding = binding
        self.rows: list[tuple[str, float, str]] = []

    def step(self, title: str, fn, *, describe=None) -> Any:
        t = time.monotonic()
        print(f"[{t - self.t0:6.2f}s] {title} ...", flush=True)
        try:
            result = fn()
        except Exception as exc:
            dur = time.monotonic() - t
            self.rows.append((title, dur, "FAILED"))
            print(f"          FAILED after {dur:.2f}s: {exc}", flush=True)
            raise
        dur = time.monotonic() - t
        outcome = describe(result) if describe else "ok"
        self.rows.append((title, dur, outcome))
        print(f"          {outcome}  ({dur:.2f}s)", flush=True)
        return result

    def summary(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'step':<{width}}  {'time':>7}  result", "-" * (width + 30)]
        lines += [f"{t:<{width}}  {d:6.2f}s  {o}" for t, d, o in self.rows]
        lines.append(f"total {time.monotonic() - self.t0:.1f}s over ESipa/{self.binding}")
        return "\n".join(lines)


def op_outcome(op: dict[str, Any]) -> str:
    """One line: operation status and what the eUICC answered."""
    res = op.get("result") or {}
    parts: list[str] = []
    for item in res.get("results", []):
        kind = str(item.get("type", "")).removesuffix("Result")
        if "profiles" in item:
            profs = ", ".join(f"{p['iccid']}:{p['state']}" for p in item["profiles"])
            parts.append(f"{kind} [{profs}]")
        else:
            parts.append(f"{kind}={item.get('name', item.get('code'))}")
    pir = res.get("profileInstallationResult")
    if isinstance(pir, dict):
        parts.append(f"installed {pir.get('iccid')} (PIR {'verified' if pir.get('verified') else 'unverified'})")
    if "certificates" in res:
        parts.append(f"certificates {res['certificates']}")
    if isinstance(res.get("ipaCapabilities"), dict):
        parts.append("ipaCapabilities " + ",".join(res["ipaCapabilities"].get("ipaFeatures", [])))
    detail = "; ".join(parts)
    return f"{op['status']}" + (f": {detail}" if detail else "")


def require_done(op: dict[str, Any]) -> dict[str, Any]:
    if op["status"] != "done":
        raise RuntimeError(f"operation {op['id']} ended {op['status']}: {op.get('result') or op.get('error')}")
    return op


def profiles_on_card(stack: LabStack) -> list[dict[str, Any]]:
    return stack.card().get("profiles", [])


def story(stack: LabStack, tl: Timeline) -> None:
    eid = stack.eid
    tl.step("create lab PKI (rsp pki init)", stack.create_pki)
    if stack.binding == "mqtt":
        tl.step("start private Mosquitto broker", stack.start_broker)
    tl.step("start lab SM-DP+ (smdpp serve, HTTPS)", stack.start_smdpp)
    if stack.binding == "coaps":
        tl.step("CoAPS key for the eUICC (eim psk set --generate)", stack.provision_psk)
    if stack.binding == "https":
        tl.step("TLS client certificate for the IPA (rsp pki device-cert)", stack.provision_device_cert)
    tl.step("start eIM (eim serve, SQLite)", stack.start_eim)
    tl.step(f"create software eUICC {eid} (euicc new)", stack.create_card)
    tl.step(
        "start virtual modem on a pseudo-terminal", stack.start_modem, describe=lambda _: f"modem at {stack.modem_link}"
    )
    tl.step(
        "AddInitialEim through the modem (ipa eim add-initial)",
        stack.add_initial_eim,
        describe=lambda tok: f"associationToken={tok}",
    )
    tl.step("register the eUICC at the eIM (POST /v1/euiccs)", stack.register_euicc)
    tl.step(f"start the IPA (ipa run, ESipa over {stack.binding})", lambda: stack.start_ipa(verbose=True))
    if stack.binding in PUSH_BINDINGS:
        tl.step(
            "the eIM can push to the device (GET /v1/euiccs/{eid}: push)",
            stack.wait_push_reachable,
            describe=lambda push: f"push over {push['binding']} since {push.get('since') or 'first contact'}",
        )

    order1 = tl.step(
        "SM-DP+ order for profile 1",
        lambda: stack.smdp_order("ts48"),
        describe=lambda o: f"activation code {o['activation_code']}",
    )

    def download(order: dict[str, Any], mode: str) -> dict[str, Any]:
        before = stack.relayed_downloads()
        op = require_done(stack.run_op("download", {"activationCode": order["activation_code"], "mode": mode}))
        relayed = stack.relayed_downloads() - before
        if relayed != (1 if mode == "indirect" else 0):
            raise RuntimeError(f"{mode} download: the eIM relayed {relayed} ES9+ sessions")
        return op

    tl.step(
        "download profile 1 (indirect: ES9+ relayed by the eIM)",
        lambda: download(order1, "indirect"),
        describe=op_outcome,
    )
    iccid1 = order1["iccid"]
    tl.step(
        "enable profile 1 (PSMO enable, rollback allowed)",
        lambda: require_done(stack.run_op("psmo", {"psmos": [{"enable": {"iccid": iccid1, "rollback": True}}]})),
        describe=op_outcome,
    )
    tl.step(
        "list profiles (PSMO listProfileInfo)",
        lambda: require_done(stack.run_op("psmo", {"psmos": [{"listProfileInfo": {}}]})),
        describe=op_outcome,
    )
    order2 = tl.step(
        "SM-DP+ order for profile 2",
        lambda: stack.smdp_order("ts48"),
        describe=lambda o: f"activation code {o['activation_code']}",
    )
    tl.step(
        "download profile 2 (direct: IPA to SM-DP+ over HTTPS)",
        lambda: download(order2, "direct"),
        describe=op_outcome,
    )
    iccid2 = order2["iccid"]
    tl.step(
        "switch to profile 2 (PSMO enable)",
        lambda: require_done(stack.run_op("psmo", {"psmos": [{"enable": {"iccid": iccid2}}]})),
        describe=op_outcome,
    )
    tl.step(
        "disable profile 2 (PSMO disable)",
        lambda: require_done(stack.run_op("psmo", {"psmos": [{"disable": {"iccid": iccid2}}]})),
        describe=op_outcome,
    )
    tl.step(
        "delete profile 1 (PSMO delete)",
        lambda: require_done(stack.run_op("psmo", {"psmos": [{"delete": {"iccid": iccid1}}]})),
        describe=op_outcome,
    )
    tl.step(
        "eUICC data request (certificates, EUICCInfo2, IPA capabilities)",
        lambda: require_done(stack.run_op("euicc_data", {})),
        describe=op_outcome,
    )
    tl.step(
        "card state (euicc show)",
        lambda: profiles_on_card(stack),
        describe=lambda ps: ", ".join(f"{iccid_from_card(p['iccid'])}:{p['state']}" for p in ps) or "no profiles",
    )


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    ap.add_argument("--binding", choices=BINDINGS, default="http", help="ESipa binding between IPA and eIM")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary directory, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="leave the services running until Ctrl-C")
    ap.add_argument(
        "--poll-interval",
        type=float,
        default=0.5,
        help="the IPA's idle poll interval in seconds (e.g. 3600: with coap, coaps or mqtt every operation then "
        "arrives by push)",
    )
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # SIGTERM stops the services like Ctrl-C does
    if not args.poll_interval > 0:
        ap.error("--poll-interval must be a positive number of seconds")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sgp32-demo-"))
    stack = LabStack(workdir=workdir, binding=args.binding, poll_interval=args.poll_interval)
    tl = Timeline(args.binding)
    print(f"SGP.32 lab demo - ESipa over {args.binding}, working directory {workdir}\n", flush=True)
    code = 0
    keeping = False
    try:
        story(stack, tl)
        print("\n" + tl.summary())
        pushes = stack.log_count("ipa", "push: ")
        print(f"the IPA was woken by push {pushes} time(s); idle poll interval {args.poll_interval:g} s")
        print(f"\neIM dashboard: {stack.eim_url}/ui/")
        print(f"eIM REST API: {stack.eim_url}/v1/euiccs   OpenAPI: {stack.eim_url}/openapi.json")
        print(f"eIM metrics:  {stack.eim_url}/metrics")
        print(f"SM-DP+ (ES9+): https://{stack.smdp_address}/gsma/rsp2/es9plus/")
        if args.keep:
            keeping = True  # from here an interrupt is the way to end the demo, not a failure
            print("\nservices keep running; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    except KeyboardInterrupt:
        if not keeping:
            code = 130
            print("\ndemo interrupted: stopping the services", file=sys.stderr)
    except (CommandFailed, RuntimeError, TimeoutError, OSError) as exc:
        code = 1
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        for name, svc in stack.services.items():
            print(f"--- last lines of {name} ({svc.log}) ---\n{svc.tail(15)}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
        stack.stop()
        if not args.workdir and code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        elif code:
            print(f"logs kept in {workdir / 'logs'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
