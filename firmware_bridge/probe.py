"""``fwbridge probe``: what works on this modem, for a technician in the field.

Steps (each failure is kept with the exact command and answer):
1. open and lock the port; 2. ``AT``; 3. ``AT+CMEE=1`` (numeric errors); 4. ``ATI`` / ``AT+CGMM`` -> profile;
5. the ``=?`` test commands, recorded but never trusted; 6. each route for real: open a channel to the ISD-R and
read the EID (ES10c GetEuiccData ``BF3E 03 5C 01 5A``); 7. on the first working route, which STORE DATA block
sizes (255, 120) the modem's command line takes; 8. close what was opened.

Exit codes (:data:`EXIT_CODES`): 0 ISD-R reachable and EID read; 1 the modem answers but no route reaches the
ISD-R; 2 usage error; 3 the port cannot be opened (missing or locked); 4 the modem gives no usable AT answer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from firmware_bridge.at import AtEngine
from firmware_bridge.channel import AtApduChannel
from firmware_bridge.errors import (
    ApduTooLong,
    AtError,
    AtProtocolError,
    AtTimeout,
    BridgeError,
    ChannelError,
    PortBusy,
    PortGone,
    RouteUnavailable,
)
from firmware_bridge.modem import identify
from firmware_bridge.profiles import ModemProfile, get_profile
from rsp import apdu as apdus
from rsp import tlv
from rsp.errors import DecodeError

log = logging.getLogger("firmware_bridge.probe")

EXIT_OK = 0
EXIT_NO_ISDR = 1
EXIT_USAGE = 2
EXIT_PORT = 3
EXIT_NO_AT = 4
EXIT_CODES = {
    EXIT_OK: "ISD-R reachable and EID read",
    EXIT_NO_ISDR: "the modem answers AT but no route reaches the ISD-R",
    EXIT_USAGE: "usage error",
    EXIT_PORT: "the port cannot be opened (missing or locked by another program)",
    EXIT_NO_AT: "the modem gives no usable answer to AT (silent, garbage, or gone)",
}
GET_EID = bytes.fromhex("BF3E035C015A")
TEST_COMMANDS = ("AT+CSIM=?", "AT+CCHO=?", "AT+CGLA=?", "AT+CCHC=?")
LIMIT_TAG = 0xBF7F  # no ES10 function: the ISD-R answers an error, nothing changes on the card


@dataclass
class Failure:
    step: str
    command: str | None
    answer: list[str]
    error: str


@dataclass
class RouteResult:
    works: bool = False
    handle: str | None = None
    eid: str | None = None
    failure: Failure | None = None


@dataclass
class ProbeReport:
    port: str
    exit_code: int = EXIT_NO_AT
    ati: list[str] = field(default_factory=list)
    model: str | None = None
    profile: str | None = None
    profile_source: str | None = None
    test_commands: dict[str, str] = field(default_factory=dict)
    routes: dict[str, RouteResult] = field(default_factory=dict)
    route: str | None = None
    eid: str | None = None
    isdr_reachable: bool = False
    recommended_block_size: int | None = None
    block_sizes_accepted: dict[str, bool] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["result"] = EXIT_CODES[self.exit_code]
        return out


def _failure(step: str, exc: BaseException, engine: AtEngine | None) -> Failure:
    while isinstance(exc, RouteUnavailable) and len(exc.failures) == 1:
        exc = next(iter(exc.failures.values()))
    command = getattr(exc, "command", None) or (engine.last_command if engine else None)
    if isinstance(exc, AtError):
        answer = [*exc.lines, exc.final]
    elif isinstance(exc, AtTimeout):
        answer = [*exc.lines, f"<no final result within {exc.timeout:g} s>"]
    elif isinstance(exc, ChannelError) and exc.command:
        answer = list(exc.answer)
    elif engine is not None and command == engine.last_command:
        answer = list(engine.last_answer)
    else:
        answer = []
    return Failure(step, command, answer, str(exc))


def _eid_from(response: bytes) -> str:
    eid = tlv.find(response, 0x5A)
    if eid is None or len(eid.value) != 16:
        raise DecodeError("GetEuiccData response", "no 16-byte EID (5A)")
    return eid.value.hex().upper()


async def _es10(channel: AtApduChannel, command: bytes, block_size: int = apdus.DEFAULT_BLOCK_SIZE) -> bytes:
    """One ES10 command as a STORE DATA chain; the answer without SW (SW must be 9000)."""
    raw = b""
    for block in apdus.store_data_chain(command, 0, block_size):
        raw = await channel.transmit(block)
        if raw[-2:] != b"\x90\x00":
            raise apdus.ApduError(f"STORE DATA {block[:4].hex().upper()}", int.from_bytes(raw[-2:], "big"))
    return raw[:-2]


async def _block_fits(channel: AtApduChannel, size: int) -> bool:
    """Does a STORE DATA APDU carrying ``size`` bytes pass the modem? (The card's SW does not matter.)"""
    body = size - 3 if size - 3 < 0x80 else size - 4  # tag (2) + length (1 or 2) + value = size
    value = bytes(body)
    block = tlv.encode(LIMIT_TAG, value)
    assert len(block) == size, (len(block), size)
    try:
        await channel.transmit(apdus.build(0x80, apdus.INS_STORE_DATA, 0x91, 0x00, block))
    except (ApduTooLong, AtError):
        return False
    return True


async def probe(
    port: str,
    *,
    baudrate: int = 115200,
    profile: str | ModemProfile | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - the AT engine's per-exchange deadline
    measure_block_sizes: bool = True,
) -> ProbeReport:
    report = ProbeReport(port)
    engine = AtEngine(port, baudrate=baudrate, timeout=timeout, reopen_timeout=0.0)
    try:
        await engine.open()
    except (PortBusy, PortGone) as exc:
        report.exit_code = EXIT_PORT
        report.failures.append(Failure("open port", None, [], str(exc)))
        return report
    try:
        await _probe(engine, report, profile, measure_block_sizes)
    except PortGone as exc:
        report.failures.append(_failure("port", exc, engine))
        if not report.isdr_reachable:
            report.exit_code = EXIT_NO_AT
    finally:
        await engine.close()
    return report


async def _probe(
    engine: AtEngine, report: ProbeReport, profile: str | ModemProfile | None, measure_block_sizes: bool
) -> None:
    try:
        await engine.command("AT")
    except (AtError, AtTimeout, AtProtocolError) as exc:
        report.exit_code = EXIT_NO_AT
        report.failures.append(_failure("AT", exc, engine))
        return
    report.exit_code = EXIT_NO_ISDR
    try:
        await engine.command("AT+CMEE=1")
    except BridgeError as exc:
        report.failures.append(_failure("numeric error codes", exc, engine))

    ident = await identify(engine)
    report.ati, report.model = list(ident.ati), ident.model
    if profile is None:
        chosen, report.profile_source = ident.profile, "ATI/AT+CGMM" if ident.profile.name != "generic" else "default"
    else:
        chosen = get_profile(profile) if isinstance(profile, str) else profile
        report.profile_source = "configuration"
    report.profile = chosen.name

    for cmd in TEST_COMMANDS:
        try:
            resp = await engine.command(cmd, timeout=chosen.probe_timeout, check=False)
            report.test_commands[cmd] = resp.final
        except AtTimeout:
            report.test_commands[cmd] = f"no answer within {chosen.probe_timeout:g} s"

    working: AtApduChannel | None = None
    for name in ("cgla", "csim"):
        result = report.routes[name] = RouteResult()
        channel = AtApduChannel(engine, chosen, route=name, sim_ready_timeout=2.0)
        try:
            await channel.open()
            result.handle = channel.handle
            result.eid = _eid_from(await _es10(channel, GET_EID))
            result.works = True
        except (BridgeError, apdus.ApduError, DecodeError) as exc:
            if isinstance(exc, PortGone):
                raise
            result.failure = _failure(f"route {name}", exc, engine)
            report.failures.append(result.failure)
        if result.works and working is None:
            working = channel
            report.route, report.eid, report.isdr_reachable = name, result.eid, True
            continue
        await _close(channel, engine, report)

    if working is not None:
        if measure_block_sizes:
            for size in (255, apdus.DEFAULT_BLOCK_SIZE):
                report.block_sizes_accepted[str(size)] = await _block_fits(working, size)
        report.recommended_block_size = working.recommended_block_size
        await _close(working, engine, report)
        report.exit_code = EXIT_OK
    else:
        report.recommended_block_size = chosen.recommended_block_size


async def _close(channel: AtApduChannel, engine: AtEngine, report: ProbeReport) -> None:
    try:
        await channel.close()
    except BridgeError as exc:
        report.failures.append(_failure(f"close {channel.route}", exc, engine))
    channel.detach()


def format_report(report: ProbeReport) -> str:
    lines = [f"port          {report.port}"]
    if report.ati or report.model:
        lines.append(
            f"modem         {' / '.join(report.ati)}" + (f" (AT+CGMM: {report.model})" if report.model else "")
        )
    if report.profile:
        lines.append(f"profile       {report.profile} (from {report.profile_source})")
    if report.test_commands:
        tests = ", ".join(f"{k} {v}" for k, v in report.test_commands.items())
        lines.append(f"=? probes     {tests} (informative only, never trusted)")
    for name, result in report.routes.items():
        if result.works:
            lines.append(f"route {name:<7} works ({result.handle}), EID {result.eid}")
        else:
            lines.append(f"route {name:<7} fails: {result.failure.error if result.failure else 'not tried'}")
    lines.append(f"EID           {report.eid or '-'}")
    lines.append(f"ISD-R         {'reachable over ' + str(report.route) if report.isdr_reachable else 'NOT reachable'}")
    if report.recommended_block_size:
        accepted = ", ".join(f"{k}: {'ok' if v else 'refused'}" for k, v in report.block_sizes_accepted.items())
        lines.append(
            f"block size    {report.recommended_block_size} recommended" + (f" (tried {accepted})" if accepted else "")
        )
    if report.failures:
        lines.append("failures:")
        for f in report.failures:
            lines.append(f"  {f.step}: {f.error}")
            if f.command:
                lines.append(f"    command  {f.command}")
                lines.append(f"    answer   {' | '.join(f.answer) if f.answer else '(none)'}")
    lines.append(f"result        {report.exit_code}: {EXIT_CODES[report.exit_code]}")
    return "\n".join(lines)
