"""Test hooks for crash tests: ``EIM_FAILPOINTS="name=seconds,..."`` makes :func:`pause` sleep at the named
point. Unset in production (nothing happens, one dict lookup). Points: ``after_claim`` (GetEimPackage: the package
is signed and committed, the reply not yet sent); ``sqlite_commit`` (:func:`fails`: any value but 0 makes every
COMMIT of the SQLite store's writer fail, as a full disk or an I/O error would: the group is rolled back and each
of its callers gets a :class:`eim.store.StoreError`)."""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("eim.failpoints")


def _parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in text.split(","):
        name, _, seconds = item.partition("=")
        if name.strip():
            try:
                out[name.strip()] = float(seconds or "0")
            except ValueError:
                continue
    return out


POINTS = _parse(os.environ.get("EIM_FAILPOINTS", ""))


async def pause(name: str) -> None:
    seconds = POINTS.get(name)
    if seconds:
        log.warning("failpoint reached", extra={"failpoint": name, "seconds": seconds})
        await asyncio.sleep(seconds)


def fails(name: str) -> bool:
    """True when the failpoint ``name`` is set (to anything but 0): the caller then fails as the point says."""
    return bool(POINTS.get(name))
