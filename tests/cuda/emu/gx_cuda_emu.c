/*
 * gx_cuda_emu.c — the CUDA backend emulated on the host, for tests only
 * (make test-cuda-emu, mk/cuda_emu.mk; never part of a normal libgalaxyd.a).
 *
 * Defines what the .cu files of kernels/cuda define in a CUDA build: the
 * runtime side of gx_cuda.h (probe, device backend, pinned buffers,
 * streams, copies) and
 * every gx_cu_* launcher, on host memory ("device" pointers are malloc'd by
 * gx_cuda_host_backend). With it, an exec made by gx_cuda_exec_init is a
 * real (not "emulated") exec, so every device op of
 * kernels/cuda/gx_cuda_ops_*.c, gx_device.c's transfers, the optimiser's
 * device path and the models on device tensors run without a GPU, and
 * tests/cuda/dispatch_*.c compare them against the CPU ops.
 *
 * How a launcher is emulated: the forward runs the CPU op on gx_tensor
 * structs wrapping the launcher's pointers (in the stream's scratch ctx,
 * which has no device: the CPU code runs) and copies the result out; the
 * backward runs the same op with the tape on, each input wrapped with
 * grad = the launcher's accumulation target (requires_grad 0 when NULL),
 * and gx_backward with the launcher's g, which ACCUMULATES as the launchers
 * must. Statistics a forward saves for its backward (norm mean/rstd,
 * cross-entropy lse, l2 norms, pairwise row norms, sinkhorn matrices and
 * denominators) are written in the launcher's documented layout, and the
 * backward reads them from there (where its CPU formula needs them), so a
 * device op that passes the wrong buffer fails. Scratch buffers are filled
 * with NaN over the size the launcher documents: an under-sized scratch
 * shows up under ASan, a read of stale scratch as NaN.
 *
 * Strictness: like cuBLAS, a GEMM with a negative size or a leading
 * dimension below max(1, rows) records an error that the next
 * gx_cuda_stream_sync returns (naming the launcher); other argument errors
 * trip the CPU ops' assertions.
 *
 * Not emulated: asynchrony (everything runs when launched), atomics' run to
 * run variation, TF32 (the flag is kept, the math stays FP32), the scratch
 * contents of im2col/upconv/sums (NaN-filled, never read back).
 *
 * The guard on device memory: on a GPU, host code that dereferences a
 * device pointer (t->data of a device tensor, a parameter's data after
 * gx_params_to_cuda, a memcpy from gx_cuda_ctx_alloc memory) crashes; over
 * plain host memory it would silently work here. So the device backend of
 * this file maps every slab with its own mmap, PROT_NONE except while
 * emulated device code runs (a launcher, an upload/download/memset0): any
 * other host access faults, SIGSEGV at the faulting line (under ASan a SEGV
 * report with its stack; in gdb, `bt`). Opening is counted over all threads
 * (galaxyd's workers launch at once): the slabs go back to PROT_NONE when the
 * last launch in flight ends. What it cannot catch: a host access made while
 * another thread is inside a launch (the slabs are readable then), and a
 * host read of memory that is not device memory (pinned buffers, the
 * emulated exec's malloc pool of gx_cuda_host_backend). GX_EMU_GUARD=0 turns
 * the guard off (slabs stay read-write: to debug a failure past the fault).
 *
 * Injected device faults, for the failure paths of galaxy-train and galaxyd
 * (tests/cli/test_device_faults.py). Environment variables, read once, at
 * the first launch, copy or device allocation; unset, nothing changes:
 *   GX_EMU_FAULT_AT=N      the N-th launch (1-based, counted over the whole
 *                          process and all threads: every gx_cu_* launcher
 *                          and every gx_cuda_upload/download/memset0) records
 *                          "an illegal memory access was encountered
 *                          (emulated fault at launch N)" on its stream, which
 *                          the next gx_cuda_stream_sync returns, and does not
 *                          run (its outputs keep their old contents).
 *   GX_EMU_FAULT_STICKY=1  the fault is sticky, as after a real illegal
 *                          access: every later launch and copy on any stream
 *                          fails the same way (and does not run), and every
 *                          sync of any stream returns the error again. By
 *                          default (0) the fault is one-shot: the sync that
 *                          reports it clears it.
 *   GX_EMU_DEVICE_BYTES=B  the device has B bytes: an allocation that would
 *                          take the live slabs (bytes asked, summed) past B
 *                          fails (NULL, like cudaMalloc out of memory).
 *   GX_EMU_FAULT_COUNT=1   prints "gx_cuda_emu: N launches" on stderr at exit
 *                          (how a test finds the N of a launch in a run).
 */
#include "gx_impl.h"
#include "gx_cuda.h"
#include "gx_conv.h"
#include "gx_elem.h"
#include "gx_matmul.h"
#include "gx_norm.h"
#include "gx_optim.h"
#include "gx_pool.h"
#include "gx_reduce.h"
#include "gx_scan.h"
#include "gx_shape.h"
#include "gx_sinkhorn.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct gx_cuda_stream {
    int  device, tf32;        /* tf32: the GEMMs round their inputs to TF32 (emu_gemm) */
    gx_ctx scratch;           /* the CPU ops' temporaries, reset per launch */
    char first_err[200];      /* first launcher error since the last sync */
    int  skip;                /* gx_cuda_stream_fail: launches and copies are no-ops until the sync */
    int  capturing;           /* inside gx_cuda_graph_capture: launches are counted, not run */
    long long launched;       /* launches on this stream, run or captured (a replay's check) */
};

/* ---------------------------------------------- device memory and its guard */

typedef struct {
    void  *p;
    size_t len;               /* page-rounded, for munmap/mprotect */
    size_t bytes;             /* as asked: what GX_EMU_DEVICE_BYTES counts */
} emu_slab;

/* Every slab of the emulated device, process-wide like a GPU's memory (and
 * test-only): the one mutable global of the emulation. open counts the
 * launches in progress over all threads; the slabs are read-write while it
 * is above 0. guard: -1 until GX_EMU_GUARD is read, then 0 (off) or 1.
 * The injected faults (see the file comment) live here too, under the same
 * mutex: cfg 0 until their variables are read; launches counts every
 * launcher and copy; faulted is the launch that faulted (0: none yet);
 * live the bytes of the slabs, limit GX_EMU_DEVICE_BYTES (0: none). */
static struct {
    pthread_mutex_t mu;
    emu_slab *v;
    int n, cap, open, guard;
    int cfg, sticky, report;
    long long fault_at, launches, faulted;
    size_t live, limit;
} emu_mem = { .mu = PTHREAD_MUTEX_INITIALIZER, .guard = -1 };

static int emu_guard_locked(void) {
    if (emu_mem.guard < 0) {
        const char *e = getenv("GX_EMU_GUARD");
        emu_mem.guard = !(e && strcmp(e, "0") == 0);
    }
    return emu_mem.guard;
}

/* A fault variable's value (a non-negative integer), 0 when unset; anything
 * else is a mistake in the test that set it. */
static long long emu_env_count(const char *name) {
    const char *e = getenv(name);
    if (!e || !*e) return 0;
    char *end;
    long long v = strtoll(e, &end, 10);
    GX_ASSERT_MSG(*end == 0 && v >= 0, "emulation: %s='%s' is not a non-negative integer", name, e);
    return v;
}

static void emu_report_launches(void) {
    pthread_mutex_lock(&emu_mem.mu);
    fprintf(stderr, "gx_cuda_emu: %lld launches\n", emu_mem.launches);
    pthread_mutex_unlock(&emu_mem.mu);
}

