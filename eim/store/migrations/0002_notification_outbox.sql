-- eIM store, schema version 2: the durable outbound queue of notifications owed to SM-DP+s (ES9+ HandleNotification).
-- A row is written in the step in which the eIM takes responsibility for a notification (before the IPA is told
-- success) and deleted once the SM-DP+ accepted it; a permanent refusal keeps it with status 'failed' and the reason.
-- Workers claim due rows by setting a lease (lease_until, leased_by); PostgreSQL picks them FOR UPDATE SKIP LOCKED.

CREATE TABLE notification_outbox (
    id               {AUTO_ID},
    digest           TEXT NOT NULL UNIQUE,
    eid              TEXT,
    operation_id     TEXT,
    kind             TEXT NOT NULL,
    seq_number       BIGINT,
    address          TEXT NOT NULL,
    notification     {BYTES} NOT NULL,
    status           TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    lease_until      DOUBLE PRECISION,
    leased_by        TEXT
);
CREATE INDEX notification_outbox_due ON notification_outbox (status, next_attempt_at);
