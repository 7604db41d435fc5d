-- eIM store, schema version 7: what the dashboard's lists (and their REST twins) read at scale, so that no page of
-- a 1,000,000-eUICC registry scans a table (figures in docs/performance.md, section 2c). Migrations are applied by
-- number, each once; this one does not depend on migrations 5 and 6.
--
-- euicc_labels: one row per label of each eUICC, written in the same transaction as the labels column it mirrors
-- (registration, relabel, removal: eim.store.logic / eim.store.fleet). A label filter walks the index
-- (key, value, eid) in EID order instead of reading every row's JSON: a label on 0.01 % of a million eUICCs was a
-- 550 ms full scan for its first page. {LABEL_PAIRS} expands to the backend's JSON-object-to-rows function
-- (SQLite json_each, PostgreSQL jsonb_each_text), giving the columns key and value.

CREATE TABLE euicc_labels (
    eid    TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (eid, key)
);
CREATE INDEX euicc_labels_key_value ON euicc_labels (key, value, eid);
INSERT INTO euicc_labels (eid, key, value) SELECT e.eid, j.key, j.value FROM euiccs e, {LABEL_PAIRS};

-- A batch's operations by status in sequence order (the batch page's progress counts, the operations list filtered
-- by batch and status): operations_status walked every operation of that status to find the batch's. Partial: only
-- the operations of a batch are in it, so a status change of any other operation does not touch it.
CREATE INDEX operations_batch_status ON operations (batch_id, status, seq) WHERE batch_id IS NOT NULL;
-- And a batch's operations in sequence order from an index of the same kind: with the partial index above alone,
-- SQLite's statistics (operations_batch holds every unbatched operation under NULL, so it looks unselective) made the
-- plain batch list take operations_batch_status and sort the whole batch (10,000 rows) for each page of 100.
CREATE INDEX operations_batch_seq ON operations (batch_id, seq) WHERE batch_id IS NOT NULL;
-- The operations list filtered by kind alone, in sequence order: the kind is never updated, so the index costs an
-- insert only; without it a rare kind was a walk through every operation.
CREATE INDEX operations_kind_seq ON operations (kind, seq);
