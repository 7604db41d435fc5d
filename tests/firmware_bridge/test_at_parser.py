"""The AT response parser: line splitting, exchanges, APDU answers and session ids - examples and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.at_parser import (
    AtResponse,
    Exchange,
    LineSplitter,
    final_result,
    format_apdu_command,
    is_sim_reset_urc,
    is_urc,
    parse_apdu_answer,
    parse_session_id,
)
from firmware_bridge.errors import AtError, AtProtocolError

CMD = 'AT+CSIM=22,"81E2910006BF3E035C015A"'


def run(command: str, stream: bytes, expect: str | None, chunks: list[int] | None = None):
    """Feed ``stream`` (split at ``chunks``) through a splitter and an exchange; returns (exchange, urcs)."""
    splitter, ex, urcs = LineSplitter(), Exchange(command, expect), []
    pieces, pos = [], 0
    for n in chunks or []:
        pieces.append(stream[pos : pos + n])
        pos += n
    pieces.append(stream[pos:])
    for piece in pieces:
        for line in splitter.feed(piece):
            if not ex.done and ex.feed(line):
                urcs.append(line)
    return ex, urcs


# ---------------------------------------------------------------------------------------------- examples
def test_answer_with_echo_and_urcs_between_command_and_answer():
    stream = CMD.encode() + b"\r" + b'\r\n+CEREG: 1\r\n\r\n+CSIM: 4,"6115"\r\n\r\n+QIND: "csq",28,99\r\n\r\nOK\r\n'
    ex, urcs = run(CMD, stream, "+CSIM:", chunks=[3, 7, 1, 20])
    assert ex.done and ex.final == "OK"
    assert urcs == ["+CEREG: 1", '+QIND: "csq",28,99']
    assert parse_apdu_answer(ex.response(), "+CSIM:") == bytes.fromhex("6115")


@pytest.mark.parametrize(
    "line",
    ['+CSIM: 4,"6115"', "+CSIM: 4,6115", '+CSIM: "6115"', "+CSIM: 6115", '4,"6115"', "6115", '"6115"', "+csim: 4,6115"],
)
def test_every_answer_form_of_docs_modems(line):
    resp = AtResponse(CMD, (line,), "OK")
    assert parse_apdu_answer(resp, "+CSIM:") == bytes.fromhex("6115")


@pytest.mark.parametrize(
    "line,why",
    [
        ('+CSIM: 6,"6115"', "length field does not match"),
        ('+CSIM: 4,"6115', "unbalanced quote (cut line)"),
        ('+CSIM: 3,"611"', "odd hex"),
        ('+CSIM: 2,"90"', "no SW2"),
        ('+CSIM: 4,"1234"', "SW1 12 is not a status byte"),
        ('+CSIM: 4,"6015"', "SW1 60 is a procedure byte"),
        ("+CSIM: hello", "garbage"),
    ],
)
def test_malformed_answers_are_refused(line, why):
    with pytest.raises(AtProtocolError) as info:
        parse_apdu_answer(AtResponse(CMD, (line,), "OK"), "+CSIM:")
    assert info.value.command == CMD, why


def test_no_answer_or_two_answers_is_an_error():
    with pytest.raises(AtProtocolError, match="no \\+CSIM: answer"):
        parse_apdu_answer(AtResponse(CMD, ("Quectel",), "OK"), "+CSIM:")
    with pytest.raises(AtProtocolError, match="2 \\+CSIM: lines"):
        parse_apdu_answer(AtResponse(CMD, ('+CSIM: 4,"9000"', '+CSIM: 4,"6115"'), "OK"), "+CSIM:")
    with pytest.raises(AtProtocolError, match="look like an answer"):
        parse_apdu_answer(AtResponse(CMD, ("9000", "6115"), "OK"), "+CSIM:")


def test_prefixed_answer_wins_over_a_bare_hex_line():
    resp = AtResponse(CMD, ("9000", '+CSIM: 4,"6115"'), "OK")
    assert parse_apdu_answer(resp, "+CSIM:") == bytes.fromhex("6115")


@pytest.mark.parametrize(
    "lines,sid",
    [
        (("+CCHO: 1",), "1"),
        (('+CCHO: "00000000038aa32f"',), "00000000038aa32f"),
        (("+CCHO: 00000000038AA32F",), "00000000038AA32F"),
        (("1",), "1"),
        (("Quectel", "+CCHO: 7"), "7"),
    ],
)
def test_session_ids_are_kept_verbatim(lines, sid):
    assert parse_session_id(AtResponse('AT+CCHO="A0"', lines, "OK")) == sid


@pytest.mark.parametrize("lines", [(), ("+CCHO: 1", "+CCHO: 2"), ("+CCHO: 1 2",), ("1", "2"), ('+CCHO: "1',)])
def test_bad_session_answers(lines):
    with pytest.raises(AtProtocolError):
        parse_session_id(AtResponse('AT+CCHO="A0"', lines, "OK"))


def test_final_results_and_urc_classes():
    assert final_result("OK") == "OK"
    assert final_result("ERROR") == "ERROR"
    assert final_result("+CME ERROR: 3") == "+CME ERROR: 3"
    assert final_result("+CME ERROR: Parameters error") == "+CME ERROR: Parameters error"
    assert final_result("+CMS ERROR: 500") == "+CMS ERROR: 500"
    assert final_result('+CSIM: 4,"9000"') is None
    assert is_urc("+CREG: 1") and is_urc("RDY") and is_urc("^SIMST: 1") and is_urc("+QUSIM: 1")
    assert is_sim_reset_urc("+QUSIM: 1") and is_sim_reset_urc("+CPIN: READY") and not is_sim_reset_urc("+CEREG: 1")


def test_cpin_query_answer_is_an_answer_not_a_urc():
    ex, urcs = run("AT+CPIN?", b"\r\n+CPIN: READY\r\n\r\nOK\r\n", "+CPIN:")
    assert ex.response().lines == ("+CPIN: READY",) and urcs == []


def test_at_error_codes():
    err = AtError('AT+CSIM=4,"00"', "+CME ERROR: 3")
    assert err.cme == 3 and not err.bare
    assert AtError("x", "+CME ERROR: SIM busy").cme == "SIM busy"
    assert AtError("x", "ERROR").bare and AtError("x", "ERROR").cme is None


def test_format_apdu_command_counts_hex_characters():
    assert format_apdu_command(bytes.fromhex("0070000001")) == 'AT+CSIM=10,"0070000001"'
    assert format_apdu_command(bytes.fromhex("81E2910006BF3E035C015A"), "00000000038aa32f") == (
        'AT+CGLA=00000000038aa32f,22,"81E2910006BF3E035C015A"'
    )


def test_splitter_bounds_a_line_without_end():
    splitter = LineSplitter(max_line=64)
    assert splitter.feed(b"A" * 63) == []
    out = splitter.feed(b"B" * 10)
    assert out == ["A" * 63 + "B" * 10] and splitter.pending == b""


# ---------------------------------------------------------------------------------------------- fuzzing
sw_st = st.one_of(
    st.tuples(st.integers(0x61, 0x6F), st.integers(0, 255)), st.tuples(st.integers(0x90, 0x9F), st.integers(0, 255))
).map(bytes)
response_st = st.tuples(st.binary(max_size=258), sw_st).map(lambda t: t[0] + t[1])
# Noise that a modem may put around an answer: URCs, and text lines that cannot be an APDU answer on their own.
urc_st = st.sampled_from(
    [
        "+CREG: 1",
        '+CEREG: 1,"1A2B","01C2D3E4",7',
        '+QIND: "csq",28,99',
        "+CGEV: ME PDN ACT 1",
        "RDY",
        "+CPIN: READY",
        "+QUSIM: 1",
        "^SIMST: 1",
        "SMS DONE",
    ]
)
noise_st = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40).filter(
    lambda s: any(c not in '0123456789abcdefABCDEF", ' for c in s) and final_result(s) is None and s.strip() != ""
)
form_st = st.sampled_from(["full", "unquoted", "no-length", "no-prefix", "bare-quoted", "lower"])


def encode_answer(resp: bytes, form: str) -> str:
    h = resp.hex().upper()
    return {
        "full": f'+CSIM: {len(h)},"{h}"',
        "unquoted": f"+CSIM: {len(h)},{h}",
        "no-length": f'+CSIM: "{h}"',
        "no-prefix": f'{len(h)},"{h}"',
        "bare-quoted": f'"{h}"',
        "lower": f'+CSIM: {len(h)},"{h.lower()}"',
    }[form]


@given(
    resp=response_st,
    form=form_st,
    before=st.lists(st.one_of(urc_st, noise_st), max_size=4),
    after=st.lists(st.one_of(urc_st, noise_st), max_size=4),
    echo=st.booleans(),
    crlf=st.sampled_from([b"\r\n", b"\n", b"\r"]),
    cuts=st.lists(st.integers(0, 40), max_size=12),
)
def test_fuzz_noise_around_an_answer_never_yields_a_wrong_response(resp, form, before, after, echo, crlf, cuts):
    lines = [*before, encode_answer(resp, form), *after, "OK"]
    stream = (CMD.encode() + b"\r" if echo else b"") + b"".join(crlf + ln.encode() + crlf for ln in lines)
    ex, _ = run(CMD, stream, "+CSIM:", cuts)
    assert ex.done and ex.final == "OK"
    try:
        got = parse_apdu_answer(ex.response(), "+CSIM:")
    except AtProtocolError:
        # Only allowed when a noise line itself carries the +CSIM: prefix (then no answer can be trusted).
        assert any(n.strip().upper().startswith("+CSIM:") for n in before + after)
        return
    assert got == resp


@given(resp=response_st, form=st.sampled_from(["full", "unquoted", "no-length", "no-prefix", "lower"]), cut=st.data())
def test_fuzz_a_cut_answer_line_is_refused(resp, form, cut):
    """A line cut short (a partial line followed by the end of line) is never taken for a shorter answer."""
    line = encode_answer(resp, form)
    n = cut.draw(st.integers(1, len(line) - 1))
    ex, _ = run(CMD, b"\r\n" + line[:n].encode() + b"\r\n\r\nOK\r\n", "+CSIM:")
    try:
        got = parse_apdu_answer(ex.response(), "+CSIM:")
    except AtProtocolError:
        return
    # With a length field or quotes a cut is always detected; what parses must be the true answer.
    assert got == resp


@given(st.binary(max_size=600), st.lists(st.integers(0, 64), max_size=20))
def test_fuzz_random_bytes_never_crash(data, cuts):
    ex, _ = run(CMD, data, "+CSIM:", cuts)
    if ex.done:
        try:
            parse_apdu_answer(ex.response(), "+CSIM:")
        except AtProtocolError:
            pass
        try:
            parse_session_id(ex.response())
        except AtProtocolError:
            pass


@given(st.lists(st.text(max_size=30), max_size=8))
def test_fuzz_random_lines_never_crash(lines):
    resp = AtResponse(CMD, tuple(lines), "OK")
    for fn in (lambda: parse_apdu_answer(resp, "+CSIM:"), lambda: parse_session_id(resp)):
        try:
            fn()
        except AtProtocolError:
            pass
