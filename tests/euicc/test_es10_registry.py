"""euicc.es10.MODULES: every ES10 module is listed under its own request tag (imported at first use)."""

from __future__ import annotations

import importlib
from pathlib import Path

import euicc.es10 as es10


def test_every_module_is_listed_under_its_own_tag():
    package = Path(es10.__file__).parent
    on_disk = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    on_disk.discard("load_bound_profile_package")  # no tag of its own: euicc.isdr dispatches its segments
    assert set(es10.MODULES.values()) == on_disk
    assert len(set(es10.MODULES.values())) == len(es10.MODULES)
    for tag, name in es10.MODULES.items():
        assert importlib.import_module(f"euicc.es10.{name}").TAG == tag
        assert es10.handler(tag) is importlib.import_module(f"euicc.es10.{name}").handle


def test_an_unknown_tag_has_no_handler():
    assert es10.handler(0xBF7F) is None
