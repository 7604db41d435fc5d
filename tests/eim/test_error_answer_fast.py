"""The dispatcher's error-answer check (:func:`eim.esipa.dispatcher.error_answer_code`) against a full TLV parse.

Every ProvideEimPackageResult acknowledgement passes through the check; an answer whose first member's tag byte
is not the error alternative's is now declined without parsing. These tests hold the check to what the parse of
the whole answer gives (the code of the error alternative, else ``None``) on any input.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eim.esipa import codec
from eim.esipa.dispatcher import ERROR_TAGS, error_answer_code
from rsp import tlv
from rsp.errors import RspError


def parsed_code(tag: int, answer: bytes | None) -> int | None:
    """The check written as a parse of the whole answer (what the dispatcher did before the byte check)."""
    if not answer or len(answer) > 10 or tag not in ERROR_TAGS or answer == codec.NO_PACKAGE_ANSWER:
        return None
    try:
        kids = tlv.children(tlv.parse_exact(answer))
    except RspError:
        return None
    if len(kids) != 1 or kids[0].tag != ERROR_TAGS[tag] or not 1 <= kids[0].length <= 4:
        return None
    code = int.from_bytes(kids[0].value, "big", signed=True)
    return None if tag == 0xBF4F and code == codec.NO_PACKAGE else code


TAGS = st.sampled_from([*ERROR_TAGS, 0xBF51, 0x30])


def _answers(tag: int) -> st.SearchStrategy[bytes]:
    member = st.builds(
        lambda t, v: tlv.encode(t, v),
        st.sampled_from([ERROR_TAGS.get(tag, 0x02), 0x02, 0x81, 0x82, 0xA0, 0x30, 0x80, 0x5A, 0xBF51]),
        st.binary(max_size=5),
    )
    shaped = st.builds(
        lambda t, ms: tlv.encode(t, b"".join(ms)), st.sampled_from([tag, 0xBF50, 0xBF4F]), st.lists(member, max_size=2)
    )
    return st.one_of(shaped, st.binary(max_size=12), shaped.map(lambda b: b[:-1]), shaped.map(lambda b: b + b"\x00"))


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_byte_check_gives_what_the_parse_gives(data: st.DataObject) -> None:
    tag = data.draw(TAGS)
    answer = data.draw(_answers(tag))
    assert error_answer_code(tag, answer) == parsed_code(tag, answer)


def test_acknowledgement_and_error_answers() -> None:
    ack = tlv.encode(0xBF50, tlv.encode(0xA0, tlv.encode(0x80, b"\x01")))  # an acknowledgement-like answer
    assert error_answer_code(0xBF50, ack) is None
    assert error_answer_code(0xBF50, bytes.fromhex("BF500302017F")) == 127  # undefinedError
    assert error_answer_code(0xBF3B, bytes.fromhex("BF3B03820108")) == 8
    assert error_answer_code(0xBF50, bytes.fromhex("BF50")) is None  # truncated: no member, no code
