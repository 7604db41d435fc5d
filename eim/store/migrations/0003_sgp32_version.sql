-- eIM store, schema version 3: which SGP.32 version each eUICC's IPA speaks, as recognised from the shape of the
-- messages the eIM accepted for it (eim.esipa.v10). NULL = nothing version-specific seen yet (served as v1.2);
-- '1.0' once a message of the SGP.32 v1.0 form was accepted for that eUICC.
ALTER TABLE euiccs ADD COLUMN sgp32_version TEXT;
