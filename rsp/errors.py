"""Exception types of the RSP core. Every error names the step that failed and why."""

from __future__ import annotations


class RspError(Exception):
    """Base class of all errors raised by the ``rsp`` package."""


class DecodeError(RspError):
    """Malformed input for a decoder.

    ``type_name`` names what was being decoded, ``position`` the byte offset where decoding failed
    (``None`` when unknown).
    """

    def __init__(self, type_name: str, message: str, position: int | None = None) -> None:
        self.type_name = type_name
        self.position = position
        self.reason = message
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"cannot decode {type_name}{where}: {message}")


class EncodeError(RspError):
    """A value that cannot be encoded as the given type."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.reason = message
        super().__init__(f"cannot encode {type_name}: {message}")
