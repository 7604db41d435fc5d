"""``python -m fuzz.mutate``: mutation testing (mutmut) of the security checks; ``make mutate``, outside ``make test``.

mutmut changes one thing at a time in the functions listed in :data:`CHECKS` (a comparison flipped, a condition
negated, a ``raise`` removed, a constant changed) and runs the security tests against each change. A mutant the
tests do not notice ("survived") is a check that no test holds in place. A mutant that only changes the text of
an error message is reported apart ("message only"): it weakens no check.

The score goes into docs/security.md. The run exits 1 when a mutant other than a message-only one survived.
Configuration (which files mutmut copies and which tests it runs) is ``[tool.mutmut]`` in pyproject.toml.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the security checks, as mutmut names them (module.x_function or module.xǁClassǁmethod, with * for mutants);
#: the files are ``[tool.mutmut] source_paths``, the tests that hold them ``pytest_add_cli_args_test_selection``
CHECKS = [
    # results: the signature, the echo (eimId, counterValue, eimTransactionId), the key of the EID's certificate
    "eim.packages.euicc_package.x_verify_outcome__mutmut_*",
    "eim.packages.euicc_package.xǁEuiccKeysǁpublic_key__mutmut_*",
    # results: which operation a result closes, whether an unsigned error may end it, orphans
    "eim.esipa.euicc_package_result.x_handle__mutmut_*",
    "eim.esipa.euicc_package_result.x__by_counter__mutmut_*",
    "eim.esipa.euicc_package_result.x__orphan__mutmut_*",
    # notifications: the certificate's EID, the signature, attribution to the binding's EID
    "eim.packages.notification.x_certificate_eid__mutmut_*",
    "eim.packages.notification.x__check_signature__mutmut_*",
    "eim.packages.notification.x_verify_other__mutmut_*",
    "eim.packages.notification.x_verify_pir__mutmut_*",
    "eim.esipa.notification_intake.xǁNotificationIntakeǁverify_other__mutmut_*",
    "eim.esipa.notification_intake.xǁNotificationIntakeǁverify_pir__mutmut_*",
    # SM-DP+ addresses (SSRF) and outbox admission
    "eim.smdp_addresses.x_host_of__mutmut_*",
    "eim.smdp_addresses.x_ip_of__mutmut_*",
    "eim.smdp_addresses.x_address_class__mutmut_*",
    "eim.smdp_addresses.xǁSmdpAddressPolicyǁlisted__mutmut_*",
    "eim.smdp_addresses.xǁSmdpAddressPolicyǁrefusal__mutmut_*",
    "eim.relay.admission.x_smdp_addresses_of__mutmut_*",
    "eim.relay.admission.xǁAdmissionGateǁaddress_refusal__mutmut_*",
    "eim.relay.admission.xǁAdmissionGateǁcheck__mutmut_*",
    # the outbox: only verified notifications enter; a row is deleted only after the SM-DP+ took it
    "eim.relay.outbox.xǁNotificationOutboxǁaccept__mutmut_*",
    "eim.relay.outbox.xǁNotificationOutboxǁ_send__mutmut_*",
    # devices: who may be served unauthenticated, the EID of a client certificate or a device secret
    "eim.esipa.device_auth.x_peer_address__mutmut_*",
    "eim.esipa.device_auth.xǁDevicePolicyǁpeer_trusted__mutmut_*",
    "eim.esipa.device_auth.xǁDevicePolicyǁadmits__mutmut_*",
    "eim.esipa.device_auth.x_eid_from_client_certificate__mutmut_*",
    "eim.bindings.http.xǁHttpDeviceAuthǁidentify__mutmut_*",
    "eim.bindings.device_secrets.x_parse_token__mutmut_*",
    "eim.bindings.device_secrets.xǁDeviceSecretFileǁverify__mutmut_*",
    # operators: the token, the role a request needs
    "eim.api.auth.x_hash_token__mutmut_*",
    "eim.api.auth.xǁRoleǁmay__mutmut_*",
    "eim.api.auth.xǁOperatorRegistryǁauthenticate__mutmut_*",
    "eim.api.auth.x_needed_role__mutmut_*",
    "eim.api.auth.x_is_public__mutmut_*",
    # CoAPS: the PSK identity is the EID; MQTT: the topic's EID and the answer topic
    "eim.bindings.coap.x__dtls_eid__mutmut_*",
    "eim.bindings.coap_psk.xǁPskFileǁlookup__mutmut_*",
    "eim.bindings.coap_psk.xǁPskFileǁfind_dtls_psk__mutmut_*",
    "eim.bindings.mqtt.x_is_eid__mutmut_*",
    "eim.bindings.mqtt.x_topic_identity__mutmut_*",
    # the IPA: the card behind the port is the one it was set up for
    "ipa.es10.xǁEs10Clientǁ_check_card__mutmut_*",
    # the EUM's permitted EID range
    "rsp.pki.eid_range.x_check_eid_in_range__mutmut_*",
]


def _mutmut(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return proc.stdout


LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
_PROSE = re.compile(r"\S\s+\S")  # words: a message, not a separator, a code or a format


def _functions(path: Path) -> dict[str, ast.AST]:
    """The functions and methods of a mutated file by name (the original is ``<name>__mutmut_orig``)."""
    if path not in _FUNCTIONS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _FUNCTIONS[path] = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return _FUNCTIONS[path]


_FUNCTIONS: dict[Path, dict[str, ast.AST]] = {}


def _diff(a: object, b: object, path: list[ast.AST]) -> list[tuple[object, object, list[ast.AST]]]:
    """The places where two trees differ: ``(original, mutant, ancestors of the place)``."""
    if type(a) is not type(b):
        return [(a, b, path)]
    if isinstance(a, ast.AST):
        out = []
        for name in a._fields:
            if name != "ctx":
                out += _diff(getattr(a, name, None), getattr(b, name, None), [*path, a])
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(a, b, path)]
        return [d for x, y in zip(a, b, strict=True) for d in _diff(x, y, path)]
    return [] if a == b else [(a, b, path)]


def _is_log_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LOG_METHODS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in ("log", "logger")
    )


def _is_prose(node: object) -> bool:
    """A message: a string literal of words, an f-string, ``str(...)`` of something (an exception)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(_PROSE.search(node.value))
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str"


