"""Store logic of the dashboard's sessions (table ``ui_sessions``, migration 0006), generators that yield SQL like
:mod:`eim.store.logic`, and the store methods running them (mixed into :class:`eim.store.base.SqlStore`).

The rows are keyed by the SHA-256 of the session id, never the id: :mod:`eim.ui.session` hashes the cookie's value
before it asks. Opening a session deletes the expired rows and, past ``cap`` rows, the least recently used ones (a
flood of sessions cannot grow the table for ever).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.store.logic import Gen, Logic, Q


@dataclass(frozen=True)
class UiSessionRow:
    id_hash: str
    operator: str | None
    credential: str | None
    csrf: str
    created_at: float
    seen_at: float
    expires_at: float

    def __repr__(self) -> str:  # never show the CSRF token or the credential fingerprint
        return f"UiSessionRow(operator={self.operator!r}, expires_at={self.expires_at!r})"


def _row(r: dict[str, Any]) -> UiSessionRow:
    return UiSessionRow(
        id_hash=r["id_hash"],
        operator=r["operator"],
        credential=r["credential"],
        csrf=r["csrf"],
        created_at=float(r["created_at"]),
        seen_at=float(r["seen_at"]),
        expires_at=float(r["expires_at"]),
    )


class UiSessionLogic(Logic):
    def create(self, row: UiSessionRow, now: float, cap: int) -> Gen:
        yield Q("DELETE FROM ui_sessions WHERE expires_at <= ?", (now,))
        yield Q(
            "INSERT INTO ui_sessions (id_hash, operator, credential, csrf, created_at, seen_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.id_hash, row.operator, row.credential, row.csrf, row.created_at, row.seen_at, row.expires_at),
        )
        dropped = yield Q(
            "DELETE FROM ui_sessions WHERE id_hash IN"
            " (SELECT id_hash FROM ui_sessions ORDER BY seen_at DESC, id_hash LIMIT ? OFFSET ?)",
            (1_000_000_000, cap),
        )
        return dropped

    def get(self, id_hash: str, now: float) -> Gen:
        r = yield Q("SELECT * FROM ui_sessions WHERE id_hash = ?", (id_hash,), "one")
        if r is None:
            return None
        row = _row(r)
        return row if row.expires_at > now else None

    def touch(self, id_hash: str, now: float, expires_at: float) -> Gen:
        n = yield Q("UPDATE ui_sessions SET seen_at = ?, expires_at = ? WHERE id_hash = ?", (now, expires_at, id_hash))
        return n == 1

    def delete(self, id_hash: str) -> Gen:
        n = yield Q("DELETE FROM ui_sessions WHERE id_hash = ?", (id_hash,))
        return n == 1

    def purge(self, now: float) -> Gen:
        n = yield Q("DELETE FROM ui_sessions WHERE expires_at <= ?", (now,))
        return n


class UiSessionStore:
    """Mixed into :class:`eim.store.base.SqlStore`; each method is one transaction."""

    dialect: str

    async def _run(self, factory: Any, *, write: bool = True) -> Any:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    @property
    def ui_sessions(self) -> UiSessionLogic:
        logic = self.__dict__.get("_ui_session_logic")
        if logic is None:
            logic = self.__dict__["_ui_session_logic"] = UiSessionLogic(self.dialect)
        return logic

    async def ui_session_create(self, row: UiSessionRow, *, now: float, cap: int) -> int:
        """Store a new session (expired ones and those past ``cap`` go); the number of sessions dropped for the cap."""
        return await self._run(lambda: self.ui_sessions.create(row, now, cap))

    async def ui_session_get(self, id_hash: str, *, now: float) -> UiSessionRow | None:
        """The live session with this id hash, else None (an expired row is not returned)."""
        return await self._run(lambda: self.ui_sessions.get(id_hash, now), write=False)

    async def ui_session_touch(self, id_hash: str, *, now: float, expires_at: float) -> bool:
        return await self._run(lambda: self.ui_sessions.touch(id_hash, now, expires_at))

    async def ui_session_delete(self, id_hash: str) -> bool:
        return await self._run(lambda: self.ui_sessions.delete(id_hash))

    async def ui_sessions_purge(self, *, now: float) -> int:
        return await self._run(lambda: self.ui_sessions.purge(now))
