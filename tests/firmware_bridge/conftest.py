"""Fixtures for the firmware-bridge tests: a card, a virtual modem on a real pty, an AT engine with short deadlines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from firmware_bridge.at import AtEngine
from firmware_bridge.virtual_modem import VirtualModem
from tests.firmware_bridge.minicard import MiniCard

SHORT = 2.0  # deadline of one AT exchange in tests (the default is 10 s)


@contextlib.contextmanager
def running_modem(card=None, quirks=None, **kwargs) -> Iterator[VirtualModem]:
    modem = VirtualModem(card if card is not None else MiniCard(), quirks, **kwargs)
    modem.start()
    try:
        yield modem
    finally:
        modem.stop()


@pytest.fixture
def modem_factory():
    """``with modem_factory(card, "no-cgla") as vm:`` - stopped at the end of the test in any case."""
    stack = contextlib.ExitStack()

    def make(card=None, quirks=None, **kwargs) -> VirtualModem:
        return stack.enter_context(running_modem(card, quirks, **kwargs))

    with stack:
        yield make


def engine_for(path: str, **kwargs) -> AtEngine:
    kwargs.setdefault("timeout", SHORT)
    kwargs.setdefault("long_timeout", 3 * SHORT)
    kwargs.setdefault("reopen_timeout", SHORT)
    return AtEngine(path, **kwargs)