/* Reads the fault variables once (the first launch, copy or device alloc). */
static void emu_config_locked(void) {
    if (emu_mem.cfg) return;
    emu_mem.cfg = 1;
    emu_mem.fault_at = emu_env_count("GX_EMU_FAULT_AT");
    emu_mem.sticky = emu_env_count("GX_EMU_FAULT_STICKY") != 0;
    emu_mem.limit = (size_t)emu_env_count("GX_EMU_DEVICE_BYTES");
    emu_mem.report = emu_env_count("GX_EMU_FAULT_COUNT") != 0;
    if (emu_mem.report) GX_ASSERT_MSG(atexit(emu_report_launches) == 0, "emulation: atexit failed");
}

/* One mprotect per run of adjacent slabs (the table is sorted by address,
 * and mmap tends to place slabs next to each other): the guard's cost is
 * mostly these calls, twice per launch. */
static void emu_protect_locked(int prot) {
    for (int i = 0; i < emu_mem.n;) {
        char *start = emu_mem.v[i].p, *end = start + emu_mem.v[i].len;
        for (i++; i < emu_mem.n && (char *)emu_mem.v[i].p == end; i++) end += emu_mem.v[i].len;
        GX_ASSERT_MSG(mprotect(start, (size_t)(end - start), prot) == 0,
                      "emulation: mprotect of %zu bytes of device slabs failed", (size_t)(end - start));
    }
}

/* Device code starts / ends (nests, and any thread may be inside). */
static void emu_open(void) {
    pthread_mutex_lock(&emu_mem.mu);
    if (emu_guard_locked() && emu_mem.open++ == 0) emu_protect_locked(PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&emu_mem.mu);
}
static void emu_close(void) {
    pthread_mutex_lock(&emu_mem.mu);
    if (emu_guard_locked()) {
        GX_ASSERT_MSG(emu_mem.open > 0, "emulation: device code closed more often than opened");
        if (--emu_mem.open == 0) emu_protect_locked(PROT_NONE);
    }
    pthread_mutex_unlock(&emu_mem.mu);
}

/* The backend's alloc: a slab of its own, read-write only while device code
 * runs (so one made inside a launch starts read-write). NULL on failure,
 * like cudaMalloc's error. */
static void *emu_dev_alloc(void *user, size_t bytes) {
    (void)user;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), len = bytes ? (bytes + page - 1) / page * page : page;
    void *p = NULL;
    pthread_mutex_lock(&emu_mem.mu);
    emu_config_locked();
    if (emu_mem.limit && bytes > emu_mem.limit - emu_mem.live) goto out;   /* cudaMalloc: out of memory */
    if (emu_mem.n == emu_mem.cap) {
        int cap = emu_mem.cap ? 2 * emu_mem.cap : 64;
        emu_slab *v = realloc(emu_mem.v, (size_t)cap * sizeof *v);
        if (!v) goto out;
        emu_mem.v = v;
        emu_mem.cap = cap;
    }
    const int prot = !emu_guard_locked() || emu_mem.open > 0 ? PROT_READ | PROT_WRITE : PROT_NONE;
    p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        p = NULL;
        goto out;
    }
    /* Huge pages where the kernel has them: mprotect's cost grows with the
     * page-table entries it rewrites, 512 times fewer over 2 MiB pages (the
     * guard flips every slab twice per launch). A hint: failure is fine. */
    (void)madvise(p, len, MADV_HUGEPAGE);
    int i = emu_mem.n++;      /* sorted insert */
    for (; i > 0 && (char *)emu_mem.v[i - 1].p > (char *)p; i--) emu_mem.v[i] = emu_mem.v[i - 1];
    emu_mem.v[i] = (emu_slab){ p, len, bytes };
    emu_mem.live += bytes;
out:
    pthread_mutex_unlock(&emu_mem.mu);
    return p;
}

static void emu_dev_free(void *user, void *p) {
    (void)user;
    if (!p) return;
    pthread_mutex_lock(&emu_mem.mu);
    int i = 0;
    while (i < emu_mem.n && emu_mem.v[i].p != p) i++;
    GX_ASSERT_MSG(i < emu_mem.n, "emulation: free of %p, not a device slab", p);
    const size_t len = emu_mem.v[i].len;
    emu_mem.live -= emu_mem.v[i].bytes;
    memmove(&emu_mem.v[i], &emu_mem.v[i + 1], (size_t)(emu_mem.n - i - 1) * sizeof *emu_mem.v);
    emu_mem.n--;
    GX_ASSERT(munmap(p, len) == 0);
    if (emu_mem.n == 0) {     /* the last slab: the table goes too (LSan) */
        free(emu_mem.v);
        emu_mem.v = NULL;
        emu_mem.cap = 0;
    }
    pthread_mutex_unlock(&emu_mem.mu);
}

/* ------------------------------------------------------------- runtime */

int gx_cuda_probe(char *why, size_t n) {
    if (why && n) snprintf(why, n, "emulated on the host (no GPU)");
    return 1;
}

gx_status gx_cuda_device_backend(int device, gx_cuda_backend *out, gx_err *err) {
    if (device != 0)
        return gx_err_set(err, GX_ERR_INVALID, "gx_cuda_device_backend: device %d not available (1 found)", device);
    *out = (gx_cuda_backend){ emu_dev_alloc, emu_dev_free, NULL };
    return GX_OK;
}

gx_status gx_cuda_host_alloc(size_t bytes, void **out, gx_err *err) {
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_host_alloc: %zu bytes", bytes);
    return GX_OK;
}

void gx_cuda_host_free(void *p) { free(p); }

gx_status gx_cuda_stream_create(int device, int tf32, gx_cuda_stream **out, gx_err *err) {
    *out = NULL;
    if (device != 0) return gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_stream_create: device %d: no such device", device);
    gx_cuda_stream *s = calloc(1, sizeof *s);
    if (!s) return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_stream_create: out of host memory");
    s->device = device;
    s->tf32 = tf32;
    gx_ctx_init(&s->scratch, 1 << 20);
    *out = s;
    return GX_OK;
}

void gx_cuda_stream_destroy(gx_cuda_stream *s) {
    if (!s) return;
    gx_ctx_free(&s->scratch);
    free(s);
}

static void emu_note(gx_cuda_stream *s, const char *fmt, ...) {
    if (s->first_err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->first_err, sizeof s->first_err, fmt, ap);
    va_end(ap);
}

/* The injected fault's words (what cudaGetErrorString says for
 * cudaErrorIllegalAddress, and which launch it was). */
static void emu_note_fault(gx_cuda_stream *s, long long at) {
    emu_note(s, "an illegal memory access was encountered (emulated fault at launch %lld)", at);
}

/* Every launcher and copy starts here: counts the launch and answers 1 when
 * it faults (GX_EMU_FAULT_AT, or any launch after a sticky fault). A faulted
 * launch records the error on its stream and does not run: its outputs keep
 * whatever they held, like a kernel killed by the fault. */
static int emu_launch_faults(gx_cuda_stream *s) {
    if (s->skip) return 1;    /* a failed stream runs nothing until its sync (gx_cuda_stream_fail) */
    s->launched++;
    if (s->capturing) return 1;   /* recorded into the graph, not run (as on a GPU) */
    pthread_mutex_lock(&emu_mem.mu);
    emu_config_locked();
    const long long n = ++emu_mem.launches;
    int fault = emu_mem.sticky && emu_mem.faulted;
    if (emu_mem.fault_at && n == emu_mem.fault_at) {
        emu_mem.faulted = n;
        fault = 1;
    }
    const long long at = emu_mem.faulted;
    pthread_mutex_unlock(&emu_mem.mu);
    if (fault) emu_note_fault(s, at);
    return fault;
}

/* After a sticky fault every sync on every stream reports it again (a CUDA
 * context is unusable after an illegal access); otherwise the sync that
 * reports an error clears it. */
/* What the real backend refuses inside a capture (kernels/cuda/gx_cuda_mem.cu):
 * a copy (the graph would replay a stale host buffer) or a wait. */
