"""The lab address map (rsp.resolve): what it accepts, the error that names the key, and malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsp.resolve import ResolveMap, ResolveMapError, parse, parse_text


def test_lookup_by_name_and_by_name_and_port():
    table = parse({"smdp.test": "127.0.0.1:8443", "SMDP.test:9443": "[::1]:9000", "other.test": "backend.lab:443"})
    assert table.lookup("smdp.test", 443) == ("127.0.0.1", 8443)
    assert table.lookup("Smdp.Test.", 443) == ("127.0.0.1", 8443)  # case and a final dot do not matter
    assert table.lookup("smdp.test", 9443) == ("::1", 9000)  # the key with the port wins
    assert table.lookup("other.test", 8443) == ("backend.lab", 443)
    assert table.lookup("unmapped.test", 443) is None
    assert not parse({}) and not parse(None) and parse({"a.test": "127.0.0.1:1"})


def test_text_form_of_environment_variables():
    assert parse_text(" a.test=127.0.0.1:8443, b.test:443=[::1]:9443 ,") == {
        "a.test": "127.0.0.1:8443",
        "b.test:443": "[::1]:9443",
    }
    assert parse("a.test=127.0.0.1:8443").lookup("a.test", 443) == ("127.0.0.1", 8443)


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"smdp.test": "127.0.0.1"}, "'smdp.test'"),  # no port
        ({"smdp.test": "127.0.0.1:0"}, "'smdp.test'"),
        ({"smdp.test": "127.0.0.1:65536"}, "'smdp.test'"),
        ({"smdp.test:99999": "127.0.0.1:1"}, "'smdp.test:99999'"),
        ({"https://smdp.test": "127.0.0.1:1"}, "'https://smdp.test'"),
        ({"smdp.test/path": "127.0.0.1:1"}, "'smdp.test/path'"),
        ({"": "127.0.0.1:1"}, "''"),
        ({"smdp.test": "[::1:1"}, "'smdp.test'"),
        ({"smdp.test": "[nothex]:1"}, "'smdp.test'"),
        ({"smdp.test": "999.1.1.1:443"}, "'smdp.test'"),
        ({"smdp.test": 8443}, "'smdp.test'"),
        ({"smdp.test": "127.0.0.1:1", "SMDP.TEST": "127.0.0.1:2"}, "'SMDP.TEST'"),
        ({"-bad-.test": "127.0.0.1:1"}, "'-bad-.test'"),
    ],
)
def test_errors_name_the_key(mapping, named):
    with pytest.raises(ResolveMapError) as err:
        parse(mapping)
    assert named in str(err.value)


def test_not_a_table():
    for bad in ([("a.test", "127.0.0.1:1")], 42, b"a.test=127.0.0.1:1"):
        with pytest.raises(ResolveMapError):
            parse(bad)
    with pytest.raises(ResolveMapError, match="host\\[:port\\]=address:port"):
        parse("a.test")


values = st.one_of(
    st.text(max_size=40), st.integers(), st.none(), st.binary(max_size=8), st.lists(st.text(), max_size=2)
)


@settings(max_examples=300)
@given(st.dictionaries(st.one_of(st.text(max_size=40), st.integers()), values, max_size=5))
def test_malformed_tables_get_a_resolve_map_error_or_a_valid_map(mapping):
    try:
        table = parse(mapping)
    except ResolveMapError as exc:
        assert str(exc)
        return
    assert isinstance(table, ResolveMap)
    for (host, port), (address, target_port) in table.entries.items():
        assert host == host.lower() and (port is None or 0 < port < 65536) and 0 < target_port < 65536
        assert table.lookup(host, port or 443) == (address, target_port)


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_malformed_text_gets_a_resolve_map_error_or_a_valid_map(text):
    try:
        table = parse(text)
    except ResolveMapError:
        return
    assert isinstance(table, ResolveMap)
