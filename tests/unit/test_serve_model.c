/*
 * test_serve_model.c — daemon/gx_serve_model.c: loading checkpoints (info
 * fields, refusals that name the file), preprocessing identical to the
 * trainer's loader, and eval-mode prediction (per-sample determinism, the
 * trainer's forward, bounded arena).
 *
 * Checkpoints are tiny WaveletMamba models (gx_wm_config_tiny at 16x16)
 * written here with the trainer's metadata. tserve_write_good() is also used
 * by test_batcher.c and test_registry.c (declared there).
 */
#include "gx_test.h"
#include "test_fixture_util.h"
#include "gx_dataset.h"
#include "gx_loader.h"
#include "gx_serve_model.h"
#include "gx_sha256.h"
#include "gx_train_wm.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Shared with test_batcher.c / test_registry.c. */
int tserve_write_good(const char *path, uint64_t seed, int size);
int tserve_mkdtemp(char *dir, size_t cap);
void tserve_rmtree(const char *dir);
void tserve_random_images(float *x, int n, int S, uint64_t seed);

/* ------------------------------------------------------------ helpers */

/* What a test checkpoint holds; NULL / 0 fields take the trainer's values. */
typedef struct tserve_ck {
    uint64_t seed;
    int size;
    double crop_frac;
    const char *format, *kind, *config, *classes, *preprocess;
    const char *test_metrics;      /* NULL: absent */
    const char *drop;              /* a tensor left out */
    int64_t run_id;                /* <= 0: absent */
} tserve_ck;

static int spit(const char *path, const void *b, size_t n);

/* The tiny model of a test checkpoint (c->seed, c->size). */
static void ckpt_model(gx_wm_model *m, const tserve_ck *c) {
    gx_wm_config cfg = gx_wm_config_tiny();
    cfg.size = c->size ? c->size : 16;
    gx_wm_init(m, cfg, c->seed);
    /* Plausible colour statistics, as the trainer stores them. */
    for (int k = 0; k < 4; k++) {
        m->color_median->data[k] = (gx_real)(0.1 * k);
        m->color_iqr->data[k] = (gx_real)(0.5 + 0.1 * k);
    }
}

/* Writes model m with c's metadata (plain write: tests need no fsync). */
static int write_ckpt_m(const char *path, const tserve_ck *c, const gx_wm_model *m) {
    const gx_wm_config cfg = m->cfg;
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_err err;
    gx_status s = GX_OK;
    for (int i = 0; s == GX_OK && i < m->params.n; i++) {
        const gx_param *p = m->params.items[i];
        if (c->drop && !strcmp(c->drop, p->name)) continue;
        s = gx_st_writer_add_real(&w, p->name, p->t.ndim, p->t.shape, p->t.data, &err);
    }
    char cfgj[512], cls[512], pre[128], rid[32];
    snprintf(cfgj, sizeof cfgj,
             "{\"c1\":%lld,\"c2\":%lld,\"classes\":%lld,\"d_conv\":%lld,\"d_model\":%lld,\"d_state\":%lld,"
             "\"delta_mode\":\"mean\",\"dt_rank\":%lld,\"expand\":%lld,\"fusion\":%lld,\"grid\":%lld,\"size\":%lld}",
             (long long)cfg.c1, (long long)cfg.c2, (long long)cfg.classes, (long long)cfg.d_conv,
             (long long)cfg.d_model, (long long)cfg.d_state, (long long)cfg.dt_rank, (long long)cfg.expand,
             (long long)cfg.fusion, (long long)cfg.grid, (long long)cfg.size);
    size_t o = snprintf(cls, sizeof cls, "[");
    for (int k = 0; k < cfg.classes; k++) o += snprintf(cls + o, sizeof cls - o, "%s\"%s\"", k ? "," : "", gx_class_name(k));
    snprintf(cls + o, sizeof cls - o, "]");
    snprintf(pre, sizeof pre, "{\"size\":%lld,\"crop_frac\":%.17g}", (long long)cfg.size,
             c->crop_frac > 0 ? c->crop_frac : 1.0);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "format", c->format ? c->format : "galaxyd-checkpoint-1", &err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "model", c->kind ? c->kind : "wavelet-mamba", &err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "config", c->config ? c->config : cfgj, &err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "classes", c->classes ? c->classes : cls, &err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "preprocess", c->preprocess ? c->preprocess : pre, &err);
    if (s == GX_OK) s = gx_st_writer_meta(&w, "epoch", "2", &err);
    if (s == GX_OK && c->run_id > 0) {
        snprintf(rid, sizeof rid, "%lld", (long long)c->run_id);
        s = gx_st_writer_meta(&w, "run_id", rid, &err);
    }
    if (s == GX_OK && c->test_metrics) s = gx_st_writer_meta(&w, "test_metrics", c->test_metrics, &err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (s == GX_OK) s = gx_st_writer_serialize(&w, &buf, &len, &err);
    if (s == GX_OK && !spit(path, buf, len)) s = gx_err_set(&err, GX_ERR_IO, "cannot write");
    if (s != GX_OK) fprintf(stderr, "write_ckpt %s: %s\n", path, err.msg);
    free(buf);
    gx_st_writer_free(&w);
    return s == GX_OK;
}

