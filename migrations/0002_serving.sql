-- 0002_serving.sql — what galaxyd's prediction store (daemon/gx_store.c)
-- needs beyond 0001: the survey an object came from, and indexes for the
-- filters of GET /v1/predictions and the object lookup of /v1/classify.
--
-- Never edit this file once shipped; later changes go in 0003_...

-- The caller's survey name ("sdss", "decals", ...); NULL when not given.
ALTER TABLE objects ADD COLUMN survey TEXT;

-- The survey a prediction was requested under (the request's survey, else
-- its object's survey at that time), copied onto the prediction so that
-- ?survey= is an index range in cursor order. Filtering through the join
-- on objects.survey instead makes SQLite collect and sort every
-- prediction of the survey for each page (EXPLAIN: USE TEMP B-TREE FOR
-- ORDER BY), i.e. O(N log N) per page for the common, unselective case.
ALTER TABLE predictions ADD COLUMN survey TEXT;
CREATE INDEX predictions_survey_cursor ON predictions(survey, created_at, id);

-- An object row is reused when the same (external_id, image_sha256) comes
-- back; this index serves that lookup and, by its prefix, every
-- external_id lookup (GET /v1/objects/{id}), so it replaces objects_external.
DROP INDEX objects_external;
CREATE INDEX objects_external_sha ON objects(external_id, image_sha256);

-- ?class= : one class's predictions already in cursor order, so a filtered
-- page is an index range scan, not a scan of every prediction.
CREATE INDEX predictions_class_cursor ON predictions(class_index, created_at, id);