static int emu_refuse_in_capture(gx_cuda_stream *s, const char *what) {
    if (!s->capturing) return 0;
    emu_note(s, "%s inside a CUDA graph capture (not capturable)", what);
    return 1;
}

gx_status gx_cuda_stream_sync(gx_cuda_stream *s, gx_err *err) {
    if (emu_refuse_in_capture(s, "a wait for the stream"))
        return gx_err_set(err, GX_ERR_INVALID, "cuda: %s", s->first_err);
    pthread_mutex_lock(&emu_mem.mu);
    const long long sticky_at = emu_mem.sticky ? emu_mem.faulted : 0;
    pthread_mutex_unlock(&emu_mem.mu);
    if (sticky_at) emu_note_fault(s, sticky_at);
    if (!s->first_err[0]) return GX_OK;
    gx_status st = gx_err_set(err, GX_ERR_INVALID, "cuda: %s", s->first_err);
    s->first_err[0] = 0;
    return st;
}

void gx_cuda_upload(gx_cuda_stream *s, void *dst, const void *src, size_t bytes) {
    if (!s->skip && emu_refuse_in_capture(s, "a host-to-device copy")) return;
    if (emu_launch_faults(s)) return;
    emu_open();
    if (bytes) memcpy(dst, src, bytes);
    emu_close();
}
void gx_cuda_stream_fail(gx_cuda_stream *s, const char *msg) {
    emu_note(s, "%s", msg);
    s->skip = 1;
}

void gx_cuda_stream_resume(gx_cuda_stream *s) { s->skip = 0; }

void gx_cuda_download(gx_cuda_stream *s, void *dst, const void *src, size_t bytes) {
    if (s->skip) {
        memset(dst, 0xff, bytes);   /* NaN bytes, as the real backend's skipped download */
        return;
    }
    if (emu_refuse_in_capture(s, "a device-to-host copy")) {
        memset(dst, 0xff, bytes);
        return;
    }
    if (emu_launch_faults(s)) return;
    emu_open();
    if (bytes) memcpy(dst, src, bytes);
    emu_close();
}
void gx_cuda_memset0(gx_cuda_stream *s, void *dst, size_t bytes) {
    if (emu_launch_faults(s)) return;
    emu_open();
    if (bytes) memset(dst, 0, bytes);
    emu_close();
}

/* -------------------------------------------------------------- graphs */

/* A graph here is its body: the capture counts the body's launches (and
 * runs none of them); a replay runs the body again, for real, and checks
 * that it launches as many. What a GPU graph would get wrong shows up: a
 * body that depends on host state changes its launch count or its answers,
 * and a copy or wait inside it fails the capture. */
struct gx_cuda_graph {
    gx_cuda_graph_body body;
    void *arg;
    long long launches;
};

gx_status gx_cuda_graph_capture(gx_cuda_stream *s, gx_cuda_graph_body body, void *arg, gx_cuda_graph **out,
                                gx_err *err) {
    *out = NULL;
    if (s->skip || s->first_err[0])
        return gx_err_set(err, GX_ERR_INVALID, "gx_cuda_graph_capture: the stream has an error pending (%s)",
                          s->first_err);
    const long long before = s->launched;
    s->capturing = 1;
    body(arg);
    s->capturing = 0;
    if (s->first_err[0] || s->skip) {
        gx_status st = gx_err_set(err, GX_ERR_UNSUPPORTED, "gx_cuda_graph_capture: %s", s->first_err);
        s->first_err[0] = 0;
        s->skip = 0;
        return st;
    }
    gx_cuda_graph *g = calloc(1, sizeof *g);
    if (!g) return gx_err_set(err, GX_ERR_NOMEM, "gx_cuda_graph_capture: out of host memory");
    g->body = body;
    g->arg = arg;
    g->launches = s->launched - before;
    *out = g;
    return GX_OK;
}

void gx_cuda_graph_launch(gx_cuda_stream *s, gx_cuda_graph *g) {
    if (s->skip) return;
    const long long before = s->launched;
    g->body(g->arg);
    if (s->launched - before != g->launches)
        emu_note(s, "gx_cuda_graph_launch: the replayed body made %lld launches, the capture recorded %lld "
                 "(host-dependent work in a graph body)", s->launched - before, g->launches);
}

void gx_cuda_graph_destroy(gx_cuda_graph *g) { free(g); }

/* ------------------------------------------------------------- helpers */

/* One launch: device memory open, and the stream's scratch ctx (backward:
 * tape on). Every access of a launcher to device memory lies between
 * emu_begin and emu_end, or emu_open and emu_close for the launchers that
 * need no ctx. */
static gx_ctx *emu_begin(gx_cuda_stream *s, int backward) {
    emu_open();
    gx_ctx *c = &s->scratch;
    c->grad_enabled = backward;
    return c;
}
static void emu_end(gx_cuda_stream *s) {
    gx_ctx_reset(&s->scratch);
    emu_close();
}

/* A host tensor over p (zeros when p is NULL: an input a backward launcher
 * does not get, where the gradient does not depend on it); grad = the
 * launcher's accumulation target, or NULL (no gradient wanted). */
static gx_tensor *W(gx_ctx *c, const float *p, int nd, const int64_t *shape, float *grad) {
    gx_tensor *t = gx_ctx_alloc(c, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = nd;
    for (int i = 0; i < nd; i++) t->shape[i] = shape[i];
    t->numel = gx_shape_numel(nd, shape);
    if (p) {
        t->data = (float *)p;
    } else {
        t->data = gx_ctx_alloc(c, (size_t)(t->numel ? t->numel : 1) * sizeof(float));
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
    }
    t->grad = grad;
    t->requires_grad = grad != NULL;
    return t;
}
/* Wrap for an optional input (bias, gamma): NULL stays NULL. */
static gx_tensor *Wopt(gx_ctx *c, const float *p, int nd, const int64_t *shape, float *grad) {
    return p ? W(c, p, nd, shape, grad) : NULL;
}
/* Optional input whose gradient is wanted although the launcher does not
 * pass its values (bias gradients: they do not depend on the bias). */
static gx_tensor *Wgrad(gx_ctx *c, int nd, const int64_t *shape, float *grad) {
    return grad ? W(c, NULL, nd, shape, grad) : NULL;
}

static void emu_out(float *dst, const gx_tensor *y) {
    if (dst && y->numel) memcpy(dst, y->data, (size_t)y->numel * sizeof(float));
}
static void emu_backward(gx_ctx *c, gx_tensor *y, const float *g) {
    if (y->requires_grad) gx_backward(c, y, g);
}
static void nan_f(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}
static void nan_d(double *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}

/* ----------------------------------------------------------- elementwise */

static gx_tensor *emu_unary(gx_ctx *c, gx_cu_unary op, double p0, double p1, gx_tensor *x) {
    switch (op) {
    case GX_CU_RELU: return gx_relu(c, x);
    case GX_CU_LEAKY_RELU: return gx_leaky_relu(c, x, p0);
    case GX_CU_GELU: return gx_gelu(c, x);
    case GX_CU_SILU: return gx_silu(c, x);
    case GX_CU_SIGMOID: return gx_sigmoid(c, x);
    case GX_CU_SOFTPLUS: return gx_softplus(c, x);
    case GX_CU_TANH: return gx_tanh(c, x);
    case GX_CU_EXP: return gx_exp(c, x);
    case GX_CU_LOG: return gx_log(c, x);
    case GX_CU_ATAN: return gx_atan(c, x);
    case GX_CU_SIN: return gx_sin(c, x);
    case GX_CU_COS: return gx_cos(c, x);
    case GX_CU_SQRT: return gx_sqrt(c, x);
    case GX_CU_SQUARE: return gx_square(c, x);
    case GX_CU_ABS: return gx_abs(c, x);
    case GX_CU_NEG: return gx_neg(c, x);
    case GX_CU_AFFINE: return gx_affine(c, x, p0, p1);
    case GX_CU_POW: return gx_pow_scalar(c, x, p0);
    case GX_CU_CLAMP: return gx_clamp(c, x, p0, p1);
    case GX_CU_STEP: return gx_step(c, x, p0);
    default: GX_ASSERT_MSG(0, "emulation: unary op %d out of range", (int)op);
    }
    return NULL;
}

void gx_cu_unary_fwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1, const float *x, float *y, int64_t n) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, emu_unary(c, op, p0, p1, W(c, x, 1, &n, NULL)));
    emu_end(s);
}

