"""Store variants for "what if" runs of the eIM benchmark (``bench.eim_server --store-variant``). They exist to
measure what a design choice costs, not to be used by the eIM itself.

* ``normal-sync``: the shipped SQLite store with ``PRAGMA synchronous = NORMAL`` (WAL): no fsync per commit.
  NOT a fix - a power cut may lose the last commits and with them a counter value (house rule 5) - only the
  measure of what the fsyncs cost.

The prototypes measured here before (group commit, batched ``last_contact``) have landed in
:mod:`eim.store.sqlite` and were removed from this module; the shipped store's own switch,
``[store] sqlite_read_connection``, is run by ``bench.eim_server --store-variant one-connection``.
"""

from __future__ import annotations

from typing import Any

from eim.store.sqlite import SqliteStore


class NormalSyncSqliteStore(SqliteStore):
    def _connect(self) -> None:
        super()._connect()
        self._require().execute("PRAGMA synchronous = NORMAL")


VARIANTS = {"normal-sync": NormalSyncSqliteStore}


def open_variant(url: str, variant: str) -> Any:
    if not url.startswith("sqlite:///"):
        raise SystemExit("store variants exist for SQLite only")
    return VARIANTS[variant](url[len("sqlite:///") :])
