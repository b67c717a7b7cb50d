/*
 * bench_kernels.c — timings of the engine's heavy ops, to be read beside
 * bench/ref_torch.py (PyTorch on the same shapes, same thread count, same
 * run); scripts/bench.sh joins the two outputs into one table.
 *
 * Design:
 *  - Every case runs in a forked child. An op that is still a stub (or that
 *    crashes) aborts only its child; the parent prints a `skip` line and goes
 *    on, so the harness is useful while the engine is being filled in. The
 *    parent itself never enters an OpenMP region or calls BLAS before a fork,
 *    so each child starts with a clean thread pool.
 *  - Inputs ("leaves") live in a context of their own that is never reset;
 *    the op runs in a second context that is reset after every call, so its
 *    arena high-water mark is exactly the memory the op needed: outputs,
 *    scratch, tape nodes, saved tensors and (fwd+bwd) every gradient.
 *  - Passes: `fwd` runs with grad_enabled = 0 and leaves not requiring grad
 *    (no tape); `fwd+bwd` sets grad_enabled = 1, every leaf requires grad,
 *    and runs gx_backward with a ones seed (seed NULL).
 *  - Timing: warm-up calls, then repeat until GX_BENCH_SECONDS (default 1 s)
 *    have passed and at least GX_BENCH_MINREPS (3) calls ran, or until
 *    GX_BENCH_MAXREPS (200) calls; the median time per call is reported.
 *    The timed region is the op call(s) plus gx_ctx_reset (the analogue of
 *    PyTorch freeing its tensors when they go out of scope).
 *
 * Output: tab-separated lines on stdout (see print_header()).
 *   meta   <key> <value>
 *   case   <op> <shape>          (announced before the op first runs)
 *   row    <op> <shape> <pass> <median_ms> <items_per_s> <gflops> <mem_bytes> <reps>
 *   peak   sgemm <shape> <median_ms> <gflops>
 *   skip   <op> <why>            (the case's child aborted: a stub or a crash)
 * gflops is "n/a" where the op's FLOPs are not well defined.
 *
 * FLOP formulas (multiply-add = 2 FLOPs; bias additions and elementwise
 * work not counted):
 *   linear  fwd 2*B*I*O;  fwd+bwd 3x fwd (dx = g W and dW = g^T x are one
 *           GEMM of the same size each).
 *   conv2d  fwd 2*B*Cout*Ho*Wo*(Cin/groups)*kh*kw; fwd+bwd 3x fwd (dx, dw).
 *           The depthwise case is the same formula with groups = C.
 *   sinkhorn fwd 4*B*iters*n^2 (the two n x n mat-vecs per iteration);
 *           fwd+bwd n/a (the backward's cost depends on what it recomputes).
 *   scan    n/a (dominated by exp and a sequential recurrence, not FLOPs).
 *   sgemm   2*M*N*K.
 *
 * Flags / environment:  --threads N (GX_BENCH_THREADS, default nproc),
 *   --seconds S (GX_BENCH_SECONDS), --ops LIST (GX_BENCH_OPS: comma-separated
 *   op names, exact match, e.g. "sgemm,linear"; default every case).
 *   GX_BENCH_MINREPS (3) and GX_BENCH_MAXREPS (200) bound the repetitions.
 */
#include "gx.h"
#include "gx_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ settings */

typedef struct bench_opts {
    int threads;
    double seconds;      /* target measuring time per (case, pass) */
    int min_reps, max_reps;
    const char *ops;     /* comma-separated op names, or NULL = every case */
} bench_opts;

static double env_num(const char *name, double dflt) {
    const char *s = getenv(name);
    return (s && *s) ? atof(s) : dflt;
}

static void opts_parse(bench_opts *o, int argc, char **argv) {
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = (int)env_num("GX_BENCH_THREADS", nproc > 0 ? (double)nproc : 1.0);
    o->seconds = env_num("GX_BENCH_SECONDS", 1.0);
    o->min_reps = (int)env_num("GX_BENCH_MINREPS", 3);
    o->max_reps = (int)env_num("GX_BENCH_MAXREPS", 200);
    o->ops = getenv("GX_BENCH_OPS");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) o->threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) o->seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc) o->ops = argv[++i];
        else { fprintf(stderr, "usage: %s [--threads N] [--seconds S] [--ops OP,OP]\n", argv[0]); exit(2); }
    }
    if (o->threads < 1) o->threads = 1;
    if (o->min_reps < 1) o->min_reps = 1;
    if (o->max_reps < o->min_reps) o->max_reps = o->min_reps;
    if (o->ops && !*o->ops) o->ops = NULL;
}

