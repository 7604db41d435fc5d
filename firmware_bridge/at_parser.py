"""AT response parsing without I/O (3GPP TS 27.007 / ITU-T V.250 result codes, modem quirks from docs/modems).

Three pieces, each pure and fuzzed by the tests:

- :class:`LineSplitter` turns the byte stream into lines (CR, LF or CR LF; partial lines wait for their end).
- :class:`Exchange` follows one command: it drops the echo, routes unsolicited result codes (URCs) away, keeps the
  information lines and ends on a final result code (``OK``, ``ERROR``, ``+CME ERROR: n|text``, ``+CMS ERROR: n``).
- :func:`parse_apdu_answer` and :func:`parse_session_id` take the ``+CSIM:`` / ``+CGLA:`` / ``+CCHO:`` answer out
  of a finished exchange, with or without quotes, with or without the length field, with or without the prefix,
  and refuse anything that is not exactly one well-formed answer (so a URC, an echo, a truncated line or garbage
  can never be returned as an APDU response).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware_bridge.errors import AtProtocolError

MAX_LINE = 4096  # an APDU answer is at most ~540 characters; anything longer is garbage

# Unsolicited result codes seen on the modems in docs/modems (prefix match, case-insensitive).
URC_PREFIXES: tuple[str, ...] = (
    "+CREG:",
    "+CEREG:",
    "+CGREG:",
    "+C5GREG:",
    "+CGEV:",
    "+QIND:",
    "+QUSIM:",
    "+QSIMSTAT:",
    "+QSTK",
    "+CPIN:",
    "^SIMST:",
    "^MODE:",
    "^RSSI:",
    "^BOOT:",
    "+SIMCARD:",
    "+CUSATP:",
    "+CUSATEND",
    "+STKPCI:",
    "+CTZV:",
    "+CTZE:",
    "+QNITZ:",
    "*PSUTTZ:",
    "+CIEV:",
    "+CMTI:",
    "+CSQN:",
    "+PACSP",
    "+CFUN:",
    "+UUSIMSTAT:",
    "#QSS:",
    "RDY",
    "RING",
    "SMS DONE",
    "PB DONE",
    "+CRING:",
)

# URCs that mean "the SIM session was (re)initialised": logical channels are gone after them.
SIM_RESET_URC_PREFIXES: tuple[str, ...] = (
    "RDY",
    "+CPIN:",
    "+QUSIM:",
    "+QSIMSTAT:",
    "^SIMST:",
    "+SIMCARD:",
    "+UUSIMSTAT:",
    "#QSS:",
    "^BOOT:",
)


def is_urc(line: str) -> bool:
    up = line.upper()
    return any(up.startswith(p) for p in URC_PREFIXES)


def is_sim_reset_urc(line: str) -> bool:
    up = line.upper()
    return any(up.startswith(p) for p in SIM_RESET_URC_PREFIXES)


def final_result(line: str) -> str | None:
    """The line if it is a final result code, else ``None``."""
    up = line.strip().upper()
    if up in ("OK", "ERROR"):
        return up
    if up.startswith("+CME ERROR:") or up.startswith("+CMS ERROR:"):
        return line.strip()
    return None


class LineSplitter:
    """Bytes in, complete lines out. CR, LF and CR LF all end a line; empty lines are dropped.

    A line longer than :data:`MAX_LINE` without an end is cut and returned as it stands (it will not parse as an
    answer); nothing the modem sends can grow the buffer without bound.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self.max_line = max_line

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        self._buf += data
        while True:
            cr, lf = self._buf.find(b"\r"), self._buf.find(b"\n")
            cut = min(cr, lf) if cr >= 0 and lf >= 0 else max(cr, lf)
            if cut < 0:
                break
            raw = bytes(self._buf[:cut])
            del self._buf[: cut + 1]
            line = raw.decode("latin-1").strip()
            if line:
                out.append(line)
        if len(self._buf) > self.max_line:
            out.append(bytes(self._buf).decode("latin-1"))
            self._buf.clear()
        return out

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()


@dataclass(frozen=True, slots=True)
class AtResponse:
    """One finished exchange: the command, its information lines (echo and URCs removed) and the final result."""

    command: str
    lines: tuple[str, ...]
    final: str

    @property
    def ok(self) -> bool:
        return self.final == "OK"

    def with_prefix(self, prefix: str) -> list[str]:
        up = prefix.upper()
        return [ln for ln in self.lines if ln.upper().startswith(up)]


