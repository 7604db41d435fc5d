"""Real services started by the tests themselves (the runners live in :mod:`demo.services`, shared with the demo
and the benchmarks). A missing binary fails the test under CI (``CI=true``) and skips it on a developer's machine
with a message saying what to install.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from demo import services as _services
from demo.services import (
    Broker,
    Postgres,
    ServiceUnavailable,
    free_port,
    mosquitto_binary,
    postgres_bindir,
    wait_port,
)

__all__ = [
    "Broker",
    "Postgres",
    "free_port",
    "missing_service",
    "mosquitto_binary",
    "postgres_bindir",
    "require_dtls",
    "run_mosquitto",
    "run_postgres",
    "wait_port",
]


def missing_service(what: str, install: str) -> None:
    msg = f"{what} is not available: install it ({install})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + " - required under CI")
    pytest.skip(msg)  # only off CI: under CI=true the pytest.fail above ends the test


def require_dtls() -> None:
    """CoAPS tests need DTLSSocket (aiocoap's tinydtls transports), which ``make venv`` builds and installs."""
    try:
        import DTLSSocket  # noqa: F401
    except ImportError:
        missing_service(
            "DTLSSocket (CoAP over DTLS)",
            "apt-get install autoconf automake libtool, then pip install -e '.[dtls]'; `make venv` does both",
        )


@contextlib.contextmanager
def run_mosquitto(extra_config: str = "") -> Iterator[Broker]:
    try:
        cm = _services.run_mosquitto(extra_config)
        broker = cm.__enter__()
    except ServiceUnavailable as exc:
        missing_service(exc.what, exc.install)
    try:
        yield broker
    finally:
        cm.__exit__(None, None, None)


@contextlib.contextmanager
def run_postgres() -> Iterator[Postgres]:
    try:
        cm = _services.run_postgres()
        pg = cm.__enter__()
    except ServiceUnavailable as exc:
        missing_service(exc.what, exc.install)
    try:
        yield pg
    finally:
        cm.__exit__(None, None, None)