/* Whether op is one of the comma-separated names in list (NULL = all). */
static int opts_wants(const char *list, const char *op) {
    if (!list) return 1;
    size_t n = strlen(op);
    for (const char *p = list; *p; ) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, op, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- cases */

/* One benchmark case: the leaves it owns and how to call the op on them. */
typedef struct bench_case bench_case;
typedef gx_tensor *(*bench_fn)(gx_ctx *ctx, bench_case *c);

struct bench_case {
    const char *op;
    char shape[96];
    int64_t items;            /* samples per call (the batch size) */
    double flops_fwd;         /* 0 = not well defined */
    double flops_bwd_factor;  /* fwd+bwd FLOPs = factor * flops_fwd; 0 = n/a */
    bench_fn fn;
    gx_tensor *leaf[6];       /* differentiable inputs, in the inputs context */
    int n_leaves;
    gx_tensor *cost;          /* constant extra input (Sinkhorn's C) */
    int stride, padding, groups;
};

static gx_tensor *leaf_normal(gx_ctx *in, gx_rng *r, int ndim, const int64_t *shape, double mean, double std) {
    gx_tensor *t = gx_tensor_new(in, ndim, shape);
    gx_rng_fill_normal(r, t->data, t->numel, mean, std);
    return t;
}

static gx_tensor *leaf_uniform(gx_ctx *in, gx_rng *r, int ndim, const int64_t *shape, double lo, double hi) {
    gx_tensor *t = gx_tensor_new(in, ndim, shape);
    gx_rng_fill_uniform(r, t->data, t->numel, lo, hi);
    return t;
}

static gx_tensor *run_linear(gx_ctx *ctx, bench_case *c) {
    return gx_linear(ctx, c->leaf[0], c->leaf[1], c->leaf[2]);
}

static gx_tensor *run_conv(gx_ctx *ctx, bench_case *c) {
    return gx_conv2d(ctx, c->leaf[0], c->leaf[1], c->leaf[2], c->stride, c->padding, c->groups);
}

static gx_tensor *run_scan(gx_ctx *ctx, bench_case *c) {
    return gx_ssm_scan(ctx, c->leaf[0], c->leaf[1], c->leaf[2], c->leaf[3], c->leaf[4]);
}

/* The spec's HK settings: lambda 0.5, 50 iterations, eps 1e-4. */
static gx_tensor *run_sinkhorn(gx_ctx *ctx, bench_case *c) {
    return gx_sinkhorn_hk(ctx, c->leaf[0], c->leaf[1], c->cost, 0.5, 50, 1e-4);
}

/* linear I->O at batch B: x [B, I], w [O, I], b [O]. */
static void setup_linear(bench_case *c, gx_ctx *in, gx_rng *r, int64_t B, int64_t I, int64_t O) {
    c->op = "linear"; c->fn = run_linear; c->items = B;
    snprintf(c->shape, sizeof c->shape, "%lldx%lld->%lld", (long long)B, (long long)I, (long long)O);
    c->leaf[0] = leaf_normal(in, r, 2, GX_SHAPE(B, I), 0, 1);
    c->leaf[1] = leaf_normal(in, r, 2, GX_SHAPE(O, I), 0, 1.0 / sqrt((double)I));
    c->leaf[2] = leaf_normal(in, r, 1, GX_SHAPE(O), 0, 0.1);
    c->n_leaves = 3;
    c->flops_fwd = 2.0 * B * I * O; c->flops_bwd_factor = 3;
}

/* 3x3 conv, padding 1, stride 1: x [B, Cin, H, W], w [Cout, Cin/g, 3, 3], b [Cout]. */
static void setup_conv(bench_case *c, gx_ctx *in, gx_rng *r, const char *op, int64_t B,
                       int64_t Cin, int64_t Cout, int64_t H, int64_t W, int groups) {
    c->op = op; c->fn = run_conv; c->items = B;
    c->stride = 1; c->padding = 1; c->groups = groups;
    snprintf(c->shape, sizeof c->shape, "%lldx%lldx%lldx%lld->%lld", (long long)B, (long long)Cin,
             (long long)H, (long long)W, (long long)Cout);
    int64_t cg = Cin / groups;
    c->leaf[0] = leaf_normal(in, r, 4, GX_SHAPE(B, Cin, H, W), 0, 1);
    c->leaf[1] = leaf_normal(in, r, 4, GX_SHAPE(Cout, cg, 3, 3), 0, 1.0 / sqrt(9.0 * cg));
    c->leaf[2] = leaf_normal(in, r, 1, GX_SHAPE(Cout), 0, 0.1);
    c->n_leaves = 3;
    c->flops_fwd = 2.0 * B * Cout * H * W * cg * 9; c->flops_bwd_factor = 3;
}

/* Scan with a per-token delta [B, L, E] (the general, `token` mode).
 * delta in [1e-3, 0.1] like softplus outputs of a small projection;
 * A = -[1, 16] like -exp(A_log) after the usual S4D init. */
static void setup_scan(bench_case *c, gx_ctx *in, gx_rng *r, int64_t B, int64_t L, int64_t E, int64_t N) {
    c->op = "ssm_scan"; c->fn = run_scan; c->items = B;
    snprintf(c->shape, sizeof c->shape, "B%lld L%lld E%lld N%lld", (long long)B, (long long)L,
             (long long)E, (long long)N);
    c->leaf[0] = leaf_normal(in, r, 3, GX_SHAPE(B, L, E), 0, 1);
    c->leaf[1] = leaf_uniform(in, r, 3, GX_SHAPE(B, L, E), 1e-3, 0.1);
    c->leaf[2] = leaf_uniform(in, r, 2, GX_SHAPE(E, N), -16, -1);
    c->leaf[3] = leaf_normal(in, r, 2, GX_SHAPE(E, N), 0, 1);
    c->leaf[4] = leaf_normal(in, r, 2, GX_SHAPE(E, N), 0, 1);
    c->n_leaves = 5;
    c->flops_fwd = 0; c->flops_bwd_factor = 0;
}

/* Sinkhorn on n bins: a, b [B, n] positive rows summing to 1; the spec's
 * cost C_ij = (c_i - c_j)^2 + 1 on bin centres linspace(1e-6, 2, n). */
static void setup_sinkhorn(bench_case *c, gx_ctx *in, gx_rng *r, int64_t B, int64_t n) {
    c->op = "sinkhorn_hk"; c->fn = run_sinkhorn; c->items = B;
    snprintf(c->shape, sizeof c->shape, "B%lld n%lld it50", (long long)B, (long long)n);
    for (int k = 0; k < 2; k++) {
        gx_tensor *t = leaf_uniform(in, r, 2, GX_SHAPE(B, n), 0.1, 1.0);
        for (int64_t i = 0; i < B; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += t->data[i * n + j];
            for (int64_t j = 0; j < n; j++) t->data[i * n + j] = (gx_real)(t->data[i * n + j] / s);
        }
        c->leaf[k] = t;
    }
    c->n_leaves = 2;
    c->cost = gx_tensor_new(in, 2, GX_SHAPE(n, n));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double ci = 1e-6 + (2.0 - 1e-6) * i / (n - 1), cj = 1e-6 + (2.0 - 1e-6) * j / (n - 1);
            c->cost->data[i * n + j] = (gx_real)((ci - cj) * (ci - cj) + 1.0);
        }
    c->flops_fwd = 4.0 * B * 50 * n * n; c->flops_bwd_factor = 0;
}

