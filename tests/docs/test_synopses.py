"""Usage synopses shown in the docs (placeholders, ``[optional]`` parts, ``a|b`` alternatives) cannot be run as
shown: each is checked against the program instead - every ``--option`` it shows must be in the ``--help`` of the
(sub)command it names, so a renamed or removed option fails here. The benchmark commands (minutes long) are
checked the same way; ``make demo`` is run for real in test_demo.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.docs.doccmds import BIN, ROOT, DocCommand, doc_cmd

S = doc_cmd
SYNOPSES: list[tuple[DocCommand, list[list[str]], list[str]]] = [
    # (shown synopsis, the (sub)commands whose --help must list its options, other words the help must name)
    (S("asn1.md", "rsp decode --type T HEX|-"), [["rsp", "decode"]], []),
    (S("asn1.md", "rsp decode --auto HEX|-"), [["rsp", "decode"]], []),
    (S("asn1.md", "rsp encode --type T JSON|-"), [["rsp", "encode"]], []),
    (S("asn1.md", "rsp types [--all]"), [["rsp", "types"]], []),
    (S("asn1.md", "rsp pki ..."), [["rsp", "pki"]], ["init", "show", "verify", "eid"]),
    (S("eim.md", "eim serve [--config FILE] [--insecure-no-operator-auth]"), [["eim"], ["eim", "serve"]], []),
    (
        S(
            "eim.md",
            "eim operator add NAME --role read-only|operator|admin | rotate NAME | remove NAME | list [--file FILE]",
        ),
        [
            ["eim", "operator", "add"],
            ["eim", "operator", "rotate"],
            ["eim", "operator", "remove"],
            ["eim", "operator", "list"],
        ],
        ["read-only", "operator", "admin"],
    ),
    (
        S(
            "eim.md",
            "eim euicc register EID [--association-token N] [--counter N] [--eim-id ID] [--trusted-ci HEX] "
            "[--label k=v]",
        ),
        [["eim", "euicc", "register"]],
        [],
    ),
    (
        S("eim.md", "eim euicc list [--label k=v ...] [--state S] | show EID"),
        [["eim", "euicc", "list"], ["eim", "euicc", "show"]],
        [],
    ),
    (
        S("eim.md", "eim euicc label EID [k=v ...] [--unset KEY ...] | remove EID [--force]"),
        [["eim", "euicc", "label"], ["eim", "euicc", "remove"]],
        [],
    ),
    (
        S(
            "eim.md",
            "eim op create EID {psmo,eco,download,euicc_data} [--params JSON|@file] [--activation-code AC] "
            "[--validity S] [--not-before ISO]",
        ),
        [["eim", "op", "create"]],
        ["psmo", "eco", "download", "euicc_data"],
    ),
    (
        S("eim.md", "eim op list [--eid] [--status] [--kind] [--batch] [--limit] | show ID | cancel ID"),
        [["eim", "op", "list"], ["eim", "op", "show"], ["eim", "op", "cancel"]],
        [],
    ),
    (
        S("eim.md", "eim batch create KIND (--eid EID ... | --eids-file FILE) [--params ...] | show ID | cancel ID"),
        [["eim", "batch", "create"], ["eim", "batch", "show"], ["eim", "batch", "cancel"]],
        [],
    ),
    (
        S("eim.md", "eim notification list [--status pending|failed] [--limit N]"),
        [["eim", "notification", "list"]],
        ["pending", "failed"],
    ),
    (
        S(
            "euicc.md",
            "euicc new --pki DIR --eid EID --state FILE [--curve nist|brainpool] [--trust-ci PEM ...] "
            "[--default-dp ADDR] [--force]",
        ),
        [["euicc", "new"]],
        ["nist", "brainpool"],
    ),
    (S("euicc.md", "euicc show --state FILE [--json]"), [["euicc", "show"]], []),
    (S("euicc.md", "euicc apdu --state FILE HEX [HEX ...]"), [["euicc", "apdu"]], []),
    (S("euicc.md", "euicc es10 --state FILE HEX [--block-size N]"), [["euicc", "es10"]], []),
    (
        S("firmware_bridge.md", "fwbridge probe --profile sierra"),
        [["fwbridge", "probe"], ["fwbridge", "profiles"]],
        ["sierra"],
    ),
    (
        S(
            "firmware_bridge.md",
            "fwbridge probe --port DEV [--json] [--baud N] [--profile NAME] [--timeout S] [-v|-vv]",
        ),
        [["fwbridge", "probe"]],
        [],
    ),
    (
        S(
            "firmware_bridge.md",
            "fwbridge virtual-modem --card STATE_FILE [--link PATH] [--quirks NAME,...] [--baud N] [--model NAME] "
            "[--card-factory MODULE:CALLABLE]",
        ),
        [["fwbridge", "virtual-modem"]],
        [],
    ),
    (
        S("pki.md", "rsp pki init DIR [--curve nist|brainpool|both] [--eid EID ...] [--host NAME ...]"),
        [["rsp", "pki", "init"]],
        ["nist", "brainpool", "both"],
    ),
    (S("pki.md", "rsp pki show DIR [--json]"), [["rsp", "pki", "show"]], []),
    (
        S("pki.md", "rsp pki verify CERT --role ROLE --ca CI.pem [--untrusted EUM.pem] [--at 2027-01-01T00:00:00]"),
        [["rsp", "pki", "verify"]],
        [],
    ),
    (
        S(
            "smdpp.md",
            "smdpp serve --pki DIR --data DIR [--host 127.0.0.1] [--port 8443] [--address ADDR] [--alias ADDR]... "
            "[--insecure-http] [--sgp26] [--curve nist|brainpool|both] [--workers N|auto] [-v]",
        ),
        [["smdpp", "serve"]],
        [],
    ),
    (
        S(
            "smdpp.md",
            "smdpp order create --data DIR [--profile ts48 | --upp FILE [--profile-name N] [--service-provider S] "
            "[--profile-class test|provisioning|operational]] [--eid EID] [--confirmation-code CC] "
            "[--expires 2h|ISO-8601] [--host ADDR] [--hold] [--matching-id ID] [--json]",
        ),
        [["smdpp", "order", "create"]],
        [],
    ),
    (
        S("smdpp.md", "smdpp order show|release MATCHING_ID --data DIR [--json]"),
        [["smdpp", "order", "show"], ["smdpp", "order", "release"]],
        [],
    ),
    (
        S("smdpp.md", "smdpp order cancel MATCHING_ID --data DIR [--final available|unavailable]"),
        [["smdpp", "order", "cancel"]],
        ["available", "unavailable"],
    ),
    (
        S("smdpp.md", "smdpp order list --data DIR [--state STATE] [--eid EID] [--json]"),
        [["smdpp", "order", "list"]],
        [],
    ),
    (S("smdpp.md", "smdpp profile list [--data DIR] [--json]"), [["smdpp", "profile", "list"]], []),
    (
        S(
            "smdpp.md",
            "smdpp profile import FILE --data DIR [--name NAME] [--profile-name N] [--service-provider S] "
            "[--profile-class C] [--json]",
        ),
        [["smdpp", "profile", "import"]],
        [],
    ),
    (S("smdpp.md", "smdpp notifications --data DIR [--json]"), [["smdpp", "notifications"]], []),
    (S("smdpp.md", "smdpp serve --sgp26 [--pki DIR]"), [["smdpp", "serve"]], []),
    (
        S("smdpp.md", "python bench/smdpp_download.py [--downloads 50] [--curve nist|brainpool]"),
        [["python", "bench/smdpp_download.py"]],
        [],
    ),
    (
        S(
            "smdpp.md",
            "python -m bench.es9_load --url URL [--ca-file PEM | --insecure] [--resolve HOST:PORT:ADDR] "
            "[--address ADDR] (--matching-id ID | --orders-api URL [--profile ts48]) (--pki DIR "
            "[--curve nist|brainpool] | --card STATE) [--clients 16] [--procs 2] [--downloads 200] [--pid PID]",
        ),
        [["python", "-m", "bench.es9_load"]],
        [],
    ),
    (
        S(
            "smdpp.md",
            "python -m bench.es9_load --serve 1,2 [--downloads 200] [--rounds 3] [--clients 16] [--procs 2]",
        ),
        [["python", "-m", "bench.es9_load"]],
        [],
    ),
    # benchmarks: minutes long (make bench ~8 min, --quick ~2 min); tests/bench/test_bench.py runs each benchmark
    # at tiny sizes and `python -m bench --only smdpp --quick`
    (S("performance.md", ".venv/bin/python -m bench --quick"), [["python", "-m", "bench"]], []),
    (
        S("performance.md", ".venv/bin/python -m bench --only eim,serial"),
        [["python", "-m", "bench"]],
        ["eim", "serial"],
    ),
    (
        S("performance.md", ".venv/bin/python -m bench --only fleet --fleet 200000"),
        [["python", "-m", "bench"]],
        ["fleet"],
    ),
    (S("performance.md", "python -m ipa.cli"), [["python", "-m", "ipa.cli"]], ["run"]),
]


def help_text(argv: list[str]) -> str:
    exe = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    proc = subprocess.run([exe, *argv[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv} --help: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("cmd,commands,words", SYNOPSES, ids=[f"{c.doc}:{c.line}" for c, _, _ in SYNOPSES])
def test_synopsis_matches_the_program(cmd: DocCommand, commands: list[list[str]], words: list[str]) -> None:
    helps = " ".join(help_text(argv) for argv in commands)
    options = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cmd.text)
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", helps)]
    assert not missing, f"docs/{cmd.doc}:{cmd.line} shows {missing}, unknown to {commands}"
    absent = [w for w in words if w not in helps]
    assert not absent, f"docs/{cmd.doc}:{cmd.line}: {absent} not named by {commands}"
