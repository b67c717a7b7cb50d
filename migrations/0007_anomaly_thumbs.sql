-- 0007_anomaly_thumbs.sql — a small PNG of each scored image, for the
-- dashboard's anomaly table (GET /v1/anomalies/{object_id}/thumb.png).
-- Written by trainer/gx_anomaly_store.c in the same transaction as the
-- score row, from galaxyd's /v1/anomaly routes and `galaxy-train score`.
--
-- Keyed by the image hash, not by the score row: the picture depends only
-- on the image (one per image is enough; a second model scoring the same
-- image adds nothing: INSERT OR IGNORE). It is the model's input tensor
-- (after crop and resize, 3 bands as RGB, 8 bits) shrunk to at most 64x64,
-- i.e. what the model saw, a few kB.
--
-- Never edit this file once shipped; later changes go in a new file.

CREATE TABLE anomaly_thumbs (
    image_sha256  TEXT PRIMARY KEY CHECK (length(image_sha256) = 64),
    png           BLOB NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
