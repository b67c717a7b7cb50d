/*
 * test_confusion_store.c — per-epoch confusion matrices (trainer/gx_metrics.c
 * storage part, migrations/0006_confusion.sql): round trip with zero cells,
 * replacement by a smaller matrix, the one-transaction epoch write (a bad
 * matrix or an unknown run stores nothing, metric rows included), class
 * names, read errors; the uda split metrics' (K+1)-class matrix; and the
 * route table entries of the dashboard routes that read these tables.
 *
 * Each test works on its own database in a fresh mkdtemp directory.
 */
#include "gx_test.h"
#include "test_fixture_util.h"

#include "gx_db.h"
#include "gx_metrics.h"
#include "gx_server.h"
#include "gx_train_uda.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>

typedef struct { tfx_tmpdb f; gx_db *db; int64_t run; } cdb;

static int cdb_open(cdb *t) {
    tfx_tmpdb_init(&t->f, "conf", "c.db");
    gx_err err;
    t->db = NULL;
    t->run = 0;
    if (gx_db_open(&t->db, t->f.path, &err) != GX_OK) { printf("open: %s\n", err.msg); return 0; }
    gx_db_run_info ri = { .model_kind = "wavelet-mamba", .seed = 1 };
    if (gx_db_run_begin(t->db, &ri, &t->run, &err) != GX_OK) { printf("run: %s\n", err.msg); return 0; }
    return 1;
}

static void cdb_close(cdb *t) {
    gx_db_close(t->db);
    tfx_tmpdb_free(&t->f);
}

GX_TEST(confusion_put_get_round_trip_keeps_zero_cells) {
    cdb t;
    CHECK(cdb_open(&t));
    /* 3 classes; class 2 is never the truth nor predicted: its row and
     * column are all zero and must still come back (the side is 3). */
    const int64_t m[9] = { 5, 1, 0,  2, 7, 0,  0, 0, 0 };
    gx_err err;
    gx_metrics_confusion c = { "val", 3, m };
    CHECK(gx_metrics_confusion_put(t.db, t.run, 4, &c, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion") == 9);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT count FROM confusion WHERE true_class = 1 AND pred_class = 0") == 2);
    int64_t got[16];
    int k = 0;
    CHECK(gx_metrics_confusion_get(t.db, t.run, 4, "val", got, 4, &k, &err) == GX_OK);
    CHECK(k == 3);
    CHECK(k == 3 && memcmp(got, m, sizeof m) == 0);
    /* Another split or epoch is another matrix. */
    CHECK(gx_metrics_confusion_get(t.db, t.run, 4, "test", got, 4, &k, &err) == GX_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "test") != NULL);
    CHECK(gx_metrics_confusion_get(t.db, t.run, 3, "val", got, 4, &k, &err) == GX_ERR_NOTFOUND);
    /* A buffer too small is refused, not overrun. */
    CHECK(gx_metrics_confusion_get(t.db, t.run, 4, "val", got, 2, &k, &err) == GX_ERR_INVALID);
    cdb_close(&t);
}

GX_TEST(confusion_reput_replaces_including_a_smaller_matrix) {
    cdb t;
    CHECK(cdb_open(&t));
    gx_err err;
    const int64_t big[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, small[4] = { 10, 0, 3, 11 };
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0, &(gx_metrics_confusion){ "val", 3, big }, &err) == GX_OK);
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0, &(gx_metrics_confusion){ "val", 2, small }, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion") == 4);     /* no stale outer cells */
    int64_t got[9];
    int k = 0;
    CHECK(gx_metrics_confusion_get(t.db, t.run, 0, "val", got, 3, &k, &err) == GX_OK);
    CHECK(k == 2 && memcmp(got, small, sizeof small) == 0);
    cdb_close(&t);
}

GX_TEST(confusion_put_refuses_bad_matrices) {
    cdb t;
    CHECK(cdb_open(&t));
    gx_err err;
    const int64_t neg[4] = { 1, -1, 0, 2 }, ok[4] = { 1, 0, 0, 1 };
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0, &(gx_metrics_confusion){ "val", 2, neg }, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "negative") && strstr(err.msg, "(0, 1)"));
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0, &(gx_metrics_confusion){ "val", 0, ok }, &err) == GX_ERR_INVALID);
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0,
                                   &(gx_metrics_confusion){ "val", GX_METRICS_CONFUSION_MAX_K + 1, ok }, &err)
          == GX_ERR_INVALID);
    CHECK(gx_metrics_confusion_put(t.db, t.run, 0, &(gx_metrics_confusion){ NULL, 2, ok }, &err) == GX_ERR_INVALID);
    /* Foreign key: no such run. */
    CHECK(gx_metrics_confusion_put(t.db, t.run + 7, 0, &(gx_metrics_confusion){ "val", 2, ok }, &err)
          == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion") == 0);
    cdb_close(&t);
}