/* --------------------------------------------------------------- timing */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One call: forward (and backward), then drop everything the op made. The
 * leaves' grad pointers point into the op arena, so they are cleared too. */
static void bench_call(gx_ctx *ctx, bench_case *c, int backward) {
    for (int i = 0; i < c->n_leaves; i++) {
        c->leaf[i]->grad = NULL;
        c->leaf[i]->requires_grad = (uint8_t)backward;
    }
    ctx->grad_enabled = backward;
    gx_tensor *out = c->fn(ctx, c);
    if (backward) gx_backward(ctx, out, NULL);
    gx_ctx_reset(ctx);
}

/* Warm-up, then repeat until the time budget or the rep cap; returns the
 * median seconds per call and fills *reps and *mem (arena high water). */
static double bench_measure(const bench_opts *o, bench_case *c, int backward, int *reps, size_t *mem) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    double t0 = now_s();
    bench_call(&ctx, c, backward);           /* warm-up: arena grows, caches fill */
    if (now_s() - t0 < 0.05 * o->seconds) bench_call(&ctx, c, backward);
    double *t = malloc((size_t)o->max_reps * sizeof *t);
    GX_ASSERT(t);
    int n = 0;
    double start = now_s();
    while (n < o->max_reps && (n < o->min_reps || now_s() - start < o->seconds)) {
        double a = now_s();
        bench_call(&ctx, c, backward);
        t[n++] = now_s() - a;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    *reps = n;
    *mem = ctx.arena.high_water;
    free(t);
    gx_ctx_free(&ctx);
    return med;
}

static void bench_case_run(const bench_opts *o, bench_case *c) {
    for (int backward = 0; backward <= 1; backward++) {
        int reps; size_t mem;
        double s = bench_measure(o, c, backward, &reps, &mem);
        double flops = backward ? c->flops_fwd * c->flops_bwd_factor : c->flops_fwd;
        char gf[32];
        if (flops > 0) snprintf(gf, sizeof gf, "%.2f", flops / s * 1e-9);
        else snprintf(gf, sizeof gf, "n/a");
        printf("row\t%s\t%s\t%s\t%.4f\t%.1f\t%s\t%zu\t%d\n", c->op, c->shape,
               backward ? "fwd+bwd" : "fwd", s * 1e3, (double)c->items / s, gf, mem, reps);
        fflush(stdout);
    }
}

