"""Structured logs: one JSON object per line (``time``, ``level``, ``logger``, ``message`` and the record's
``extra`` fields), or plain text. Loggers are named after the subsystem (``eim.esipa``, ``eim.store``...)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

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
    """At most one log line per ``key`` (a cause, never an EID or the input's text) every ``interval_s``; the lines
    held back in between are counted and reported as ``suppressed`` on the next line of that key (0 when none).
    Bounded: at most ``max_keys`` keys are remembered (the least recently logged is forgotten first), so a flood
    of distinct causes cannot grow it.

    Used wherever a remote peer decides how often we log (undecodable ESipa requests, malformed CoAP blocks,
    refused notifications): a flood of bad input costs one line per cause and interval, never a line (or a
    traceback) per request."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        *,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._last: OrderedDict[str, list[float]] = OrderedDict()  # key -> [time of the last line, held back]

    def log(self, level: int, key: str, message: str, extra: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval_s`` ago; ``True`` if a line was written."""
        now = self.clock()
        state = self._last.get(key)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            return False
        suppressed = int(state[1]) if state is not None else 0
        self._last[key] = [now, 0]
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        self.logger.log(level, message, extra={**(extra or {}), **fields, "cause": key, "suppressed": suppressed})
        return True

    def warning(self, key: str, message: str, extra: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        return self.log(logging.WARNING, key, message, extra, **fields)
