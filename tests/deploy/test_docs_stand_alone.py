"""The docs stand alone: no tracked file a user gets (docs/, README.md, deploy/, the Python packages, bench/, demo/)
points to the project's private notes outside the repository (../shared/...), which no user has. Before, five
docs pages and two docstrings cited ../shared/docs/*.md for the facts they relied on."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.units import ROOT

SHIPPED = ["README.md", "docs", "deploy", "rsp", "euicc", "firmware_bridge", "ipa", "eim", "smdpp", "demo", "bench"]
OUTSIDE = re.compile(r"\.\./shared|shared/docs|shared/reference")


def test_no_shipped_file_cites_notes_outside_the_repository():
    if (ROOT / ".git").exists():  # a clone or a worktree: the tracked files
        out = subprocess.run(["git", "ls-files", "-z", "--", *SHIPPED], cwd=ROOT, capture_output=True, check=True)
        files = [n.decode() for n in out.stdout.split(b"\0") if n]
    else:  # an unpacked source tree (make fresh-check copies the tracked files without .git)
        files = [str(p.relative_to(ROOT)) for s in SHIPPED for p in [ROOT / s, *(ROOT / s).rglob("*")]]
        files = [f for f in files if "__pycache__" not in f and ".egg-info" not in f]
    assert len(files) > 100
    hits = []
    for name in files:
        path = ROOT / name
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        lines = enumerate(text.splitlines(), 1)
        hits += [f"{name}:{n}: {ln.strip()}" for n, ln in lines if OUTSIDE.search(ln)]
    assert hits == [], "\n".join(hits)


def test_the_pages_that_replace_them_exist_and_name_public_sources():
    for page, sources in {
        "modems.md": ["3GPP TS 27.007", "ETSI TS 102 221", "estkme-group/lpac"],
        "protocol-notes.md": ["onomondo-eim", "SGP.32", "osmocom/pysim"],
        "ceilings.md": ["aiocoap", "uvicorn", "osmocom/pysim"],
    }.items():
        text = (ROOT / "docs" / page).read_text()
        for s in sources:
            assert s in text, (page, s)
