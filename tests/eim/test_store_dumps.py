"""The store's JSON columns are written by one encoder built once (eim.store.logic._dumps): the text must be what
``json.dumps(..., separators=(",", ":"), sort_keys=True)`` writes, so rows written before and after compare equal."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim.store.logic import _dumps, _loads

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_the_same_text_as_json_dumps(value):
    if value is None:
        assert _dumps(value) is None
        return
    text = _dumps(value)
    assert text == json.dumps(value, separators=(",", ":"), sort_keys=True)
    assert json.dumps(_loads(text), separators=(",", ":"), sort_keys=True) == text


def test_what_json_cannot_write_is_refused_as_before():
    with pytest.raises(TypeError):
        _dumps({"k": b"bytes"})
    with pytest.raises(TypeError):
        _dumps({1: "a", "b": 2})  # sort_keys cannot order mixed key types
