"""rsp.activation_code: SGP.22 §4.1 parse/format, specific errors, property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsp.activation_code import ActivationCode, ActivationCodeError, parse


def test_valid_vectors(vectors):
    first, second = (parse(t) for t in vectors["activation_codes"]["valid"])
    assert first == ActivationCode("SMDP.GSMA.COM", "04386-AGYFT-A74Y8-3F815", "1.3.6.1.4.1.31746", True)
    assert second == ActivationCode("testsmdpplus1.example.com", "TS48V2-SAIP2-1-NOBERTLV-UNIQUE")
    for text in vectors["activation_codes"]["valid"]:
        ac = parse(text)
        assert ac.format(prefix=text.startswith("LPA:")) == text


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("2$SMDP.GSMA.COM$X", "AC_Format", "unsupported version '2'"),
        ("1$$X", "SM-DP+ Address", "empty"),
        ("1$host$matching$1.2.3$2", "Confirmation Code Required Flag", "'1' or empty"),
        ("garbage", "activation code", "no '$'"),
    ],
)
def test_invalid_vectors_have_specific_messages(vectors, text, field, words):
    assert text in vectors["activation_codes"]["invalid"]
    with pytest.raises(ActivationCodeError) as exc:
        parse(text)
    assert exc.value.field == field
    assert words in str(exc.value)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "activation code", "empty"),
        ("LPA:", "activation code", "empty"),
        ("1", "SM-DP+ Address", "empty"),
        ("1$", "SM-DP+ Address", "empty"),
        ("1$SMDP.EXAMPLE.COM", "AC_Token", "missing"),
        ("1$SMDP.EXAMPLE.COM$$$$$$$$", "activation code", "too many fields"),
        ("1$a$b$1.2$1$CI$extra", "activation code", "too many fields"),
        ("1$smdp.example.com$X$1.2.x", "SM-DP+ OID", "not a dotted OID"),
        ("1$smdp.example.com$X$.1.2", "SM-DP+ OID", "not a dotted OID"),
        ("1$smdp.example.com$X$1.40.3", "SM-DP+ OID", "second arc"),
        ("1$smdp.example.com$X$3.1", "SM-DP+ OID", "not a dotted OID"),
        ("1$smdp.example.com$X$$yes", "Confirmation Code Required Flag", "'1' or empty"),
        ("1$smdp.example.com$X\x00Y", "AC_Token", "non-printable"),
        ("1$smdp.example.com$MATCH\u00e9", "AC_Token", "non-printable or non-ASCII"),
        ("1$smdp\texample.com$X", "SM-DP+ Address", "non-printable"),
        ("1$smdp_example.com$X", "SM-DP+ Address", "not a host name"),
        ("1$smdp..com$X", "SM-DP+ Address", "not a host name"),
        ("1$-smdp.com$X", "SM-DP+ Address", "not a host name"),
        ("1$smdp.com:0$X", "SM-DP+ Address", "bad port"),
        ("1$smdp.com:99999$X", "SM-DP+ Address", "bad port"),
        ("1$smdp.com:$X", "SM-DP+ Address", "bad port"),
        ("\x10$\xaa$\xbb$\xcc", "AC_Format", "non-printable"),
    ],
)
def test_malformed_forms(text, field, words):
    with pytest.raises(ActivationCodeError) as exc:
        parse(text)
    assert exc.value.field == field, str(exc.value)
    assert words in str(exc.value)


def test_optional_fields_and_lab_port():
    ac = parse("LPA:1$localhost:8443$$$1")
    assert ac == ActivationCode("localhost:8443", "", None, True)
    assert ac.smdp_host == "localhost"
    assert ac.format() == "1$localhost:8443$$$1"
    assert parse("lpa:1$SMDP.EXAMPLE.COM$$1.3.6.1.4.1.31746").smdp_oid == "1.3.6.1.4.1.31746"
    # trailing empty optional fields are accepted, the canonical form drops them
    assert parse("1$smdp.example.com$TOKEN$$").format() == "1$smdp.example.com$TOKEN"
    six = parse("1$smdp.example.com$TOKEN$$$F54172BDF98A95D65CBEB88A38A1C11D800A85C3")
    assert six.ci_pk_indicator == "F54172BDF98A95D65CBEB88A38A1C11D800A85C3"
    assert parse(six.format()) == six
    assert parse(b"1$smdp.example.com$T") == ActivationCode("smdp.example.com", "T")
    with pytest.raises(ActivationCodeError, match="not ASCII"):
        parse(b"1$smdp.example.com$\xff")


def test_constructor_validates():
    with pytest.raises(ActivationCodeError, match="delimiter"):
        ActivationCode("smdp.example.com", "A$B")
    with pytest.raises(ActivationCodeError, match="SM-DP\\+ Address: empty"):
        ActivationCode("")


_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_address = st.tuples(_host, st.one_of(st.none(), st.integers(1, 65535))).map(
    lambda t: t[0] if t[1] is None else f"{t[0]}:{t[1]}"
)
_token = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="$"), max_size=40)
_oid = st.tuples(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, 10**6), max_size=6)).map(
    lambda t: ".".join(str(x) for x in (t[0], t[1], *t[2]))
)
_codes = st.builds(
    ActivationCode,
    smdp_address=_address,
    matching_id=_token,
    smdp_oid=st.one_of(st.none(), _oid),
    confirmation_code_required=st.booleans(),
    ci_pk_indicator=st.one_of(st.none(), st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=40)),
)


@given(ac=_codes, prefix=st.booleans())
def test_parse_format_roundtrip(ac, prefix):
    assert parse(ac.format(prefix=prefix)) == ac


@given(text=st.text(max_size=120))
def test_random_text_raises_only_activation_code_error(text):
    try:
        ac = parse(text)
    except ActivationCodeError:
        return
    assert parse(ac.format()) == ac


@given(ac=_codes, data=st.data())
def test_mutated_codes_parse_or_fail_cleanly(ac, data):
    text = ac.format()
    pos = data.draw(st.integers(0, len(text)))
    ch = data.draw(st.characters())
    mutated = text[:pos] + ch + text[pos:]
    try:
        parse(mutated)
    except ActivationCodeError:
        pass
