-- eIM store, schema version 5: the rest of the fleet overview, still counted from indexes and small counters,
-- never by reading every row (eim.store.fleet.FleetLogic.fleet_counts).
--
-- * By binding, SGP.32 version and the SM-DP+ of the enabled profile (and so the registered count): fleet_tallies,
--   delta rows (dim, value, +1 / -1) written in the transaction that registers, removes or changes an eUICC
--   (eim.store.tallies), summed by the overview and folded into one row per value when they pile up. Filled here
--   from the registry as it is.
-- * enabled_iccid / enabled_smdp: what the eIM last learned about the eUICC's enabled profile (a verified enable /
--   disable notification, a listProfileInfo result); NULL = none enabled or not known.
-- * Operations created / ended per hour and the failure rate of the last 24 h: range counts on operations_created
--   and on the partial index operations_ended (final statuses only, by the time they ended).
-- * Polls per hour: fleet_hourly, a counter per (name, hour start) that each eIM process adds its tally to once a
--   second (eim.store.fleet_store); rows older than a week are pruned by the same write.

ALTER TABLE euiccs ADD COLUMN enabled_iccid TEXT;
ALTER TABLE euiccs ADD COLUMN enabled_smdp TEXT;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_ended ON operations (updated_at, status) WHERE status IN ('done', 'failed', 'expired', 'cancelled');

CREATE TABLE fleet_hourly (
    name  TEXT NOT NULL,
    hour  BIGINT NOT NULL,
    n     BIGINT NOT NULL,
    PRIMARY KEY (name, hour)
);

CREATE TABLE fleet_tallies (
    dim    TEXT NOT NULL,
    value  TEXT NOT NULL,
    n      BIGINT NOT NULL
);
INSERT INTO fleet_tallies (dim, value, n) SELECT 'binding', COALESCE(binding, 'none'), COUNT(*) FROM euiccs GROUP BY COALESCE(binding, 'none');
INSERT INTO fleet_tallies (dim, value, n) SELECT 'version', COALESCE(sgp32_version, '1.2'), COUNT(*) FROM euiccs GROUP BY COALESCE(sgp32_version, '1.2');
INSERT INTO fleet_tallies (dim, value, n) SELECT 'smdp', 'unknown', COUNT(*) FROM euiccs HAVING COUNT(*) > 0;
