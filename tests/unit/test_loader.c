/*
 * test_loader.c — the training data loader (trainer/gx_loader.h).
 *
 * Data: tests/fixtures/io/galaxy10_small.h5 (24 images 12x16, label i % 11,
 * ra/dec finite, redshift NaN for i % 4 == 1). Missing coordinates are
 * simulated by writing NaN into the opened dataset's ra/dec arrays before
 * the loader is opened (the arrays are plain per-sample metadata). Sample
 * errors use a folder dataset written at test time: a catalogue whose
 * second file is not an image.
 *
 * Each epoch is drained into an "epoch record" (every batch's arrays
 * concatenated), so determinism checks are one memcmp per array.
 */
#include "gx_dataset.h"
#include "gx_loader.h"
#include "gx_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LD_N 24

static gx_dataset *open_small(void) {
    char path[1024];
    const char *dir = getenv("GX_FIXTURE_DIR");
    snprintf(path, sizeof path, "%s/io/galaxy10_small.h5", dir ? dir : "tests/fixtures");
    gx_dataset_opts o = GX_DATASET_OPTS_DEFAULT;
    o.block_rows = 4;
    gx_dataset *ds = NULL;
    gx_err err;
    if (gx_dataset_open(path, &o, &ds, &err) != GX_OK) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        return NULL;
    }
    return ds;
}

/* Every batch of one epoch, concatenated. */
typedef struct {
    int64_t n, batches, S;
    float   *x, *coords;
    int32_t *label;
    double  *redshift;
    int64_t *index, *bsize;
    int      errors;
} rec;

static void rec_free(rec *r) {
    free(r->x); free(r->coords); free(r->label); free(r->redshift); free(r->index);
    free(r->bsize);
    memset(r, 0, sizeof *r);
}

/* Starts `epoch` and drains it; cap = max samples expected. Returns 0 on a
 * protocol violation (wrong step numbers, too many samples). */
static int run_epoch(gx_loader *L, int64_t epoch, int64_t S, int64_t cap, rec *r) {
    gx_err err;
    memset(r, 0, sizeof *r);
    r->S = S;
    int64_t px = 3 * S * S;
    r->x = malloc((size_t)(cap * px) * sizeof(float));
    r->coords = malloc((size_t)cap * 2 * sizeof(float));
    r->label = malloc((size_t)cap * sizeof(int32_t));
    r->redshift = malloc((size_t)cap * sizeof(double));
    r->index = malloc((size_t)cap * sizeof(int64_t));
    r->bsize = malloc((size_t)(cap + 1) * sizeof(int64_t));
    if (gx_loader_start_epoch(L, epoch, &err) != GX_OK) return 0;
    gx_batch b;
    int rc;
    while ((rc = gx_loader_next(L, &b, &err)) != 0) {
        if (rc < 0) { r->errors++; r->batches++; continue; }
        if (b.step != r->batches || r->n + b.n > cap || b.n < 1) return 0;
        memcpy(r->x + r->n * px, b.x, (size_t)(b.n * px) * sizeof(float));
        memcpy(r->coords + 2 * r->n, b.coords, (size_t)b.n * 2 * sizeof(float));
        memcpy(r->label + r->n, b.label, (size_t)b.n * sizeof(int32_t));
        memcpy(r->redshift + r->n, b.redshift, (size_t)b.n * sizeof(double));
        memcpy(r->index + r->n, b.index, (size_t)b.n * sizeof(int64_t));
        r->bsize[r->batches++] = b.n;
        r->n += b.n;
    }
    return 1;
}

