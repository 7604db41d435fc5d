"""What ``ipa`` prints when a command ends: the exit code and the final line for each kind of failure (the shared
contract of docs/cli.md, :mod:`rsp.cli_contract`), the poll's per-operation results, and ``ipa status``.

Errors name the procedure step once, where it was (segment ``7/19`` of a bound profile package, the AT command in
flight) and the eUICC's or server's code with its name; the exit code says whose fault it was (1 refused by the card
or a server, 2 usage, 3 port or connection, 4 timeout).
"""

from __future__ import annotations

from typing import Any

from ipa.config import IpaConfig
from rsp import cli_contract as cc


def es9_exit(exc) -> int:
    """An ES9+ failure: the SM-DP+ answered (refused, 1), or it could not be reached (3) or did not answer (4)."""
    if exc.subject_code is not None or exc.reason_code is not None or exc.http_status is not None:
        return cc.EXIT_REFUSED
    text = str(exc).lower()
    return cc.EXIT_TIMEOUT if "timed out" in text or "timeout" in text else cc.EXIT_CONNECTION


def _short(command: str | None, width: int = 40) -> str | None:
    if command is None or len(command) <= width:
        return command
    return command[:width] + f"...({len(command)} chars)"


def where_text(where: dict[str, Any]) -> str:
    if where.get("segment") is not None and where.get("segments") is not None:
        return f" (segment {where['segment']}/{where['segments']})"
    return ""


def device_error(out: cc.Envelope, exc: Exception) -> int:
    """The modem and port errors of the firmware bridge (and the OS): port/connection 3, timeout 4, the modem
    refused 1. The message names the procedure step once, where it was, and the AT command."""
    from firmware_bridge.errors import AtError, AtTimeout, BridgeError, PortBusy, PortGone

    where = out.where()
    data: dict[str, Any] = {**where}
    command = getattr(exc, "command", None)
    if command:
        data["at"] = command
    step = where.get("step")
    code = cc.EXIT_REFUSED
    if isinstance(exc, PortBusy):
        holder = cc.lock_holder(exc.port)
        data.update(step="lock port", port=exc.port, holder=holder)
        who = f"held by {holder}" if holder else f"locked by another program ({exc.reason})"
        return out.error(
            f"lock port: serial port {exc.port} is {who}; stop it (ipa run? ModemManager?) or tag the port "
            "ID_MM_PORT_IGNORE (see deploy/udev/)",
            data,
            exit=cc.EXIT_CONNECTION,
        )
    if isinstance(exc, PortGone):
        code = cc.EXIT_CONNECTION
        during = f" during {_short(exc.command)!r}" if exc.command else ""
        reason = f"serial port {exc.port} gone{during}: {exc.reason}"
    elif isinstance(exc, AtTimeout):
        code = cc.EXIT_TIMEOUT
        reason = f"{_short(exc.command)!r}: no answer within {exc.timeout:g} s"
    elif isinstance(exc, AtError):
        reason = f"{_short(exc.command)!r} answered {exc.final!r}"
    elif isinstance(exc, BridgeError):
        reason = str(exc)
    elif isinstance(exc, OSError):
        code = cc.EXIT_CONNECTION
        reason = f"device: {exc}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    if step is None:
        step = getattr(exc, "step", None) or "device"
        data["step"] = step
    return out.error(cc.step_message(f"{step}{where_text(where)}", reason), data, exit=code)


#: how the ESipa clients name a connection that could not be made or was lost (httpx, the IPA's HTTP/1.1 client
#: with its OSError, aiocoap, name resolution, TLS)
CONNECTION_FAILURES = (
    "cannot reach",
    "ConnectError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "ConnectionAbortedError",
    "Connect call failed",
    "gaierror",
    "SSLError",
    "SSLCertVerificationError",
)


def poll_failure_exit(detail: str) -> int:
    """The exit code of a failed poll step, from the failure the agent recorded (it keeps serving, so it hands the
    CLI a description, not the exception): the modem or port gone 3, no answer 4, otherwise refused 1 (an HTTP or
    CoAP error status, an eimPackageError, results the eIM did not take)."""
    head = detail.split(":", 1)[0]
    if head in ("PortGone", "PortBusy") or any(mark in detail for mark in CONNECTION_FAILURES):
        return cc.EXIT_CONNECTION
    if head in ("AtTimeout", "ReadTimeout", "ConnectTimeout", "TimeoutError") or "timed out" in detail.lower():
        return cc.EXIT_TIMEOUT
    return cc.EXIT_REFUSED


def poll_result(out: cc.Envelope, data: dict[str, Any]) -> int:
    """The poll's final line: the card's answer per operation (EuiccPackageResult), with the listed profiles. A
    package the card refused (``enableResult iccidOrAidNotFound(1)``, an euiccPackageErrorCode) exits 1."""
    epr = out.cleanup.get("EuiccPackageResult") or (out.last_data if out.last_step == "EuiccPackageResult" else None)
    if epr is None:
        return out.success(data, f"poll: {data['outcome']} ({data['detail']})")
    entries = epr.get("entries") or []
    data = {**data, "euiccPackageResult": {"kind": epr.get("kind"), "error": epr.get("error"), "results": entries}}
    lines = [f"poll: {data['outcome']} ({data['detail']})"]
    refused = []
    if epr.get("error") is not None:
        refused.append(f"euiccPackageErrorCode {epr['error']}")
    for e in entries:
        label = e.get("codeName") if e.get("codeName") is not None else e.get("code")
        lines.append(f"  {e['name']}: {label if label is not None else '-'}")
        for p in e.get("profiles") or []:
            lines.append(f"    {p.get('iccid')}  {p.get('profileState') or '-':<8}  {p.get('profileName') or ''}")
        if e.get("code") not in (None, 0):
            refused.append(f"{e['name']} {label}")
    if refused:
        return out.error(
            cc.step_message("EuiccPackageResult", "the eUICC refused: " + ", ".join(refused)),
            {"step": "EuiccPackageResult", **data},
        )
    return out.success(data, "\n".join(lines))


