"""``python -m fuzz.mutate``: mutation testing (mutmut) of the security checks; ``make mutate``, outside ``make test``.

mutmut changes one thing at a time in the functions listed in :data:`CHECKS` (a comparison flipped, a condition
negated, a ``raise`` removed, a constant changed) and runs the security tests against each change. A mutant the
tests do not notice ("survived") is a check that no test holds in place. A mutant that only changes the text of
an error message is reported apart ("message only"): it weakens no check.

The score goes into docs/security.md. The run exits 1 when a mutant other than a message-only one survived.
Configuration (which files mutmut copies and which tests it runs) is ``[tool.mutmut]`` in pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import io
import re
import subprocess
import sys
import tokenize
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
    "eim.relay.outbox.xǁNotificationOutboxǁ_deliver__mutmut_*",
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
    "eim.bindings.coap_psk.xǁPskFileǁkey_for__mutmut_*",
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


def _strip_strings(line: str) -> str:
    """The line with the contents of its string literals blanked (so two lines differing only there are equal)."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            out.append(
                '""'
                if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1)
                else tok.string
            )
    except (tokenize.TokenError, IndentationError):
        return line
    return " ".join(out)


def message_only(diff: str) -> bool:
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    if not minus or len(minus) != len(plus):
        return False
    return all(_strip_strings(a) == _strip_strings(b) for a, b in zip(minus, plus, strict=True))


def main() -> int:
    print(f"mutate: running mutmut over {len(CHECKS)} security checks", flush=True)
    subprocess.run([sys.executable, "-m", "mutmut", "run", *CHECKS], cwd=ROOT, check=False)
    statuses: dict[str, str] = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and any(fnmatch.fnmatchcase(m.group(1), c) for c in CHECKS):
            statuses[m.group(1)] = m.group(2).strip()
    killed = [n for n, s in statuses.items() if s == "killed"]
    survived = [n for n, s in statuses.items() if s == "survived"]
    other = {n: s for n, s in statuses.items() if s not in ("killed", "survived")}
    messages = [n for n in survived if message_only(_mutmut("show", n))]
    real = [n for n in survived if n not in messages]
    counted = len(killed) + len(real)
    print(
        f"mutate: {len(statuses)} mutants: {len(killed)} killed, {len(real)} survived, "
        f"{len(messages)} message-only (not counted), {len(other)} other {sorted(set(other.values()))}"
    )
    print(f"mutate: score {len(killed)}/{counted} = {100 * len(killed) / max(counted, 1):.1f} % of the checks' mutants")
    for n in real:
        print(f"mutate: SURVIVED {n}\n{_mutmut('show', n)}")
    return 1 if real or other else 0


if __name__ == "__main__":
    sys.exit(main())