static int write_ckpt(const char *path, const tserve_ck *c) {
    gx_wm_model m;
    ckpt_model(&m, c);
    int ok = write_ckpt_m(path, c, &m);
    gx_wm_free(&m);
    return ok;
}

int tserve_write_good(const char *path, uint64_t seed, int size) {
    tserve_ck c = { .seed = seed, .size = size, .run_id = 7 };
    return write_ckpt(path, &c);
}

int tserve_mkdtemp(char *dir, size_t cap) {
    snprintf(dir, cap, "/tmp/gx_serve_XXXXXX");
    return mkdtemp(dir) != NULL;
}

void tserve_rmtree(const char *dir) {
    tfx_rmtree(dir);
}

/* n images of 3*S*S values in [0,1), each different (seeded). */
void tserve_random_images(float *x, int n, int S, uint64_t seed) {
    gx_rng r;
    gx_rng_init(&r, seed);
    for (int64_t i = 0; i < (int64_t)n * 3 * S * S; i++) x[i] = (float)gx_rng_uniform(&r);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    if (b) *n = (size_t)len;
    return b;
}

static int spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* ---------------------------------------------------------------- load */

GX_TEST(serve_model_load_info) {
    char dir[64], p1[128], p2[128];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(p1, sizeof p1, "%s/wavelet-mamba.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/bare.safetensors", dir);
    tserve_ck c1 = { .seed = 3, .size = 16, .crop_frac = 0.8, .run_id = 42,
                     .test_metrics = "{\"accuracy\": 0.5, \"z_nmad\": 0.03}" };
    tserve_ck c2 = { .seed = 4, .size = 24 };
    CHECK(write_ckpt(p1, &c1) && write_ckpt(p2, &c2));
    gx_serve_model *m = NULL, *m2 = NULL;
    gx_err err;
    gx_status s = gx_serve_model_load(&m, p1, NULL, &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    if (s == GX_OK) {
        const gx_serve_info *in = gx_serve_model_info(m);
        size_t n;
        uint8_t *bytes = slurp(p1, &n);
        char sha[65];
        gx_sha256_hex(bytes, n, sha);
        free(bytes);
        CHECK(!strcmp(in->name, "wavelet-mamba"));
        CHECK(!strcmp(in->kind, "wavelet-mamba"));
        CHECK(!strcmp(in->device, "cpu"));
        CHECK(!strcmp(in->path, p1));
        CHECK(!strcmp(in->version, sha) && strlen(in->version) == 64);
        CHECK(in->input_size == 16);
        CHECK_NEAR(in->crop_frac, 0.8, 0);
        CHECK(in->n_classes == 10);
        for (int k = 0; k < 10; k++) CHECK(!strcmp(in->class_names[k], gx_class_name(k)));
        CHECK(in->run_id == 42);
        /* Parameters without buffers: the trainable count of the same model. */
        gx_wm_model ref;
        gx_wm_config cfg = gx_wm_config_tiny();
        cfg.size = 16;
        gx_wm_init(&ref, cfg, 0);
        int64_t all = 0;
        for (int i = 0; i < ref.params.n; i++) all += ref.params.items[i]->t.numel;
        CHECK(in->n_params == gx_params_count(&ref.params, 0));
        CHECK(in->n_params > 1000000 && in->n_params < all);
        gx_wm_free(&ref);
        json_t *cj = json_loads(in->config_json, 0, NULL), *tj = json_loads(in->test_metrics_json, 0, NULL);
        CHECK(json_integer_value(json_object_get(cj, "size")) == 16);
        CHECK(json_integer_value(json_object_get(cj, "classes")) == 10);
        CHECK_NEAR(json_number_value(json_object_get(tj, "accuracy")), 0.5, 0);
        CHECK_NEAR(json_number_value(json_object_get(tj, "z_nmad")), 0.03, 0);
        json_decref(cj);
        json_decref(tj);
    }
    s = gx_serve_model_load(&m2, p2, "renamed_1", &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    if (s == GX_OK) {
        const gx_serve_info *in = gx_serve_model_info(m2);
        CHECK(!strcmp(in->name, "renamed_1"));
        CHECK(!strcmp(in->test_metrics_json, "{}"));
        CHECK(in->run_id == -1);
        CHECK(in->input_size == 24 && in->crop_frac == 1.0);
        CHECK(strcmp(in->version, gx_serve_model_info(m)->version) != 0);
    }
    /* A name that cannot be a route segment is refused. */
    gx_serve_model *m3 = NULL;
    CHECK(gx_serve_model_load(&m3, p2, "a/b", &err) == GX_ERR_INVALID && !m3);
    CHECK(strstr(err.msg, "a/b") != NULL);
    gx_serve_model_free(m);
    gx_serve_model_free(m2);
    gx_serve_model_free(NULL);
    tserve_rmtree(dir);
}

/* Loads path, expects status want and the path (and `needle`) in the message. */
static void expect_refused(gx_test_state *T, const char *path, gx_status want, const char *needle) {
    gx_serve_model *m = (gx_serve_model *)&m;   /* must be reset to NULL */
    gx_err err = { "" };
    gx_status s = gx_serve_model_load(&m, path, NULL, &err);
    CHECK_MSG(s == want, "%s: status %s, want %s (%s)", path, gx_status_str(s), gx_status_str(want), err.msg);
    CHECK_MSG(m == NULL, "%s: out not reset", path);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    if (needle) CHECK_MSG(strstr(err.msg, needle) != NULL, "message lacks '%s': %s", needle, err.msg);
    if (s == GX_OK) gx_serve_model_free(m);
}

GX_TEST(serve_model_refuses_bad_files) {
    char dir[64], p[160];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    gx_wm_model wm;                       /* one model, many metadata variants */
    ckpt_model(&wm, &(tserve_ck){ .seed = 1 });
    /* Not safetensors at all. */
    snprintf(p, sizeof p, "%s/text.safetensors", dir);
    CHECK(spit(p, "hello, this is not a checkpoint", 31));
    expect_refused(T, p, GX_ERR_FORMAT, NULL);
    /* Missing file. */
    snprintf(p, sizeof p, "%s/absent.safetensors", dir);
    expect_refused(T, p, GX_ERR_IO, NULL);
    /* Wrong format / kind metadata. */
    snprintf(p, sizeof p, "%s/state.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .format = "galaxyd-train-state-1" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "galaxyd-train-state-1");
    snprintf(p, sizeof p, "%s/kind.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .kind = "cf-inn" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "cf-inn");
    /* A tensor missing. */
    snprintf(p, sizeof p, "%s/missing.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .drop = "feature_extractor.color_stats.iqr" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "color_stats.iqr");
    /* Bad configs: not a multiple of 4 (gx_wm_init would abort), absurd,
     * missing a key, or not matching the tensors. */
    static const char *const bad_cfg[] = {
        "{\"c1\":8,\"c2\":18,\"classes\":10,\"d_conv\":4,\"d_model\":16,\"d_state\":4,\"dt_rank\":4,\"expand\":2,\"fusion\":32,\"grid\":4,\"size\":16}",
        "{\"c1\":8,\"c2\":16,\"classes\":10,\"d_conv\":4,\"d_model\":16000000,\"d_state\":4,\"dt_rank\":4,\"expand\":2,\"fusion\":32,\"grid\":4,\"size\":16}",
        "{\"c1\":8,\"c2\":16,\"classes\":10,\"d_conv\":4,\"d_state\":4,\"dt_rank\":4,\"expand\":2,\"fusion\":32,\"grid\":4,\"size\":16}",
        "{\"c1\":12,\"c2\":16,\"classes\":10,\"d_conv\":4,\"d_model\":16,\"d_state\":4,\"dt_rank\":4,\"expand\":2,\"fusion\":32,\"grid\":4,\"size\":16}",
        "[1,2,3]",
    };
    static const char *const bad_cfg_word[] = { "c2", "d_model", "d_model", "[12,", "config" };
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/cfg%d.safetensors", dir, i);
        CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .config = bad_cfg[i] }, &wm));
        expect_refused(T, p, GX_ERR_FORMAT, i == 3 ? NULL : bad_cfg_word[i]);
    }
    /* Metadata the daemon needs: classes, preprocess, test_metrics. */
    snprintf(p, sizeof p, "%s/classes.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .classes = "[\"a\",\"b\"]" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "classes");
    snprintf(p, sizeof p, "%s/crop.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .preprocess = "{\"size\":16,\"crop_frac\":1.5}" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "crop_frac");
    snprintf(p, sizeof p, "%s/metrics.safetensors", dir);
    CHECK(write_ckpt_m(p, &(tserve_ck){ .seed = 1, .test_metrics = "0.93" }, &wm));
    expect_refused(T, p, GX_ERR_FORMAT, "test_metrics");
    /* Truncated and bit-flipped copies of a good file. */
    char good[160];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    CHECK(write_ckpt_m(good, &(tserve_ck){ .seed = 1 }, &wm));
    size_t n;
    uint8_t *b = slurp(good, &n);
    CHECK(b && n > 1000);
    if (b) {
        snprintf(p, sizeof p, "%s/short.safetensors", dir);
        CHECK(spit(p, b, n - 100));
        expect_refused(T, p, GX_ERR_FORMAT, NULL);
        snprintf(p, sizeof p, "%s/header.safetensors", dir);
        b[3] = 0x7f;                              /* header length beyond the file */
        CHECK(spit(p, b, n));
        expect_refused(T, p, GX_ERR_FORMAT, NULL);
        snprintf(p, sizeof p, "%s/tiny.safetensors", dir);
        CHECK(spit(p, b, 5));
        expect_refused(T, p, GX_ERR_FORMAT, NULL);
        free(b);
    }
    gx_wm_free(&wm);
    tserve_rmtree(dir);
}

/* ------------------------------------------------------------- prepare */

/* Every fixture kind (RGB, gray, alpha, palette with tRNS, 16-bit, JPEG
 * gray/RGB, FITS 2-D and cube with NaNs) through the trainer's folder
 * dataset + loader (eval settings) and through gx_serve_prepare: the same
 * floats, bit for bit. */
GX_TEST(serve_prepare_equals_trainer_loader) {
    static const char *const files[] = { "rgb8.png", "gray8.png", "rgba8.png", "gray_alpha16.png",
                                         "palette_trns.png", "baseline_rgb.jpg", "progressive_gray.jpg",
                                         "f32_cube_nan.fits", "u16_2d.fits", "interlaced_rgb8.png" };
    enum { NF = sizeof files / sizeof files[0] };
    const int S = 16;
    const double crop = 0.8;
    char dir[64], csv[128], abs_path[PATH_MAX];
    CHECK(tserve_mkdtemp(dir, sizeof dir));
    snprintf(csv, sizeof csv, "%s/catalog.csv", dir);
    FILE *f = fopen(csv, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "file,label\n");
    for (int i = 0; i < NF; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/io/%s", files[i]);
        CHECK_MSG(realpath(rel, abs_path) != NULL, "fixture %s", rel);
        fprintf(f, "%s,%d\n", abs_path, i % 10);
    }
    fclose(f);
    gx_dataset *ds = NULL;
    gx_loader *L = NULL;
    gx_err err;
    gx_status s = gx_dataset_open(csv, NULL, &ds, &err);
    CHECK_MSG(s == GX_OK, "dataset: %s", err.msg);
    int64_t idx[NF];
    for (int i = 0; i < NF; i++) idx[i] = i;
    gx_loader_opts lo = GX_LOADER_OPTS_DEFAULT;
    lo.batch = NF;
    lo.size = S;
    lo.crop_frac = crop;
    lo.prefetch = 1;
    if (s == GX_OK) s = gx_loader_open(&L, ds, idx, NF, &lo, &err);
    if (s == GX_OK) s = gx_loader_start_epoch(L, 0, &err);
    gx_batch bt;
    int rc = s == GX_OK ? gx_loader_next(L, &bt, &err) : -1;
    CHECK_MSG(rc == 1 && bt.n == NF, "loader: %s", err.msg);
    gx_serve_info info;
    memset(&info, 0, sizeof info);
    info.input_size = S;
    info.crop_frac = crop;
    float x[3 * 16 * 16];
    for (int64_t r = 0; rc == 1 && r < bt.n; r++) {
        int64_t i = bt.index[r];
        size_t n;
        uint8_t *buf = slurp(ds->file[i], &n);
        gx_serve_meta meta;
        s = gx_serve_prepare(&info, buf, n, NULL, x, &meta, &err);
        CHECK_MSG(s == GX_OK, "%s: %s", files[i], err.msg);
        CHECK_MSG(!memcmp(x, bt.x + r * 3 * S * S, sizeof x), "%s: prepared floats differ from the loader's",
                  files[i]);
        /* meta: format, size, bands and hash of the upload. */
        gx_image im;
        CHECK(gx_image_decode(buf, n, NULL, NULL, &im, &err) == GX_OK);
        char sha[65];
        gx_sha256_hex(buf, n, sha);
        const char *want_fmt = strstr(files[i], ".png") ? "png" : strstr(files[i], ".jpg") ? "jpeg" : "fits";
        CHECK_MSG(!strcmp(meta.format, want_fmt), "%s: format %s", files[i], meta.format);
        CHECK(meta.width == im.w && meta.height == im.h);
        CHECK(meta.bands == (im.replicated ? 1 : 3));
        CHECK(!strcmp(meta.sha256, sha));
        gx_image_free(&im);
        free(buf);
    }
    CHECK(rc != 1 || bt.n == NF);
    gx_loader_close(L);
    gx_dataset_close(ds);
    tserve_rmtree(dir);
}

GX_TEST(serve_prepare_errors) {
    gx_serve_info info;
    memset(&info, 0, sizeof info);
    info.input_size = 16;
    info.crop_frac = 1.0;
    float x[3 * 16 * 16];
    gx_err err;
    size_t n;
    uint8_t *png = NULL;
    /* Over the pixel limit: GX_ERR_NOMEM (the daemon's 413). */
    float img[3 * 20 * 30];
    for (int i = 0; i < 3 * 20 * 30; i++) img[i] = (float)(i % 17) / 16.0f;
    CHECK(gx_png_encode(img, 3, 20, 30, &png, &n, &err) == GX_OK);
    gx_image_limits lim = { 64, 64, 500 };
    CHECK(gx_serve_prepare(&info, png, n, &lim, x, NULL, &err) == GX_ERR_NOMEM);
    CHECK(gx_serve_prepare(&info, png, n, NULL, x, NULL, &err) == GX_OK);
    /* Undecodable: unknown bytes, empty, a truncated PNG (the daemon's 422). */
    CHECK(gx_serve_prepare(&info, "GIF89a....", 10, NULL, x, NULL, &err) == GX_ERR_UNSUPPORTED);
    CHECK(gx_serve_prepare(&info, png, 0, NULL, x, NULL, &err) == GX_ERR_FORMAT);
    gx_status s = gx_serve_prepare(&info, png, n / 2, NULL, x, NULL, &err);
    CHECK_MSG(s == GX_ERR_FORMAT || s == GX_ERR_UNSUPPORTED, "truncated png: %s", gx_status_str(s));
    free(png);
}

/* ------------------------------------------------------------- predict */

static int load_tmp_model(gx_test_state *T, char *dir, size_t cap, uint64_t seed, int size, gx_serve_model **m) {
    char p[128];
    gx_err err;
    *m = NULL;
    if (!tserve_mkdtemp(dir, cap)) return 0;
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    if (!tserve_write_good(p, seed, size)) return 0;
    gx_status s = gx_serve_model_load(m, p, NULL, &err);
    CHECK_MSG(s == GX_OK, "load: %s", err.msg);
    return s == GX_OK;
}

/* Compares row r of a batched output with a single-row output; counts
 * bitwise-equal rows in *bitwise. */
static void compare_row(gx_test_state *T, const char *label, int K, const float *lg_b, const float *pr_b,
                        float z_b, const float *lg_1, const float *pr_1, float z_1, int *bitwise) {
    int same = !memcmp(lg_b, lg_1, (size_t)K * sizeof *lg_b) && !memcmp(pr_b, pr_1, (size_t)K * sizeof *pr_b) &&
               !memcmp(&z_b, &z_1, sizeof z_b);
    *bitwise += same;
    for (int k = 0; k < K; k++) {
        CHECK_MSG(fabs(lg_b[k] - lg_1[k]) <= 1e-6 * (1 + fabs(lg_1[k])), "%s logit %d: %.9g vs %.9g", label, k,
                  lg_b[k], lg_1[k]);
        CHECK_MSG(fabs(pr_b[k] - pr_1[k]) <= 1e-6, "%s prob %d: %.9g vs %.9g", label, k, pr_b[k], pr_1[k]);
    }
    CHECK_MSG(fabs(z_b - z_1) <= 1e-6 * (1 + fabs(z_1)), "%s redshift: %.9g vs %.9g", label, z_b, z_1);
}

/* A sample's outputs do not depend on its batch: each row of a 40-row call
 * (two chunks) with mixed NaN / real coordinates equals the same row alone. */
GX_TEST(serve_predict_per_sample_determinism) {
    char dir[64];
    gx_serve_model *m;
    if (!load_tmp_model(T, dir, sizeof dir, 5, 16, &m)) { tserve_rmtree(dir); return; }
    enum { N = 40, S = 16, K = 10 };
    float *x = malloc(sizeof(float) * N * 3 * S * S), coords[2 * N];
    float lg[N * K], pr[N * K], z[N], lg1[K], pr1[K], z1;
    tserve_random_images(x, N, S, 99);
    for (int i = 0; i < N; i++) {
        coords[2 * i] = i % 3 ? (float)(10.0 + 7.5 * i) : NAN;
        coords[2 * i + 1] = i % 3 ? (float)(-30.0 + 1.5 * i) : NAN;
    }
    gx_err err;
    gx_status s = gx_serve_model_predict(m, x, S, coords, N, &(gx_serve_out){ lg, pr, z, NULL }, &err);
    CHECK_MSG(s == GX_OK, "predict: %s", err.msg);
    int bitwise = 0;
    for (int i = 0; s == GX_OK && i < N; i++) {
        CHECK(gx_serve_model_predict(m, x + i * 3 * S * S, S, coords + 2 * i, 1, &(gx_serve_out){ lg1, pr1, &z1, NULL },
                                     &err) == GX_OK);
        char label[32];
        snprintf(label, sizeof label, "row %d", i);
        compare_row(T, label, K, lg + i * K, pr + i * K, z[i], lg1, pr1, z1, &bitwise);
        double sum = 0;
        for (int k = 0; k < K; k++) sum += pr[i * K + k];
        CHECK_NEAR(sum, 1.0, 1e-5);
        CHECK(isfinite(z[i]) && z[i] > 0);
    }
    printf("  serve_predict: %d of %d rows bitwise equal to single-image predict\n", bitwise, N);
    /* Different images give different answers (the test can fail). */
    CHECK(memcmp(lg, lg + K, sizeof(float) * K) != 0);
    /* Repeating a call gives the same bits, and the arena does not grow. */
    size_t cap = gx_serve_model_arena_bytes(m);
    float lg2[N * K], pr2[N * K], z2[N];
    CHECK(gx_serve_model_predict(m, x, S, coords, N, &(gx_serve_out){ lg2, pr2, z2, NULL }, &err) == GX_OK);
    CHECK(!memcmp(lg, lg2, sizeof lg) && !memcmp(z, z2, sizeof z));
    CHECK(cap > 0 && gx_serve_model_arena_bytes(m) == cap);
    /* A chunk's rows split over the threads (gx_ctx_for_parts): the same
     * bits at 1, 2 and 3 threads. */
    int th = gx_get_threads();
    for (int t = 1; t <= 3; t++) {
        gx_set_threads(t);
        CHECK(gx_serve_model_predict(m, x, S, coords, N, &(gx_serve_out){ lg2, pr2, z2, NULL }, &err) == GX_OK);
        CHECK_MSG(!memcmp(lg, lg2, sizeof lg) && !memcmp(pr, pr2, sizeof pr) && !memcmp(z, z2, sizeof z),
                  "%d threads: outputs differ from %d threads", t, th);
    }
    gx_set_threads(th);
    /* NULL coordinates mean "all missing", like NaN rows (row 0 has NaNs). */
    float lg0[K], pr0[K], z0;
    int same_null = 0;
    CHECK(gx_serve_model_predict(m, x, S, coords, 1, &(gx_serve_out){ lg0, pr0, &z0, NULL }, &err) == GX_OK);
    CHECK(gx_serve_model_predict(m, x, S, NULL, 1, &(gx_serve_out){ lg1, pr1, &z1, NULL }, &err) == GX_OK);
    compare_row(T, "NULL coords", K, lg1, pr1, z1, lg0, pr0, z0, &same_null);
    /* Another input side works (adaptive pooling); bad arguments are refused. */
    float *x24 = malloc(sizeof(float) * 3 * 24 * 24);
    tserve_random_images(x24, 1, 24, 3);
    CHECK(gx_serve_model_predict(m, x24, 24, NULL, 1, &(gx_serve_out){ lg1, pr1, &z1, NULL }, &err) == GX_OK);
    CHECK(isfinite(lg1[0]));
    CHECK(gx_serve_model_predict(m, x, S, NULL, 0, &(gx_serve_out){ lg1, pr1, &z1, NULL }, &err) == GX_ERR_INVALID);
    CHECK(gx_serve_model_predict(m, x, 4, NULL, 1, &(gx_serve_out){ lg1, pr1, &z1, NULL }, &err) == GX_ERR_INVALID);
    CHECK(strstr(err.msg, "side") != NULL);
    free(x24);
    free(x);
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}

/* The bundled WaveletMamba (convs and token linears big enough for
 * OpenBLAS to thread them, whose bits then depend on its thread count): an
 * image alone, the same image among 4 others, and at 1 or 2 threads give
 * the same bits, because every served part runs its ops on one thread
 * (gx_ctx_for_parts). This failed when a lone image ran 2-thread GEMMs and
 * a split batch 1-thread ones. */
GX_TEST(serve_predict_bundled_model_batch_and_thread_invariant) {
    gx_serve_model *m;
    gx_err err;
    if (gx_serve_model_load(&m, "models/default/wavelet-mamba.safetensors", NULL, &err) != GX_OK) {
        CHECK_MSG(0, "bundled model: %s", err.msg);
        return;
    }
    enum { N = 5, S = 64, K = 10 };
    float *x = malloc(sizeof(float) * N * 3 * S * S);
    tserve_random_images(x, N, S, 41);
    float lg[N * K], pr[N * K], z[N], lg1[K], pr1[K], z1;
    int th = gx_get_threads();
    gx_set_threads(2);
    CHECK(gx_serve_model_predict(m, x, S, NULL, N, &(gx_serve_out){ lg, pr, z, NULL }, &err) == GX_OK);
    for (int t = 1; t <= 2; t++) {
        gx_set_threads(t);
        for (int i = 0; i < N; i += 2) {
            CHECK(gx_serve_model_predict(m, x + i * 3 * S * S, S, NULL, 1, &(gx_serve_out){ lg1, pr1, &z1, NULL },
                                         &err) == GX_OK);
            CHECK_MSG(!memcmp(lg1, lg + i * K, sizeof lg1) && !memcmp(pr1, pr + i * K, sizeof pr1) && z1 == z[i],
                      "image %d alone at %d threads differs from its row in a batch of %d", i, t, N);
        }
    }
    gx_set_threads(th);
    free(x);
    gx_serve_model_free(m);
}

/* predict() gives the numbers `galaxy-train eval` computes: the trainer's
 * checkpoint loader + eval-mode forward, softmax in double. */
GX_TEST(serve_predict_equals_trainer_forward) {
    char dir[64], p[128];
    gx_serve_model *m;
    if (!load_tmp_model(T, dir, sizeof dir, 8, 16, &m)) { tserve_rmtree(dir); return; }
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    enum { N = 3, S = 16, K = 10 };
    float x[N * 3 * S * S], coords[2 * N] = { 150.1f, 2.2f, NAN, NAN, 33.0f, -5.0f };
    float lg[N * K], pr[N * K], z[N];
    tserve_random_images(x, N, S, 4);
    gx_err err;
    CHECK(gx_serve_model_predict(m, x, S, coords, N, &(gx_serve_out){ lg, pr, z, NULL }, &err) == GX_OK);
    gx_st_file f;
    memset(&f, 0, sizeof f);
    gx_wm_model wm;
    CHECK(gx_st_read(&f, p, &err) == GX_OK);
    gx_status s = gx_wm_checkpoint_load(&f, &wm, &err);
    CHECK_MSG(s == GX_OK, "%s", err.msg);
    gx_st_close(&f);
    if (s == GX_OK) {
        gx_ctx ctx;
        gx_ctx_init(&ctx, 16 << 20);
        ctx.grad_enabled = 0;
        gx_tensor *xt = gx_tensor_new(&ctx, 4, GX_SHAPE(N, 3, S, S)), *ct = gx_tensor_new(&ctx, 2, GX_SHAPE(N, 2));
        for (int64_t i = 0; i < xt->numel; i++) xt->data[i] = x[i];
        for (int i = 0; i < 2 * N; i++) ct->data[i] = coords[i];
        gx_wm_out o = gx_wm_forward(&ctx, &wm, xt, ct, 0);
        for (int i = 0; i < N; i++) {
            double mx = -INFINITY, sum = 0;
            for (int k = 0; k < K; k++) mx = fmax(mx, o.logits->data[i * K + k]);
            for (int k = 0; k < K; k++) sum += exp(o.logits->data[i * K + k] - mx);
            for (int k = 0; k < K; k++) {
                CHECK(lg[i * K + k] == o.logits->data[i * K + k]);
                CHECK(pr[i * K + k] == (float)(exp(o.logits->data[i * K + k] - mx) / sum));
            }
            CHECK(z[i] == o.redshift->data[i]);
        }
        gx_ctx_free(&ctx);
        gx_wm_free(&wm);
    }
    gx_serve_model_free(m);
    tserve_rmtree(dir);
}
