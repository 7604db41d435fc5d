"""The CoAPS key file: parsing (hypothesis: valid files round-trip, malformed ones raise PskFileError naming the
line), editing, the atomic rewrite, and ``eim psk set|remove|list`` (in-process and as a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eim import cli
from eim.bindings.coap_psk import (
    MAX_KEY_BYTES,
    MIN_KEY_BYTES,
    PskFile,
    PskFileError,
    format_psk_line,
    parse_psk_file,
    remove_psk,
    set_psk,
    write_psk_file,
)
from tests.eim.servers import eim_command

EID = "89044045118427484800000000011628"
EID2 = "89049032123451234512345678901235"
KEY = bytes(range(16))

eids = st.text("0123456789", min_size=32, max_size=32)
keys = st.binary(min_size=MIN_KEY_BYTES, max_size=MAX_KEY_BYTES)
comments = st.text(st.characters(blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=30)


# ------------------------------------------------------------------------------------------ parsing
@settings(max_examples=200)
@given(
    entries=st.dictionaries(eids, keys, max_size=8),
    noise=st.lists(st.one_of(st.just(""), st.builds(lambda c: "# " + c, comments)), max_size=5),
    upper=st.booleans(),
    spaces=st.sampled_from(["", " ", "\t"]),
)
def test_valid_files_round_trip(entries, noise, upper, spaces):
    lines = []
    for i, (eid, key) in enumerate(entries.items()):
        line = format_psk_line(eid, key).rstrip("\n")
        assert parse_psk_file(line + "\n") == {eid: key}  # each line alone
        e, k = line.split(":")
        lines.append(f"{spaces}{e}{spaces}:{spaces}{k.upper() if upper else k}{spaces}")
        if i < len(noise):
            lines.append(noise[i])
    text = "\n".join(lines + noise[len(entries) :]) + "\n"
    assert parse_psk_file(text) == entries
    assert "".join(format_psk_line(e, k) for e, k in parse_psk_file(text).items()) == "".join(
        format_psk_line(e, k) for e, k in entries.items()
    )


BAD_LINES = [
    ("89044045118427484800000000011628", "expected EID:hexkey"),
    ("1234:" + KEY.hex(), "identity must be the EID"),
    ("8904404511842748480000000001162a:" + KEY.hex(), "identity must be the EID"),
    (EID + ":xyz", "key must be hex digits"),
    (EID + ":" + KEY.hex()[:-1], "key must be hex digits"),
    (EID + ":" + bytes(15).hex(), "key is 15 bytes, must be 16 bytes"),
    (EID + ":" + bytes(32).hex(), "key is 32 bytes, must be 16 bytes"),  # tinydtls takes 16 (see coap_psk)
    (EID + ":", "key must be hex digits"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_malformed_line_is_named(line, message):
    text = f"# devices\n{EID2}:{KEY.hex()}\n\n{line}\n"
    with pytest.raises(PskFileError, match=re.escape(f"coaps.psk line 4: {message}")) as err:
        parse_psk_file(text, "coaps.psk")
    assert KEY.hex() not in str(err.value) and bytes(32).hex() not in str(err.value)  # never a key in a message


def test_duplicate_eid_is_named():
    with pytest.raises(PskFileError, match=f"line 2: EID {EID} is listed twice"):
        parse_psk_file(f"{EID}:{KEY.hex()}\n{EID}:{KEY.hex()}\n")


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_names_a_line(text):
    try:
        got = parse_psk_file(text)
    except PskFileError as exc:
        m = re.match(r"psk file line (\d+): ", str(exc))
        assert m, exc
        number = int(m.group(1))
        assert 1 <= number <= len(text.splitlines())
        bad = text.splitlines()[number - 1]
        if "listed twice" not in str(exc):
            with pytest.raises(PskFileError):
                parse_psk_file(bad)  # the named line is wrong on its own
        return
    for eid, key in got.items():
        assert re.fullmatch(r"[0-9]{32}", eid) and len(key) == 16


LINE_BREAKS = ":#\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@settings(max_examples=200)
@given(
    good=st.lists(st.tuples(eids, keys), max_size=4, unique_by=lambda t: t[0]),
    bad=st.one_of(
        st.sampled_from([line for line, _ in BAD_LINES]),
        st.text(st.characters(blacklist_characters=LINE_BREAKS), min_size=1, max_size=40).filter(str.strip),
    ),
    data=st.data(),
)
def test_a_bad_line_among_good_ones_is_named_exactly(good, bad, data):
    lines = [format_psk_line(e, k).rstrip("\n") for e, k in good]
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, bad)
    with pytest.raises(PskFileError, match=f"^psk file line {at + 1}: "):
        parse_psk_file("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ editing
def test_set_and_remove_keep_comments_and_other_lines():
    text = f"# fleet A\n{EID}:{KEY.hex()}  # gateway 1\n\n{EID2}:{bytes(16).hex()}\n"
    new_key = bytes(range(50, 66))
    out, replaced = set_psk(text, EID, new_key)
    assert replaced and out == f"# fleet A\n{EID}:{new_key.hex()}\n\n{EID2}:{bytes(16).hex()}\n"
    eid3 = "89049032123451234512345678909999"
    out2, replaced = set_psk(out, eid3, KEY)
    assert not replaced and out2 == out + f"{eid3}:{KEY.hex()}\n"
    out3, removed = remove_psk(out2, EID2)
    assert removed and parse_psk_file(out3) == {EID: new_key, eid3: KEY} and out3.startswith("# fleet A\n")
    assert remove_psk(out3, EID2) == (out3, False)
    with pytest.raises(PskFileError, match="line 2"):
        set_psk("# x\nbroken\n", EID, KEY)  # a broken file is not edited
    with pytest.raises(PskFileError, match="EID must be 32 decimal digits"):
        set_psk("", "123", KEY)


def test_write_is_atomic_0600_and_keeps_the_owner(tmp_path):
    path = tmp_path / "coaps.psk"
    path.write_text(f"{EID}:{KEY.hex()}\n")
    path.chmod(0o644)
    inode = path.stat().st_ino
    if os.geteuid() == 0:
        os.chown(path, 4242, 4343)
    assert write_psk_file(path, f"{EID2}:{KEY.hex()}\n") == []
    st_ = path.stat()
    assert st_.st_mode & 0o777 == 0o600 and st_.st_ino != inode  # a new file renamed over the old one
    if os.geteuid() == 0:
        assert (st_.st_uid, st_.st_gid) == (4242, 4343)
    assert parse_psk_file(path.read_text()) == {EID2: KEY}
    assert [p.name for p in tmp_path.iterdir()] == ["coaps.psk"]  # no temporary file left behind
    with pytest.raises(PskFileError, match="line 1"):
        write_psk_file(path, "garbage\n")  # never writes a file the eIM would refuse
    assert parse_psk_file(path.read_text()) == {EID2: KEY}
    with pytest.raises(PskFileError, match="cannot write"):
        write_psk_file(tmp_path / "missing-dir" / "coaps.psk", "")


def test_pskfile_lookup_and_strict_start(tmp_path):
    path = tmp_path / "coaps.psk"
    with pytest.raises(PskFileError, match="No such file"):
        PskFile(path)
    path.write_text("junk\n")
    with pytest.raises(PskFileError, match="line 1: expected EID:hexkey"):
        PskFile(path)
    path.write_text(f"{EID}:{KEY.hex()}\n")
    psk = PskFile(path)
    assert psk.find_dtls_psk(EID.encode()) == (KEY, EID) and len(psk) == 1 and EID in psk
    for unknown in (EID2.encode(), b"\xff\xfe", b"", EID.encode() + b"\xff", b"\xff" + EID.encode()[1:]):
        with pytest.raises(KeyError):
            psk.find_dtls_psk(unknown)
    # the identity is bytes on the wire; anything else names nobody, not even a known EID's text
    for other in (EID, None, 0, [EID]):
        with pytest.raises(KeyError):
            psk.lookup(other, "192.0.2.1")  # type: ignore[arg-type]
    assert psk.lookup(bytearray(EID.encode()), "192.0.2.1") == (KEY, EID)


# ------------------------------------------------------------------------------------------ eim psk
def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


def test_psk_set_generate_prints_the_key_once_and_writes_the_file(tmp_path, capsys):
    path = tmp_path / "coaps.psk"
    assert run_cli("psk", "set", EID, "--generate", "--file", str(path)) == 0
    out, err = capsys.readouterr()
    key_hex = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", key_hex)  # stdout holds the key and nothing else
    assert f"added the key of {EID} in {path}" in err
    assert path.read_text() == f"{EID}:{key_hex}\n" and path.stat().st_mode & 0o777 == 0o600

    assert run_cli("--json", "psk", "set", EID, "--generate", "--file", str(path)) == 0
    (line,) = capsys.readouterr().out.splitlines()  # the contract's final envelope line, nothing else
    obj = json.loads(line)["payload"]["data"]
    assert obj["eid"] == EID and obj["replaced"] is True and obj["key"] != key_hex
    assert parse_psk_file(path.read_text()) == {EID: bytes.fromhex(obj["key"])}

    assert run_cli("psk", "set", EID2, "--key", KEY.hex().upper(), "--file", str(path)) == 0
    assert capsys.readouterr().out.strip() == KEY.hex()
    assert parse_psk_file(path.read_text())[EID2] == KEY


def test_psk_list_shows_eids_never_keys(tmp_path, capsys):
    path = tmp_path / "coaps.psk"
    path.write_text(f"# two devices\n{EID}:{KEY.hex()}\n{EID2}:{bytes(16).hex()}\n")
    assert run_cli("psk", "list", "--file", str(path)) == 0
    out = capsys.readouterr().out
    assert out == f"{EID}\n{EID2}\n" and KEY.hex() not in out
    assert run_cli("--json", "psk", "list", "--file", str(path)) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [ln["payload"]["data"] for ln in lines if ln["type"] == "item"] == [{"eid": EID}, {"eid": EID2}]
    assert lines[-1]["type"] == "lpa" and lines[-1]["payload"]["data"] == {"count": 2}


def test_psk_remove(tmp_path, capsys):
    path = tmp_path / "coaps.psk"
    path.write_text(f"{EID}:{KEY.hex()}\n{EID2}:{KEY.hex()}\n")
    assert run_cli("psk", "remove", EID, "--file", str(path)) == 0
    assert capsys.readouterr().out.strip() == f"removed {EID} from {path}"
    assert parse_psk_file(path.read_text()) == {EID2: KEY}
    assert run_cli("psk", "remove", EID, "--file", str(path)) == 1
    assert f"psk remove: {EID} is not in {path}" in capsys.readouterr().err
    assert parse_psk_file(path.read_text()) == {EID2: KEY}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["psk", "set", "1234", "--generate"], 2, "psk set: EID must be 32 decimal digits"),
        (["psk", "set", EID, "--key", "abc"], 2, "psk set: --key: key must be hex digits"),
        (["psk", "set", EID, "--key", bytes(32).hex()], 2, "psk set: --key: key is 32 bytes, must be 16 bytes"),
        (["psk", "remove", "8904404511842748480000000001162X"], 2, "psk remove: EID must be 32 decimal digits"),
    ],
)
def test_psk_refuses_malformed_eids_and_keys(tmp_path, capsys, argv, code, message):
    path = tmp_path / "coaps.psk"
    path.write_text(f"{EID2}:{KEY.hex()}\n")
    before = path.read_text()
    assert run_cli(*argv, "--file", str(path)) == code
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert path.read_text() == before and bytes(32).hex() not in err


def test_psk_file_errors_name_the_step(tmp_path, capsys):
    path = tmp_path / "coaps.psk"
    assert run_cli("psk", "list", "--file", str(path)) == 1
    assert "psk list: " in capsys.readouterr().err
    path.write_text(f"{EID}:{KEY.hex()}\nbroken\n")
    assert run_cli("psk", "set", EID2, "--generate", "--file", str(path)) == 1
    assert "psk set: " in (err := capsys.readouterr().err) and "line 2: expected EID:hexkey" in err
    assert path.read_text() == f"{EID}:{KEY.hex()}\nbroken\n"  # untouched
    assert run_cli("--json", "psk", "list", "--file", str(path)) == 1
    out, _ = capsys.readouterr()
    payload = json.loads(out)["payload"]
    assert payload["code"] == -1 and payload["data"]["exit"] == 1 and "line 2" in payload["message"]


def test_psk_without_a_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EIM_CONFIG", raising=False)
    monkeypatch.delenv("EIM_COAP_PSK_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_cli("psk", "list") == 2
    assert "give --file or set [coap] psk_file" in capsys.readouterr().err


def test_psk_as_a_subprocess_with_the_configured_file(tmp_path):
    """The real ``eim`` script: the file comes from ``[coap] psk_file``; the key is read from stdin with ``-``."""
    path = tmp_path / "coaps.psk"
    cfg = tmp_path / "eim.toml"
    cfg.write_text(f'[coap]\npsk_file = "{path}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIM_")}
    base = [*eim_command(), "--config", str(cfg), "psk"]
    cp = subprocess.run(
        [*base, "set", EID, "--key", "-"], input=KEY.hex() + "\n", capture_output=True, text=True, env=env
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == KEY.hex() + "\n" and path.read_text() == f"{EID}:{KEY.hex()}\n"
    cp = subprocess.run([*base, "list"], capture_output=True, text=True, env=env)
    assert (cp.returncode, cp.stdout) == (0, f"{EID}\n")
    cp = subprocess.run([*base, "set", EID], capture_output=True, text=True, env=env)
    assert cp.returncode == 2 and "one of the arguments --key --generate is required" in cp.stderr
    assert Path(path).read_text() == f"{EID}:{KEY.hex()}\n"
