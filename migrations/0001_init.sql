-- 0001_init.sql — the first schema of the galaxyd metrics database.
--
-- One SQLite file (WAL mode) shared by galaxy-train and galaxyd. The trainer
-- writes runs, per-epoch metrics and checkpoints; the daemon writes the
-- models it serves, the objects it is sent, predictions, anomaly scores and
-- counterfactuals. Later changes go in new numbered files; never edit this
-- one after it has shipped (databases in the field have already applied it).
--
-- Conventions:
--   * Times are UTC ISO-8601 text with milliseconds ("2024-05-01T12:00:00.123Z"):
--     readable in the sqlite3 shell, and ordered correctly as text, so
--     (created_at, id) is a valid cursor for pagination.
--   * JSON columns hold text written by the binaries (jansson).
--   * sha256 columns hold 64 lowercase hex digits.

-- ------------------------------------------------------------ training

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    model_kind    TEXT NOT NULL,              -- wavelet-mamba | cf-inn | uda
    config_json   TEXT NOT NULL DEFAULT '{}', -- the full resolved config
    command_line  TEXT,                       -- argv joined, for reproduction
    seed          INTEGER,
    status        TEXT NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
    git_commit    TEXT,                       -- NULL when unknown
    started_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at   TEXT
);
CREATE INDEX runs_kind_started ON runs(model_kind, started_at);

-- Long format: one row per (run, epoch, split, metric name). A NaN value is
-- stored as NULL (SQLite has no NaN). Re-evaluating an epoch replaces rows.
-- The primary key (run_id, name, split, epoch) is the "by run and name"
-- index that learning-curve queries use.
CREATE TABLE metrics (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch   INTEGER NOT NULL,
    split   TEXT NOT NULL,                    -- train | val | test | target ...
    name    TEXT NOT NULL,                    -- accuracy, auc_macro, z_log_mse ...
    value   REAL,
    PRIMARY KEY (run_id, name, split, epoch)
) WITHOUT ROWID;
CREATE INDEX metrics_run_epoch ON metrics(run_id, epoch);

CREATE TABLE checkpoints (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('best', 'last')),
    path          TEXT NOT NULL,
    sha256        TEXT NOT NULL CHECK (length(sha256) = 64),
    metrics_json  TEXT NOT NULL DEFAULT '{}', -- the metrics that made it best
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX checkpoints_run_kind ON checkpoints(run_id, kind, epoch);

-- ------------------------------------------------------------ serving

-- One row per checkpoint galaxyd has loaded under a name; (name, version)
-- is what API responses report as the model version.
CREATE TABLE served_models (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL,         -- route name, e.g. wavelet-mamba
    version            TEXT NOT NULL,         -- e.g. the checkpoint sha256 prefix
    model_kind         TEXT NOT NULL,
    checkpoint_path    TEXT NOT NULL,
    checkpoint_sha256  TEXT NOT NULL CHECK (length(checkpoint_sha256) = 64),
    run_id             INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    classes_json       TEXT,
    preprocess_json    TEXT,
    config_json        TEXT,
    anomaly_threshold  REAL,                  -- uda: the tuned rho
    loaded_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (name, version)
);

-- A submitted cutout. The image itself is not stored, only its hash and
-- shape, so identical uploads can be recognised.
CREATE TABLE objects (
    id            INTEGER PRIMARY KEY,
    external_id   TEXT,                       -- the caller's survey object id
    image_sha256  TEXT NOT NULL CHECK (length(image_sha256) = 64),
    format        TEXT,                       -- png | jpeg | fits
    width         INTEGER,
    height        INTEGER,
    bands         INTEGER,
    ra            REAL,
    dec           REAL,
    meta_json     TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX objects_sha ON objects(image_sha256);
CREATE INDEX objects_external ON objects(external_id);
CREATE INDEX objects_cursor ON objects(created_at, id);

CREATE TABLE predictions (
    id            INTEGER PRIMARY KEY,
    object_id     INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    model_id      INTEGER NOT NULL REFERENCES served_models(id),
    class_index   INTEGER NOT NULL,
    class_name    TEXT,
    confidence    REAL,                       -- max posterior
    probs_json    TEXT,                       -- [K] posterior
    redshift      REAL,                       -- wavelet-mamba only
    latency_ms    REAL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- Cursor pagination: WHERE (created_at, id) > (?, ?) ORDER BY created_at, id.
CREATE INDEX predictions_cursor ON predictions(created_at, id);
CREATE INDEX predictions_model_cursor ON predictions(model_id, created_at, id);
CREATE INDEX predictions_object ON predictions(object_id);

CREATE TABLE anomaly_scores (
    id            INTEGER PRIMARY KEY,
    object_id     INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    model_id      INTEGER NOT NULL REFERENCES served_models(id),
    score         REAL NOT NULL,              -- uda: H / ln K in [0,1]; cf-inn: NLL
    threshold     REAL,                       -- the rho in force when scored
    is_anomaly    INTEGER NOT NULL CHECK (is_anomaly IN (0, 1)),
    class_index   INTEGER,                    -- the known class predicted
    image_sha256  TEXT NOT NULL CHECK (length(image_sha256) = 64),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- "Most anomalous first" pages: WHERE model_id = ? AND (score, id) < (?, ?)
-- ORDER BY score DESC, id DESC; the second index serves the flagged-only view.
CREATE INDEX anomaly_model_score ON anomaly_scores(model_id, score DESC, id DESC);
CREATE INDEX anomaly_flagged_score ON anomaly_scores(is_anomaly, score DESC, id DESC);
CREATE INDEX anomaly_object ON anomaly_scores(object_id);

-- Counterfactual results are large and cheap to recompute: they expire.
CREATE TABLE counterfactuals (
    id                   INTEGER PRIMARY KEY,
    object_id            INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    model_id             INTEGER NOT NULL REFERENCES served_models(id),
    source_class         INTEGER NOT NULL,
    target_class         INTEGER NOT NULL,
    alpha                REAL,
    reached_hidden       INTEGER CHECK (reached_hidden IN (0, 1)),
    reached_reencoded    INTEGER CHECK (reached_reencoded IN (0, 1)),
    reached_independent  INTEGER CHECK (reached_independent IN (0, 1)), -- NULL: no classifier
    msd                  REAL,
    ssim                 REAL,
    image_png            BLOB,                -- x_cf, or NULL when kept on disk
    image_path           TEXT,
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at           TEXT NOT NULL
);
CREATE INDEX counterfactuals_expiry ON counterfactuals(expires_at);
CREATE INDEX counterfactuals_object ON counterfactuals(object_id, target_class);
