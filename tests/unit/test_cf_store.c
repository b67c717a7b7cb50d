/*
 * test_cf_store.c — daemon/gx_cf_store.c: round trip of a result's images
 * and JSON, expiry at exactly expires_ms (and "expired" kept apart from
 * "unknown"), the byte cap evicting the oldest first, a result larger than
 * the cache, duplicate ids, groups, and tombstones deleted after a week.
 *
 * Each test works on its own database in a fresh mkdtemp directory; the
 * clock is the now_ms argument, so nothing sleeps.
 */
#include "gx_test.h"
#include "test_fixture_util.h"

#include "gx_cf_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { tfx_tmpdb f; gx_cf_store *s; } cst;

static int cst_open(cst *t, int64_t max_bytes, int64_t ttl_ms) {
    tfx_tmpdb_init(&t->f, "cfs", "c.db");
    gx_err err;
    gx_cf_store_opts o = { max_bytes, ttl_ms };
    if (gx_cf_store_open(&t->s, t->f.path, &o, &err) != GX_OK) { printf("open: %s\n", err.msg); return 0; }
    return 1;
}

static void cst_close(cst *t) {
    gx_cf_store_close(t->s);
    tfx_tmpdb_free(&t->f);
}

/* A record of side S with n targets whose pixels encode (seed, image, i). */
typedef struct { gx_cf_record r; float *buf; } rec_buf;

static void rec_make(rec_buf *b, const char *id, const char *group, int S, int n, float seed) {
    memset(b, 0, sizeof *b);
    size_t px = (size_t)3 * S * S;
    b->buf = malloc((2 + (size_t)n) * px * sizeof(float));
    for (size_t i = 0; i < (2 + (size_t)n) * px; i++) b->buf[i] = seed + (float)i * 1e-3f;
    snprintf(b->r.id, sizeof b->r.id, "%s", id);
    snprintf(b->r.group_id, sizeof b->r.group_id, "%s", group);
    snprintf(b->r.model_name, sizeof b->r.model_name, "cf-tiny");
    snprintf(b->r.model_version, sizeof b->r.model_version, "%064d", 7);
    b->r.size = S;
    b->r.source_class = 1;
    b->r.n_targets = n;
    for (int k = 0; k < n; k++) b->r.targets[k] = (k * 3 + 2) % 10;
    b->r.x = b->buf;
    b->r.xrec = b->buf + px;
    b->r.xcf = b->buf + 2 * px;
    b->r.result_json = (char *)"{\"source\": 1}";
}

GX_TEST(cf_store_roundtrip) {
    cst t;
    CHECK(cst_open(&t, 1 << 20, 60000));
    rec_buf b;
    rec_make(&b, "req1", "req1", 8, 3, 0.25f);
    b.r.input_index = 2;
    gx_err err;
    CHECK(gx_cf_store_put(t.s, &b.r, 1000, &err) == GX_OK);
    gx_cf_record g;
    CHECK(gx_cf_store_get(t.s, "req1", 1001, &g, &err) == GX_OK);
    CHECK(!strcmp(g.group_id, "req1") && g.input_index == 2 && g.size == 8 && g.source_class == 1);
    CHECK(!strcmp(g.model_name, "cf-tiny") && g.n_targets == 3);
    for (int k = 0; k < 3; k++) CHECK(g.targets[k] == b.r.targets[k]);
    CHECK(!strcmp(g.result_json, "{\"source\": 1}"));
    size_t px = 3 * 8 * 8;
    CHECK(!memcmp(g.x, b.r.x, px * sizeof(float)));
    CHECK(!memcmp(g.xrec, b.r.xrec, px * sizeof(float)));
    CHECK(!memcmp(g.xcf, b.r.xcf, 3 * px * sizeof(float)));
    CHECK(g.created_ms == 1000 && g.expires_ms == 61000);
    gx_cf_record_free(&g);
    int64_t rows = 0, bytes = 0;
    CHECK(gx_cf_store_usage(t.s, &rows, &bytes, &err) == GX_OK);
    CHECK(rows == 1 && bytes == (int64_t)(5 * px * sizeof(float)));
    /* the same id again is refused, the first stays */
    CHECK(gx_cf_store_put(t.s, &b.r, 1002, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "already stored") != NULL);
    CHECK(gx_cf_store_get(t.s, "req1", 1003, &g, &err) == GX_OK);
    gx_cf_record_free(&g);
    free(b.buf);
    cst_close(&t);
}

