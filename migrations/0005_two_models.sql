-- 0005_two_models.sql — histograms of `galaxy-train two-models`
-- (trainer/gx_two_models_run.c): the memorisation, A-vs-B, inversion and
-- morphology checks keep their binned distributions next to the scalar
-- metrics (which go in `metrics` like every run's). One row per bin.
--
-- Never edit this file once shipped; later changes go in a new file.

CREATE TABLE histograms (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,        -- e.g. mem_cos_a, ab_cos, inv_a_dim3, morph_gini_real
    bin     INTEGER NOT NULL,     -- 0-based
    lo      REAL NOT NULL,        -- bin edges
    hi      REAL NOT NULL,
    count   REAL NOT NULL,
    PRIMARY KEY (run_id, name, bin)
) WITHOUT ROWID;