def _mutant_diffs(mutant: str) -> list[tuple[object, object, list[ast.AST]]]:
    module, _, function = mutant.partition(".x")
    function = "x" + function
    path = ROOT / "mutants" / (module.replace(".", "/") + ".py")
    try:
        functions = _functions(path)
        orig = functions[function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
        mutated = functions[function]
    except (OSError, KeyError, SyntaxError):
        return []
    return _diff(orig.body, mutated.body, [orig])  # type: ignore[attr-defined]


def message_only(mutant: str) -> bool:
    """True when every change of ``mutant`` is in a message (a string of words, an f-string or ``str(exc)``,
    changed or replaced by a constant) or inside a log call: it weakens no check."""
    diffs = _mutant_diffs(mutant)
    if not diffs:
        return False
    for a, b, path_ in diffs:
        if any(_is_log_call(n) for n in path_):
            continue
        node = a if isinstance(a, ast.AST) else path_[-1]
        in_fstring = any(isinstance(n, ast.JoinedStr) or (_is_prose(n) and isinstance(n, ast.Call)) for n in path_)
        if (in_fstring or _is_prose(node)) and (isinstance(b, ast.Constant | str) or b is None or in_fstring):
            continue
        return False
    return True


def codec_case_only(mutant: str) -> bool:
    """True when ``mutant`` only changes the case of the codec name given to ``encode``/``decode`` ("utf-8" ->
    "UTF-8"): Python looks codecs up case-insensitively, so the mutant is equivalent."""
    diffs = _mutant_diffs(mutant)
    if not diffs:
        return False
    for a, b, path_ in diffs:
        node, call = path_[-1] if path_ else None, path_[-2] if len(path_) > 1 else None
        if not (
            isinstance(a, str)
            and isinstance(b, str)
            and a.lower() == b.lower()
            and isinstance(node, ast.Constant)
            and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr in ("encode", "decode")
            and call.args[:1] == [node]  # the codec; error handler names are case-sensitive
        ):
            return False
    return True


def _statuses() -> dict[str, str]:
    _FUNCTIONS.clear()  # a run may have regenerated mutants
    statuses: dict[str, str] = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and any(fnmatch.fnmatchcase(m.group(1), c) for c in CHECKS):
            statuses[m.group(1)] = m.group(2).strip()
    return statuses


def main(argv: list[str] | None = None) -> int:
    """No argument: run every mutant of :data:`CHECKS`. ``--survivors``: run again only those the last run did
    not kill (after adding tests; a changed function's mutants are new and run too). ``--report``: run nothing,
    print the score of the last run (``mutants/``)."""
    args = sys.argv[1:] if argv is None else argv
    if "--report" in args:
        pass
    elif "--survivors" in args:
        # twice: mutmut regenerates the mutants of functions changed since the last run (their results reset) at
        # the start of a run, so the second round picks those up
        for _ in range(2):
            todo = [
                n
                for n, s in _statuses().items()
                if s != "killed" and not (s == "survived" and (message_only(n) or codec_case_only(n)))
            ]
            print(f"mutate: running mutmut again over {len(todo)} mutants not killed before", flush=True)
            if todo:
                subprocess.run([sys.executable, "-m", "mutmut", "run", *todo], cwd=ROOT, check=False)
    else:
        print(f"mutate: running mutmut over {len(CHECKS)} security checks", flush=True)
        subprocess.run([sys.executable, "-m", "mutmut", "run", *CHECKS], cwd=ROOT, check=False)
    statuses = _statuses()
    killed = [n for n, s in statuses.items() if s == "killed"]
    survived = [n for n, s in statuses.items() if s == "survived"]
    other = {n: s for n, s in statuses.items() if s not in ("killed", "survived")}
    messages = [n for n in survived if message_only(n)]
    codec = [n for n in survived if n not in messages and codec_case_only(n)]
    real = [n for n in survived if n not in messages and n not in codec]
    counted = len(killed) + len(real)
    print(
        f"mutate: {len(statuses)} mutants: {len(killed)} killed, {len(real)} survived, "
        f"{len(messages)} message-only and {len(codec)} codec-name case (equivalent) not counted, "
        f"{len(other)} other {sorted(set(other.values()))}"
    )
    print(f"mutate: score {len(killed)}/{counted} = {100 * len(killed) / max(counted, 1):.1f} % of the checks' mutants")
    for n in real:
        print(f"mutate: SURVIVED {n}\n{_mutmut('show', n)}")
    return 1 if real or other else 0


if __name__ == "__main__":
    sys.exit(main())
