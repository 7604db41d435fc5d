-- eIM store, schema version 8: one eUICC's operations and audit trail newest first, a page at a time (the
-- dashboard's eUICC page and GET /v1/operations?eid=...&order=desc, GET /v1/euiccs/{eid}/audit?order=desc).
--
-- operations_eid_status (eid, status, seq) orders an eUICC's operations by seq only within one status: without
-- this index the newest page of an eUICC's operations read all of them and sorted. audit_eid (eid) gave the same
-- on PostgreSQL, where a secondary index does not carry the row id (SQLite's does: there it was (eid, rowid)
-- already); (eid, id) replaces it, so the audit insert still maintains one index for the EID.
CREATE INDEX operations_eid_seq ON operations (eid, seq);
CREATE INDEX audit_eid_id ON audit (eid, id);
DROP INDEX audit_eid;
