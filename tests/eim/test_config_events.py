"""The ``[events]`` and ``[fleet]`` keys: defaults, and malformed values (hypothesis) refused with the key named."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.config import ConfigError, load_config

KEYS = {
    "EIM_EVENTS_RETRY_INITIAL_S": "retry_initial_s",
    "EIM_EVENTS_RETRY_MAX_S": "retry_max_s",
    "EIM_EVENTS_MAX_ATTEMPTS": "max_attempts",
    "EIM_EVENTS_TIMEOUT_S": "timeout_s",
    "EIM_EVENTS_POLL_S": "poll_s",
    "EIM_EVENTS_STALE_CHECK_S": "stale_check_s",
    "EIM_EVENTS_ALLOW_LOOPBACK": "allow_loopback",
    "EIM_FLEET_POLL_INTERVAL_S": "poll_interval_s",
}


def test_defaults():
    cfg = load_config(env={})
    e = cfg.events
    assert (e.enabled, e.allow_loopback, e.allow_private, e.max_attempts) == (True, False, False, 20)
    assert cfg.fleet.poll_interval_s == 86400.0


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"EIM_EVENTS_RETRY_INITIAL_S": "0"}, "retry_initial_s"),
        ({"EIM_EVENTS_RETRY_INITIAL_S": "100", "EIM_EVENTS_RETRY_MAX_S": "10"}, "retry_initial_s"),
        ({"EIM_EVENTS_RETRY_MAX_S": "inf"}, "retry_max_s"),
        ({"EIM_EVENTS_MAX_ATTEMPTS": "-1"}, "max_attempts"),
        ({"EIM_EVENTS_TIMEOUT_S": "nan"}, "timeout_s"),
        ({"EIM_EVENTS_POLL_S": "0"}, "poll_s"),
        ({"EIM_FLEET_POLL_INTERVAL_S": "5"}, "poll_interval_s"),
        ({"EIM_EVENTS_ALLOW_LOOPBACK": "perhaps"}, "allow_loopback"),
    ],
)
def test_mistakes_name_the_key(env, key):
    with pytest.raises(ConfigError, match=key):
        load_config(env=env)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(KEYS)), st.text(max_size=12), max_size=4))
def test_garbage_values_are_refused_naming_the_key_or_give_usable_settings(env):
    try:
        cfg = load_config(env=env)
    except ConfigError as exc:
        assert any(k in str(exc) for k in KEYS.values()), str(exc)
        return
    e = cfg.events
    assert 0 < e.retry_initial_s <= e.retry_max_s and e.max_attempts >= 0
    for v in (e.retry_max_s, e.timeout_s, e.poll_s, e.stale_check_s, cfg.fleet.poll_interval_s):
        assert math.isfinite(v) and v > 0