/* Bit-identical epochs (NaN-safe: memcmp, not ==). */
static int rec_equal(const rec *a, const rec *b) {
    int64_t px = 3 * a->S * a->S;
    return a->n == b->n && a->batches == b->batches &&
           !memcmp(a->x, b->x, (size_t)(a->n * px) * sizeof(float)) &&
           !memcmp(a->coords, b->coords, (size_t)a->n * 2 * sizeof(float)) &&
           !memcmp(a->label, b->label, (size_t)a->n * sizeof(int32_t)) &&
           !memcmp(a->redshift, b->redshift, (size_t)a->n * sizeof(double)) &&
           !memcmp(a->index, b->index, (size_t)a->n * sizeof(int64_t));
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------- tests */

/* One epoch without balancing: every index of the set exactly once, batch
 * sizes 5,5,5,2, and every field equal to what the dataset and
 * gx_pre_prepare give for that index (the daemon's tensor). */
GX_TEST(loader_epoch_covers_set_and_matches_dataset) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    ds->ra[4] = NAN;                   /* unknown coordinates for two samples */
    ds->dec[7] = NAN;
    int64_t idx[17];
    for (int k = 0; k < 17; k++) idx[k] = (k * 7) % LD_N;   /* a scrambled subset */
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 5; o.size = 8; o.crop_frac = 0.75; o.prefetch = 2; o.seed = 11;
    gx_loader *L; gx_err err;
    CHECK_MSG(gx_loader_open(&L, ds, idx, 17, &o, &err) == GX_OK, "%s", err.msg);
    if (!L) { gx_dataset_close(ds); return; }
    CHECK(gx_loader_batches_per_epoch(L) == 4);
    rec r;
    CHECK(run_epoch(L, 0, 8, 17, &r));
    CHECK(r.n == 17 && r.batches == 4 && r.errors == 0);
    CHECK(r.bsize[0] == 5 && r.bsize[1] == 5 && r.bsize[2] == 5 && r.bsize[3] == 2);
    int64_t got[17], want[17];
    memcpy(got, r.index, sizeof got);
    memcpy(want, idx, sizeof want);
    qsort(got, 17, sizeof *got, cmp_i64);
    qsort(want, 17, sizeof *want, cmp_i64);
    CHECK(memcmp(got, want, sizeof got) == 0);
    int nan_ra = 0, nan_dec = 0;
    gx_pre_opts po = { 0.75, 8 };
    for (int64_t k = 0; k < r.n; k++) {
        int64_t i = r.index[k];
        CHECK(r.label[k] == ds->label[i] && r.label[k] == i % 11);
        CHECK(isnan(r.redshift[k]) ? isnan(ds->redshift[i]) : r.redshift[k] == ds->redshift[i]);
        CHECK(isnan(r.coords[2 * k]) == (i == 4) && isnan(r.coords[2 * k + 1]) == (i == 7));
        if (i != 4) CHECK(r.coords[2 * k] == (float)ds->ra[i]);
        nan_ra += isnan(r.coords[2 * k]);
        nan_dec += isnan(r.coords[2 * k + 1]);
        gx_image raw, im;
        CHECK(gx_dataset_get(ds, i, &raw, &err) == GX_OK);
        CHECK(gx_pre_prepare(&raw, &po, &im, &err) == GX_OK);
        CHECK_MSG(im.data && !memcmp(im.data, r.x + k * 3 * 64, 3 * 64 * sizeof(float)),
                  "x of index %lld differs from gx_pre_prepare", (long long)i);
        gx_image_free(&raw);
        gx_image_free(&im);
    }
    CHECK(nan_ra == 1 && nan_dec == 1);         /* 4 and 7 are in the subset */
    /* After the end, next keeps saying 0. */
    gx_batch b;
    CHECK(gx_loader_next(L, &b, &err) == 0 && gx_loader_next(L, &b, &err) == 0);
    rec_free(&r);
    gx_loader_close(L);
    gx_dataset_close(ds);
}

/* drop_last: 17 samples in batches of 5 -> 3 full batches of distinct
 * indices from the set. */
GX_TEST(loader_drop_last) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    int64_t idx[17];
    for (int k = 0; k < 17; k++) idx[k] = k + 3;
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 5; o.size = 4; o.drop_last = 1; o.seed = 5;
    gx_loader *L; gx_err err;
    CHECK(gx_loader_open(&L, ds, idx, 17, &o, &err) == GX_OK);
    if (!L) { gx_dataset_close(ds); return; }
    CHECK(gx_loader_batches_per_epoch(L) == 3);
    rec r;
    CHECK(run_epoch(L, 2, 4, 17, &r));
    CHECK(r.n == 15 && r.batches == 3);
    CHECK(r.bsize[0] == 5 && r.bsize[1] == 5 && r.bsize[2] == 5);
    qsort(r.index, (size_t)r.n, sizeof *r.index, cmp_i64);
    for (int64_t k = 0; k < r.n; k++) {
        CHECK(r.index[k] >= 3 && r.index[k] < 20);
        if (k) CHECK(r.index[k] > r.index[k - 1]);
    }
    rec_free(&r);
    gx_loader_close(L);
    gx_dataset_close(ds);
}