GX_TEST(confusion_epoch_put_is_one_transaction) {
    cdb t;
    CHECK(cdb_open(&t));
    gx_err err;
    const gx_db_metric rows[2] = { { "val", "accuracy", 0.75 }, { "train", "lr", 1e-3 } };
    const int64_t a[4] = { 3, 1, 0, 4 }, b[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 }, bad[4] = { 1, 1, -2, 1 };
    gx_metrics_confusion two[2] = { { "val", 2, a }, { "test", 3, b } };
    CHECK(gx_metrics_epoch_put(t.db, t.run, 2, rows, 2, two, 2, "[\"Smooth\",\"Spiral\",\"Edge-on\"]", &err)
          == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM metrics WHERE epoch = 2") == 2);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion WHERE epoch = 2 AND split = 'val'") == 4);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion WHERE epoch = 2 AND split = 'test'") == 9);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM run_classes WHERE classes_json LIKE '%Edge-on%'") == 1);
    /* The second matrix is bad: the metric rows and the first matrix of
     * epoch 3 must not be stored either, and the class names stay. */
    gx_metrics_confusion mixed[2] = { { "val", 2, a }, { "test", 2, bad } };
    CHECK(gx_metrics_epoch_put(t.db, t.run, 3, rows, 2, mixed, 2, "[\"x\"]", &err) == GX_ERR_INVALID);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM metrics WHERE epoch = 3") == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion WHERE epoch = 3") == 0);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM run_classes WHERE classes_json LIKE '%Edge-on%'") == 1);
    /* The connection is usable after the rollback (no transaction left open). */
    CHECK(gx_metrics_epoch_put(t.db, t.run, 3, rows, 2, two, 1, NULL, &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion WHERE epoch = 3") == 4);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM run_classes WHERE classes_json LIKE '%Edge-on%'") == 1);
    /* Deleting the run takes its matrices and names with it. */
    CHECK(gx_db_exec(t.db, "DELETE FROM runs", &err) == GX_OK);
    CHECK(tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM confusion") == 0 && tfx_sql_int(gx_db_handle(t.db), "SELECT COUNT(*) FROM run_classes") == 0);
    cdb_close(&t);
}

GX_TEST(confusion_matches_classify_metrics) {
    cdb t;
    CHECK(cdb_open(&t));
    /* 6 samples, 3 classes: the stored matrix is gx_metrics_classify's. */
    const gx_real p[18] = { .8f, .1f, .1f,  .2f, .7f, .1f,  .6f, .3f, .1f,
                            .1f, .1f, .8f,  .1f, .8f, .1f,  .3f, .3f, .4f };
    const int32_t y[6] = { 0, 1, 1, 2, 2, -1 };   /* the unlabelled one takes no part */
    gx_cls_metrics cm;
    gx_err err;
    CHECK(gx_metrics_classify(p, y, 6, 3, &cm, &err) == GX_OK);
    CHECK(gx_metrics_epoch_put(t.db, t.run, 0, NULL, 0, &(gx_metrics_confusion){ "val", cm.k, cm.confusion }, 1,
                               NULL, &err) == GX_OK);
    int64_t got[9];
    int k = 0;
    CHECK(gx_metrics_confusion_get(t.db, t.run, 0, "val", got, 3, &k, &err) == GX_OK);
    const int64_t want[9] = { 1, 0, 0,  1, 1, 0,  0, 1, 1 };
    CHECK(k == 3 && memcmp(got, want, sizeof want) == 0);
    cdb_close(&t);
}

GX_TEST(uda_split_metrics_confusion_has_unknown_class) {
    /* K = 2 known classes + unknown (label 2). Entropy > rho predicts
     * unknown whatever the argmax. */
    const float probs[10] = { .9f, .1f,  .2f, .8f,  .6f, .4f,  .5f, .5f,  .3f, .7f };
    const float ent[5] = { .1f, .2f, .9f, .9f, .2f };
    const int32_t lab[5] = { 0, 1, 0, 2, 2 };
    gx_uda_split_metrics m;
    gx_err err;
    CHECK(gx_uda_split_metrics_compute(probs, ent, lab, 5, 2, 0.5, &m, &err) == GX_OK);
    /* rows true 0,1,2; columns predicted 0,1,unknown */
    const int64_t want[9] = { 1, 0, 1,  0, 1, 0,  0, 1, 1 };
    CHECK(memcmp(m.confusion, want, sizeof want) == 0);
    int64_t total = 0, diag = 0;
    for (int i = 0; i < 9; i++) total += m.confusion[i];
    for (int i = 0; i < 3; i++) diag += m.confusion[i * 3 + i];
    CHECK(total == m.n && fabs((double)diag / (double)total - m.accuracy) < 1e-12);
}

GX_TEST(dash_routes_match) {
    gx_route_match m;
    CHECK(gx_server_route("GET", "/v1/runs/3/confusion", &m) == 200 && m.id == GX_RT_RUN_CONFUSION);
    CHECK(strcmp(m.params[0], "3") == 0);
    CHECK(gx_server_route("POST", "/v1/runs/3/confusion", &m) == 405);
    /* Object ids may hold dots and colons; the thumbnail path has one more
     * segment, so it never collides with the history route. */
    CHECK(gx_server_route("GET", "/v1/anomalies/sdss.J1234+5678:7/thumb.png", &m) == 200 &&
          m.id == GX_RT_ANOMALY_THUMB && strcmp(m.params[0], "sdss.J1234+5678:7") == 0);
    CHECK(gx_server_route("GET", "/v1/anomalies/thumb.png", &m) == 200 && m.id == GX_RT_ANOMALY_OBJECT);
    CHECK(gx_server_route("GET", "/v1/anomalies/a.png", &m) == 200 && m.id == GX_RT_ANOMALY_OBJECT);
    CHECK(gx_server_route("GET", "/v1/anomalies/x/thumb.jpg", &m) == 404);
    CHECK(gx_server_route("DELETE", "/v1/anomalies/x/thumb.png", &m) == 405);
}
