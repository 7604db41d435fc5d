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
    """The SM-DP+ answered, but not with what SGP.22 §6.5 defines for the function (HTTP status, JSON, fields)."""


class Es9Failed(RelayError):
    """The SM-DP+ executed the function and reported ``functionExecutionStatus`` = Failed."""

    def __init__(self, function: str, subject_code: str, reason_code: str, message: str = "") -> None:
        self.subject_code = subject_code
        self.reason_code = reason_code
        self.status_message = message
        super().__init__(function, f"Failed {subject_code}/{reason_code}" + (f": {message}" if message else ""))


class NotForwardable(RelayError):
    """A notification the relay cannot deliver as is (compact format, or no notificationAddress in it)."""