/* Same (seed, epoch) -> bit-identical batches across instances with other
 * prefetch depths, whatever ran before (including an epoch abandoned
 * midway); other epochs differ. With augmentation, plain and balanced. */
static void check_determinism(gx_test_state *T, gx_dataset *ds, int balanced) {
    int64_t idx[LD_N];
    for (int k = 0; k < LD_N; k++) idx[k] = k;
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 7; o.size = 8; o.augment = 1; o.aug = GX_PRE_AUG_DEFAULT;
    o.balanced = balanced; o.seed = 1234;
    gx_loader *A, *B; gx_err err;
    o.prefetch = 1;
    CHECK(gx_loader_open(&A, ds, idx, LD_N, &o, &err) == GX_OK);
    o.prefetch = 4;
    CHECK(gx_loader_open(&B, ds, idx, LD_N, &o, &err) == GX_OK);
    if (!A || !B) { gx_loader_close(A); gx_loader_close(B); return; }
    rec a3, b0, b2, b3, b4;
    CHECK(run_epoch(A, 3, 8, LD_N, &a3));             /* straight to epoch 3 */
    CHECK(run_epoch(B, 0, 8, LD_N, &b0));
    gx_batch b;                                        /* epoch 1: abandoned */
    CHECK(gx_loader_start_epoch(B, 1, &err) == GX_OK);
    CHECK(gx_loader_next(B, &b, &err) == 1 && b.step == 0);
    CHECK(run_epoch(B, 2, 8, LD_N, &b2));
    CHECK(run_epoch(B, 3, 8, LD_N, &b3));
    CHECK(run_epoch(B, 4, 8, LD_N, &b4));
    CHECK(a3.n == LD_N && a3.batches == 4 && a3.errors == 0);
    CHECK_MSG(rec_equal(&a3, &b3), "epoch 3 differs between instances (balanced=%d)", balanced);
    CHECK(!rec_equal(&b3, &b4) && !rec_equal(&b0, &b2));
    CHECK(memcmp(b3.index, b4.index, sizeof(int64_t) * LD_N) != 0);
    /* Restarting the same epoch on the same instance repeats it exactly. */
    rec a3b;
    CHECK(run_epoch(A, 3, 8, LD_N, &a3b));
    CHECK(rec_equal(&a3, &a3b));
    rec_free(&a3); rec_free(&a3b); rec_free(&b0); rec_free(&b2); rec_free(&b3); rec_free(&b4);
    gx_loader_close(A);
    gx_loader_close(B);
}

GX_TEST(loader_deterministic_per_seed_and_epoch) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    check_determinism(T, ds, 0);
    check_determinism(T, ds, 1);
    gx_dataset_close(ds);
}

/* Augmentation actually changes x, and duplicates drawn by balanced
 * sampling are augmented differently (position is part of the key). */
GX_TEST(loader_augment_changes_pixels) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    int64_t idx[LD_N];
    for (int k = 0; k < LD_N; k++) idx[k] = k;
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 8; o.size = 8; o.seed = 3;
    gx_loader *P, *Q; gx_err err;
    CHECK(gx_loader_open(&P, ds, idx, LD_N, &o, &err) == GX_OK);
    o.augment = 1; o.aug = GX_PRE_AUG_DEFAULT;
    CHECK(gx_loader_open(&Q, ds, idx, LD_N, &o, &err) == GX_OK);
    if (!P || !Q) { gx_loader_close(P); gx_loader_close(Q); gx_dataset_close(ds); return; }
    rec p, q;
    CHECK(run_epoch(P, 0, 8, LD_N, &p));
    CHECK(run_epoch(Q, 0, 8, LD_N, &q));
    /* Same order (order does not depend on augment), different pixels. */
    CHECK(!memcmp(p.index, q.index, sizeof(int64_t) * LD_N));
    int changed = 0;
    for (int k = 0; k < LD_N; k++)
        changed += memcmp(p.x + k * 192, q.x + k * 192, 192 * sizeof(float)) != 0;
    CHECK(changed >= LD_N - 1);
    rec_free(&p); rec_free(&q);
    gx_loader_close(P);
    gx_loader_close(Q);
    gx_dataset_close(ds);
}

/* Balanced sampling over many epochs: classes equally likely (within 5
 * binomial standard deviations), uniform within a class, only indices of
 * the set, absent classes never drawn. The set is deliberately skewed:
 * class 0 has 3 members, class 1 three, class 2 one, class 5 two. */
