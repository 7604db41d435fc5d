"""The virtual modem's command handling (its core, bytes in and out) and malformed input from any program."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.virtual_modem import ModemCore, Quirks, get_model
from tests.firmware_bridge.minicard import MiniCard


def talk(core: ModemCore, line: str, now: float = 0.0) -> str:
    return b"".join(o.data for o in core.receive(line.encode() + b"\r\n", now)).decode("latin-1")


def test_basic_commands_and_case():
    core = ModemCore(MiniCard(), model=get_model("EG25-G"))
    assert talk(core, "AT") == "\r\nOK\r\n"
    assert talk(core, "ati") == "\r\nQuectel\r\n\r\nEG25\r\n\r\nRevision: EG25GGBR07A08M2G\r\n\r\nOK\r\n"
    assert talk(core, "AT+CGMM") == "\r\nEG25\r\n\r\nOK\r\n"
    assert talk(core, "AT+CMEE?") == "\r\n+CMEE: 0\r\n\r\nOK\r\n"  # result codes off until a host asks
    assert talk(core, "AT+CPIN?") == "\r\n+CPIN: READY\r\n\r\nOK\r\n"
    assert talk(core, "AT+CREG?") == "\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    assert talk(core, "ATE1") == "\r\nOK\r\n"
    assert talk(core, "AT") == "AT\r\n\r\nOK\r\n"  # echo of what was received, then the answer


def test_each_model_starts_with_its_own_error_format():
    """AT+CMEE at power-up per model (docs/firmware_bridge.md, "Error format at power-up"); cmee=N overrides."""

    def first_error(model: str, quirks: str = "") -> str:
        core = ModemCore(MiniCard(), Quirks.parse(quirks), model=get_model(model))
        return talk(core, 'AT+CSIM=5,"00"').strip()  # length mismatch: +CME ERROR 50 when codes are on

    assert first_error("generic") == "+CME ERROR: 50"
    assert first_error("G2150I") == "+CME ERROR: 50"  # Wavecom-class: numeric (field: +CME ERROR: 3)
    assert first_error("EM9191") == "+CME ERROR: incorrect parameters"  # Sierra: text (field: Parameters error)
    assert first_error("MC7455") == "+CME ERROR: incorrect parameters"
    for model in ("EG25-G", "EC20", "SIM7600G-H", "FM350-GL", "SARA-R410M", "LE910C1", "DW5821e", "MS2372h"):
        core = ModemCore(MiniCard(), model=get_model(model))
        assert talk(core, "AT+CMEE?") == "\r\n+CMEE: 0\r\n\r\nOK\r\n", model
    assert first_error("EG25-G") == "ERROR"
    assert first_error("EG25-G", "cmee=2") == "+CME ERROR: incorrect parameters"
    assert first_error("generic", "cmee=0") == "ERROR"
    core = ModemCore(MiniCard(), model=get_model("EM9191"))
    talk(core, "AT+CMEE=0")
    talk(core, "AT+CFUN=0", now=1.0)  # a SIM reset keeps the modem's setting
    assert talk(core, "AT+CMEE?", now=1.1) == "\r\n+CMEE: 0\r\n\r\nOK\r\n" and core.power_up_cmee == 2
    assert Quirks.parse("cmee=0").merged(Quirks()).cmee == 0 and Quirks.parse("cmee=0").describe() == "cmee=0"


def test_malformed_commands_get_errors_and_the_card_is_untouched():
    card = MiniCard()
    core = ModemCore(card)
    for line, answer in [
        ('AT+CSIM=5,"00"', "+CME ERROR: 50"),  # length does not match
        ('AT+CSIM=4,"0070"', "+CME ERROR: 50"),  # shorter than a header
        ("AT+CSIM=abc", "+CME ERROR: 50"),
        ('AT+CSIM=3,"007"', "+CME ERROR: 50"),
        ('AT+CGLA=9,10,"0070000001"', "+CME ERROR: 21"),  # no such session
        ('AT+CCHO="zz"', "+CME ERROR: 50"),
        ("AT+CCHC=42", "+CME ERROR: 21"),
        ("AT+FOO", "ERROR"),
        ("HELLO", "ERROR"),
    ]:
        assert talk(core, line) == f"\r\n{answer}\r\n", line
    assert card.log == []


def test_cfun_powers_the_sim_and_registration_follows():
    card = MiniCard()
    core = ModemCore(card, model=get_model("EG25-G"))
    assert talk(core, "AT+CMEE=1") == "\r\nOK\r\n"
    assert talk(core, "AT+CEREG=1") == "\r\nOK\r\n"
    assert "+CCHO: 1" in talk(core, 'AT+CCHO="A0000005591010FFFFFFFF8900000100"')
    out = talk(core, "AT+CFUN=0", now=1.0)
    assert out == "\r\nOK\r\n\r\n+CPIN: NOT READY\r\n" and card.resets == 1 and core.sessions == {}
    assert talk(core, "AT+CPIN?", now=1.1) == "\r\n+CME ERROR: 13\r\n"
    assert talk(core, "AT+CFUN=1", now=2.0) == "\r\nOK\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n"
    assert talk(core, "AT+CEREG?", now=2.1) == "\r\n+CEREG: 1,2\r\n\r\nOK\r\n"  # searching
    urcs = b"".join(o.data for o in core.poll(2.5)).decode()
    assert urcs == "\r\n+CEREG: 2\r\n\r\n+CEREG: 1\r\n"
    assert talk(core, "AT+CEREG?", now=2.6) == "\r\n+CEREG: 1,1\r\n\r\nOK\r\n"


def test_answer_formats_of_the_quirks():
    for quirks, line in [
        ("", '+CSIM: 6,"019000"'),
        ("unquoted", "+CSIM: 6,019000"),
        ("no-length", '+CSIM: "019000"'),
        ("no-prefix", '6,"019000"'),
        ("lowercase", '+CSIM: 6,"019000"'),
        ("unquoted,no-length,no-prefix", "019000"),
    ]:
        core = ModemCore(MiniCard(), Quirks.parse(quirks))
        assert talk(core, 'AT+CSIM=10,"0070000001"') == f"\r\n{line}\r\n\r\nOK\r\n", quirks
    core = ModemCore(MiniCard(), Quirks.parse("bare-ccho,hex-handles"))
    out = talk(core, 'AT+CCHO="A0000005591010FFFFFFFF8900000100"').split()
    assert len(out[0]) == 16 and int(out[0], 16) and out[1] == "OK"


def test_test_commands_per_quirk():
    assert talk(ModemCore(MiniCard()), "AT+CCHO=?") == "\r\nOK\r\n"
    assert talk(ModemCore(MiniCard(), Quirks(silent_probes=True)), "AT+CCHO=?") == ""
    assert talk(ModemCore(MiniCard(), Quirks(probe_error=True)), "AT+CGLA=?") == "\r\n+CME ERROR: 4\r\n"
    assert talk(ModemCore(MiniCard(), Quirks(no_cgla=True)), "AT+CCHO=?") == "\r\nERROR\r\n"


@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=10))
def test_fuzz_random_input_never_breaks_the_modem(data, cuts):
    card = MiniCard()
    core = ModemCore(card, Quirks.parse("urcs,echo"))
    pos = 0
    for n in [*cuts, len(data)]:
        for out in core.receive(data[pos : pos + n], 0.0):
            assert isinstance(out.data, bytes)
        pos += n
    # Whatever came before, the modem still answers properly.
    assert talk(core, "\rATE0").endswith("\r\nOK\r\n")
    assert talk(core, 'AT+CSIM=10,"0070000001"').endswith("\r\nOK\r\n")
