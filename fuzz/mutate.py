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

#: the security checks, as mutmut names them (module.x_function or module.xǁClassǁmethod, with * for mutants)
CHECKS = [
    "eim.packages.euicc_package.x_verify_outcome__mutmut_*",
    "eim.packages.euicc_package.xǁEuiccKeysǁpublic_key__mutmut_*",
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