GX_TEST(loader_balanced_sampling) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    int64_t idx[] = { 0, 11, 22, 1, 12, 23, 2, 5, 16 };
    int n = 9, epochs = 300;
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 9; o.size = 2; o.balanced = 1; o.seed = 77; o.prefetch = 3;
    gx_loader *L; gx_err err;
    CHECK(gx_loader_open(&L, ds, idx, n, &o, &err) == GX_OK);
    if (!L) { gx_dataset_close(ds); return; }
    int64_t per_class[11] = { 0 }, per_index[LD_N] = { 0 }, total = 0;
    int outside = 0;
    for (int e = 0; e < epochs; e++) {
        gx_batch b;
        CHECK(gx_loader_start_epoch(L, e, &err) == GX_OK);
        while (gx_loader_next(L, &b, &err) == 1)
            for (int64_t k = 0; k < b.n; k++) {
                int64_t i = b.index[k];
                int in = 0;
                for (int j = 0; j < n; j++) in |= idx[j] == i;
                outside += !in;
                if (in) { per_class[b.label[k]]++; per_index[i]++; }
                total++;
            }
    }
    CHECK(total == (int64_t)n * epochs && outside == 0);
    double draws = (double)total, p = 0.25, sd = sqrt(draws * p * (1 - p));
    int present[] = { 0, 1, 2, 5 };
    for (int c = 0; c < 4; c++)
        CHECK_MSG(fabs(per_class[present[c]] - draws * p) < 5 * sd,
                  "class %d drawn %lld times, expected %.0f +- %.0f", present[c],
                  (long long)per_class[present[c]], draws * p, sd);
    for (int c = 0; c < 11; c++)
        if (c != 0 && c != 1 && c != 2 && c != 5) CHECK(per_class[c] == 0);
    /* Within class 0 (3 members, each p = 1/12 overall). */
    double pm = 1.0 / 12, sdm = sqrt(draws * pm * (1 - pm));
    for (int j = 0; j < 3; j++) CHECK(fabs(per_index[idx[j]] - draws * pm) < 5 * sdm);
    CHECK(fabs(per_index[2] - draws * p) < 5 * sd);
    gx_loader_close(L);
    gx_dataset_close(ds);
}

/* start_epoch in the middle of an epoch, then finishing the new one,
 * gives the same batches as a fresh loader; close mid-epoch (with batches
 * pending in the ring, right after start, or before any epoch) returns. */
GX_TEST(loader_restart_and_close_mid_epoch) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    int64_t idx[LD_N];
    for (int k = 0; k < LD_N; k++) idx[k] = LD_N - 1 - k;
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    o.batch = 3; o.size = 8; o.prefetch = 3; o.seed = 9;
    gx_loader *L, *F; gx_err err; gx_batch b;
    CHECK(gx_loader_open(&L, ds, idx, LD_N, &o, &err) == GX_OK);
    CHECK(gx_loader_open(&F, ds, idx, LD_N, &o, &err) == GX_OK);
    if (!L || !F) { gx_loader_close(L); gx_loader_close(F); gx_dataset_close(ds); return; }
    CHECK(gx_loader_next(L, &b, &err) == -1);           /* no epoch yet */
    CHECK(gx_loader_start_epoch(L, 5, &err) == GX_OK);
    CHECK(gx_loader_next(L, &b, &err) == 1 && gx_loader_next(L, &b, &err) == 1);
    CHECK(b.step == 1);
    rec r, f;
    CHECK(run_epoch(L, 6, 8, LD_N, &r));               /* restart mid-epoch */
    CHECK(run_epoch(F, 6, 8, LD_N, &f));
    CHECK(r.n == LD_N && r.batches == 8 && rec_equal(&r, &f));
    rec_free(&r); rec_free(&f);
    /* Cancel repeatedly while the worker is mid-batch; every epoch still
     * starts with its own first batch. */
    int first_ok = 0;
    for (int e = 0; e < 40; e++) {
        CHECK(gx_loader_start_epoch(L, e % 4, &err) == GX_OK);
        if (e % 3 == 0) continue;                       /* not even one batch */
        first_ok += gx_loader_next(L, &b, &err) == 1 && b.step == 0;
    }
    CHECK(first_ok == 26);
    CHECK(gx_loader_start_epoch(L, 7, &err) == GX_OK);
    CHECK(gx_loader_next(L, &b, &err) == 1);
    gx_loader_close(L);                                 /* mid-epoch, ring full */
    CHECK(gx_loader_start_epoch(F, 7, &err) == GX_OK);
    gx_loader_close(F);                                 /* right after start */
    CHECK(gx_loader_open(&L, ds, idx, LD_N, &o, &err) == GX_OK);
    gx_loader_close(L);                                 /* never started */
    gx_loader_close(NULL);
    gx_dataset_close(ds);
}

