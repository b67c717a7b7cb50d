/*
 * test_cuda_select.c — the parts of the CUDA backend that need no GPU:
 * the probe's answer on this machine, device selection and its log line,
 * and the device pool's and arena's bookkeeping over a host-memory backend.
 */
#include "gx_test.h"

#include "gx_cuda.h"
#include <stdlib.h>
#include <string.h>

#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA
#define BUILT_WITH_CUDA 1
#else
#define BUILT_WITH_CUDA 0
#endif

GX_TEST(cuda_probe_answers_with_a_reason) {
    char why[160] = "unset";
    int n = gx_cuda_probe(why, sizeof why);
    CHECK(n >= 0);
    CHECK(why[0] != 0 && strcmp(why, "unset") != 0);
    if (!BUILT_WITH_CUDA) {
        CHECK(n == 0);
        CHECK_MSG(strcmp(why, "built without CUDA") == 0, "why = '%s'", why);
    } else if (n == 0) {
        /* No driver (CI: "no CUDA driver"), a driver without devices ("no
         * device") or the runtime's own words; never the other builds' answers. */
        CHECK_MSG(strcmp(why, "built without CUDA") != 0 && strstr(why, "device(s)") == NULL,
                  "why = '%s'", why);
    } else {
        CHECK_MSG(strstr(why, "device(s)") != NULL, "why = '%s'", why);
    }
    CHECK(gx_cuda_probe(NULL, 0) == n);        /* why is optional */
}

GX_TEST(cuda_device_select_falls_back_with_a_log_line) {
    char why[160], log[256], want[300];
    int n = gx_cuda_probe(why, sizeof why);
    gx_device d = GX_DEVICE_CUDA;
    CHECK(gx_device_select("cpu", &d, log, sizeof log) == GX_OK);
    CHECK(d == GX_DEVICE_CPU);
    CHECK_MSG(strcmp(log, "device: cpu (requested)") == 0, "log = '%s'", log);

    CHECK(gx_device_select("cuda", &d, log, sizeof log) == GX_OK);
    if (n == 0) {
        CHECK(d == GX_DEVICE_CPU);
        snprintf(want, sizeof want, "warning: device: cpu (cuda requested: %s)", why);
        CHECK_MSG(strcmp(log, want) == 0, "log = '%s', want '%s'", log, want);
    } else {
        CHECK(d == GX_DEVICE_CUDA);
        CHECK_MSG(strncmp(log, "device: cuda:0", 14) == 0, "log = '%s'", log);
    }

    d = GX_DEVICE_CUDA;
    CHECK(gx_device_select(NULL, &d, log, sizeof log) == GX_OK);   /* NULL = auto */
    CHECK(d == (n > 0 ? GX_DEVICE_CUDA : GX_DEVICE_CPU));
    if (n == 0) {
        snprintf(want, sizeof want, "device: cpu (auto requested: %s)", why);
        CHECK_MSG(strcmp(log, want) == 0, "log = '%s', want '%s'", log, want);
    }
    CHECK(gx_device_select("auto", &d, NULL, 0) == GX_OK);         /* log is optional */

    CHECK(gx_device_select("gpu", &d, log, sizeof log) == GX_ERR_INVALID);
    CHECK(d == GX_DEVICE_CPU);
    CHECK_MSG(strstr(log, "'gpu'") != NULL, "log = '%s'", log);
}

GX_TEST(cuda_runtime_calls_fail_cleanly_without_a_device) {
    char why[160];
    if (gx_cuda_probe(why, sizeof why) > 0) return;   /* tested by make test-cuda there */
    gx_err err = {{0}};
    gx_cuda_stream *s = (gx_cuda_stream *)&err;       /* must be overwritten */
    CHECK(gx_cuda_stream_create(0, 0, &s, &err) != GX_OK);
    CHECK(s == NULL);
    CHECK(err.msg[0] != 0);
    gx_cuda_backend be;
    err.msg[0] = 0;
    CHECK(gx_cuda_device_backend(0, &be, &err) != GX_OK);
    CHECK(err.msg[0] != 0);
    if (!BUILT_WITH_CUDA) CHECK_MSG(strstr(err.msg, "built without CUDA") != NULL, "%s", err.msg);
}

GX_TEST(cuda_pool_size_classes_and_alignment) {
    CHECK(gx_cuda_pool_class(0) == -1);
    CHECK(gx_cuda_pool_class(1) == 0);
    CHECK(gx_cuda_pool_class(256) == 0);
    CHECK(gx_cuda_pool_class(257) == 1);
    CHECK(gx_cuda_pool_class(4096) == 4);
    CHECK(gx_cuda_pool_class(4097) == 5);
    CHECK(gx_cuda_pool_class(GX_CUDA_MAX_CLASS) == GX_CUDA_NCLASS - 1);
    CHECK(gx_cuda_pool_class(GX_CUDA_MAX_CLASS + 1) == -1);
    CHECK(gx_cuda_pool_block_bytes(1) == 256);
    CHECK(gx_cuda_pool_block_bytes(1000) == 1024);
    CHECK(gx_cuda_pool_block_bytes(GX_CUDA_MAX_CLASS + 1) == GX_CUDA_MAX_CLASS + 256);
    for (size_t b = 1; b < ((size_t)1 << 22); b = b * 3 + 1) {
        size_t bb = gx_cuda_pool_block_bytes(b);
        CHECK_MSG(bb >= b && bb % GX_CUDA_ALIGN == 0 && bb < 2 * b + GX_CUDA_ALIGN,
                  "%zu bytes -> block %zu", b, bb);
    }
}