GX_TEST(cf_store_expiry) {
    cst t;
    CHECK(cst_open(&t, 1 << 20, 5000));
    rec_buf b;
    rec_make(&b, "old", "old", 4, 1, 1.0f);
    gx_err err;
    CHECK(gx_cf_store_put(t.s, &b.r, 10000, &err) == GX_OK);
    gx_cf_record g;
    CHECK(gx_cf_store_get(t.s, "old", 14999, &g, &err) == GX_OK);
    gx_cf_record_free(&g);
    /* at expires_ms it is gone, and says so (not "unknown") */
    CHECK(gx_cf_store_get(t.s, "old", 15000, &g, &err) == GX_ERR_NOTFOUND);
    CHECK(!strcmp(g.dropped, "expired") && strstr(err.msg, "expired") != NULL);
    CHECK(g.x == NULL && g.result_json == NULL);
    CHECK(gx_cf_store_get(t.s, "never", 15000, &g, &err) == GX_ERR_NOTFOUND);
    CHECK(!strcmp(g.dropped, "") && strstr(err.msg, "unknown") != NULL);
    /* the next put drops its images: the usage no longer counts them */
    int64_t rows = 0, bytes = 0;
    CHECK(gx_cf_store_usage(t.s, &rows, &bytes, &err) == GX_OK && rows == 1);
    rec_buf c;
    rec_make(&c, "new", "new", 4, 1, 2.0f);
    CHECK(gx_cf_store_put(t.s, &c.r, 16000, &err) == GX_OK);
    CHECK(gx_cf_store_usage(t.s, &rows, &bytes, &err) == GX_OK);
    CHECK(rows == 1 && bytes == 3 * 48 * 4);
    CHECK(gx_cf_store_get(t.s, "old", 16000, &g, &err) == GX_ERR_NOTFOUND && !strcmp(g.dropped, "expired"));
    /* a week after its expiry the tombstone goes: then it is unknown */
    int64_t week = (int64_t)7 * 24 * 3600 * 1000;
    rec_buf d;
    rec_make(&d, "later", "later", 4, 1, 3.0f);
    CHECK(gx_cf_store_put(t.s, &d.r, 15000 + week + 1, &err) == GX_OK);
    CHECK(gx_cf_store_get(t.s, "old", 15000 + week + 2, &g, &err) == GX_ERR_NOTFOUND);
    CHECK(!strcmp(g.dropped, ""));
    free(b.buf);
    free(c.buf);
    free(d.buf);
    cst_close(&t);
}

GX_TEST(cf_store_cap_evicts_oldest) {
    /* each record: S 4, 2 targets -> 4 images of 48 floats = 768 bytes; the
     * cap holds 3 of them */
    cst t;
    CHECK(cst_open(&t, 3 * 768 + 100, 1000000));
    rec_buf b[5];
    char id[16];
    gx_err err;
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "r%d", i);
        rec_make(&b[i], id, "g", 4, 2, (float)i);
        b[i].r.input_index = i;
        CHECK(gx_cf_store_put(t.s, &b[i].r, 100 + i, &err) == GX_OK);
    }
    int64_t rows = 0, bytes = 0;
    CHECK(gx_cf_store_usage(t.s, &rows, &bytes, &err) == GX_OK);
    CHECK(rows == 3 && bytes == 3 * 768 && bytes <= 3 * 768 + 100);
    gx_cf_record g;
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "r%d", i);
        gx_status s = gx_cf_store_get(t.s, id, 200, &g, &err);
        if (i < 2) {
            CHECK(s == GX_ERR_NOTFOUND && !strcmp(g.dropped, "evicted"));
            CHECK(strstr(err.msg, "--cf-cache-mb") != NULL);
        } else {
            CHECK(s == GX_OK && g.xcf[0] == b[i].r.xcf[0]);
            gx_cf_record_free(&g);
        }
    }
    /* the group lists every member in input order, dropped ones too */
    char ids[8][GX_CF_STORE_ID_MAX];
    int n = 0;
    CHECK(gx_cf_store_group(t.s, "g", ids, 8, &n, &err) == GX_OK && n == 5);
    CHECK(!strcmp(ids[0], "r0") && !strcmp(ids[4], "r4"));
    CHECK(gx_cf_store_group(t.s, "nope", ids, 8, &n, &err) == GX_ERR_NOTFOUND && n == 0);
    /* larger than the whole cache: refused, nothing evicted */
    rec_buf big;
    rec_make(&big, "big", "big", 16, 2, 9.0f);
    CHECK(gx_cf_store_put(t.s, &big.r, 300, &err) == GX_ERR_NOMEM);
    CHECK(strstr(err.msg, "exceeds") != NULL);
    CHECK(gx_cf_store_usage(t.s, &rows, &bytes, &err) == GX_OK && rows == 3);
    for (int i = 0; i < 5; i++) free(b[i].buf);
    free(big.buf);
    cst_close(&t);
}

GX_TEST(cf_store_bad_input) {
    cst t;
    gx_err err;
    gx_cf_store *s = NULL;
    snprintf(t.f.path, sizeof t.f.path, "/tmp/unused.db");
    CHECK(gx_cf_store_open(&s, t.f.path, &(gx_cf_store_opts){ 0, 1000 }, &err) == GX_ERR_INVALID && !s);
    CHECK(strstr(err.msg, "--cf-cache-mb") != NULL);
    CHECK(gx_cf_store_open(&s, t.f.path, &(gx_cf_store_opts){ 1000, 0 }, &err) == GX_ERR_INVALID && !s);
    CHECK(strstr(err.msg, "--cf-ttl-s") != NULL);
    CHECK(cst_open(&t, 1 << 20, 1000));
    rec_buf b;
    rec_make(&b, "bad/id", "g", 4, 1, 0);
    CHECK(gx_cf_store_put(t.s, &b.r, 1, &err) == GX_ERR_INVALID);
    snprintf(b.r.id, sizeof b.r.id, "ok");
    b.r.n_targets = GX_CF_STORE_MAX_TARGETS + 1;
    CHECK(gx_cf_store_put(t.s, &b.r, 1, &err) == GX_ERR_INVALID);
    b.r.n_targets = 1;
    b.r.xrec = NULL;
    CHECK(gx_cf_store_put(t.s, &b.r, 1, &err) == GX_ERR_INVALID);
    gx_cf_record g;
    CHECK(gx_cf_store_get(t.s, "../x", 1, &g, &err) == GX_ERR_NOTFOUND);
    free(b.buf);
    cst_close(&t);
}