GX_TEST(loader_rejects_bad_options) {
    gx_dataset *ds = open_small();
    CHECK(ds != NULL);
    if (!ds) return;
    int64_t idx[] = { 0, 1, 2 }, bad[] = { 0, LD_N };
    gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
    gx_loader *L; gx_err err;
    CHECK(gx_loader_open(&L, ds, bad, 2, &o, &err) == GX_ERR_INVALID && !L);
    CHECK(strstr(err.msg, "idx[1]") != NULL);
    CHECK(gx_loader_open(&L, ds, idx, 0, &o, &err) == GX_ERR_INVALID);
    o.prefetch = 0;
    CHECK(gx_loader_open(&L, ds, idx, 3, &o, &err) == GX_ERR_INVALID);
    o = GX_LOADER_OPTS_DEFAULT; o.crop_frac = 0;
    CHECK(gx_loader_open(&L, ds, idx, 3, &o, &err) == GX_ERR_INVALID);
    o = GX_LOADER_OPTS_DEFAULT; o.batch = 0;
    CHECK(gx_loader_open(&L, ds, idx, 3, &o, &err) == GX_ERR_INVALID);
    gx_dataset_close(ds);
}

/* A folder dataset whose second image is garbage: its batch is reported
 * as -1 naming dataset index 1, the others still arrive, and the next
 * epoch works the same way. */
GX_TEST(loader_sample_error_is_reported) {
    char dir[] = "/tmp/gx_loader_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    float px[3 * 6 * 5];
    for (int k = 0; k < 90; k++) px[k] = (float)(k % 7) / 7.0f;
    uint8_t *png = NULL; size_t png_n = 0; gx_err err;
    CHECK(gx_png_encode(px, 3, 6, 5, &png, &png_n, &err) == GX_OK);
    const char *names[] = { "a.png", "b.png", "c.png" };
    char path[256];
    for (int f = 0; f < 3; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        FILE *fp = fopen(path, "wb");
        if (!fp) continue;
        if (f == 1) fputs("this is not an image", fp);
        else fwrite(png, 1, png_n, fp);
        fclose(fp);
    }
    free(png);
    snprintf(path, sizeof path, "%s/catalog.csv", dir);
    FILE *fp = fopen(path, "w");
    if (fp) { fputs("file,label,ra,dec\na.png,0,1,2\nb.png,1,3,4\nc.png,2,,\n", fp); fclose(fp); }
    gx_dataset *ds = NULL;
    CHECK_MSG(gx_dataset_open(dir, NULL, &ds, &err) == GX_OK, "%s", err.msg);
    if (ds) {
        int64_t idx[] = { 0, 1, 2 };
        gx_loader_opts o = GX_LOADER_OPTS_DEFAULT;
        o.batch = 1; o.size = 4; o.seed = 2;
        gx_loader *L = NULL;
        CHECK(gx_loader_open(&L, ds, idx, 3, &o, &err) == GX_OK);
        for (int e = 0; L && e < 2; e++) {
            CHECK(gx_loader_start_epoch(L, e, &err) == GX_OK);
            int ok = 0, bad = 0, rc, nan_c = 0;
            gx_batch b;
            while ((rc = gx_loader_next(L, &b, &err)) != 0) {
                if (rc == 1) { ok++; CHECK(b.index[0] != 1); nan_c += isnan(b.coords[0]); }
                else {
                    bad++;
                    CHECK_MSG(strstr(err.msg, "dataset index 1") != NULL, "msg: %s", err.msg);
                }
            }
            CHECK(ok == 2 && bad == 1 && nan_c == 1);   /* c.png has no ra/dec */
        }
        gx_loader_close(L);
        gx_dataset_close(ds);
    }
    for (int f = 0; f < 3; f++) { snprintf(path, sizeof path, "%s/%s", dir, names[f]); unlink(path); }
    snprintf(path, sizeof path, "%s/catalog.csv", dir);
    unlink(path);
    rmdir(dir);
}