def status(config: IpaConfig, out: cc.Envelope) -> int:
    """``ipa status``: the daemon's view from its state file (read only: no port, no lock, the daemon keeps
    running), and who holds the port."""
    import datetime

    from ipa.state import StateError, decode_state

    path = config.ipa.state_file

    def when(t: float) -> str | None:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds") if t else None

    try:
        with open(path, "rb") as fh:
            st = decode_state(fh.read())
    except FileNotFoundError:
        return out.error(
            f"status: no state file {path} (the IPA never ran with this --state / ipa.state_file)",
            {"step": "status", "stateFile": path},
        )
    except (OSError, StateError) as exc:
        return out.error(f"status: cannot read {path}: {exc}", {"step": "status", "stateFile": path})
    holder = cc.lock_holder(config.device.port) if config.device.port else None
    daemon = _daemon(path, st.eid)
    data = {
        "stateFile": path,
        "eid": st.eid.hex().upper() if st.eid else None,
        "binding": config.eim.binding,
        "eimUrl": config.eim.url or None,
        "lastContact": when(st.last_contact),
        "failures": st.failures,
        "nextPoll": when(st.next_poll),
        "queue": [{"kind": r.kind, "attempts": r.attempts, "seqNumbers": r.seq_numbers} for r in st.results],
        "inflight": (st.inflight or {}).get("procedure") if st.inflight else None,
        "removeSeqs": list(st.remove_seqs),
        "fallback": st.fallback,
        "port": config.device.port or None,
        "portHolder": holder,
        "daemon": daemon,
    }
    for key in ("lastPoll",):
        if isinstance(daemon.get(key), dict) and isinstance(daemon[key].get("at"), int | float):
            daemon[key] = {**daemon[key], "at": when(daemon[key]["at"])}
    for key in ("since", "updated", "nextPoll", "stopped"):
        if isinstance(daemon.get(key), int | float):
            daemon[key] = when(daemon[key])
    if daemon.get("nextPoll"):
        data["nextPoll"] = daemon["nextPoll"]  # the daemon's own plan (backoff), fresher than the state file's
    human = "\n".join(
        [
            f"state file    {path}",
            f"EID           {data['eid'] or '-'}",
            f"binding       {data['binding']}" + (f" ({data['eimUrl']})" if data["eimUrl"] else ""),
            f"last contact  {data['lastContact'] or 'never'}",
            f"backoff       {st.failures} failure(s), next poll {data['nextPoll'] or 'now'}",
            f"queue         {len(st.results)} result(s) to deliver"
            + (f": {', '.join(r.kind for r in st.results)}" if st.results else ""),
            f"in flight     {data['inflight'] or '-'}",
            f"port          {data['port'] or '-'}" + (f" held by {holder}" if holder else ""),
            f"daemon        {_daemon_line(daemon)}",
        ]
    )
    return out.success(data, human)


def _daemon(state_path: str, eid: bytes | None) -> dict[str, Any]:
    """The daemon's own view from its status file (:mod:`ipa.status`), and whether it is running."""
    from ipa.status import StatusError, daemon_view, read_status, status_path

    if eid is None:
        return {"running": False, "note": "the state file names no eUICC yet: ipa run has not started with it"}
    path = status_path(state_path, eid)
    try:
        view = daemon_view(read_status(path))
    except StatusError as exc:
        view = {"running": False, "note": f"status file unreadable: {exc}"}
    return {**view, "statusFile": str(path)}


def _daemon_line(d: dict[str, Any]) -> str:
    if not d.get("running"):
        state = f" (last: {d['state']} since {d.get('since')})" if d.get("state") and d["state"] != "stopped" else ""
        stopped = f" at {d['stopped']}" if d.get("stopped") else ""
        return f"{d['note']}{stopped}{state}"
    binding = f", {d['binding']} to {d['eimUrl']}" if d.get("binding") else ""
    # The status file is rewritten only when the view changes, so lastPoll.at is when this outcome was first seen,
    # not the latest poll: no time for it here (the latest eIM contact is "last contact", from the state file).
    last = d.get("lastPoll") or {}
    detail = f" ({last['detail']})" if last.get("detail") else ""
    poll = f", polls {last.get('outcome')}{detail}" if last else ""
    return f"running (pid {d['pid']}), {d['state']} since {d['since']}{binding}{poll}"


def procedure_message(err) -> str:
    """``STEP: reason`` of a ProcedureError, the step named once (not ``profile download: X: X: reason``)."""
    text = str(err)
    if text.startswith(f"{err.procedure}: "):
        text = text[len(err.procedure) + 2 :]
    return cc.step_message(err.step, text)


def download_exit(err) -> int:
    text = str(err).lower()
    if err.code is None and err.code_name is None and ("connect" in text or "cannot reach" in text):
        return cc.EXIT_TIMEOUT if "timed out" in text or "timeout" in text else cc.EXIT_CONNECTION
    return cc.EXIT_REFUSED
