-- 0004_counterfactuals.sql — galaxyd's counterfactual results
-- (daemon/gx_cf_store.c), so that the URLs POST /v1/counterfactuals answers
-- keep working for --cf-ttl-s seconds.
--
-- Why a table beside 0001's `counterfactuals`: that one is a per-target
-- archive keyed by an objects row (object_id NOT NULL) and holds only x_cf;
-- a request from a browser has no object id, and the overlay, diff and grid
-- images need x and the reconstruction x~ too. SQLite cannot relax a NOT NULL
-- column, so the served results live here: one row per input image, the
-- images as float32 little-endian CHW blobs (exact differences for the diff
-- and overlay maps; PNGs are rendered on request).
--
-- Expiry and the size cap drop a row's blobs but keep the row (`dropped`
-- says why), so a stale URL answers "expired" rather than "unknown".
-- Never edit this file once shipped; later changes go in a new file.

CREATE TABLE cf_results (
    id            TEXT PRIMARY KEY,           -- the URL id
    group_id      TEXT NOT NULL,              -- the request's id (several inputs share it)
    input_index   INTEGER NOT NULL,           -- 0-based position in the request
    model_name    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    size          INTEGER NOT NULL,           -- S: images are 3 x S x S
    source_class  INTEGER NOT NULL,
    targets_json  TEXT NOT NULL,              -- [q, ...] in the order of xcf's images
    result_json   TEXT NOT NULL,              -- the answer's entry for this input
    x             BLOB,                       -- 3*S*S float32; NULL once dropped
    xrec          BLOB,                       -- 3*S*S float32
    xcf           BLOB,                       -- n_targets*3*S*S float32
    bytes         INTEGER NOT NULL,           -- blob bytes while held (the cap counts these)
    dropped       TEXT CHECK (dropped IN ('expired', 'evicted')),
    created_ms    INTEGER NOT NULL,           -- Unix ms (the store's clock, injectable in tests)
    expires_ms    INTEGER NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX cf_results_group ON cf_results(group_id, input_index);
CREATE INDEX cf_results_held ON cf_results(dropped, created_ms);
CREATE INDEX cf_results_expiry ON cf_results(expires_ms);
