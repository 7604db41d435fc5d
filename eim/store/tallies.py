"""Maintained counts of the registry by binding, SGP.32 version and enabled profile's SM-DP+ (migration 0005,
``fleet_tallies``), for the fleet overview: reading them costs the few rows of the table, not a walk through an
index of every registered eUICC.

Every change of a counted column adds *delta rows* ``(dim, value, +1 / -1)`` in the transaction that changes the
row (registration, removal, a new binding in a claim, a learned version or enabled profile): inserts only, so
concurrent transactions on PostgreSQL never wait for each other on a counter row. The overview sums the rows per
``(dim, value)``; :meth:`eim.store.fleet_store.FleetEventsStore.fleet_counts` folds them back into one row per value
(compaction) when more than :data:`COMPACT_AT` have piled up. ``recount`` rebuilds the table from the registry
(after rows were written around the store, e.g. a bulk load).

A NULL column is counted under its name in the overview: binding ``none``, version ``1.2`` (nothing
version-specific seen: served as SGP.32 v1.2), SM-DP+ ``unknown``.
"""

from __future__ import annotations

from typing import Any

COLUMNS = {"binding": "binding", "sgp32_version": "version", "enabled_smdp": "smdp"}  # column -> dim
NULL_AS = {"binding": "none", "version": "1.2", "smdp": "unknown"}  # dim -> the value NULL is counted as
COMPACT_AT = 500  # delta rows before the next overview folds them
INSERT_SQL = "INSERT INTO fleet_tallies (dim, value, n) VALUES (?, ?, ?)"


def value_of(dim: str, v: Any) -> str:
    return NULL_AS[dim] if v is None else str(v)


def added(row: dict[str, Any], sign: int = 1) -> list[tuple[str, str, int]]:
    """The delta rows of a registered (``sign`` 1) or removed (-1) eUICC with these column values."""
    return [(dim, value_of(dim, row.get(col)), sign) for col, dim in COLUMNS.items()]


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, int]]:
    """The delta rows of an update: for each counted column in ``after`` whose counted value differs."""
    out = []
    for col, dim in COLUMNS.items():
        if col not in after:
            continue
        old, new = value_of(dim, before.get(col)), value_of(dim, after[col])
        if old != new:
            out += [(dim, old, -1), (dim, new, 1)]
    return out