void gx_cu_unary_bwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1, const float *x, const float *y,
                     const float *g, float *gx, int64_t n) {
    if (emu_launch_faults(s)) return;
    (void)y;                  /* recomputed from x by the CPU op */
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, emu_unary(c, op, p0, p1, W(c, x, 1, &n, gx)), g);
    emu_end(s);
}

static gx_tensor *emu_binary(gx_ctx *c, gx_cu_binary op, gx_tensor *a, gx_tensor *b) {
    switch (op) {
    case GX_CU_ADD: return gx_add(c, a, b);
    case GX_CU_SUB: return gx_sub(c, a, b);
    case GX_CU_MUL: return gx_mul(c, a, b);
    case GX_CU_DIV: return gx_div(c, a, b);
    case GX_CU_MAX: return gx_maximum(c, a, b);
    default: GX_ASSERT_MSG(0, "emulation: binary op %d out of range", (int)op);
    }
    return NULL;
}

static void emu_check_out(const gx_tensor *y, int no, const int64_t *oshape, const char *fn) {
    GX_ASSERT_MSG(y->ndim == no && gx_shape_numel(no, oshape) == y->numel, "%s: output shape does not broadcast", fn);
    for (int i = 0; i < no; i++) GX_ASSERT_MSG(y->shape[i] == oshape[i], "%s: output dim %d differs", fn, i);
}

void gx_cu_binary_fwd(gx_cuda_stream *s, gx_cu_binary op, const float *a, int na, const int64_t *ashape,
                      const float *b, int nb, const int64_t *bshape, float *out, int no, const int64_t *oshape) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    gx_tensor *y = emu_binary(c, op, W(c, a, na, ashape, NULL), W(c, b, nb, bshape, NULL));
    emu_check_out(y, no, oshape, __func__);
    emu_out(out, y);
    emu_end(s);
}

void gx_cu_binary_bwd(gx_cuda_stream *s, gx_cu_binary op, const float *a, int na, const int64_t *ashape,
                      const float *b, int nb, const int64_t *bshape, const float *out, const float *g, int no,
                      const int64_t *oshape, float *ga, float *gb, float *scratch) {
    if (emu_launch_faults(s)) return;
    (void)out;
    gx_ctx *c = emu_begin(s, 1);
    nan_f(scratch, gx_shape_numel(no, oshape));
    gx_tensor *y = emu_binary(c, op, W(c, a, na, ashape, ga), W(c, b, nb, bshape, gb));
    emu_check_out(y, no, oshape, __func__);
    emu_backward(c, y, g);
    emu_end(s);
}

void gx_cu_reduce_broadcast_add(gx_cuda_stream *s, float *acc, int nt, const int64_t *to, const float *g, int nf,
                                const int64_t *from) {
    if (emu_launch_faults(s)) return;
    emu_open();
    gx_reduce_broadcast_add(acc, nt, to, g, nf, from);
    emu_close();
}

/* ----------------------------------------------------------- reductions */

static gx_tensor *emu_reduce(gx_ctx *c, gx_cu_reduce op, gx_tensor *x) {
    switch (op) {
    case GX_CU_SUM: return gx_sum(c, x, 1, 0);
    case GX_CU_MEAN: return gx_mean(c, x, 1, 0);
    case GX_CU_MAXR: return gx_max(c, x, 1, 0);
    default: GX_ASSERT_MSG(0, "emulation: reduce op %d out of range", (int)op);
    }
    return NULL;
}

void gx_cu_reduce_fwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, float *y, int64_t outer, int64_t n,
                      int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, emu_reduce(c, op, W(c, x, 3, GX_SHAPE(outer, n, inner), NULL)));
    emu_end(s);
}

void gx_cu_reduce_bwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, const float *y, const float *g, float *gx,
                      int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    (void)y;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, emu_reduce(c, op, W(c, x, 3, GX_SHAPE(outer, n, inner), gx)), g);
    emu_end(s);
}

void gx_cu_softmax_fwd(gx_cuda_stream *s, int log, const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    gx_tensor *X = W(c, x, 3, GX_SHAPE(outer, n, inner), NULL);
    emu_out(y, log ? gx_log_softmax(c, X, 1) : gx_softmax(c, X, 1));
    emu_end(s);
}

/* From y only (the launcher gets no x): the CPU backward's formulas. */
void gx_cu_softmax_bwd(gx_cuda_stream *s, int log, const float *y, const float *g, float *gx, int64_t outer,
                       int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    emu_open();
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * n * inner + i;
            double d = 0;
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = base + j * inner;
                d += log ? (double)g[k] : (double)g[k] * y[k];
            }
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = base + j * inner;
                if (log) gx[k] += (float)((double)g[k] - exp((double)y[k]) * d);
                else gx[k] += (float)((double)y[k] * ((double)g[k] - d));
            }
        }
    emu_close();
}

void gx_cu_cross_entropy_fwd(gx_cuda_stream *s, const float *logits, const int32_t *target, double ls, float *loss,
                             double *lse, int64_t B, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(loss, gx_cross_entropy(c, W(c, logits, 2, GX_SHAPE(B, K), NULL), target, ls));
    for (int64_t b = 0; b < B; b++) {
        const float *x = logits + b * K;
        double m = -INFINITY, sum = 0;
        for (int64_t k = 0; k < K; k++) m = x[k] > m ? x[k] : m;
        for (int64_t k = 0; k < K; k++) sum += exp((double)x[k] - m);
        lse[b] = m + log(sum);
    }
    emu_end(s);
}

/* The CPU formula from the saved lse (so a wrong lse buffer shows). */
void gx_cu_cross_entropy_bwd(gx_cuda_stream *s, const float *logits, const int32_t *target, double ls,
                             const double *lse, const float *g, float *glogits, int64_t B, int64_t K) {
    if (emu_launch_faults(s)) return;
    emu_open();
    for (int64_t b = 0; b < B; b++) {
        GX_ASSERT_MSG(target[b] >= 0 && target[b] < K, "%s: target %d out of [0, %lld)", __func__, target[b],
                      (long long)K);
        const double gb = g[b], u = ls / (double)K;
        for (int64_t k = 0; k < K; k++) {
            double d = gb * (exp((double)logits[b * K + k] - lse[b]) - u);
            if (k == target[b]) d -= gb * (1.0 - ls);
            glogits[b * K + k] += (float)d;
        }
    }
    emu_close();
}

/* TF32 (cuBLAS's TF32 tensor-op math, a stream made with tf32): the
 * products' inputs keep 10 of float's 23 mantissa bits, rounded to nearest
 * even, and accumulate in FP32. A copy of the rows x ld region with that
 * rounding, so that --tf32 changes answers here as on a GPU (by ~1e-3
 * relative); NULL when out of memory (the caller notes it). Only the GEMMs
 * are emulated so: the emulated conv launchers run the CPU conv op, FP32. */
static float *emu_tf32_copy(const float *a, int64_t rows, int64_t ld) {
    size_t n = (size_t)(rows > 0 ? rows : 1) * (size_t)(ld > 0 ? ld : 1);
    float *c = malloc(n * sizeof *c);
    for (size_t i = 0; c && i < n; i++) {
        uint32_t u;
        memcpy(&u, &a[i], sizeof u);
        if ((u & 0x7f800000u) != 0x7f800000u)      /* Inf/NaN unchanged */
            u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
        memcpy(&c[i], &u, sizeof u);
    }
    return c;
}

