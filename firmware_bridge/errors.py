"""Exceptions of the firmware bridge. Each one names the step (usually the exact AT command) and what came back."""

from __future__ import annotations

from collections.abc import Sequence


class BridgeError(Exception):
    """Base class of every error raised by ``firmware_bridge``."""

    step: str = ""


class PortGone(BridgeError):
    """The serial device cannot be opened or disappeared (USB re-enumeration, modem reset, unplugged)."""

    def __init__(self, port: str, reason: str, command: str | None = None) -> None:
        self.port = port
        self.reason = reason
        self.command = command
        self.step = command or "open port"
        during = f" during {command!r}" if command else ""
        super().__init__(f"serial port {port} gone{during}: {reason}")


class PortBusy(BridgeError):
    """Another process holds the port (ModemManager, a second bridge, minicom ...)."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        self.step = "lock port"
        super().__init__(
            f"serial port {port} is locked by another program ({reason}); stop it or tag the port "
            "ID_MM_PORT_IGNORE (see deploy/udev/)"
        )


class AtTimeout(BridgeError):
    """No final result code (OK / ERROR / +CME ERROR / +CMS ERROR) within the deadline."""

    def __init__(self, command: str, timeout: float, lines: Sequence[str] = ()) -> None:
        self.command = command
        self.step = command
        self.timeout = timeout
        self.lines = tuple(lines)
        got = f"; got {len(self.lines)} line(s) without a final result: {list(self.lines)[:4]!r}" if lines else ""
        super().__init__(f"{command!r}: no final result within {timeout:g} s{got}")


class AtError(BridgeError):
    """The modem answered a final error result (``ERROR``, ``+CME ERROR: n|text``, ``+CMS ERROR: n``)."""

    def __init__(self, command: str, final: str, lines: Sequence[str] = ()) -> None:
        self.command = command
        self.step = command
        self.final = final
        self.lines = tuple(lines)
        super().__init__(f"{command!r} answered {final!r}")

    @property
    def cme(self) -> int | str | None:
        """The ``+CME ERROR`` code (int) or text (str); ``None`` for a bare ``ERROR`` or ``+CMS ERROR``."""
        head = "+CME ERROR:"
        if not self.final.upper().startswith(head):
            return None
        value = self.final[len(head) :].strip()
        return int(value) if value.isdigit() else value

    @property
    def bare(self) -> bool:
        return self.final.strip().upper() == "ERROR"


class AtProtocolError(BridgeError):
    """The modem answered ``OK`` but the answer cannot be understood (garbage, missing or ambiguous line)."""

    def __init__(self, command: str, reason: str, lines: Sequence[str] = ()) -> None:
        self.command = command
        self.step = command
        self.reason = reason
        self.lines = tuple(lines)
        super().__init__(f"{command!r}: {reason}; lines {list(self.lines)[:6]!r}")


class ChannelError(BridgeError):
    """A step of the logical-channel life cycle failed (MANAGE CHANNEL, SELECT ISD-R, CCHO, GET RESPONSE ...)."""

    def __init__(
        self,
        step: str,
        reason: str,
        *,
        sw: int | None = None,
        cause: BaseException | None = None,
        command: str | None = None,
        answer: Sequence[str] = (),
    ) -> None:
        self.step = step
        self.reason = reason
        self.sw = sw
        self.cause = cause
        self.command = command  # the AT command that carried the failing APDU, when known
        self.answer = tuple(answer)  # and the modem's answer lines
        super().__init__(f"{step}: {reason}")


class ChannelLost(ChannelError):
    """The card was reset (REFRESH, SIM reset, port re-enumerated): the logical channel is gone; call ``open()``."""


class RouteUnavailable(ChannelError):
    """No AT route reached the ISD-R. ``failures`` maps each route tried to the error it met."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{route}: {err}" for route, err in failures.items()) or "no route configured"
        super().__init__("open ISD-R channel", f"no route reached the ISD-R ({detail})")


class ApduTooLong(ChannelError):
    """The APDU does not fit the modem's command-line limit; use a smaller STORE DATA block size."""
