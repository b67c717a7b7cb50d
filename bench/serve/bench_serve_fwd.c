/*
 * bench_serve_fwd.c — the raw side of `make bench-serve`: what galaxyd's
 * batch worker could do with no HTTP at all. Loads a checkpoint exactly as
 * galaxyd does (gx_serve_model_load), prepares one cutout exactly as a
 * request would (gx_serve_prepare: decode + crop + resize), and times
 *
 *   prepare   decode + preprocess of the cutout (per request, in galaxyd's
 *             HTTP threads),
 *   forward   gx_serve_model_predict on B copies of it, for each B given
 *             (the batch worker's call; B = --max-batch is the ceiling of
 *             serving throughput).
 *
 * scripts/bench_serve.sh divides the served throughput at 64 connections by
 * the forward throughput at the server's max batch: the serving efficiency.
 *
 * --device cpu|cuda|auto (default auto, as galaxyd) loads the model where
 * galaxyd would: on the device, one pool and the model's own stream (the GPU
 * machine's run of bench_serve.sh, scripts/gpu_proof.sh). --tf32 and
 * --cuda-graphs on|off (default on) as galaxyd's: gpu_proof.sh times a
 * WaveletMamba's forward with and without its CUDA graphs.
 *
 * Output, one line per case (key=value, parsed by the script):
 *   device name=cpu|cuda:0 graphs=on|off
 *   prepare us=...
 *   forward batch=B ms=... images_per_s=... reps=...
 * ms is the median over reps; each case runs for about --seconds.
 */
#include "gx.h"
#include "gx_cuda.h"
#include "gx_serve_model.h"
#include "../../tools/gx_tool_device.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SF_MAX_REPS 100000

static double sf_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int sf_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned char *sf_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len))) {
            if (fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); buf = NULL; }
            else *n = (size_t)len;
        }
    }
    fclose(f);
    return buf;
}

/* Runs fn-like work until `seconds` passed (at least 3 reps); median ms. */
typedef struct sf_times { double *ms; int n; } sf_times;

static double sf_median(sf_times *t) {
    qsort(t->ms, (size_t)t->n, sizeof *t->ms, sf_cmp);
    return t->ms[t->n / 2];
}

static int sf_prepare(const gx_serve_info *info, const unsigned char *img, size_t n, float *x, double seconds,
                      sf_times *t, gx_err *err) {
    double end = sf_now() + seconds;
    t->n = 0;
    while (t->n < SF_MAX_REPS && (t->n < 3 || sf_now() < end)) {
        double t0 = sf_now();
        if (gx_serve_prepare(info, img, n, NULL, x, NULL, err) != GX_OK) return -1;
        t->ms[t->n++] = (sf_now() - t0) * 1e3;
    }
    return 0;
}

static int sf_forward(gx_serve_model *m, const float *x, int64_t S, int B, double seconds, sf_times *t,
                      gx_err *err) {
    const gx_serve_info *in = gx_serve_model_info(m);
    float *lg = malloc(sizeof(float) * (size_t)B * (size_t)in->n_classes);
    float *pr = malloc(sizeof(float) * (size_t)B * (size_t)in->n_classes);
    float *z = malloc(sizeof(float) * (size_t)B);
    int rc = -1;
    if (!lg || !pr || !z) {
        gx_err_set(err, GX_ERR_NOMEM, "out of memory for batch %d", B);
        goto done;
    }
    gx_serve_out out = { lg, pr, z, NULL };
    /* one untimed call: the arena grows to its high-water size, as in a warm server */
    if (gx_serve_model_predict(m, x, S, NULL, B, &out, err) != GX_OK) goto done;
    double end = sf_now() + seconds;
    t->n = 0;
    while (t->n < SF_MAX_REPS && (t->n < 3 || sf_now() < end)) {
        double t0 = sf_now();
        if (gx_serve_model_predict(m, x, S, NULL, B, &out, err) != GX_OK) goto done;
        t->ms[t->n++] = (sf_now() - t0) * 1e3;
    }
    rc = 0;
done:
    free(lg);
    free(pr);
    free(z);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_serve_fwd [--device cpu|cuda|auto] [--tf32] [--cuda-graphs on|off] CHECKPOINT IMAGE\n"
               "                       [SECONDS [BATCH...]]\n"
               "  times gx_serve_prepare on IMAGE and gx_serve_model_predict at each BATCH\n"
               "  (default 1 32), about SECONDS (default 2) per case, with the model where\n"
               "  galaxyd would put it (--device, default auto; --tf32 and --cuda-graphs as\n"
               "  galaxyd's)\n");
}

/* The device the model goes to, as galaxyd chooses it (its --device and
 * --tf32); sdev->pool stays NULL on the CPU. 0, or 2 with a message. */
static int sf_device(const char *want, int tf32, int graphs, gx_serve_device *sdev) {
    gx_device dev;
    if (gx_tool_device_report("bench_serve_fwd", want, "the model on the device", &dev, stderr)) return 2;
    *sdev = (gx_serve_device){ NULL, 0, tf32, graphs };
    return dev == GX_DEVICE_CUDA && gx_tool_open_pool("bench_serve_fwd", &sdev->pool) ? 2 : 0;
}