static void emu_gemm(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    /* cublasSgemm's checks (row-major A [M,K] is column-major A^T ...). */
    const int64_t ra = trans_a ? M : K, rb = trans_b ? K : N;
    if (K < 0 || lda < (ra > 1 ? ra : 1) || ldb < (rb > 1 ? rb : 1) || ldc < N || M > INT_MAX || N > INT_MAX ||
        K > INT_MAX) {
        emu_note(s, "gx_cu_gemm: cuBLAS status 7 (invalid value: M %lld N %lld K %lld lda %lld ldb %lld ldc %lld)",
                 (long long)M, (long long)N, (long long)K, (long long)lda, (long long)ldb, (long long)ldc);
        return;
    }
    if (K == 0) {             /* C = beta C (cuBLAS does not read A, B) */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    if (!s->tf32) {
        gx_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *a32 = emu_tf32_copy(A, trans_a ? K : M, lda), *b32 = emu_tf32_copy(B, trans_b ? N : K, ldb);
    if (a32 && b32) gx_gemm(trans_a, trans_b, M, N, K, alpha, a32, lda, b32, ldb, beta, C, ldc);
    else emu_note(s, "gx_cu_gemm: cuBLAS status 3 (alloc failed: TF32 operand copies)");
    free(a32);
    free(b32);
}

void gx_cu_gemm(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (emu_launch_faults(s)) return;
    emu_open();
    emu_gemm(s, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    emu_close();
}

void gx_cu_gemm_batched(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, int64_t sA, const float *B, int64_t ldb, int64_t sB, float beta,
                        float *C, int64_t ldc, int64_t sC, int64_t batch) {
    if (emu_launch_faults(s)) return;
    if (M <= 0 || N <= 0 || batch <= 0) return;
    emu_open();
    for (int64_t i = 0; i < batch; i++)
        emu_gemm(s, trans_a, trans_b, M, N, K, alpha, A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC, ldc);
    emu_close();
}

/* ---------------------------------------------------------------- norms */

void gx_cu_layernorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma, const float *beta, float *y,
                         double *mean, double *rstd, int64_t R, int64_t D, double eps) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    /* x requires grad (into scratch) so the node keeps the CPU's statistics. */
    gx_tensor *X = W(c, x, 2, GX_SHAPE(R, D), NULL);
    X->requires_grad = 1;
    gx_tensor *Y = gx_layernorm(c, X, Wopt(c, gamma, 1, &D, NULL), Wopt(c, beta, 1, &D, NULL), eps);
    emu_out(y, Y);
    const double *st = c->tape->saved;      /* [2R]: mean, rstd interleaved */
    for (int64_t r = 0; r < R; r++) {
        mean[r] = st[2 * r];
        rstd[r] = st[2 * r + 1];
    }
    emu_end(s);
}

/* The CPU backward's formulas, from the saved statistics. */
void gx_cu_layernorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma, const double *mean,
                         const double *rstd, const float *g, float *gx, float *ggamma, float *gbeta, int64_t R,
                         int64_t D) {
    if (emu_launch_faults(s)) return;
    emu_open();
    for (int64_t r = 0; r < R && gx; r++) {
        const float *px = x + r * D, *gy = g + r * D;
        double mu = mean[r], istd = rstd[r], s1 = 0, s2 = 0;
        for (int64_t j = 0; j < D; j++) {
            double dxh = gy[j] * (gamma ? (double)gamma[j] : 1.0);
            s1 += dxh;
            s2 += dxh * ((px[j] - mu) * istd);
        }
        for (int64_t j = 0; j < D; j++) {
            double dxh = gy[j] * (gamma ? (double)gamma[j] : 1.0), xhat = (px[j] - mu) * istd;
            gx[r * D + j] += (float)(istd * (dxh - s1 / D - xhat * s2 / D));
        }
    }
    for (int64_t j = 0; j < D && (ggamma || gbeta); j++) {
        double ag = 0, ab = 0;
        for (int64_t r = 0; r < R; r++) {
            ag += g[r * D + j] * ((x[r * D + j] - mean[r]) * rstd[r]);
            ab += g[r * D + j];
        }
        if (ggamma) ggamma[j] += (float)ag;
        if (gbeta) gbeta[j] += (float)ab;
    }
    emu_close();
}

void gx_cu_batchnorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma, const float *beta, float *run_mean,
                         float *run_var, int training, double momentum, double eps, float *y, double *mean,
                         double *rstd, int64_t B, int64_t C, int64_t S) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    gx_tensor *X = W(c, x, 3, GX_SHAPE(B, C, S), NULL);
    X->requires_grad = 1;                   /* so the node keeps the statistics */
    gx_tensor *Y = gx_batchnorm(c, X, Wopt(c, gamma, 1, &C, NULL), Wopt(c, beta, 1, &C, NULL),
                                Wopt(c, run_mean, 1, &C, NULL), Wopt(c, run_var, 1, &C, NULL), training, momentum,
                                eps);
    emu_out(y, Y);
    const double *st = c->tape->saved;      /* [2C]: mean, then rstd */
    for (int64_t k = 0; k < C; k++) {
        mean[k] = st[k];
        rstd[k] = st[C + k];
    }
    emu_end(s);
}

void gx_cu_batchnorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma, int training, const double *mean,
                         const double *rstd, const float *g, float *gx, float *ggamma, float *gbeta, int64_t B,
                         int64_t C, int64_t S) {
    if (emu_launch_faults(s)) return;
    emu_open();
    const double N = (double)(B * S);
    for (int64_t c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0, mu = mean[c], istd = rstd[c];
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < S; k++) {
                int64_t o = (b * C + c) * S + k;
                sdy += g[o];
                sdyx += g[o] * (x[o] - mu);
            }
        sdyx *= istd;
        if (ggamma) ggamma[c] += (float)sdyx;
        if (gbeta) gbeta[c] += (float)sdy;
        if (!gx) continue;
        double k0 = (gamma ? gamma[c] : 1.0) * istd, mdy = training ? sdy / N : 0, mdyx = training ? sdyx / N : 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < S; k++) {
                int64_t o = (b * C + c) * S + k;
                gx[o] += (float)(k0 * (g[o] - mdy - (x[o] - mu) * istd * mdyx));
            }
    }
    emu_close();
}

/* ----------------------------------------------------------------- conv */

int64_t gx_cu_conv_col_floats(const gx_cu_conv_shape *c) {
    int64_t Ho = (c->H + 2 * c->pad - c->kh) / c->stride + 1, Wo = (c->W + 2 * c->pad - c->kw) / c->stride + 1;
    return c->Cin * c->kh * c->kw * Ho * Wo;
}

static gx_tensor *emu_conv(gx_ctx *k, const gx_cu_conv_shape *c, const float *x, const float *w, const float *bias,
                           float *gx, float *gw, float *gb) {
    gx_tensor *X = W(k, x, 4, GX_SHAPE(c->B, c->Cin, c->H, c->W), gx);
    gx_tensor *Wt = W(k, w, 4, GX_SHAPE(c->Cout, c->Cin / c->groups, c->kh, c->kw), gw);
    gx_tensor *Bt = bias ? W(k, bias, 1, &c->Cout, gb) : Wgrad(k, 1, &c->Cout, gb);
    return gx_conv2d(k, X, Wt, Bt, c->stride, c->pad, c->groups);
}

void gx_cu_conv2d_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x, const float *w,
                      const float *bias, float *y, float *col) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 0);
    nan_f(col, gx_cu_conv_col_floats(c));
    emu_out(y, emu_conv(k, c, x, w, bias, NULL, NULL, NULL));
    emu_end(s);
}

