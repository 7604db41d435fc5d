-- eIM store, schema version 6: the dashboard's sessions (eim.ui.session), in the store so that every worker sees
-- them and an eIM restart logs nobody out. Migrations are applied by number, each once; this one does not depend
-- on migration 5.
--
-- id_hash: hex SHA-256 of the random session id the cookie carries (the id itself is never stored, so a copy of
-- the table opens no session). operator: the operator's name, NULL when authentication is off (a lab).
-- credential: hex SHA-256 over the operator's token hash at login, so a rotated token or a removed operator ends
-- the session (never the token or its hash). csrf: the session's CSRF token. expires_at: the earlier of
-- created_at + 12 h and the last use + 1 h; an expired row is never used, and opening a session deletes them all.

CREATE TABLE ui_sessions (
    id_hash     TEXT PRIMARY KEY,
    operator    TEXT,
    credential  TEXT,
    csrf        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
CREATE INDEX ui_sessions_seen ON ui_sessions (seen_at);
