-- eIM store, schema version 4: the fleet at a glance (indexes the fleet summary and the fleet gauges count from),
-- per-eUICC note and expected poll interval, and event subscriptions with their durable delivery queue.
--
-- Fleet counts are index range counts, never table scans: seen within 1 h / 24 h and stale with the default
-- interval come from euiccs_contact (last_contact, poll_interval_s), stale eUICCs with their own interval from the
-- partial index euiccs_poll_override (only rows that have one), bindings from euiccs_binding, operations by
-- kind and status from operations_kind_status.

ALTER TABLE euiccs ADD COLUMN note TEXT;
ALTER TABLE euiccs ADD COLUMN poll_interval_s DOUBLE PRECISION;
CREATE INDEX euiccs_contact ON euiccs (last_contact, poll_interval_s);
CREATE INDEX euiccs_poll_override ON euiccs (poll_interval_s, last_contact) WHERE poll_interval_s IS NOT NULL;
CREATE INDEX euiccs_binding ON euiccs (binding);
CREATE INDEX operations_kind_status ON operations (kind, status);
CREATE INDEX batches_created ON batches (created_at, id);

-- Webhook subscriptions: where events go, which ones, and the HMAC-SHA256 secret their deliveries are signed with.
CREATE TABLE subscriptions (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    secret       TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    created_by   TEXT NOT NULL
);

-- One row per (subscription, event): written when the event is fanned out, leased by a worker for an attempt,
-- kept as delivered or failed (visible, re-sendable). The same event is queued once per subscription.
CREATE TABLE event_deliveries (
    id               {AUTO_ID},
    subscription_id  TEXT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_status      INTEGER,
    lease_until      DOUBLE PRECISION,
    leased_by        TEXT,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX event_deliveries_due ON event_deliveries (status, next_attempt_at);
CREATE INDEX event_deliveries_subscription ON event_deliveries (subscription_id, status, id);

-- Where the event feed stands: 'audit' = the last audit id turned into events, 'stale' = the contact time up to
-- which eUICCs were checked for going silent.
CREATE TABLE event_cursors (
    name      TEXT PRIMARY KEY,
    position  DOUBLE PRECISION NOT NULL
);
-- events start with this migration: the audit rows written before it are history, not news
INSERT INTO event_cursors (name, position) SELECT 'audit', COALESCE(MAX(id), 0) FROM audit;