void gx_cu_conv2d_bwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x, const float *w, const float *g,
                      float *gx, float *gw, float *gb, float *col) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 1);
    nan_f(col, gx_cu_conv_col_floats(c));
    emu_backward(k, emu_conv(k, c, x, w, NULL, gx, gw, gb), g);
    emu_end(s);
}

void gx_cu_conv2d_bn_act_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x, const float *w,
                             const float *bias, const float *gamma, const float *beta, const float *run_mean,
                             const float *run_var, double eps, int act, double p0, double p1, float *y, float *col,
                             double *ab) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 0);
    nan_f(col, gx_cu_conv_col_floats(c));
    for (int64_t o = 0; o < c->Cout; o++) {      /* documented: a, then the shift */
        double a = (gamma ? (double)gamma[o] : 1.0) / sqrt((double)run_var[o] + eps);
        ab[o] = a;
        ab[c->Cout + o] = (beta ? (double)beta[o] : 0.0) - (double)run_mean[o] * a;
    }
    const int64_t C = c->Cout;
    gx_tensor *v = emu_conv(k, c, x, w, bias, NULL, NULL, NULL);
    v = gx_batchnorm(k, v, Wopt(k, gamma, 1, &C, NULL), Wopt(k, beta, 1, &C, NULL), W(k, run_mean, 1, &C, NULL),
                     W(k, run_var, 1, &C, NULL), 0, 0.1, eps);
    if (act >= 0) v = emu_unary(k, (gx_cu_unary)act, p0, p1, v);
    emu_out(y, v);
    emu_end(s);
}

int64_t gx_cu_upconv_scratch_floats(int64_t Cin, int64_t H, int64_t W, int64_t Cout) {
    return 32 * Cout * Cin + 16 * Cin * H * W + 4 * Cout * H * W;
}

void gx_cu_upconv2x3_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias, int act, double p0,
                         double p1, float *y, float *scratch, int64_t B, int64_t Cin, int64_t H, int64_t Wd,
                         int64_t Cout) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 0);
    nan_f(scratch, gx_cu_upconv_scratch_floats(Cin, H, Wd, Cout));
    gx_tensor *v = gx_upconv2x3(k, W(k, x, 4, GX_SHAPE(B, Cin, H, Wd), NULL), W(k, w, 4, GX_SHAPE(Cout, Cin, 3, 3), NULL),
                                Wopt(k, bias, 1, &Cout, NULL));
    if (act >= 0) v = emu_unary(k, (gx_cu_unary)act, p0, p1, v);
    emu_out(y, v);
    emu_end(s);
}

void gx_cu_upconv2x3_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g, float *gx, float *gw,
                         float *gb, float *scratch, int64_t B, int64_t Cin, int64_t H, int64_t Wd, int64_t Cout) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 1);
    nan_f(scratch, gx_cu_upconv_scratch_floats(Cin, H, Wd, Cout));
    gx_tensor *v = gx_upconv2x3(k, W(k, x, 4, GX_SHAPE(B, Cin, H, Wd), gx), W(k, w, 4, GX_SHAPE(Cout, Cin, 3, 3), gw),
                                Wgrad(k, 1, &Cout, gb));
    emu_backward(k, v, g);
    emu_end(s);
}

void gx_cu_conv1d_causal_dw_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias, float *y,
                                int64_t B, int64_t L, int64_t E, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 0);
    emu_out(y, gx_conv1d_causal_dw(k, W(k, x, 3, GX_SHAPE(B, L, E), NULL), W(k, w, 3, GX_SHAPE(E, 1, K), NULL),
                                   Wopt(k, bias, 1, &E, NULL)));
    emu_end(s);
}

void gx_cu_conv1d_causal_dw_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g, float *gx,
                                float *gw, float *gb, int64_t B, int64_t L, int64_t E, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *k = emu_begin(s, 1);
    emu_backward(k,
                 gx_conv1d_causal_dw(k, W(k, x, 3, GX_SHAPE(B, L, E), gx), W(k, w, 3, GX_SHAPE(E, 1, K), gw),
                                     Wgrad(k, 1, &E, gb)),
                 g);
    emu_end(s);
}

/* ------------------------------------------------------- pool, resample */

typedef enum { EMU_AVG, EMU_BILINEAR, EMU_NEAREST2X, EMU_MAXPOOL } emu_pool_kind;

static gx_tensor *emu_pool(gx_ctx *c, emu_pool_kind kind, gx_tensor *x, int64_t oh, int64_t ow, int ks, int st,
                           int pad) {
    switch (kind) {
    case EMU_AVG: return gx_adaptive_avg_pool2d(c, x, oh, ow);
    case EMU_BILINEAR: return gx_resize_bilinear(c, x, oh, ow);
    case EMU_NEAREST2X: return gx_upsample_nearest2x(c, x);
    default: return gx_max_pool2d(c, x, ks, st, pad);
    }
}

/* Planes [P, H, W] as [P, 1, H, W]. Backward without x: these ops' input
 * gradients do not depend on x (max pooling gets x). */
static void pool(gx_cuda_stream *s, emu_pool_kind kind, const float *x, const float *g, float *y, float *gx,
                 int64_t P, int64_t H, int64_t Wd, int64_t oh, int64_t ow, int ks, int st, int pad) {
    gx_ctx *c = emu_begin(s, g != NULL);
    gx_tensor *v = emu_pool(c, kind, W(c, x, 4, GX_SHAPE(P, 1, H, Wd), gx), oh, ow, ks, st, pad);
    if (g) emu_backward(c, v, g);
    else emu_out(y, v);
    emu_end(s);
}

void gx_cu_adaptive_avg_pool_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H, int64_t W,
                                 int64_t oh, int64_t ow) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_AVG, x, NULL, y, NULL, P, H, W, oh, ow, 0, 0, 0);
}
void gx_cu_adaptive_avg_pool_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P, int64_t H, int64_t W,
                                 int64_t oh, int64_t ow) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_AVG, NULL, g, NULL, gx, P, H, W, oh, ow, 0, 0, 0);
}
void gx_cu_resize_bilinear_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H, int64_t W,
                               int64_t oh, int64_t ow) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_BILINEAR, x, NULL, y, NULL, P, H, W, oh, ow, 0, 0, 0);
}
void gx_cu_resize_bilinear_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P, int64_t H, int64_t W,
                               int64_t oh, int64_t ow) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_BILINEAR, NULL, g, NULL, gx, P, H, W, oh, ow, 0, 0, 0);
}
void gx_cu_upsample_nearest2x_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H, int64_t W) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_NEAREST2X, x, NULL, y, NULL, P, H, W, 0, 0, 0, 0, 0);
}
void gx_cu_upsample_nearest2x_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t P, int64_t H, int64_t W) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_NEAREST2X, NULL, g, NULL, gx, P, H, W, 0, 0, 0, 0, 0);
}
void gx_cu_max_pool2d_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t P, int64_t H, int64_t W, int ks,
                          int stride, int pad) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_MAXPOOL, x, NULL, y, NULL, P, H, W, 0, 0, ks, stride, pad);
}
void gx_cu_max_pool2d_bwd(gx_cuda_stream *s, const float *x, const float *g, float *gx, int64_t P, int64_t H,
                          int64_t W, int ks, int stride, int pad) {
    if (emu_launch_faults(s)) return;
    pool(s, EMU_MAXPOOL, x, g, NULL, gx, P, H, W, 0, 0, ks, stride, pad);
}

/* ----------------------------------------------------------------- scan */

