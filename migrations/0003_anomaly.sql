-- 0003_anomaly.sql — what the anomaly store (trainer/gx_anomaly_store.c,
-- shared by galaxyd's /v1/anomaly routes and `galaxy-train score`) needs
-- beyond 0001/0002.
--
-- Never edit this file once shipped; later changes go in 0004_...

-- Copied onto the score row (like predictions.survey in 0002) so that every
-- filter of the "most anomalous first" list is an index range in cursor
-- order instead of a join-then-sort (EXPLAIN: USE TEMP B-TREE FOR ORDER BY).
-- ra/dec ride along so a page needs no lookup in objects for them; NULL
-- when unknown.
ALTER TABLE anomaly_scores ADD COLUMN survey TEXT;
ALTER TABLE anomaly_scores ADD COLUMN ra REAL;
ALTER TABLE anomaly_scores ADD COLUMN dec REAL;
ALTER TABLE anomaly_scores ADD COLUMN class_name TEXT;

-- An object row is one (external_id, image_sha256) version (0002's
-- objects_external_sha lookup), so one score per (object, model) makes a
-- re-sent image to the same model idempotent: INSERT ... ON CONFLICT DO
-- NOTHING. Its prefix serves every object_id lookup, so it replaces
-- anomaly_object.
DROP INDEX anomaly_object;
CREATE UNIQUE INDEX anomaly_object_model ON anomaly_scores(object_id, model_id);

-- Cursor order over every model: (score DESC, id DESC). created_at is
-- carried in the index so a since/until window is filtered inside the index
-- scan (no table lookup per skipped row) while the page stays in cursor
-- order; an index led by created_at would give the window as a range but
-- force a sort of the whole window for every page.
CREATE INDEX anomaly_score_cursor ON anomaly_scores(score DESC, id DESC, created_at);

-- ?survey= with and without a model: an equality prefix, then cursor order.
CREATE INDEX anomaly_survey_cursor ON anomaly_scores(survey, score DESC, id DESC, created_at);
CREATE INDEX anomaly_model_survey_cursor
    ON anomaly_scores(model_id, survey, score DESC, id DESC, created_at);
