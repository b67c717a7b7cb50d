/*
 * test_train_state.c — the trainers' shared state file (trainer/gx_train_state.h):
 * weights, optimiser moments and the loop come back exactly, extras ride
 * along, and every mismatch (format, run, seed, missing key, foreign file)
 * is refused with a message naming the file and leaves the caller's weights
 * alone when the file is not a state file at all.
 */
#include "gx_test.h"
#include "gx_train_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TS_FORMAT "galaxyd-test-state-1"

static void ts_fill(gx_params *p, double v) {
    for (int i = 0; i < p->n; i++)
        for (int64_t k = 0; k < p->items[i]->t.numel; k++) p->items[i]->t.data[k] = (gx_real)(v + 0.25 * (double)k);
}

static void ts_registry(gx_params *p, double v) {
    gx_params_init(p);
    gx_params_add(p, "w", 2, GX_SHAPE(2, 3), GX_PARAM_DECAY);
    gx_params_add(p, "b", 1, GX_SHAPE(3), 0);
    ts_fill(p, v);
}

static void ts_path(char *path, size_t n) {
    snprintf(path, n, "/tmp/gx_train_state_%d.safetensors", (int)getpid());
}

/* Writes a state of (p, o) with the given format/seed/run and an extra key. */
static gx_status ts_write(const char *path, const gx_params *p, const gx_optim *o, const char *fmt, uint64_t seed,
                          int64_t run, gx_err *err) {
    gx_st_writer w;
    gx_st_writer_init(&w);
    gx_train_loop loop = { 6, run, 0.8125, 4 };
    gx_status s = gx_train_state_begin(&w, p, o, fmt, seed, &loop, err);
    if (s == GX_OK) s = gx_train_meta_num(&w, "extra", "%.17g", 0.1, err);
    if (s == GX_OK) s = gx_st_writer_write(&w, path, err);
    gx_st_writer_free(&w);
    return s;
}

GX_TEST(train_state_round_trip_and_refusals) {
    char path[128];
    ts_path(path, sizeof path);
    gx_params p, q;
    ts_registry(&p, 1.0);
    ts_registry(&q, -5.0);
    gx_optim_cfg c = gx_optim_defaults(GX_OPT_ADAM);
    gx_optim o, oq;
    gx_err err = {{0}};
    CHECK(gx_optim_init(&o, &p, &c, &err) == GX_OK && gx_optim_init(&oq, &q, &c, &err) == GX_OK);
    for (int64_t i = 0; i < o.state_len; i++) o.state[i] = (gx_real)(0.001 * (double)(i + 1));
    CHECK_MSG(ts_write(path, &p, &o, TS_FORMAT, 42, 7, &err) == GX_OK, "%s", err.msg);

    gx_st_file f;
    gx_train_loop loop;
    memset(&loop, 0, sizeof loop);
    CHECK_MSG(gx_train_state_open(&f, path, TS_FORMAT, "test state", 7, 42, &q, &oq, &loop, &err) == GX_OK, "%s",
              err.msg);
    CHECK(loop.epoch == 6 && loop.run_id == 7 && loop.best_acc == 0.8125 && loop.best_epoch == 4);
    CHECK(gx_st_meta(&f, "extra") && !strcmp(gx_st_meta(&f, "extra"), "0.10000000000000001"));
    int64_t e = 0;
    CHECK(gx_train_meta_i64(&f, "epoch", &e) && e == 6 && !gx_train_meta_i64(&f, "extra", &e));
    gx_st_close(&f);
    for (int i = 0; i < p.n; i++)
        CHECK(!memcmp(p.items[i]->t.data, q.items[i]->t.data, (size_t)p.items[i]->t.numel * sizeof(gx_real)));
    CHECK(o.state_len == oq.state_len && !memcmp(o.state, oq.state, (size_t)o.state_len * sizeof(gx_real)));

    /* Another run, another seed, another kind of state: refused, naming the file. */
    CHECK(gx_train_state_open(&f, path, TS_FORMAT, "test state", 8, 42, &q, &oq, &loop, &err) == GX_ERR_INVALID &&
          strstr(err.msg, "belongs to run 7") && strstr(err.msg, path));
    CHECK(gx_train_state_open(&f, path, TS_FORMAT, "test state", 7, 43, &q, &oq, &loop, &err) == GX_ERR_INVALID &&
          strstr(err.msg, "has seed 42"));
    CHECK(gx_train_state_open(&f, path, "galaxyd-other-1", "other state", 7, 42, &q, &oq, &loop, &err) ==
              GX_ERR_FORMAT && strstr(err.msg, "is not a other state file"));

    /* Not a safetensors file at all: an error, the weights untouched. */
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    if (fp) { fputs("not a state", fp); fclose(fp); }
    ts_fill(&q, -5.0);
    CHECK(gx_train_state_open(&f, path, TS_FORMAT, "test state", 7, 42, &q, &oq, &loop, &err) != GX_OK);
    CHECK(q.items[0]->t.data[0] == (gx_real)-5.0);
    CHECK(gx_train_state_open(&f, "/nonexistent/state.safetensors", TS_FORMAT, "test state", 7, 42, &q, &oq, &loop,
                              &err) != GX_OK);
    unlink(path);
    gx_optim_free(&o);
    gx_optim_free(&oq);
    gx_params_free(&p);
    gx_params_free(&q);
}
