"""Re-reading a secrets file when it changes: the operators file (``eim.api.auth``), the CoAPS PSK file
(``eim.bindings.coap_psk``) and the device-secret file (``eim.bindings.device_secrets``) share this.

A file is read again when its ``(inode, mtime, size)`` stamp changes. A bad file keeps the previous entries and is
logged once per stamp (``strict``: raised instead, as at start-up); a file others may read is warned about.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SecretFileWatch(Generic[T]):
    """The stat stamp and failure memory of one file. ``what`` names it in logs ("PSK file"), ``keeping`` what a bad
    file leaves in place ("keys"), ``count_key`` the log field of how many entries there are."""

    def __init__(
        self,
        path: Path,
        *,
        parse: Callable[[str, str], T],
        error: type[Exception],
        log: logging.Logger,
        what: str,
        keeping: str,
        count_key: str,
        missing: str | None = None,
    ) -> None:
        self.path, self.parse, self.error, self.log = path, parse, error, log
        self.what, self.keeping, self.count_key, self.missing = what, keeping, count_key, missing
        self._stamp: Any = None
        self._failed: tuple[Any, str] | None = None  # (stamp, message) of the last failure, logged once

    def read(self, current: int, *, strict: bool = False) -> T | None:
        """The file's new entries if it changed and parses, else ``None``. ``current``: how many entries are in
        use now (for the failure log)."""
        stamp: Any = None
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return None
            entries = self.parse(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, self.error) as exc:
            if isinstance(exc, FileNotFoundError) and self.missing:
                message = f"{self.path}: {self.missing}"
            else:
                message = str(exc) if isinstance(exc, self.error) else f"{self.path}: {exc}"
            if strict:
                raise self.error(message) from None
            if self._failed != (stamp, message):
                self._failed = (stamp, message)
                self.log.error(
                    f"{self.what} not reloaded, keeping the previous {self.keeping}",
                    extra={"path": str(self.path), self.count_key: current, "error": message},
                )
            return None
        self._stamp, self._failed = stamp, None
        self.log.info(
            f"{self.what} loaded",
            extra={"path": str(self.path), self.count_key: len(entries)},  # type: ignore[arg-type]
        )
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.log.warning(
                f"{self.what} is accessible to other users: chmod 600 it",
                extra={"path": str(self.path), "mode": oct(stat.S_IMODE(st.st_mode))},
            )
        return entries