@dataclass
class Exchange:
    """State of one command in flight. Feed it lines; ``done`` turns true on the final result code.

    ``expect`` is the answer prefix (``"+CSIM:"``); a line with it is always an answer even when the same prefix
    is also a URC (``AT+CPIN?`` answers ``+CPIN: READY``). Other known URCs are handed back by :meth:`feed` so
    the caller can route them; unknown lines are kept as information lines (``ATI`` text, answers without
    prefix), and only :func:`parse_apdu_answer` decides whether one of them is the answer.
    """

    command: str
    expect: str | None = None
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    # When set, a final result only ends the exchange after a line with this prefix; earlier finals (late answers
    # to commands that timed out) are skipped with their lines. Used to resynchronise.
    require: str | None = None
    skipped: int = 0

    @property
    def done(self) -> bool:
        return self.final is not None

    def _is_echo(self, line: str) -> bool:
        return line.replace(" ", "").upper() == self.command.replace(" ", "").upper()

    def feed(self, line: str) -> bool:
        """Take one line. Returns ``True`` when the line is a URC that belongs to someone else."""
        if self.done:
            return True
        if self._is_echo(line):
            return False
        fin = final_result(line)
        if fin is not None:
            if self.require and not any(ln.upper().startswith(self.require.upper()) for ln in self.lines):
                self.lines.clear()
                self.skipped += 1
                return False
            self.final = fin
            return False
        if self.expect and line.upper().startswith(self.expect.upper()):
            self.lines.append(line)
            return False
        if is_urc(line):
            return True
        self.lines.append(line)
        return False

    def response(self) -> AtResponse:
        if self.final is None:
            raise RuntimeError("exchange not finished")
        return AtResponse(self.command, tuple(self.lines), self.final)


_HEX = re.compile(r"[0-9A-Fa-f]*")
_PAYLOAD = re.compile(r'^\s*(?:(\d{1,4})\s*,\s*)?("?)([0-9A-Fa-f]*)("?)\s*$')


def _parse_payload(text: str) -> bytes | None:
    """``<len>,"<hex>"`` / ``<len>,<hex>`` / ``"<hex>"`` / ``<hex>`` -> response bytes, or ``None``."""
    m = _PAYLOAD.match(text)
    if not m:
        return None
    length, q1, hexstr, q2 = m.groups()
    if q1 != q2:
        return None  # unbalanced quote: a cut line
    if len(hexstr) < 4 or len(hexstr) % 2:
        return None
    if length is not None and int(length) != len(hexstr):
        return None
    raw = bytes.fromhex(hexstr)
    sw1 = raw[-2]
    if not (0x61 <= sw1 <= 0x6F or 0x90 <= sw1 <= 0x9F):
        return None  # ISO/IEC 7816-3: SW1 is 6X (not 60) or 9X
    return raw


def parse_apdu_answer(resp: AtResponse, prefix: str) -> bytes:
    """The APDU response (data || SW1 SW2) carried by a finished ``AT+CSIM`` / ``AT+CGLA`` exchange.

    Exactly one answer must be present: the line with ``prefix`` when there is one, otherwise the single
    information line that is a well-formed answer on its own (modems that omit the prefix). Length fields must
    match the hex, quotes must balance, SW1 must be a valid status byte. Anything else raises
    :class:`AtProtocolError` naming the command.
    """
    up = prefix.upper()
    prefixed = [ln for ln in resp.lines if ln.upper().startswith(up)]
    if len(prefixed) > 1:
        raise AtProtocolError(resp.command, f"{len(prefixed)} {prefix} lines in one answer", resp.lines)
    if prefixed:
        raw = _parse_payload(prefixed[0][len(prefix) :])
        if raw is None:
            raise AtProtocolError(resp.command, f"malformed {prefix} line", resp.lines)
        return raw
    bare = [raw for raw in (_parse_payload(ln) for ln in resp.lines) if raw is not None]
    if len(bare) == 1:
        return bare[0]
    if not bare:
        raise AtProtocolError(resp.command, f"no {prefix} answer", resp.lines)
    raise AtProtocolError(resp.command, f"{len(bare)} lines look like an answer without {prefix}", resp.lines)


_SID_PREFIXED = re.compile(r'^\s*("?)([0-9A-Za-z]{1,32})("?)\s*$')
_SID_BARE = re.compile(r'^\s*("?)([0-9A-Fa-f]{1,16})("?)\s*$')


def parse_session_id(resp: AtResponse, prefix: str = "+CCHO:") -> str:
    """The session id of a finished ``AT+CCHO`` exchange, kept verbatim (an opaque handle, never a channel number).

    Accepts ``+CCHO: 1``, ``+CCHO: "00000000038aa32f"`` and a bare ``1`` line (no prefix).
    """
    up = prefix.upper()
    prefixed = [ln for ln in resp.lines if ln.upper().startswith(up)]
    if len(prefixed) > 1:
        raise AtProtocolError(resp.command, f"{len(prefixed)} {prefix} lines in one answer", resp.lines)
    if prefixed:
        m = _SID_PREFIXED.match(prefixed[0][len(prefix) :])
        if not m or m.group(1) != m.group(3):
            raise AtProtocolError(resp.command, f"malformed {prefix} line", resp.lines)
        return m.group(2)
    bare = [m.group(2) for m in (_SID_BARE.match(ln) for ln in resp.lines) if m and m.group(1) == m.group(3)]
    if len(bare) == 1:
        return bare[0]
    if not bare:
        raise AtProtocolError(resp.command, f"no {prefix} session id", resp.lines)
    raise AtProtocolError(resp.command, f"{len(bare)} lines look like a session id", resp.lines)


def format_apdu_command(apdu: bytes, session: str | None = None) -> str:
    """``AT+CSIM=<len>,"<HEX>"`` or ``AT+CGLA=<sid>,<len>,"<HEX>"`` (length counts hex characters)."""
    hexstr = apdu.hex().upper()
    if session is None:
        return f'AT+CSIM={len(hexstr)},"{hexstr}"'
    return f'AT+CGLA={session},{len(hexstr)},"{hexstr}"'
