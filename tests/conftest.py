"""Shared fixtures: paths to the shared reference data, real services started per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.services import run_mosquitto, run_postgres

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

settings.register_profile("default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@pytest.fixture(scope="session")
def vectors() -> dict:
    """Known-answer vectors (tests/data/vectors.json; provenance in tests/data/PROVENANCE.md)."""
    return json.loads((DATA / "vectors.json").read_text())


@pytest.fixture(scope="session")
def mosquitto():
    with run_mosquitto() as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres():
    with run_postgres() as pg:
        yield pg