/* Host-memory backend that counts calls and bytes (stands in for cudaMalloc,
 * which also returns 256-byte aligned memory). */
typedef struct { int allocs, frees, fail_after; size_t live; } test_be_state;

static void *test_be_alloc(void *user, size_t bytes) {
    test_be_state *s = user;
    if (s->fail_after >= 0 && s->allocs >= s->fail_after) return NULL;
    void *p = aligned_alloc(GX_CUDA_ALIGN, bytes);
    if (p) { s->allocs++; s->live += bytes; }
    return p;
}
static void test_be_free(void *user, void *p) {
    test_be_state *s = user;
    s->frees++;
    free(p);
}

static gx_cuda_pool *test_pool(gx_test_state *T, test_be_state *st, size_t limit) {
    memset(st, 0, sizeof *st);
    st->fail_after = -1;
    gx_cuda_backend be = { test_be_alloc, test_be_free, st };
    gx_cuda_pool *p = NULL;
    gx_err err;
    CHECK(gx_cuda_pool_create(&be, limit, &p, &err) == GX_OK);
    return p;
}

GX_TEST(cuda_pool_reuses_blocks_and_releases_direct_allocations) {
    test_be_state st;
    gx_cuda_pool *p = test_pool(T, &st, 0);
    if (!p) return;
    enum { NB = 100 };
    unsigned char *b[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = gx_cuda_pool_alloc(p, 1000);             /* class 1024 */
        CHECK(b[i] != NULL && (uintptr_t)b[i] % GX_CUDA_ALIGN == 0);
        if (b[i]) memset(b[i], i, 1000);
    }
    CHECK(st.allocs == 1);                              /* one slab serves them all */
    CHECK(gx_cuda_pool_reserved(p) == GX_CUDA_SLAB);
    CHECK(gx_cuda_pool_in_use(p) == NB * 1024);
    int intact = 1;                                     /* blocks do not overlap */
    for (int i = 0; i < NB; i++)
        for (int k = 0; k < 1000; k++) intact &= b[i][k] == (unsigned char)i;
    CHECK(intact);
    gx_cuda_pool_free(p, b[7], 1000);
    unsigned char *again = gx_cuda_pool_alloc(p, 900);  /* same class: reused */
    CHECK(again == b[7]);
    CHECK(st.allocs == 1);

    size_t big = GX_CUDA_MAX_CLASS + 1000;              /* direct */
    void *d = gx_cuda_pool_alloc(p, big);
    CHECK(d != NULL && st.allocs == 2);
    CHECK(gx_cuda_pool_reserved(p) == GX_CUDA_SLAB + gx_cuda_pool_block_bytes(big));
    gx_cuda_pool_free(p, d, big);
    CHECK(st.frees == 1 && gx_cuda_pool_reserved(p) == GX_CUDA_SLAB);
    for (int i = 0; i < NB; i++) gx_cuda_pool_free(p, b[i], 1000);
    CHECK(gx_cuda_pool_in_use(p) == 0);
    CHECK(gx_cuda_pool_alloc(p, 0) == NULL);
    gx_cuda_pool_destroy(p);
    CHECK(st.frees == st.allocs);                       /* every slab went back */
}

GX_TEST(cuda_pool_respects_its_limit_and_backend_failure) {
    test_be_state st;
    gx_cuda_pool *p = test_pool(T, &st, 3 << 20);      /* 3 MiB: below one slab */
    if (!p) return;
    void *a = gx_cuda_pool_alloc(p, 1 << 20);            /* a slab of just that block */
    void *b = gx_cuda_pool_alloc(p, 2 << 20);
    CHECK(a && b);
    CHECK(gx_cuda_pool_reserved(p) == (size_t)3 << 20);
    CHECK(gx_cuda_pool_alloc(p, 256) == NULL);          /* over the limit */
    gx_cuda_pool_free(p, a, 1 << 20);
    CHECK(gx_cuda_pool_alloc(p, 1 << 20) == a);          /* freed block serves again */
    gx_cuda_pool_destroy(p);
    CHECK(st.frees == st.allocs);

    p = test_pool(T, &st, 0);
    if (!p) return;
    st.fail_after = 0;                                  /* cudaMalloc says no */
    CHECK(gx_cuda_pool_alloc(p, 4096) == NULL);
    CHECK(gx_cuda_pool_alloc(p, GX_CUDA_MAX_CLASS * 2) == NULL);
    CHECK(gx_cuda_pool_reserved(p) == 0 && gx_cuda_pool_in_use(p) == 0);
    gx_cuda_pool_destroy(p);

    gx_cuda_backend none = { NULL, NULL, NULL };
    gx_err err;
    CHECK(gx_cuda_pool_create(&none, 0, &p, &err) == GX_ERR_INVALID && p == NULL);
}

