"""Rate-limited warnings for input anyone can send (undecodable ESipa requests): a flood must not fill the disk.

One line per cause per ``interval_s``; the lines held back in between are counted and reported as ``suppressed``
on the next line of that cause. Causes are few by construction (function + decoder step, never the input's
text), and at most ``max_causes`` are remembered (the oldest is forgotten first).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 60.0,
        max_causes: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_causes = max_causes
        self.clock = clock
        self._causes: OrderedDict[str, list[float]] = OrderedDict()  # cause -> [last logged at, held back]

    def warning(self, cause: str, message: str, extra: dict[str, Any]) -> bool:
        """Log ``message`` at warning unless ``cause`` was logged less than ``interval_s`` ago. ``True`` if logged."""
        now = self.clock()
        state = self._causes.get(cause)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            return False
        suppressed = int(state[1]) if state is not None else 0
        self._causes[cause] = [now, 0]
        self._causes.move_to_end(cause)
        while len(self._causes) > self.max_causes:
            self._causes.popitem(last=False)
        self.logger.warning(message, extra={**extra, "cause": cause, "suppressed": suppressed})
        return True
