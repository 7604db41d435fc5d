"""Errors of the ES9+ relay. Each names the ES9+ function (step) that failed and why."""

from __future__ import annotations


class RelayError(Exception):
    """Base class: the relay could not complete an ES9+ step."""

    def __init__(self, function: str, message: str) -> None:
        self.function = function
        self.reason = message
        super().__init__(f"ES9+ {function}: {message}")


class InvalidSmdpAddress(RelayError):
    """The SM-DP+ address is not a host name[:port], or not allowed by the relay's configuration."""


class Es9Unreachable(RelayError):
    """No HTTP answer from the SM-DP+ (DNS, TCP, timeout). ``tls`` is True when the TLS handshake or the
    certificate check failed: the server is not an SM-DP+ we trust."""

    def __init__(self, function: str, message: str, *, tls: bool = False) -> None:
        super().__init__(function, message)
        self.tls = tls


class Es9BadResponse(RelayError):
    """The SM-DP+ answered, but not with what SGP.22 §6.5 defines for the function (HTTP status, JSON, fields).
    ``http_status``: the unexpected HTTP status, when that was the problem."""

    def __init__(self, function: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(function, message)
        self.http_status = http_status


class Es9Failed(RelayError):
    """The SM-DP+ executed the function and reported ``functionExecutionStatus`` = Failed."""

    def __init__(self, function: str, subject_code: str, reason_code: str, message: str = "") -> None:
        self.subject_code = subject_code
        self.reason_code = reason_code
        self.status_message = message
        super().__init__(function, f"Failed {subject_code}/{reason_code}" + (f": {message}" if message else ""))


TRANSIENT_HTTP_STATUS = (502, 503, 504)  # a proxy or a server that is starting: the same call may work later


def is_transient(exc: RelayError) -> bool:
    """True when the SM-DP+ gave no usable answer for a reason that may pass (it was down, restarting, slow):
    connection refused or reset, timeout, HTTP 502/503/504. A TLS failure is not transient (wrong server)."""
    if isinstance(exc, Es9Unreachable):
        return not exc.tls
    return isinstance(exc, Es9BadResponse) and exc.http_status in TRANSIENT_HTTP_STATUS


class NotForwardable(RelayError):
    """A notification the relay cannot deliver as is (compact format, or no notificationAddress in it)."""
