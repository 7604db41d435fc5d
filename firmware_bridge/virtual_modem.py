"""A virtual modem on a pseudo-terminal, with a ``CardLink`` (the software eUICC) as its SIM.

It answers the AT commands an LPA sends (3GPP TS 27.007: ``AT``, ``ATE0/1``, ``ATI``, ``AT+CGMI/CGMM/CGMR``,
``AT+CMEE``, ``AT+CSIM``, ``AT+CCHO``, ``AT+CGLA``, ``AT+CCHC``, ``AT+CFUN``, ``AT+CPIN?``, ``AT+CREG/CEREG/CGREG``,
their ``=?`` test forms) and can misbehave like the real modems of docs/modems on demand (:class:`Quirks`).

Two layers:

- :class:`ModemCore` is the modem without I/O: bytes in, a list of outputs (bytes with a delay, or "the line
  drops") out. It owns the SIM side: passes APDUs to the card, patches the logical channel into CLA for
  ``AT+CGLA``, resets the card on REFRESH (``refresh-reset``) and on ``AT+CFUN=0``.
- :class:`VirtualModem` puts a core on a pty (``os.openpty``, raw mode) served by a background thread, keeps a
  symlink at ``link``, throttles both directions to an N-baud 8N1 line (10 bits per byte) when ``baud`` is given,
  and counts bytes both ways. ``replug()`` simulates a USB re-enumeration (new pty, same link).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import select
import threading
import time
import tty
from dataclasses import dataclass, field, fields
from pathlib import Path

from firmware_bridge.interfaces import CardLink
from rsp import apdu as apdus

log = logging.getLogger("firmware_bridge.virtual_modem")

CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    13: "SIM failure",
    14: "SIM busy",
    21: "invalid index",
    50: "incorrect parameters",
    100: "unknown",
}

NOISE_URCS = ('+CEREG: 1,"1A2B","01C2D3E4",7', '+QIND: "csq",28,99', "+CREG: 1", "+CGEV: ME PDN ACT 1")


@dataclass(frozen=True)
class Quirks:
    """Misbehaviours, each selectable by name (``--quirks no-cgla,csim-limit=250,slow=0.2``)."""

    no_cgla: bool = False  # no-cgla: AT+CCHO/CGLA/CCHC unknown (ERROR); CSIM only (SIMCom, Dell)
    hex_handles: bool = False  # hex-handles: 64-bit hex session ids like 00000000038aa32f (Sierra)
    bare_ccho: bool = False  # bare-ccho: AT+CCHO answered by the bare session id, no prefix (Fibocom)
    silent_probes: bool = False  # silent-probes: no answer at all to =? test commands (Fibocom)
    probe_error: bool = False  # probe-error: =? test commands answer ERROR though the commands work (Sierra)
    csim_limit: int | None = None  # csim-limit=N: AT+CSIM with more than N hex characters -> +CME ERROR: 3
    unquoted: bool = False  # unquoted: +CSIM: 4,9000
    no_length: bool = False  # no-length: +CSIM: "9000"
    no_prefix: bool = False  # no-prefix: 4,"9000" (no +CSIM: / +CGLA: prefix)
    lowercase: bool = False  # lowercase: hex answered in lower case
    echo: bool = False  # echo: start with ATE1
    urcs: bool = False  # urcs: URCs injected between every command and its answer
    slow: float = 0.0  # slow=S: every APDU / channel command answered after S seconds
    error_once_at: int | None = None  # error-once-at=N: the N-th AT+CSIM/AT+CGLA answers a bare ERROR (once)
    refresh_reset: float | None = None  # refresh-reset[=S]: REFRESH resets the SIM, channels lost; busy S seconds
    ccho_reject_isdr: bool = False  # ccho-reject-isdr: AT+CCHO on the ISD-R -> +CME ERROR: Parameters error
    basic_only: bool = False  # basic-only: MANAGE CHANNEL over AT+CSIM refused (6881) (Huawei)
    hang_at: int | None = None  # hang-at=N: from the N-th APDU command on, the modem answers nothing
    drop_at: int | None = None  # drop-at=N: at the N-th APDU command the device disappears
    replug_at: int | None = None  # replug-at=N: at the N-th APDU command the device re-enumerates (new pty)
    garbage_at: int | None = None  # garbage-at=N: the N-th APDU command is answered with garbage, then OK
    cmee: int | None = None  # cmee=N: start with AT+CMEE=N (0 bare ERROR, 1 numeric, 2 verbose), not the model's

    @classmethod
    def names(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls)]

    @classmethod
    def parse(cls, spec: str | list[str] | tuple[str, ...] | None) -> Quirks:
        """``"no-cgla,csim-limit=250"`` (or a list of such items) -> :class:`Quirks`."""
        if not spec:
            return cls()
        items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in s.split(",")]
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for item in (i.strip() for i in items):
            if not item:
                continue
            name, _, value = item.partition("=")
            key = name.strip().replace("-", "_")
            if key not in types:
                raise ValueError(f"unknown quirk {name!r} (known: {', '.join(cls.names())})")
            kind = str(types[key])
            try:
                if kind == "bool":
                    if value:
                        raise ValueError
                    values[key] = True
                elif key == "refresh_reset" or kind.startswith("float"):
                    values[key] = float(value) if value else 0.0
                else:
                    if not value:
                        raise ValueError
                    values[key] = int(value)
            except ValueError:
                raise ValueError(f"bad value for quirk {name!r}: {value!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, other: Quirks) -> Quirks:
        """``self`` with every quirk set in ``other`` added."""
        base = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(other):
            value = getattr(other, f.name)
            if value not in (False, None, 0.0) or (f.name in ("refresh_reset", "cmee") and value is not None):
                base[f.name] = value
        return Quirks(**base)  # type: ignore[arg-type]

    def describe(self) -> str:
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is False or value is None or (f.name == "slow" and not value):
                continue
            name = f.name.replace("_", "-")
            out.append(
                name if value is True else f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
            )
        return ",".join(out)


@dataclass(frozen=True)
class Model:
    """What the modem says it is, the URCs it sends when the SIM comes up, its own quirks, and the error format it
    starts with (``cmee``, the AT+CMEE value before a host sets one: 0 bare ``ERROR``, 1 ``+CME ERROR: <n>``,
    2 ``+CME ERROR: <text>``).

    ``cmee`` follows what the field notes (docs/firmware_bridge.md, "Error format at power-up") show a model
    answer without being asked: the Sierra Wireless models answer with text (EM9191: ``+CME ERROR: Parameters
    error``), the Wavecom-class G2150I with numbers (``+CME ERROR: 3``). For the other real models the notes show
    nothing, so they start as a modem does with result codes disabled (0, bare ``ERROR``): the harder case for a
    host, which must then not wait for a ``+CME ERROR``. The generic lab modem starts with numeric codes (1)."""

    name: str
    ati: tuple[str, ...]
    manufacturer: str
    model: str
    revision: str
    sim_urcs: tuple[str, ...] = ("+CPIN: READY",)
    quirks: str = ""
    cmee: int = 0


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            "generic",
            ("Virtual Modem", "VM-1", "Revision: fwbridge-1.0"),
            "Virtual Modem",
            "VM-1",
            "fwbridge-1.0",
            cmee=1,
        ),
        Model(
            "EG25-G",
            ("Quectel", "EG25", "Revision: EG25GGBR07A08M2G"),
            "Quectel",
            "EG25",
            "EG25GGBR07A08M2G",
            ("+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE"),
        ),
        Model(
            "EC20",
            ("Quectel", "EC20F", "Revision: EC20CEFAGR06A05M4G"),
            "Quectel",
            "EC20F",
            "EC20CEFAGR06A05M4G",
            ("+CPIN: READY", "+QUSIM: 1"),
        ),
        Model(
            "SIM7600G-H",
            ("Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600G-H", "Revision: LE20B04SIM7600G22"),
            "SIMCOM INCORPORATED",
            "SIMCOM_SIM7600G-H",
            "LE20B04SIM7600G22",
            ("+CPIN: READY", "SMS DONE", "PB DONE"),
            "no-cgla",
        ),
        Model(
            "MC7455",
            ("Manufacturer: Sierra Wireless, Incorporated", "Model: MC7455", "Revision: SWI9X30C_02.33.03.00"),
            "Sierra Wireless, Incorporated",
            "MC7455",
            "SWI9X30C_02.33.03.00",
            quirks="hex-handles,probe-error",
            cmee=2,
        ),
        Model(
            "EM9191",
            ("Manufacturer: Sierra Wireless, Incorporated", "Model: EM9191", "Revision: SWIX55C_03.10.07.00"),
            "Sierra Wireless, Incorporated",
            "EM9191",
            "SWIX55C_03.10.07.00",
            quirks="hex-handles,probe-error,ccho-reject-isdr",
            cmee=2,
        ),
        Model(
            "FM350-GL",
            ("Fibocom Wireless Inc.", "FM350-GL", "Revision: 81600.0000.00.29.19.16"),
            "Fibocom Wireless Inc.",
            "FM350-GL",
            "81600.0000.00.29.19.16",
            quirks="bare-ccho,silent-probes,no-prefix",
        ),
        Model(
            "SARA-R410M",
            ("u-blox", "SARA-R410M-02B", "Revision: L0.0.00.00.05.08"),
            "u-blox",
            "SARA-R410M-02B",
            "L0.0.00.00.05.08",
            ("+UUSIMSTAT: 1", "+CPIN: READY"),
        ),
        Model("LE910C1", ("Telit", "LE910C1-EU", "Revision: 25.21.660"), "Telit", "LE910C1-EU", "25.21.660"),
        Model(
            "G2150I",
            ("WAVECOM MODEM", "MULTIBAND  900E  1800", "Revision: R7.46.0.201108091301.FXT009"),
            "WAVECOM MODEM",
            "MULTIBAND  900E  1800 (Moxa G2150I)",
            "R7.46.0.201108091301.FXT009",
            quirks="no-cgla,csim-limit=522",
            cmee=1,
        ),
        Model(
            "DW5821e",
            ("Dell", "DW5821e Snapdragon X20 LTE", "Revision: T77W968.F1.0.0.4.0"),
            "Dell",
            "DW5821e",
            "T77W968.F1.0.0.4.0",
            quirks="no-cgla",
        ),
        Model(
            "MS2372h",
            ("Huawei", "MS2372h-153", "Revision: 21.180.01.00.00"),
            "Huawei",
            "MS2372h-153",
            "21.180.01.00.00",
            ("^SIMST: 1", "+CPIN: READY"),
            "no-cgla,basic-only",
        ),
    )
}


def get_model(name: str) -> Model:
    for key, model in MODELS.items():
        if key.lower() == name.lower():
            return model
    raise ValueError(f"unknown modem model {name!r} (known: {', '.join(MODELS)})")


@dataclass(frozen=True, slots=True)
class Out:
    """One output of the core: ``data`` after ``delay`` seconds; ``drop``/``replug`` end the line."""

    data: bytes = b""
    delay: float = 0.0
    drop: bool = False
    replug: bool = False


_CSIM = re.compile(r'^AT\+CSIM=\s*(\d+)\s*,\s*"?([0-9A-Fa-f]*)"?\s*$', re.I)
_CCHO = re.compile(r'^AT\+CCHO=\s*"?([0-9A-Fa-f]*)"?\s*$', re.I)
_CGLA = re.compile(r'^AT\+CGLA=\s*"?([0-9A-Za-z]+)"?\s*,\s*(\d+)\s*,\s*"?([0-9A-Fa-f]*)"?\s*$', re.I)
_CCHC = re.compile(r'^AT\+CCHC=\s*"?([0-9A-Za-z]+)"?\s*$', re.I)


class _Error(Exception):
    def __init__(self, code: int | str, bare: bool = False) -> None:
        self.code = code
        self.bare = bare


class ModemCore:
    """The modem logic without I/O. ``receive(bytes, now)`` and ``poll(now)`` return :class:`Out` items."""

    def __init__(self, card: CardLink, quirks: Quirks | None = None, model: Model | None = None, seed: int = 1) -> None:
        self.card = card
        self.model = model or MODELS["generic"]
        self.quirks = Quirks.parse(self.model.quirks).merged(quirks or Quirks())
        self.echo = self.quirks.echo
        self.power_up_cmee = self.quirks.cmee if self.quirks.cmee is not None else self.model.cmee
        self.cmee = self.power_up_cmee
        self.cfun = 1
        self.sim_on = True
        self.sim_busy_until = 0.0
        self.reg_n = {"CREG": 0, "CEREG": 0, "CGREG": 0}
        self.registered_at = 0.0
        self.sessions: dict[str, int] = {}
        self.session_counter = 0
        self.apdu_commands = 0
        self.commands = 0
        self.sim_resets = 0
        self.hung = False
        self.injected_errors = 0
        self._rx = bytearray()
        self._timers: list[tuple[float, bytes]] = []
        self._rng = random.Random(seed)
        self._noise = 0
        self.now = 0.0

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes, now: float) -> list[Out]:
        self.now = now
        if self.hung:
            return []
        out: list[Out] = []
        if self.echo:
            out.append(Out(data))
        self._rx += data
        while True:
            cr = self._rx.find(b"\r")
            if cr < 0:
                break
            line = bytes(self._rx[:cr]).decode("latin-1").replace("\n", "").strip()
            del self._rx[: cr + 1]
            if self._rx[:1] == b"\n":
                del self._rx[:1]
            if not line:
                continue
            out.extend(self._command(line))
            if self.hung or any(o.drop or o.replug for o in out):
                self._rx.clear()
                break
        if len(self._rx) > 8192:
            self._rx.clear()
        return out

    def poll(self, now: float) -> list[Out]:
        """Timers that came due (registration URCs after a SIM reset)."""
        self.now = now
        due = [t for t in self._timers if t[0] <= now]
        self._timers = [t for t in self._timers if t[0] > now]
        return [Out(data) for _, data in due]

    def next_timer(self) -> float | None:
        return min((t[0] for t in self._timers), default=None)

    # ------------------------------------------------------------------ formatting
    @staticmethod
    def _lines(*lines: str) -> bytes:
        return b"".join(b"\r\n" + ln.encode("latin-1") + b"\r\n" for ln in lines)

    def _ok(self, *lines: str) -> bytes:
        return self._lines(*lines, "OK")

    def _error(self, code: int | str, bare: bool = False) -> bytes:
        if bare or self.cmee == 0:
            return self._lines("ERROR")
        if isinstance(code, str):
            return self._lines(code)
        if self.cmee == 2:
            return self._lines(f"+CME ERROR: {CME_TEXT.get(code, 'unknown')}")
        return self._lines(f"+CME ERROR: {code}")

    def _hex(self, data: bytes) -> str:
        text = data.hex()
        return text if self.quirks.lowercase else text.upper()

    def _apdu_line(self, prefix: str, resp: bytes) -> str:
        hexstr = self._hex(resp)
        body = hexstr if self.quirks.unquoted else f'"{hexstr}"'
        if not self.quirks.no_length:
            body = f"{len(hexstr)},{body}"
        return body if self.quirks.no_prefix else f"{prefix} {body}"

    def _noise_urc(self, avoid: str) -> bytes:
        if not self.quirks.urcs:
            return b""
        for _ in range(len(NOISE_URCS)):
            urc = NOISE_URCS[self._noise % len(NOISE_URCS)]
            self._noise += 1
            if not urc.startswith(avoid):
                return self._lines(urc)
        return b""

    def _answer(self, body: bytes, prefix: str, delay: float = 0.0) -> list[Out]:
        """Wrap an answer with noise URCs (before the answer and between its information line and OK)."""
        if self.quirks.urcs and body.endswith(b"\r\nOK\r\n") and len(body) > 8:
            body = body[: -len(b"\r\nOK\r\n")] + self._noise_urc(prefix) + b"\r\nOK\r\n"
        return [Out(self._noise_urc(prefix) + body, delay)]

    # ------------------------------------------------------------------ commands
    def _command(self, line: str) -> list[Out]:
        self.commands += 1
        up = line.upper()
        if not up.startswith("AT"):
            return [Out(self._lines("ERROR"))]
        prefix = "+" + up[3:].split("=")[0].split("?")[0] + ":" if up.startswith("AT+") else ""
        if up.endswith("=?"):
            return self._test_command(up)
        try:
            if up.startswith(("AT+CSIM=", "AT+CGLA=")):
                return self._apdu_command(line, up)
            if up.startswith(("AT+CCHO=", "AT+CCHC=")):
                body = self._ccho(line) if up.startswith("AT+CCHO=") else self._cchc(line)
                return self._answer(body, prefix, self.quirks.slow)
            return self._answer(self._simple(up), prefix)
        except _Error as err:
            return self._answer(self._error(err.code, err.bare), prefix)

    def _test_command(self, up: str) -> list[Out]:
        name = up[2:-2]
        if name in ("+CCHO", "+CGLA", "+CCHC") and self.quirks.no_cgla:
            return [Out(self._lines("ERROR"))]
        if self.quirks.silent_probes:
            return []
        if self.quirks.probe_error and name in ("+CCHO", "+CGLA", "+CCHC", "+CSIM"):
            return [Out(self._error(4))]
        answers = {
            "+CMEE": "+CMEE: (0-2)",
            "+CFUN": "+CFUN: (0,1,4),(0,1)",
            "+CREG": "+CREG: (0-2)",
            "+CEREG": "+CEREG: (0-2)",
            "+CGREG": "+CGREG: (0-2)",
        }
        if name in answers:
            return [Out(self._ok(answers[name]))]
        if name in ("+CSIM", "+CCHO", "+CGLA", "+CCHC", "+CPIN", "+CGMM", "+CGMI", "+CGMR"):
            return [Out(self._ok())]
        return [Out(self._lines("ERROR"))]

    def _simple(self, up: str) -> bytes:
        if up == "AT":
            return self._ok()
        if up in ("ATE", "ATE0", "ATE1"):
            self.echo = up == "ATE1"
            return self._ok()
        if up in ("ATI", "ATI0"):
            return self._ok(*self.model.ati)
        if up in ("AT+CGMM", "AT+GMM"):
            return self._ok(self.model.model)
        if up in ("AT+CGMI", "AT+GMI"):
            return self._ok(self.model.manufacturer)
        if up in ("AT+CGMR", "AT+GMR"):
            return self._ok(self.model.revision)
        if up == "AT+CMEE?":
            return self._ok(f"+CMEE: {self.cmee}")
        if m := re.fullmatch(r"AT\+CMEE=([012])", up):
            self.cmee = int(m.group(1))
            return self._ok()
        if up == "AT+CFUN?":
            return self._ok(f"+CFUN: {self.cfun}")
        if m := re.fullmatch(r"AT\+CFUN=([0145])(?:,([01]))?", up):
            return self._cfun(int(m.group(1)), m.group(2) == "1")
        if up == "AT+CPIN?":
            self._require_sim()
            return self._ok("+CPIN: READY")
        if m := re.fullmatch(r"AT\+(CREG|CEREG|CGREG)\?", up):
            kind = m.group(1)
            return self._ok(f"+{kind}: {self.reg_n[kind]},{self._reg_stat()}")
        if m := re.fullmatch(r"AT\+(CREG|CEREG|CGREG)=([0-2])", up):
            self.reg_n[m.group(1)] = int(m.group(2))
            return self._ok()
        raise _Error(100, bare=True)

    def _reg_stat(self) -> int:
        if not self.sim_on or self.cfun != 1:
            return 0
        return 1 if self.now >= self.registered_at else 2

    def _require_sim(self) -> None:
        if not self.sim_on:
            raise _Error(13)
        if self.now < self.sim_busy_until:
            raise _Error(14)

    def _cfun(self, fun: int, reset: bool) -> bytes:
        urcs: list[str] = []
        if fun == 0 or reset:
            self._sim_reset(notify=False)
            self.sim_on = False
            urcs.append("+CPIN: NOT READY")
        if fun in (1, 4) or reset:
            if not self.sim_on or reset:
                self.sim_on = True
                if reset:
                    urcs.append("RDY")
                urcs.extend(self.model.sim_urcs)
                self._registration_lost()
        self.cfun = 1 if reset else fun
        return self._ok() + self._lines(*urcs)

    def _registration_lost(self, after: float = 0.3) -> None:
        self.registered_at = self.now + after
        for kind, n in self.reg_n.items():
            if n:
                self._timers.append((self.now + 0.01, self._lines(f"+{kind}: 2")))
                self._timers.append((self.registered_at, self._lines(f"+{kind}: 1")))

    def _sim_reset(self, notify: bool = True) -> bytes:
        """SIM session reset: the card is reset (ATR), every logical channel and session is gone."""
        self.card.reset()
        self.sessions.clear()
        self.sim_resets += 1
        if not notify:
            return b""
        self.sim_busy_until = self.now + (self.quirks.refresh_reset or 0.0)
        self._registration_lost()
        return self._lines(*self.model.sim_urcs)

    def _card(self, apdu: bytes) -> bytes:
        try:
            resp = bytes(self.card.process(apdu))
        except Exception:
            log.exception("card failed on %s", apdu.hex())
            raise _Error(13) from None
        if len(resp) < 2:
            log.error("card answered %r to %s", resp, apdu.hex())
            raise _Error(13)
        return resp

    def _after_apdu(self, resp: bytes) -> bytes:
        """REFRESH handling once the card has delivered its whole answer (not while 61xx data waits):
        with refresh-reset the modem resets the SIM session (the proactive REFRESH comes after the response)."""
        if self.quirks.refresh_reset is not None and resp[-2] != 0x61 and self.card.take_refresh():
            log.info("REFRESH: resetting the SIM session, closing %d session(s)", len(self.sessions))
            return self._sim_reset()
        return b""

    def _apdu_command(self, line: str, up: str) -> list[Out]:
        self.apdu_commands += 1
        n = self.apdu_commands
        q = self.quirks
        is_cgla = up.startswith("AT+CGLA=")
        prefix = "+CGLA:" if is_cgla else "+CSIM:"
        if q.hang_at is not None and n >= q.hang_at:
            self.hung = True
            return []
        if q.drop_at is not None and n == q.drop_at:
            return [Out(drop=True)]
        if q.replug_at is not None and n == q.replug_at:
            return [Out(replug=True)]
        if q.garbage_at is not None and n == q.garbage_at:
            junk = bytes(self._rng.choice(b"\x80\x9f\xff\x00ZQ#@!&*%") for _ in range(64))
            return [Out(junk + self._ok(), q.slow)]
        if is_cgla and q.no_cgla:
            raise _Error(100, bare=True)
        if q.error_once_at is not None and n == q.error_once_at:
            self.injected_errors += 1
            return [Out(self._lines("ERROR"), q.slow)]
        if is_cgla:
            m = _CGLA.match(line)
            if not m:
                raise _Error(50)
            sid, length, hexstr = m.groups()
            if sid not in self.sessions:
                raise _Error(21)
            channel = self.sessions[sid]
        else:
            m = _CSIM.match(line)
            if not m:
                raise _Error(50)
            length, hexstr = m.groups()
            channel = None
            if q.csim_limit is not None and len(hexstr) > q.csim_limit:
                raise _Error(3)
        if int(length) != len(hexstr) or len(hexstr) % 2 or len(hexstr) < 8:
            raise _Error(50)
        self._require_sim()
        apdu = bytes.fromhex(hexstr)
        if channel is not None:
            cla = apdu[0]
            apdu = bytes([apdus.cla_for_channel(cla & 0x80, channel)]) + apdu[1:]
        if q.basic_only and apdu[1] == apdus.INS_MANAGE_CHANNEL:
            resp = b"\x68\x81"
        else:
            resp = self._card(apdu)
        body = self._ok(self._apdu_line(prefix, resp))
        out = self._answer(body, prefix, q.slow)
        urcs = self._after_apdu(resp)
        if urcs:
            out.append(Out(urcs, 0.02))
        return out

    def _new_session_id(self) -> str:
        self.session_counter += 1
        if self.quirks.hex_handles:
            return f"{0x038AA32F + self.session_counter * 0x1F3D + self._rng.getrandbits(20):016x}"
        return str(self.session_counter)

    def _ccho(self, line: str) -> bytes:
        if self.quirks.no_cgla:
            raise _Error(100, bare=True)
        m = _CCHO.match(line)
        if not m or len(m.group(1)) % 2 or not 10 <= len(m.group(1)) <= 32:
            raise _Error(50)
        aid = bytes.fromhex(m.group(1))
        if self.quirks.ccho_reject_isdr and aid == apdus.ISDR_AID:
            raise _Error("+CME ERROR: Parameters error")
        self._require_sim()
        opened = self._card(apdus.manage_channel_open())
        if len(opened) != 3 or opened[1:] != b"\x90\x00":
            raise _Error(4)
        channel = opened[0]
        sel = self._card(apdus.select_aid(aid, channel))
        while sel[-2] == 0x61:  # the modem fetches (and drops) the FCI
            sel = self._card(apdus.get_response(sel[-1], channel))
        if sel[-2:] != b"\x90\x00":
            self._card(apdus.manage_channel_close(channel))
            raise _Error(13 if sel[-2:] == b"\x6a\x82" else 4)
        sid = self._new_session_id()
        self.sessions[sid] = channel
        return self._ok(sid if self.quirks.bare_ccho else f"+CCHO: {sid}")

    def _cchc(self, line: str) -> bytes:
        m = _CCHC.match(line)
        if self.quirks.no_cgla:
            raise _Error(100, bare=True)
        if not m:
            raise _Error(50)
        channel = self.sessions.pop(m.group(1), None)
        if channel is None:
            raise _Error(21)
        self._card(apdus.manage_channel_close(channel))
        return self._ok()


@dataclass
class Stats:
    bytes_in: int = 0
    bytes_out: int = 0
    baud: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def wire_seconds(self) -> float | None:
        """Time the bytes took (or would take) on an 8N1 line at ``baud``."""
        if not self.baud:
            return None
        return (self.bytes_in + self.bytes_out) * 10 / self.baud

    def summary(self) -> str:
        wire = f", {self.wire_seconds:.2f} s of line time at {self.baud} baud" if self.baud else ""
        return f"bytes in {self.bytes_in}, bytes out {self.bytes_out}{wire}"


class VirtualModem:
    """A :class:`ModemCore` on a pseudo-terminal, served by a background thread.

    ``with VirtualModem(card, quirks="no-cgla", link="/tmp/modem") as vm: ... vm.path ...``
    """

    def __init__(
        self,
        card: CardLink,
        quirks: Quirks | str | list[str] | tuple[str, ...] | None = None,
        baud: int | None = None,
        *,
        model: str | Model = "generic",
        link: str | os.PathLike[str] | None = None,
    ) -> None:
        if baud is not None and baud <= 0:
            raise ValueError("baud must be positive")
        self.model = get_model(model) if isinstance(model, str) else model
        self.core = ModemCore(card, quirks if isinstance(quirks, Quirks) else Quirks.parse(quirks), self.model)
        self.card = card
        self.baud = baud
        self.link = Path(link) if link is not None else None
        self.stats = Stats(baud=baud)
        self.path: str | None = None
        self.plugged = False
        self._master = -1
        self._slave = -1
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._rx_clock = 0.0
        self._tx_clock = 0.0

    @property
    def quirks(self) -> Quirks:
        return self.core.quirks

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> VirtualModem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Open the pty, start serving; returns the device path."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._plug()
        self._thread = threading.Thread(target=self._run, name="virtual-modem", daemon=True)
        self._thread.start()
        return self.path or ""

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
        self._unplug()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink():
                    self.link.unlink()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        self.plugged = True
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)
        log.info("virtual modem on %s%s", self.path, f" (link {self.link})" if self.link else "")

    def _unplug(self) -> None:
        # unplugged before the ports close: a client that sees the port go can already see the modem gone
        self.plugged = False
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    # ------------------------------------------------------------------ requests from other threads
    def _request(self, what: str) -> None:
        with self._lock:
            self._requests.append(what)
        self._wake()

    def replug(self) -> None:
        """USB re-enumeration: the device disappears (open ports get EIO), the SIM resets, a new pty appears."""
        self._request("replug")

    def unplug(self) -> None:
        self._request("unplug")

    def plug(self) -> None:
        self._request("plug")

    def inject(self, line: str) -> None:
        """Send an unsolicited result code now."""
        self._request("urc:" + line)

    # ------------------------------------------------------------------ the serving thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._handle_requests()
                fds = [self._wake_r] + ([self._master] if self._master >= 0 else [])
                nxt = self.core.next_timer()
                timeout = 0.5 if nxt is None else max(0.0, min(0.5, nxt - time.monotonic()))
                readable, _, _ = select.select(fds, [], [], timeout)
                if self._wake_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 1024)
                self._emit(self.core.poll(time.monotonic()))
                if self._master >= 0 and self._master in readable:
                    try:
                        data = os.read(self._master, 4096)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno == errno.EIO:
                            continue
                        raise
                    if data:
                        self._throttle_rx(len(data))
                        self.stats.bytes_in += len(data)
                        self._emit(self.core.receive(data, time.monotonic()))
        except Exception:
            log.exception("virtual modem thread failed")

    def _handle_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for req in requests:
            if req == "replug":
                self._do_replug()
            elif req == "unplug":
                self._unplug()
                self.core.hung = False
            elif req == "plug" and not self.plugged:
                self._plug()
            elif req.startswith("urc:") and self.plugged:
                self._write(ModemCore._lines(req[4:]))

    def _do_replug(self) -> None:
        self._unplug()
        self.core._sim_reset(notify=False)
        self.core.hung = False
        self.core.cmee = self.core.power_up_cmee  # a re-enumeration is a modem restart: settings not saved are gone
        if self._stop.wait(0.05):
            return
        self._plug()
        self._write(ModemCore._lines("RDY", *self.model.sim_urcs))

    def _emit(self, outs: list[Out]) -> None:
        for out in outs:
            if out.delay and self._stop.wait(out.delay):
                return
            if out.drop:
                log.info("drop: the device disappears")
                self._unplug()
                return
            if out.replug:
                log.info("replug: the device re-enumerates")
                self._do_replug()
                return
            if out.data:
                self._write(out.data)

    def _throttle_rx(self, n: int) -> None:
        if not self.baud:
            return
        now = time.monotonic()
        self._rx_clock = max(self._rx_clock, now) + n * 10 / self.baud
        if self._rx_clock > now:
            self._stop.wait(self._rx_clock - now)

    def _write(self, data: bytes) -> None:
        if self._master < 0:
            return
        chunk = len(data) if not self.baud else max(1, self.baud // 1000)  # ~10 ms of line time per chunk
        view = memoryview(data)
        while view and not self._stop.is_set() and self._master >= 0:
            piece = view[:chunk]
            if self.baud:
                now = time.monotonic()
                self._tx_clock = max(self._tx_clock, now) + len(piece) * 10 / self.baud
                if self._tx_clock > now:
                    self._stop.wait(self._tx_clock - now)
            # counted before the bytes can reach the reader and corrected after: a reader that has received them
            # all (a test, a benchmark) never sees a counter that lags behind what it read
            self.stats.bytes_out += len(piece)
            try:
                written = os.write(self._master, piece)
            except BlockingIOError:
                self.stats.bytes_out -= len(piece)
                select.select([], [self._master], [], 0.05)
                continue
            except OSError as exc:
                self.stats.bytes_out -= len(piece)
                log.info("write to pty failed: %s", exc)
                return
            self.stats.bytes_out -= len(piece) - written
            view = view[written:]
