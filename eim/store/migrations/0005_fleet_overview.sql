-- eIM store, schema version 5: the rest of the fleet overview, still counted from indexes and small counters,
-- never by reading every row (eim.store.fleet.FleetLogic.fleet_counts).
--
-- * By SGP.32 version: sgp32_version is NULL for most eUICCs (v1.2, or nothing version-specific seen yet), so the
--   partial index euiccs_sgp32_version holds only the others; the NULL count is registered minus their sum.
-- * By the SM-DP+ of the enabled profile: enabled_iccid / enabled_smdp are what the eIM last learned about the
--   eUICC's enabled profile (a verified enable / disable notification, a listProfileInfo result); NULL = none
--   enabled or not known. The partial index euiccs_enabled_smdp holds the eUICCs whose SM-DP+ is known.
-- * Operations created / ended per hour and the failure rate of the last 24 h: range counts on operations_created
--   and on the partial index operations_ended (final statuses only, by the time they ended).
-- * Polls per hour: fleet_hourly, a counter per (name, hour start) that each eIM process adds its tally to once a
--   second (eim.store.fleet_store); rows older than a week are pruned by the same write.

ALTER TABLE euiccs ADD COLUMN enabled_iccid TEXT;
ALTER TABLE euiccs ADD COLUMN enabled_smdp TEXT;
CREATE INDEX euiccs_sgp32_version ON euiccs (sgp32_version) WHERE sgp32_version IS NOT NULL;
CREATE INDEX euiccs_enabled_smdp ON euiccs (enabled_smdp) WHERE enabled_smdp IS NOT NULL;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_ended ON operations (updated_at, status) WHERE status IN ('done', 'failed', 'expired', 'cancelled');

CREATE TABLE fleet_hourly (
    name  TEXT NOT NULL,
    hour  BIGINT NOT NULL,
    n     BIGINT NOT NULL,
    PRIMARY KEY (name, hour)
);