static int sf_main(int argc, char **argv) {
    const char *want = gx_tool_take_device(&argc, argv);
    int tf32 = gx_tool_take_tf32(&argc, argv), graphs = 1;
    /* --cuda-graphs on|off, taken out of argv like --device. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--cuda-graphs")) {
            if (strcmp(argv[i + 1], "on") && strcmp(argv[i + 1], "off")) {
                fprintf(stderr, "bench_serve_fwd: --cuda-graphs: '%s' is not on or off\n", argv[i + 1]);
                return 2;
            }
            graphs = !strcmp(argv[i + 1], "on");
            memmove(argv + i, argv + i + 2, (size_t)(argc - i - 1) * sizeof *argv);
            argc -= 2;
            break;
        }
    if (argc < 3 || !strcmp(argv[1], "--help")) {
        usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    double seconds = argc > 3 ? atof(argv[3]) : 2.0;
    if (!(seconds > 0 && seconds < 3600)) { fprintf(stderr, "bench_serve_fwd: bad SECONDS '%s'\n", argv[3]); return 2; }
    int batches[32], nb = 0;
    for (int i = 4; i < argc && nb < 32; i++) {
        batches[nb] = atoi(argv[i]);
        if (batches[nb] < 1 || batches[nb] > 1024) { fprintf(stderr, "bench_serve_fwd: bad BATCH '%s'\n", argv[i]); return 2; }
        nb++;
    }
    if (nb == 0) { batches[0] = 1; batches[1] = 32; nb = 2; }
    int maxb = 1;
    for (int i = 0; i < nb; i++) if (batches[i] > maxb) maxb = batches[i];

    gx_err err;
    gx_serve_model *m = NULL;
    size_t img_n = 0;
    gx_serve_device sdev;
    if (sf_device(want ? want : "auto", tf32, graphs, &sdev)) return 2;
    unsigned char *img = sf_read(argv[2], &img_n);
    if (!img) {
        fprintf(stderr, "bench_serve_fwd: cannot read %s\n", argv[2]);
        if (sdev.pool) gx_cuda_pool_destroy(sdev.pool);
        return 1;
    }
    if (gx_serve_model_load_on(&m, argv[1], NULL, sdev.pool ? &sdev : NULL, &err) != GX_OK) {
        fprintf(stderr, "bench_serve_fwd: %s\n", err.msg);
        free(img);
        if (sdev.pool) gx_cuda_pool_destroy(sdev.pool);
        return 1;
    }
    const gx_serve_info *in = gx_serve_model_info(m);
    printf("device name=%s graphs=%s\n", in->device, graphs ? "on" : "off");
    int64_t S = in->input_size, per = 3 * S * S;
    float *x = malloc(sizeof(float) * (size_t)(per * maxb));
    sf_times t = { malloc(sizeof(double) * SF_MAX_REPS), 0 };
    int rc = 1;
    if (!x || !t.ms) { fprintf(stderr, "bench_serve_fwd: out of memory\n"); goto done; }
    if (sf_prepare(in, img, img_n, x, seconds / 4, &t, &err)) { fprintf(stderr, "bench_serve_fwd: %s\n", err.msg); goto done; }
    printf("prepare us=%.1f reps=%d\n", sf_median(&t) * 1e3, t.n);
    for (int i = 1; i < maxb; i++) memcpy(x + i * per, x, sizeof(float) * (size_t)per);
    for (int k = 0; k < nb; k++) {
        if (sf_forward(m, x, S, batches[k], seconds, &t, &err)) { fprintf(stderr, "bench_serve_fwd: %s\n", err.msg); goto done; }
        double ms = sf_median(&t);
        printf("forward batch=%d ms=%.3f images_per_s=%.2f reps=%d\n", batches[k], ms, batches[k] * 1e3 / ms, t.n);
        fflush(stdout);
    }
    rc = 0;
done:
    free(t.ms);
    free(x);
    free(img);
    gx_serve_model_free(m);   /* gives its device memory back to the pool first */
    if (sdev.pool) gx_cuda_pool_destroy(sdev.pool);
    return rc;
}

/* The work runs on a thread of its own, as galaxyd's forward runs on its
 * batch worker (not the main thread): OpenMP's per-thread settings and
 * libgomp's team for that thread then match the server's. */
typedef struct { int argc; char **argv; int rc; } sf_args;

static void *sf_thread(void *p) {
    sf_args *a = p;
    a->rc = sf_main(a->argc, a->argv);
    return NULL;
}

int main(int argc, char **argv) {
    sf_args a = { argc, argv, 1 };
    pthread_t t;
    if (pthread_create(&t, NULL, sf_thread, &a)) {
        fprintf(stderr, "bench_serve_fwd: cannot start the worker thread\n");
        return 1;
    }
    pthread_join(t, NULL);
    return a.rc;
}
