/*
 * test_core.c — the engine's foundations: arena, tensors, tape, parameter
 * registry and the counter-based RNG.
 */
#include "gx_test.h"

#include "gx_math.h"
#include <string.h>
#include <unistd.h>

GX_TEST(arena_alignment_growth_and_coalescing_reset) {
    gx_arena a;
    gx_arena_init(&a, 1024, 0);
    void *p1 = gx_arena_alloc(&a, 10);
    void *p2 = gx_arena_alloc(&a, 3000);          /* forces a second block */
    CHECK(((uintptr_t)p1 % 64) == 0);
    CHECK(((uintptr_t)p2 % 64) == 0);
    CHECK(p1 != p2);
    size_t hw = a.high_water;
    CHECK(hw >= 3010);
    gx_arena_reset(&a);
    /* After a reset the arena is one block that holds the high-water mark. */
    CHECK(gx_arena_capacity(&a) >= hw);
    void *p3 = gx_arena_alloc(&a, 10);
    void *p4 = gx_arena_alloc(&a, 3000);
    CHECK(p3 && p4);
    CHECK(gx_arena_capacity(&a) >= hw);
    gx_arena_free(&a);
}

GX_TEST(arena_limit_refuses_without_growing) {
    gx_arena a;
    gx_arena_init(&a, 0, 4096);
    CHECK(gx_arena_alloc(&a, 4000) != NULL);
    CHECK(gx_arena_alloc(&a, 200) == NULL);
    CHECK(a.used_total <= 4096);
    gx_arena_free(&a);
}

GX_TEST(tensor_shapes_and_dims) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *t = gx_tensor_zeros(&ctx, 4, GX_SHAPE(2, 3, 5, 7));
    CHECK(t->numel == 210);
    CHECK(t->data[209] == 0);
    CHECK(gx_tensor_dim(t, -1) == 3);
    CHECK(gx_tensor_dim(t, 1) == 1);
    char buf[64];
    CHECK(strcmp(gx_tensor_shape_str(t, buf, sizeof buf), "[2,3,5,7]") == 0);
    gx_tensor *s = gx_tensor_scalar(&ctx, 3.5);
    CHECK(s->ndim == 0 && s->numel == 1 && s->data[0] == (gx_real)3.5);
    gx_ctx_free(&ctx);
}

/* A hand-written op (y = 3x) exercises the tape without any op family. */
static void triple_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *gx = gx_grad(ctx, n->in[0]);
    if (!gx) return;
    for (int64_t i = 0; i < n->out->numel; i++) gx[i] += 3 * n->out->grad[i];
}
static gx_tensor *triple(gx_ctx *ctx, gx_tensor *x) {
    gx_tensor *y = gx_tensor_like(ctx, x);
    for (int64_t i = 0; i < x->numel; i++) y->data[i] = 3 * x->data[i];
    gx_tape_record(ctx, "triple", triple_backward, y, 1, &x);
    return y;
}

GX_TEST(tape_records_only_when_needed_and_accumulates) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_params p;
    gx_params_init(&p);
    gx_tensor *w = gx_params_add(&p, "layer.weight", 1, GX_SHAPE(4), GX_PARAM_DECAY);
    for (int i = 0; i < 4; i++) w->data[i] = (gx_real)i;

    /* Grad disabled: nothing recorded. */
    gx_tensor *y0 = triple(&ctx, w);
    CHECK(ctx.n_nodes == 0 && !y0->requires_grad);

    ctx.grad_enabled = 1;
    gx_tensor *y = triple(&ctx, triple(&ctx, w));
    CHECK(ctx.n_nodes == 2 && y->requires_grad);
    gx_backward(&ctx, y, NULL);
    for (int i = 0; i < 4; i++) CHECK_NEAR(w->grad[i], 9.0, 0);
    /* A second backward accumulates into the parameter gradient. */
    gx_ctx_reset(&ctx);
    y = triple(&ctx, w);
    gx_backward(&ctx, y, NULL);
    CHECK_NEAR(w->grad[2], 12.0, 0);
    gx_params_scale_grad(&p, 0.5);
    CHECK_NEAR(w->grad[2], 6.0, 0);
    gx_params_zero_grad(&p);
    CHECK(w->grad[2] == 0);
    CHECK(ctx.n_nodes == 1);
    gx_ctx_reset(&ctx);
    CHECK(ctx.tape == NULL && ctx.n_nodes == 0);
    gx_params_free(&p);
    gx_ctx_free(&ctx);
}

