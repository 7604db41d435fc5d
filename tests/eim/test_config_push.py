"""``[coap] push``, ``push_max_observers``, ``push_ack_timeout_s``: defaults, the example file, environment
overrides, and every malformed value refused with an error naming the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eim.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_example_and_environment():
    c = load_config(None, env={}).coap
    assert (c.push, c.push_max_observers, c.push_ack_timeout_s) == (True, 100_000, 2.0)
    example = load_config(ROOT / "deploy" / "eim.example.toml", env={}).coap
    assert (example.push, example.push_max_observers, example.push_ack_timeout_s) == (True, 100_000, 2.0)
    env = {"EIM_COAP_PUSH": "false", "EIM_COAP_PUSH_MAX_OBSERVERS": "7", "EIM_COAP_PUSH_ACK_TIMEOUT_S": "0.5"}
    c = load_config(None, env=env).coap
    assert (c.push, c.push_max_observers, c.push_ack_timeout_s) == (False, 7, 0.5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("push = 3", "[coap] push: must be true or false"),
        ("push_max_observers = 0", "[coap] push_max_observers"),
        ("push_max_observers = -5", "[coap] push_max_observers"),
        ('push_max_observers = "many"', "[coap] push_max_observers: must be an integer"),
        ("push_ack_timeout_s = 0", "push_ack_timeout_s"),
        ("push_ack_timeout_s = 61", "push_ack_timeout_s"),
        ("push_ack_timeout_s = nan", "push_ack_timeout_s"),
        ("push_ack_timeout_s = true", "[coap] push_ack_timeout_s: must be a number"),
    ],
)
def test_mistakes_name_the_key(tmp_path, line, message):
    f = tmp_path / "eim.toml"
    f.write_text(f"[coap]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert message in str(err.value)


@given(
    key=st.sampled_from(["PUSH", "PUSH_MAX_OBSERVERS", "PUSH_ACK_TIMEOUT_S"]),
    value=st.one_of(st.text(max_size=12), st.integers(-10, 10**7).map(str), st.floats().map(str)),
)
def test_any_environment_value_loads_or_names_the_key(key, value):
    try:
        c = load_config(None, env={f"EIM_COAP_{key}": value}).coap
    except ConfigError as exc:
        assert f"push_{key.lower().removeprefix('push_')}" in str(exc) or "push" in str(exc)
    else:
        assert c.push_max_observers >= 1 and 0 < c.push_ack_timeout_s <= 60 and math.isfinite(c.push_ack_timeout_s)