static void scan(gx_cuda_stream *s, const float *xs, const float *dl, const float *A, const float *Bm,
                 const float *Cm, float *y, const float *g, float *gxs, float *gdl, float *gA, float *gB, float *gC,
                 int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N) {
    GX_ASSERT_MSG(N <= 32, "gx_cu_ssm_scan: N %lld > 32 (one thread per state in a warp)", (long long)N);
    gx_ctx *c = emu_begin(s, g != NULL);
    gx_tensor *v = gx_ssm_scan(c, W(c, xs, 3, GX_SHAPE(B, L, E), gxs), W(c, dl, 3, GX_SHAPE(B, Ld, E), gdl),
                               W(c, A, 2, GX_SHAPE(E, N), gA), W(c, Bm, 2, GX_SHAPE(E, N), gB),
                               W(c, Cm, 2, GX_SHAPE(E, N), gC));
    if (g) emu_backward(c, v, g);
    else emu_out(y, v);
    emu_end(s);
}

void gx_cu_ssm_scan_fwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A, const float *Bm,
                        const float *Cm, float *y, int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N) {
    if (emu_launch_faults(s)) return;
    scan(s, xs, delta, A, Bm, Cm, y, NULL, NULL, NULL, NULL, NULL, NULL, B, L, Ld, E, N);
}

void gx_cu_ssm_scan_bwd(gx_cuda_stream *s, const float *xs, const float *delta, const float *A, const float *Bm,
                        const float *Cm, const float *g, float *gxs, float *gdelta, float *gA, float *gB, float *gC,
                        double *H, int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N) {
    if (emu_launch_faults(s)) return;
    emu_open();
    nan_d(H, B * L * E * N);
    scan(s, xs, delta, A, Bm, Cm, NULL, g, gxs, gdelta, gA, gB, gC, B, L, Ld, E, N);
    emu_close();
}

/* ------------------------------------------------------------- sinkhorn */

/* gx_sinkhorn.c's saved state (private there; mirrored here, test-only):
 * the backward is the CPU's, run on the matrices and denominators the
 * forward wrote in the launcher's layout. */
typedef struct {
    int64_t n;
    const double *K, *KT, *M, *MT;
} emu_sk_mats;
typedef struct {
    emu_sk_mats m;
    const double *pq, *S;
    int iters;
} emu_sk_saved;

void gx_cu_sinkhorn_fwd(gx_cuda_stream *s, const float *a, const float *b, const float *C, double lambda, int iters,
                        double eps, float *out, double *mats, double *pq, double *work, int64_t B, int64_t n) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    nan_d(work, B * 7 * n);
    /* requires_grad on a (into scratch) so the CPU op saves its iterates */
    gx_tensor *A = W(c, a, 2, GX_SHAPE(B, n), NULL);
    A->requires_grad = 1;
    gx_tensor *Ct = W(c, C, 2, GX_SHAPE(n, n), NULL);
    emu_out(out, gx_sinkhorn_hk(c, A, W(c, b, 2, GX_SHAPE(B, n), NULL), Ct, lambda, iters, eps));
    const emu_sk_saved *sv = c->tape->saved;
    GX_ASSERT(sv->m.n == n && sv->iters == iters);
    memcpy(mats, sv->m.K, (size_t)(n * n) * sizeof(double));
    memcpy(mats + n * n, sv->m.KT, (size_t)(n * n) * sizeof(double));
    memcpy(mats + 2 * n * n, sv->m.M, (size_t)(n * n) * sizeof(double));
    memcpy(mats + 3 * n * n, sv->m.MT, (size_t)(n * n) * sizeof(double));
    if (pq) {
        memcpy(pq, sv->pq, (size_t)(B * iters * 2 * n) * sizeof(double));
        memcpy(pq + B * iters * 2 * n, sv->S, (size_t)B * sizeof(double));
    }
    emu_end(s);
}

void gx_cu_sinkhorn_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *g, const double *mats,
                        const double *pq, int iters, float *ga, float *gb, double *work, int64_t B, int64_t n) {
    if (emu_launch_faults(s)) return;
    GX_ASSERT_MSG(pq != NULL, "gx_cu_sinkhorn_bwd: pq is NULL (the forward saved nothing)");
    gx_ctx *c = emu_begin(s, 1);
    nan_d(work, B * 7 * n);
    /* A forward on a placeholder cost (its values are replaced below), then
     * the CPU backward on the launcher's matrices and denominators. */
    gx_tensor *Ct = W(c, NULL, 2, GX_SHAPE(n, n), NULL);
    gx_tensor *y = gx_sinkhorn_hk(c, W(c, a, 2, GX_SHAPE(B, n), ga), W(c, b, 2, GX_SHAPE(B, n), gb), Ct, 1.0, iters,
                                  0.0);
    if (y->requires_grad) {
        emu_sk_saved *sv = c->tape->saved;
        sv->m = (emu_sk_mats){ n, mats, mats + n * n, mats + 2 * n * n, mats + 3 * n * n };
        sv->pq = pq;
        sv->S = pq + B * iters * 2 * n;
        gx_backward(c, y, g);
    }
    emu_end(s);
}

/* ------------------------------------------------------------- optimiser */

void gx_cu_optim_update(gx_cuda_stream *s, const gx_optim_cfg *c, float *x, const float *g, float *state, int64_t n,
                        int64_t t, double lr, double wd) {
    if (emu_launch_faults(s)) return;
    emu_open();
    gx_params p;
    gx_params_init(&p);
    gx_tensor *w = gx_params_add(&p, "x", 1, GX_SHAPE(n), GX_PARAM_DECAY);
    memcpy(w->data, x, (size_t)n * sizeof(float));
    memcpy(w->grad, g, (size_t)n * sizeof(float));
    gx_optim_cfg cfg = *c;
    cfg.weight_decay = wd;
    gx_optim o;
    gx_err err;
    GX_ASSERT_MSG(gx_optim_init(&o, &p, &cfg, &err) == GX_OK, "gx_cu_optim_update: %.200s", err.msg);
    const int64_t slots = c->kind == GX_OPT_SGD ? (c->momentum != 0) : 2;
    GX_ASSERT(o.state_len == slots * n);
    if (slots) {
        GX_ASSERT_MSG(state != NULL, "gx_cu_optim_update: state is NULL");
        memcpy(o.state, state, (size_t)(slots * n) * sizeof(float));
    }
    o.step = t - 1;
    double lrs[GX_OPT_MAX_GROUPS];
    for (int i = 0; i < GX_OPT_MAX_GROUPS; i++) lrs[i] = lr;
    gx_optim_step(&o, &p, lrs);
    memcpy(x, w->data, (size_t)n * sizeof(float));
    if (slots) memcpy(state, o.state, (size_t)(slots * n) * sizeof(float));
    gx_optim_free(&o);
    gx_params_free(&p);
    emu_close();
}

int64_t gx_cu_chunk_count(int64_t n) { return n > 0 ? (n + GX_CU_CHUNK - 1) / GX_CU_CHUNK : 0; }

int64_t gx_cu_clip_scratch(int nt, const int64_t *n) {
    int64_t np = 0;
    for (int t = 0; t < nt; t++) np += gx_cu_chunk_count(n[t]);
    return np > 0 ? np : 1;
}

void gx_cu_clip_grad_norm(gx_cuda_stream *s, int nt, float *const *g, const int64_t *n, double max_norm,
                          double *part, double *norm_out) {
    if (emu_launch_faults(s)) return;
    emu_open();
    nan_d(part, gx_cu_clip_scratch(nt, n));
    double ss = 0;
    for (int t = 0; t < nt; t++)
        for (int64_t k = 0; k < n[t]; k++) ss += (double)g[t][k] * g[t][k];
    const double norm = sqrt(ss), coef = max_norm / (norm + 1e-6);
    if (isfinite(norm) && coef < 1.0)
        for (int t = 0; t < nt; t++)
            for (int64_t k = 0; k < n[t]; k++) g[t][k] = (float)((double)g[t][k] * coef);
    *norm_out = norm;
    emu_close();
}

/* ----------------------------------------------------------- shape ops */

