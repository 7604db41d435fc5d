-- eIM store, schema version 1. The same file runs on SQLite and PostgreSQL: {BYTES} becomes BLOB / BYTEA and
-- {AUTO_ID} becomes "INTEGER PRIMARY KEY AUTOINCREMENT" / "BIGSERIAL PRIMARY KEY". Timestamps are POSIX seconds.

CREATE TABLE euiccs (
    eid                 TEXT PRIMARY KEY,
    eim_id              TEXT NOT NULL,
    association_token   BIGINT,
    counter_value       BIGINT NOT NULL,
    trusted_ci          TEXT,
    euicc_certificate   {BYTES},
    eum_certificate     {BYTES},
    last_contact        DOUBLE PRECISION,
    binding             TEXT,
    profiles            TEXT,
    ipa_capabilities    TEXT,
    info                TEXT NOT NULL,
    labels              TEXT NOT NULL,
    last_seq_number     BIGINT,
    created_at          DOUBLE PRECISION NOT NULL
);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    created_at  DOUBLE PRECISION NOT NULL,
    created_by  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    params      TEXT NOT NULL
);

CREATE TABLE operations (
    seq                 {AUTO_ID},
    id                  TEXT NOT NULL UNIQUE,
    eid                 TEXT NOT NULL REFERENCES euiccs(eid),
    kind                TEXT NOT NULL,
    params              TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          DOUBLE PRECISION NOT NULL,
    updated_at          DOUBLE PRECISION NOT NULL,
    not_before          DOUBLE PRECISION,
    expires_at          DOUBLE PRECISION,
    created_by          TEXT NOT NULL,
    batch_id            TEXT REFERENCES batches(id),
    eim_transaction_id  {BYTES} UNIQUE,
    counter_value       BIGINT,
    package             {BYTES},
    attempts            INTEGER NOT NULL DEFAULT 0,
    handed_out_at       DOUBLE PRECISION,
    result              TEXT,
    result_code         BIGINT,
    error               TEXT,
    smdp_transaction_id {BYTES} UNIQUE
);
CREATE INDEX operations_eid_status ON operations (eid, status, seq);
CREATE INDEX operations_status ON operations (status, seq);
CREATE INDEX operations_batch ON operations (batch_id);

CREATE TABLE batch_items (
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    idx           INTEGER NOT NULL,
    eid           TEXT NOT NULL,
    operation_id  TEXT,
    error         TEXT,
    PRIMARY KEY (batch_id, idx)
);

CREATE TABLE audit (
    id            {AUTO_ID},
    at            DOUBLE PRECISION NOT NULL,
    who           TEXT NOT NULL,
    action        TEXT NOT NULL,
    eid           TEXT,
    operation_id  TEXT,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX audit_operation ON audit (operation_id);
CREATE INDEX audit_eid ON audit (eid);

CREATE TABLE download_sessions (
    key         TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