/* sgemm peak: C = A B at M = N = K = 2048 through gx_gemm (cblas_sgemm). */
static void bench_sgemm(const bench_opts *o) {
    const int64_t n = 2048;
    gx_ctx in;
    gx_ctx_init(&in, 64 << 20);
    gx_rng r; gx_rng_init(&r, 7);
    gx_tensor *a = leaf_normal(&in, &r, 2, GX_SHAPE(n, n), 0, 1);
    gx_tensor *b = leaf_normal(&in, &r, 2, GX_SHAPE(n, n), 0, 1);
    gx_tensor *cc = gx_tensor_zeros(&in, 2, GX_SHAPE(n, n));
    gx_gemm(0, 0, n, n, n, 1.0, a->data, n, b->data, n, 0.0, cc->data, n);   /* warm-up */
    double t[64];
    int reps = 0;
    double start = now_s();
    while (reps < 64 && (reps < o->min_reps || now_s() - start < o->seconds)) {
        double s = now_s();
        gx_gemm(0, 0, n, n, n, 1.0, a->data, n, b->data, n, 0.0, cc->data, n);
        t[reps++] = now_s() - s;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    printf("peak\tsgemm\t%lldx%lldx%lld\t%.4f\t%.2f\n", (long long)n, (long long)n, (long long)n,
           med * 1e3, 2.0 * n * n * n / med * 1e-9);
    fflush(stdout);
    gx_ctx_free(&in);
}

/* ------------------------------------------------------------ the table */

typedef enum {
    CASE_SGEMM, CASE_LIN1, CASE_LIN32, CASE_LIN512, CASE_CONV1, CASE_CONV32, CASE_DW32,
    CASE_SCAN, CASE_SINKHORN, CASE_COUNT
} case_id;

static const char *case_op(case_id id) {
    switch (id) {
    case CASE_SGEMM: return "sgemm";
    case CASE_LIN1: case CASE_LIN32: case CASE_LIN512: return "linear";
    case CASE_CONV1: case CASE_CONV32: return "conv2d";
    case CASE_DW32: return "conv2d_dw";
    case CASE_SCAN: return "ssm_scan";
    default: return "sinkhorn_hk";
    }
}

/* Child body: build the inputs of one case and measure both passes. */
static void case_child(const bench_opts *o, case_id id) {
    gx_set_threads(o->threads);
    if (id == CASE_SGEMM) { bench_sgemm(o); return; }
    gx_ctx in;
    gx_ctx_init(&in, 64 << 20);
    gx_rng r; gx_rng_init(&r, 1234 + (uint64_t)id);
    bench_case c;
    memset(&c, 0, sizeof c);
    switch (id) {
    case CASE_LIN1:    setup_linear(&c, &in, &r, 1, 256, 256); break;
    case CASE_LIN32:   setup_linear(&c, &in, &r, 32, 256, 256); break;
    case CASE_LIN512:  setup_linear(&c, &in, &r, 512, 256, 256); break;
    case CASE_CONV1:   setup_conv(&c, &in, &r, "conv2d", 1, 128, 128, 64, 64, 1); break;
    case CASE_CONV32:  setup_conv(&c, &in, &r, "conv2d", 32, 128, 128, 64, 64, 1); break;
    case CASE_DW32:    setup_conv(&c, &in, &r, "conv2d_dw", 32, 128, 128, 64, 64, 128); break;
    case CASE_SCAN:    setup_scan(&c, &in, &r, 32, 64, 256, 16); break;
    default:           setup_sinkhorn(&c, &in, &r, 512, 40); break;
    }
    /* Announced before the op first runs, so that a stub's abort can be
     * attributed to a shape by scripts/bench.sh. */
    printf("case\t%s\t%s\n", c.op, c.shape);
    fflush(stdout);
    bench_case_run(o, &c);
    gx_ctx_free(&in);
}

static void print_header(const bench_opts *o) {
    printf("meta\tengine\tgalaxyd %s\n", GX_REAL_NAME);
    printf("meta\tthreads\t%d\n", o->threads);
    printf("meta\tseconds\t%g\n", o->seconds);
    printf("meta\tmemory\tarena high-water bytes of the op context (outputs, scratch, tape, saved, grads)\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    bench_opts o;
    opts_parse(&o, argc, argv);
    print_header(&o);
    for (int id = 0; id < CASE_COUNT; id++) {
        const char *op = case_op((case_id)id);
        if (!opts_wants(o.ops, op)) continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) { case_child(&o, (case_id)id); fflush(stdout); _exit(0); }
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            /* A stub (abort) or a crash: say so and keep going. */
            printf("skip\t%s\t%s\n", op, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "nonzero exit");
            fflush(stdout);
        }
    }
    return 0;   /* measurements, not pass/fail: a skipped case is reported, not fatal */
}
