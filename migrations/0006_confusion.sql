-- 0006_confusion.sql — per-epoch confusion matrices of the trainers that
-- evaluate classes (wavelet-mamba, cf-inn, uda), for the dashboard's
-- "confusion matrix and per-class recall of the best epoch"
-- (GET /v1/runs/{run_id}/confusion). Written by trainer/gx_metrics.c
-- (gx_metrics_epoch_put) in the same transaction as that epoch's metrics,
-- so a reader never sees an epoch's metrics without its matrix.
--
-- Never edit this file once shipped; later changes go in a new file.

-- One row per cell, zeros included: the matrix side is then known from
-- the rows alone (a class that is neither present nor predicted still has
-- its row and column). uda matrices have K+1 classes, the last "unknown".
CREATE TABLE confusion (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch       INTEGER NOT NULL,
    split       TEXT NOT NULL,          -- val | test | source_test | target_test ...
    true_class  INTEGER NOT NULL CHECK (true_class >= 0),
    pred_class  INTEGER NOT NULL CHECK (pred_class >= 0),
    count       INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (run_id, epoch, split, true_class, pred_class)
) WITHOUT ROWID;

-- The class names of a run's matrices, a JSON array of strings indexed by
-- class (the trainer's names; the checkpoints hold the same list, but a
-- dashboard cannot count on reading the trainer's files).
CREATE TABLE run_classes (
    run_id        INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    classes_json  TEXT NOT NULL
);
