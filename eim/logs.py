"""Structured logs: one JSON object per line (``time``, ``level``, ``logger``, ``message`` and the record's
``extra`` fields), or plain text. Loggers are named after the subsystem (``eim.esipa``, ``eim.store``...)."""

from __future__ import annotations

import json
import logging
import sys
import time

# color_message: uvicorn's copy of its message with ANSI colour codes, never wanted in a JSON line
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if json_lines else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """At most one log line per ``key`` (a cause, never an EID) every ``interval_s``; the lines held back in
    between are counted and reported as ``suppressed`` on the next line of that key. Bounded: at most
    ``max_keys`` keys are remembered (the oldest is forgotten), so a flood of distinct causes cannot grow it.

    Used where a remote peer decides how often we log (malformed CoAP blocks, refused notifications): a flood
    of bad input costs one line per cause and interval, never a line (or a traceback) per datagram."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, *, max_keys: int = 256, clock=time.monotonic
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (time of the last line, lines held back since)

    def log(self, level: int, key: str, message: str, **extra: object) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval_s`` ago; ``True`` if a line was written."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        self._last.pop(key, None)
        self._last[key] = (now, 0)
        while len(self._last) > self.max_keys:
            self._last.pop(next(iter(self._last)))
        fields = dict(extra, cause=key)
        if last is not None and last[1]:
            fields["suppressed"] = last[1]
        self.logger.log(level, message, extra=fields)
        return True

    def warning(self, key: str, message: str, **extra: object) -> bool:
        return self.log(logging.WARNING, key, message, **extra)