GX_TEST(params_registry_names_flags_counts) {
    gx_params p;
    gx_params_init(&p);
    gx_tensor *w = gx_params_add(&p, "a.weight", 2, GX_SHAPE(3, 4), GX_PARAM_DECAY);
    gx_tensor *b = gx_params_add(&p, "a.bias", 1, GX_SHAPE(4), 0);
    gx_tensor *rm = gx_params_add(&p, "bn.running_mean", 1, GX_SHAPE(5), GX_PARAM_BUFFER);
    for (int i = 0; i < 100; i++) {          /* growth keeps pointers valid */
        char name[32];
        snprintf(name, sizeof name, "extra.%d", i);
        gx_params_add(&p, name, 1, GX_SHAPE(1), 0);
    }
    CHECK(gx_params_find(&p, "a.weight")->t.data == w->data);
    CHECK(&gx_params_find(&p, "a.bias")->t == b);
    CHECK(gx_params_find(&p, "nope") == NULL);
    CHECK(w->requires_grad && w->grad);
    CHECK(!rm->requires_grad && rm->grad == NULL);
    CHECK(gx_params_count(&p, 0) == 12 + 4 + 100);
    CHECK(gx_params_count(&p, GX_PARAM_BUFFER) == 5);
    CHECK(gx_params_count(&p, GX_PARAM_DECAY) == 12);
    CHECK(strcmp(w->name, "a.weight") == 0);
    gx_params_free(&p);
}

GX_TEST(rng_is_reproducible_and_well_distributed) {
    gx_rng a, b;
    gx_rng_init(&a, 42);
    gx_rng_init(&b, 42);
    enum { N = 200000 };
    static gx_real x[N], y[N];
    gx_rng_fill_normal(&a, x, N, 0, 1);
    gx_rng_fill_normal(&b, y, N, 0, 1);
    CHECK(memcmp(x, y, sizeof x) == 0);
    double m = 0, v = 0;
    for (int i = 0; i < N; i++) m += x[i];
    m /= N;
    for (int i = 0; i < N; i++) v += (x[i] - m) * (x[i] - m);
    v /= N;
    CHECK_NEAR(m, 0.0, 0.01);
    CHECK_NEAR(v, 1.0, 0.02);
    gx_rng_fill_uniform(&a, x, N, 2, 5);
    double lo = 10, hi = -10, mu = 0;
    for (int i = 0; i < N; i++) { lo = fmin(lo, x[i]); hi = fmax(hi, x[i]); mu += x[i]; }
    CHECK(lo >= 2 && hi < 5);
    CHECK_NEAR(mu / N, 3.5, 0.01);
    /* Splitting a fill in two gives the same values as one fill. */
    gx_rng c, d;
    gx_rng_init(&c, 7);
    gx_rng_init(&d, 7);
    gx_rng_fill_uniform(&c, x, 1000, 0, 1);
    gx_rng_fill_uniform(&d, y, 400, 0, 1);
    gx_rng_fill_uniform(&d, y + 400, 600, 0, 1);
    CHECK(memcmp(x, y, 1000 * sizeof(gx_real)) == 0);
    /* Different seeds and forks differ. */
    gx_rng e = gx_rng_fork(&c, 1), f = gx_rng_fork(&c, 2);
    CHECK(gx_rng_u32(&e) != gx_rng_u32(&f));
    /* Known-answer test for Philox4x32-10 (Random123 kat_vectors: zero
     * counter and key). */
    uint32_t w[4] = {0, 0, 0, 0};
    gx_philox4x32(w, 0, 0);
    CHECK(w[0] == 0x6627e8d5u && w[1] == 0xe169c58du && w[2] == 0xbc57ac4cu && w[3] == 0x9b00dbd8u);
}

/* gx_ctx_for_parts: what each part saw. */
#define PARTS_MAX 16
typedef struct {
    int64_t lo[PARTS_MAX], hi[PARTS_MAX];
    gx_ctx *ctx[PARTS_MAX];
    int fresh[PARTS_MAX];        /* the part's ctx held nothing when it began */
    int calls, nested_threads;
    double sum[PARTS_MAX];
} parts_log;

static void parts_record(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    parts_log *L = arg;
    int i;
    #pragma omp atomic capture
    i = L->calls++;
    if (i >= PARTS_MAX) return;
    L->lo[i] = lo;
    L->hi[i] = hi;
    L->ctx[i] = ctx;
    L->fresh[i] = ctx->arena.used_total == 0;
    /* Ops inside a part run on one thread, and the part's ctx works. */
    #pragma omp parallel
    {
        #pragma omp atomic
        L->nested_threads++;
    }
    gx_tensor *t = gx_tensor_new(ctx, 1, GX_SHAPE(hi - lo));
    for (int64_t k = 0; k < t->numel; k++) t->data[k] = (gx_real)(lo + k);
    gx_tensor *s = gx_sum(ctx, t, 0, 0);
    L->sum[i] = (double)s->data[0];
}

/* The parts tile [0, n) in order, one each, sizes within one; their count
 * follows threads, n and max_parts (a multiple of the threads, up to 4 per
 * thread while parts keep 8 rows); a lone part runs on the caller's ctx,
 * several on side contexts, each part on a reset one; one call with grad on
 * or at one thread; side contexts are kept and reset. */