void gx_cu_accumulate(gx_cuda_stream *s, float *dst, const float *src, int64_t n) {
    if (emu_launch_faults(s)) return;
    emu_open();
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    emu_close();
}

void gx_cu_permute_fwd(gx_cuda_stream *s, const float *x, int nd, const int64_t *xshape, const int *perm, float *y) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_permute(c, W(c, x, nd, xshape, NULL), perm));
    emu_end(s);
}
void gx_cu_permute_bwd(gx_cuda_stream *s, const float *g, int nd, const int64_t *xshape, const int *perm, float *gx) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, gx_permute(c, W(c, NULL, nd, xshape, gx), perm), g);
    emu_end(s);
}

#define EMU_MAX_PARTS 64

void gx_cu_concat_fwd(gx_cuda_stream *s, int n, const float *const *xs, const int64_t *sizes, float *y, int64_t outer,
                      int64_t inner) {
    if (emu_launch_faults(s)) return;
    GX_ASSERT(n >= 1 && n <= EMU_MAX_PARTS);
    gx_ctx *c = emu_begin(s, 0);
    gx_tensor *t[EMU_MAX_PARTS];
    for (int k = 0; k < n; k++) t[k] = W(c, xs[k], 3, GX_SHAPE(outer, sizes[k], inner), NULL);
    emu_out(y, gx_concat(c, n, t, 1));
    emu_end(s);
}
void gx_cu_concat_bwd(gx_cuda_stream *s, int n, const float *g, const int64_t *sizes, float *const *gxs,
                      int64_t outer, int64_t inner) {
    if (emu_launch_faults(s)) return;
    GX_ASSERT(n >= 1 && n <= EMU_MAX_PARTS);
    gx_ctx *c = emu_begin(s, 1);
    gx_tensor *t[EMU_MAX_PARTS];
    for (int k = 0; k < n; k++) t[k] = W(c, NULL, 3, GX_SHAPE(outer, sizes[k], inner), gxs[k]);
    emu_backward(c, gx_concat(c, n, t, 1), g);
    emu_end(s);
}

void gx_cu_slice_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner,
                     int64_t start, int64_t end) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_slice(c, W(c, x, 3, GX_SHAPE(outer, n, inner), NULL), 1, start, end));
    emu_end(s);
}
void gx_cu_slice_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n, int64_t inner,
                     int64_t start, int64_t end) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, gx_slice(c, W(c, NULL, 3, GX_SHAPE(outer, n, inner), gx), 1, start, end), g);
    emu_end(s);
}

void gx_cu_flip_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_flip(c, W(c, x, 3, GX_SHAPE(outer, n, inner), NULL), 1));
    emu_end(s);
}
void gx_cu_flip_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, gx_flip(c, W(c, NULL, 3, GX_SHAPE(outer, n, inner), gx), 1), g);
    emu_end(s);
}

void gx_cu_gather_fwd(gx_cuda_stream *s, const float *x, const int32_t *idx, float *y, int64_t B, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_gather(c, W(c, x, 2, GX_SHAPE(B, K), NULL), idx));
    emu_end(s);
}
void gx_cu_gather_bwd(gx_cuda_stream *s, const int32_t *idx, const float *g, float *gx, int64_t B, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, gx_gather(c, W(c, NULL, 2, GX_SHAPE(B, K), gx), idx), g);
    emu_end(s);
}
void gx_cu_one_hot(gx_cuda_stream *s, const int32_t *idx, float *y, int64_t B, int64_t K) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_one_hot(c, idx, B, K));
    emu_end(s);
}

/* ------------------------------------------------------ more reductions */

void gx_cu_logsumexp_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    emu_out(y, gx_logsumexp(c, W(c, x, 3, GX_SHAPE(outer, n, inner), NULL), 1, 0));
    emu_end(s);
}
void gx_cu_logsumexp_bwd(gx_cuda_stream *s, const float *x, const float *y, const float *g, float *gx, int64_t outer,
                         int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    (void)y;
    gx_ctx *c = emu_begin(s, 1);
    emu_backward(c, gx_logsumexp(c, W(c, x, 3, GX_SHAPE(outer, n, inner), gx), 1, 0), g);
    emu_end(s);
}

void gx_cu_l2_normalize_fwd(gx_cuda_stream *s, const float *x, float *y, double *norm, double eps, int64_t outer,
                            int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    gx_tensor *X = W(c, x, 3, GX_SHAPE(outer, n, inner), NULL);
    X->requires_grad = 1;                   /* so the node keeps the norms */
    emu_out(y, gx_l2_normalize(c, X, 1, eps));
    memcpy(norm, c->tape->saved, (size_t)(outer * inner) * sizeof(double));
    emu_end(s);
}

/* From y and the saved norms (the launcher gets no x): the CPU formula. */
void gx_cu_l2_normalize_bwd(gx_cuda_stream *s, const float *y, const double *norm, const float *g, float *gx,
                            double eps, int64_t outer, int64_t n, int64_t inner) {
    if (emu_launch_faults(s)) return;
    emu_open();
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const int64_t base = o * n * inner + i, t = o * inner + i;
            double dot = 0;
            for (int64_t j = 0; j < n; j++) dot += (double)g[base + j * inner] * y[base + j * inner];
            const int clamped = norm[t] < eps;
            const double inv = 1.0 / (clamped ? eps : norm[t]), s2 = clamped ? 0.0 : dot * inv;
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = base + j * inner;
                gx[k] += (float)((double)g[k] * inv - (double)y[k] * s2);
            }
        }
    emu_close();
}

void gx_cu_sum_all_fwd(gx_cuda_stream *s, int mean, const float *x, float *y, double *part, int64_t n) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    nan_d(part, gx_cu_chunk_count(n));
    gx_tensor *X = W(c, x, 1, &n, NULL);
    emu_out(y, mean ? gx_mean_all(c, X) : gx_sum_all(c, X));
    emu_end(s);
}
void gx_cu_sum_all_bwd(gx_cuda_stream *s, int mean, const float *g, float *gx, int64_t n) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 1);
    gx_tensor *X = W(c, NULL, 1, &n, gx);
    emu_backward(c, mean ? gx_mean_all(c, X) : gx_sum_all(c, X), g);
    emu_end(s);
}

/* ------------------------------------------------------------- matrices */

void gx_cu_pairwise_sqdist_fwd(gx_cuda_stream *s, const float *a, const float *b, float *d, double *sq, int64_t N,
                               int64_t M, int64_t D) {
    if (emu_launch_faults(s)) return;
    gx_ctx *c = emu_begin(s, 0);
    for (int64_t i = 0; i < N + M; i++) {     /* the row norms, in double */
        const float *r = i < N ? a + i * D : b + (i - N) * D;
        double q = 0;
        for (int64_t k = 0; k < D; k++) q += (double)r[k] * r[k];
        sq[i] = q;
    }
    gx_tensor *A = W(c, a, 2, GX_SHAPE(N, D), NULL);
    emu_out(d, gx_pairwise_sqdist(c, A, a == b ? A : W(c, b, 2, GX_SHAPE(M, D), NULL)));
    emu_end(s);
}

void gx_cu_pairwise_sqdist_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *d, const float *g,
                               float *ga, float *gb, float *gm, double *sums, int64_t N, int64_t M, int64_t D) {
    if (emu_launch_faults(s)) return;
    (void)d;
    GX_ASSERT_MSG(a != b || ga == gb, "gx_cu_pairwise_sqdist_bwd: a == b needs ga == gb");
    gx_ctx *c = emu_begin(s, 1);
    nan_f(gm, N * M);
    nan_d(sums, N + M);
    gx_tensor *A = W(c, a, 2, GX_SHAPE(N, D), ga);
    emu_backward(c, gx_pairwise_sqdist(c, A, a == b ? A : W(c, b, 2, GX_SHAPE(M, D), gb)), g);
    emu_end(s);
}