GX_TEST(cuda_arena_grows_then_coalesces_and_stops_allocating) {
    test_be_state st;
    gx_cuda_pool *p = test_pool(T, &st, 0);
    if (!p) return;
    gx_cuda_arena a;
    gx_cuda_arena_init(&a, p, 4096);
    size_t sizes[] = { 10, 3000, 5000, 20000, 256, 1 };
    size_t total = 0;
    for (int pass = 0; pass < 3; pass++) {
        char *prev = NULL;
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            char *q = gx_cuda_arena_alloc(&a, sizes[i]);
            CHECK(q != NULL && (uintptr_t)q % GX_CUDA_ALIGN == 0);
            CHECK(q != prev);
            prev = q;
            if (pass == 0) total += (sizes[i] + 255) / 256 * 256;
        }
        if (pass == 0) {
            CHECK(a.nchunks > 1);                       /* 4 KiB initial: it chained */
            CHECK(a.high_water == total);
        } else {
            CHECK(a.nchunks == 1);                      /* coalesced by the reset */
            CHECK(gx_cuda_arena_capacity(&a) >= total);
        }
        size_t in_use = gx_cuda_pool_in_use(p);
        CHECK(gx_cuda_arena_reset(&a) == GX_OK);
        CHECK(a.used_total == 0);
        if (pass > 0) CHECK(gx_cuda_pool_in_use(p) == in_use);   /* steady: no pool traffic */
    }
    gx_cuda_arena_free(&a);
    CHECK(gx_cuda_pool_in_use(p) == 0);
    gx_cuda_pool_destroy(p);
    CHECK(st.frees == st.allocs);
}

/* Memory one size class no longer uses serves another once the device (or
 * the limit) refuses: a wholly free slab goes back to the backend; a slab
 * with one block still out stays. */
GX_TEST(cuda_pool_gives_back_free_slabs_when_refused) {
    test_be_state st;
    const size_t slab = GX_CUDA_SLAB;
    gx_cuda_pool *p = test_pool(T, &st, slab + slab / 2);   /* 96 MiB: one slab and a half */
    if (!p) return;
    enum { NB = 64 };
    void *small[NB];
    for (int i = 0; i < NB; i++) small[i] = gx_cuda_pool_alloc(p, 4096);   /* one 64 MiB slab */
    CHECK(small[0] && small[NB - 1] && gx_cuda_pool_reserved(p) == slab);
    size_t half = slab / 2;                                  /* 32 MiB class: its own block */
    void *a = gx_cuda_pool_alloc(p, half);
    CHECK(a != NULL && gx_cuda_pool_reserved(p) == slab + half);
    /* A second 32 MiB block: past the limit while the small slab is held. */
    CHECK(gx_cuda_pool_alloc(p, half) == NULL);
    for (int i = 1; i < NB; i++) gx_cuda_pool_free(p, small[i], 4096);
    CHECK(gx_cuda_pool_alloc(p, half) == NULL);              /* one small block still out */
    gx_cuda_pool_free(p, small[0], 4096);
    int frees = st.frees;
    void *b = gx_cuda_pool_alloc(p, half);                   /* the free slab gives way */
    CHECK(b != NULL && b != a);
    CHECK(st.frees == frees + 1);
    CHECK(gx_cuda_pool_reserved(p) <= slab + half && gx_cuda_pool_in_use(p) == 2 * half);
    /* The small class refills from scratch and its blocks are distinct. */
    void *c = gx_cuda_pool_alloc(p, 4096), *d = gx_cuda_pool_alloc(p, 4096);
    CHECK(c == NULL || (c != d && d != NULL));
    if (c) gx_cuda_pool_free(p, c, 4096);
    if (d) gx_cuda_pool_free(p, d, 4096);
    gx_cuda_pool_free(p, a, half);
    gx_cuda_pool_free(p, b, half);
    CHECK(gx_cuda_pool_in_use(p) == 0);
    gx_cuda_pool_destroy(p);
    CHECK(st.frees == st.allocs);

    /* The same on a device that refuses (cudaMalloc out of memory), no limit. */
    p = test_pool(T, &st, 0);
    if (!p) return;
    void *x = gx_cuda_pool_alloc(p, 1000);
    gx_cuda_pool_free(p, x, 1000);
    st.fail_after = st.allocs;                               /* no more from the backend */
    frees = st.frees;
    CHECK(gx_cuda_pool_alloc(p, half) == NULL);              /* trimmed, but the device still says no */
    CHECK(st.frees == frees + 1 && gx_cuda_pool_reserved(p) == 0);
    st.fail_after = -1;
    CHECK((x = gx_cuda_pool_alloc(p, 1000)) != NULL);        /* usable after */
    gx_cuda_pool_free(p, x, 1000);
    gx_cuda_pool_destroy(p);
    CHECK(st.frees == st.allocs);
}