GX_TEST(ctx_for_parts_splits_and_falls_back) {
    int saved = gx_get_threads();
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    static const struct { int threads; int64_t n; int maxp, want; } cs[] = {
        { 2, 10, 0, 2 }, { 3, 10, 0, 3 }, { 3, 2, 0, 2 }, { 4, 9, 3, 3 }, { 1, 10, 0, 1 }, { 3, 1, 0, 1 },
        { 2, 31, 0, 2 }, { 2, 32, 0, 4 }, { 2, 48, 0, 6 }, { 2, 64, 0, 8 }, { 2, 128, 0, 8 }, { 3, 24, 0, 3 },
        { 3, 48, 0, 6 }, { 2, 64, 5, 5 },
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        gx_set_threads(cs[c].threads);
        parts_log L;
        memset(&L, 0, sizeof L);
        int np = gx_ctx_for_parts(&ctx, cs[c].n, cs[c].maxp, parts_record, &L);
        CHECK(gx_get_threads() == cs[c].threads);   /* the parts' one-thread setting does not leak */
        CHECK_MSG(np == cs[c].want && L.calls == np, "threads %d n %lld: %d parts, %d calls, want %d", cs[c].threads,
                  (long long)cs[c].n, np, L.calls, cs[c].want);
        /* Every part's regions have one thread, a lone part's too. */
        CHECK(L.nested_threads == np);
        /* Parts in order by lo (the threads may run them in any order). */
        int64_t covered = 0, mn = cs[c].n, mx = 0;
        for (int64_t at = 0; at < cs[c].n;) {
            int k = -1;
            for (int i = 0; i < L.calls && i < PARTS_MAX; i++)
                if (L.lo[i] == at) k = i;
            CHECK_MSG(k >= 0, "no part starts at %lld", (long long)at);
            if (k < 0) break;
            int64_t len = L.hi[k] - L.lo[k];
            if (len < mn) mn = len;
            if (len > mx) mx = len;
            CHECK(L.sum[k] == (double)(L.lo[k] + L.hi[k] - 1) * (double)len / 2);
            if (np == 1) CHECK(L.ctx[k] == &ctx);
            else CHECK(L.ctx[k] >= ctx.side && L.ctx[k] < ctx.side + cs[c].threads && L.fresh[k]);
            covered += len;
            at = L.hi[k];
        }
        CHECK(covered == cs[c].n && mx - mn <= 1);
    }
    CHECK(ctx.n_side == 3);                 /* one per thread of the widest split call */
    for (int i = 0; i < ctx.n_side; i++) CHECK(ctx.side[i].arena.used_total == 0);
    gx_set_threads(2);
    ctx.grad_enabled = 1;
    parts_log L;
    memset(&L, 0, sizeof L);
    CHECK(gx_ctx_for_parts(&ctx, 10, 0, parts_record, &L) == 1 && L.lo[0] == 0 && L.hi[0] == 10);
    ctx.grad_enabled = 0;
    memset(&L, 0, sizeof L);
    CHECK(gx_ctx_for_parts(&ctx, 0, 0, parts_record, &L) == 0 && L.calls == 0);
    gx_ctx_free(&ctx);
    gx_set_threads(saved);
}

/* A thread held up in one part does not hold the others' parts: part 0
 * waits until the other seven are done (2 s at most), which only a thread
 * that takes parts as it gets free can do; with parts dealt out in advance
 * the wait would run out and part 0's thread would then run its share. */
typedef struct {
    int done, waited_out;
    gx_ctx *ctx[8];
} parts_stall;

static void parts_stall_part(gx_ctx *ctx, int64_t lo, int64_t hi, void *arg) {
    parts_stall *S = arg;
    int64_t i = lo / (hi - lo);
    S->ctx[i] = ctx;
    if (i == 0) {
        for (int ms = 0;; ms++) {
            int d;
            #pragma omp atomic read
            d = S->done;
            if (d == 7) break;
            if (ms == 2000) { S->waited_out = 1; break; }
            usleep(1000);
        }
        return;
    }
    #pragma omp atomic
    S->done++;
}

GX_TEST(ctx_for_parts_balances_a_stalled_thread) {
    int saved = gx_get_threads();
    gx_set_threads(2);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    parts_stall S;
    memset(&S, 0, sizeof S);
    CHECK(gx_ctx_for_parts(&ctx, 64, 0, parts_stall_part, &S) == 8);
    CHECK(!S.waited_out && S.done == 7);
    for (int i = 1; i < 8; i++) CHECK(S.ctx[i] != S.ctx[0]);   /* the other thread ran them all */
    gx_ctx_free(&ctx);
    gx_set_threads(saved);
}
