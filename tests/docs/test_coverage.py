"""Every command shown in docs/*.md is run by a test in tests/docs (registered with ``doc_cmd``), or listed below
with the reason it is not. A new command in the docs fails this test until it is run or listed; a listed command
that left the docs fails it too."""

from __future__ import annotations

import importlib
from pathlib import Path

from tests.docs.doccmds import REGISTERED, all_commands

PERF_FIGURES = "names the program measured in a table of figures; run in test_ipa.py / test_eim.py"
ALLOWLIST: dict[tuple[str, str], str] = {
    ("esipa-bindings.md", "mosquitto_passwd -c /etc/mosquitto/eim/passwd eim"): (
        "prompts twice for the password on the terminal; the -b form next to it is run (test_esipa_bindings.py)"
    ),
    ("performance.md", "make bench"): (
        "~8 min and rewrites docs/performance.md; every benchmark runs at tiny sizes in tests/bench/test_bench.py"
    ),
    ("performance.md", ".venv/bin/python -m bench --only fleet --merge docs/performance.md"): (
        "re-runs the 1,000,000-eUICC fleet benchmark (~3.5 min) into docs/performance.md; --merge is run at tiny"
        " sizes in tests/bench/test_bench.py (test_merge_replaces_only_the_sections_re_run)"
    ),
    (
        "euicc.md",
        "euicc new --euicc-cert FILE --euicc-key FILE --eum-cert FILE --ci FILE [--ci ...] --state FILE "
        "[--eid EID] [--trust-ci PEM ...]",
    ): "a synopsis; the import is run in tests/euicc/test_identity_import.py",
    ("pki.md", "rsp pki verify stolen.der --role euicc --ca ci.pem --untrusted eum.der"): (
        "needs an attacker's EUM; the same refusal is run in tests/rsp/test_eid_range.py"
    ),
    ("pki.md", "echo $?"): "prints the exit code of the command above it",
    (
        "pki.md",
        "rsp pki init DIR --eid-prefix 8904903 ...",
    ): "a synopsis; --eid-prefix runs in tests/rsp/test_eid_range.py",
    ("pki.md", "euicc new --pki"): "names the command in prose; it is run in tests/docs/test_eim.py",
    (
        "pki.md",
        "euicc new --euicc-cert CERT_EUICC_ECDSA_NIST.der --euicc-key SK_EUICC_ECDSA_NIST.pem --eum-cert "
        "CERT_EUM_ECDSA_NIST.der --ci CERT_CI_ECDSA_NIST.der --state card.json "
        "[--eid 89049032123451234512345678901235] [--trust-ci MORE_CIS.pem ...] [--default-dp ADDR]",
    ): (
        "needs the SGP.26 eUICC files, which the repository does not carry; the import is run in "
        "tests/euicc/test_identity_import.py with an outside PKI"
    ),
    ("performance.md", ".venv/bin/python -m bench --only ceiling --bindings http --before HEAD~1"): (
        "re-runs section 0 with an older commit's eIM beside it (minutes); section 0 runs at tiny sizes in "
        "tests/bench/test_bench.py (test_ceiling_tiny)"
    ),
    ("performance.md", ".venv/bin/python -m bench --only psmo --before HEAD~1"): (
        "interleaved before/after rounds of two eIM builds (minutes); the benchmark runs at tiny size in "
        "tests/bench/test_bench.py (test_psmo_tiny)"
    ),
    ("performance.md", ".venv/bin/python -m bench --only ipa_cli --before HEAD~3"): (
        "re-runs section 5b with an older commit's ipa beside it (~2 min); section 5b runs in one round in "
        "tests/bench/test_bench.py (test_ipa_commands_tiny)"
    ),
    ("performance.md", ".venv/bin/python -m bench.psmo_callgrind --commits .,HEAD~1"): (
        "runs each eim serve under valgrind (minutes, needs valgrind); its load and store are those of "
        "bench/psmo.py, which runs at tiny size in tests/bench/test_bench.py (test_psmo_tiny)"
    ),
    ("performance.md", ".venv/bin/python -m bench.poll_callgrind --commits .,HEAD~1"): (
        "runs each eim serve under valgrind (minutes, needs valgrind); its load is the no-work poll of "
        "bench/ceiling.py, which runs at tiny size in tests/bench/test_bench.py (test_ceiling_tiny)"
    ),
    ("performance.md", "python -m bench.coap_push"): (
        "the push benchmark (~5 min, 10,000 devices); each part runs at tiny sizes in tests/bench/test_bench.py"
    ),
    ("install.md", "python3 -m venv /opt/sgp32-stack/.venv"): "system install (root); make fresh-check runs make venv",
    ("install.md", "systemctl enable --now eim"): "needs systemd as PID 1; tests/deploy runs the unit's ExecStart",
    ("performance.md", "eim serve"): PERF_FIGURES,
    ("performance.md", "ipa run"): PERF_FIGURES,
}


def test_every_shown_command_is_run_or_listed() -> None:
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        importlib.import_module(f"tests.docs.{path.stem}")  # each registers the commands it runs
    shown = all_commands()
    uncovered = [
        f"docs/{c.doc}:{c.line}: {c.text}" for key, c in shown.items() if key not in REGISTERED and key not in ALLOWLIST
    ]
    assert not uncovered, "commands shown in the docs but neither run nor allowlisted:\n" + "\n".join(uncovered)
    stale = [key for key in ALLOWLIST if key not in shown]
    assert not stale, f"allowlisted commands no longer in the docs: {stale}"
    both = [key for key in ALLOWLIST if key in REGISTERED]
    assert not both, f"allowlisted but run by a test (remove from the allowlist): {both}"


def test_the_extractor_sees_the_docs() -> None:
    shown = all_commands()
    docs = {doc for doc, _ in shown}
    assert docs >= {
        "asn1.md",
        "eim.md",
        "esipa-bindings.md",
        "euicc.md",
        "firmware_bridge.md",
        "ipa.md",
        "performance.md",
        "pki.md",
        "smdpp.md",
    }
    assert len(shown) > 100
