"""eim.logs.RateLimitedLog: a flood of one cause costs one line per interval, with the count held back."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from eim.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_cause_and_interval_with_suppressed_count(caplog):
    caplog.set_level("INFO", logger="test.ratelimit")
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), 60.0, clock=clock)
    written = [limited.warning("bad-block", "bad block", peer="p") for _ in range(50)]
    assert written == [True] + [False] * 49
    assert limited.warning("other", "other cause")  # another cause is not held back by the first
    clock.now += 61
    assert limited.warning("bad-block", "bad block")
    lines = [(r.getMessage(), getattr(r, "cause", None), getattr(r, "suppressed", None)) for r in caplog.records]
    assert lines == [("bad block", "bad-block", 0), ("other cause", "other", 0), ("bad block", "bad-block", 49)]


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.text(max_size=8), max_size=300))
def test_remembered_causes_stay_bounded(keys):
    limited = RateLimitedLog(logging.getLogger("test.ratelimit.bound"), 60.0, max_keys=16, clock=Clock())
    for k in keys:
        limited.warning(k, "x")
    assert len(limited._last) <= 16
