/*
 * bench_morph.c — morph/ against statmorph on the same 64×64 cutouts, in
 * the same run (spec goal: at least 50× faster).
 *
 *   bench_morph CUTOUTS.f32 M [PYTHON]
 *
 * CUTOUTS.f32 holds N×64×64 float32 (bench_statmorph.py prepare). The C
 * side times gx_morph_measure_auto (segmentation recipe + every statistic)
 * on the first M cutouts on one thread (the fair comparison: statmorph is
 * single-threaded), then gx_morph_measure_batch on all N with every thread.
 * With PYTHON it then runs bench/morph/bench_statmorph.py on the same M
 * cutouts and prints the ratio. The load average is printed before and
 * after: the machine is shared, so timings are only comparable within a run.
 */
#include "gx_morph.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void print_load(const char *when) {
    FILE *f = fopen("/proc/loadavg", "r");
    char buf[128] = "?";
    if (f) {
        if (!fgets(buf, sizeof buf, f)) strcpy(buf, "?\n");
        fclose(f);
    }
    printf("load average %s: %s", when, buf);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_morph CUTOUTS.f32 M [PYTHON]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { fprintf(stderr, "bench_morph: cannot open %s\n", argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const int S = 64;
    int64_t n = bytes / (int64_t)(S * S * sizeof(float));
    int m = atoi(argv[2]);
    if (n <= 0 || m <= 0 || m > n) { fprintf(stderr, "bench_morph: %lld cutouts, M=%d\n", (long long)n, m); fclose(f); return 2; }
    float *im = malloc((size_t)n * S * S * sizeof *im);
    gx_morph_result *res = calloc((size_t)n, sizeof *res);
    if (!im || !res || fread(im, sizeof *im, (size_t)n * S * S, f) != (size_t)n * S * S) {
        fprintf(stderr, "bench_morph: read failed\n");
        fclose(f); free(im); free(res);
        return 2;
    }
    fclose(f);
    print_load("before");
    gx_err err;
    /* single thread, the same M cutouts statmorph gets; repeated so the
     * timed span is long enough to read */
    int reps = 1 + 2000 / m;
    double t0 = now_s();
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < m; i++)
            if (gx_morph_measure_auto(im + (size_t)i * S * S, NULL, S, S, NULL, &res[i], NULL, &err)) {
                fprintf(stderr, "bench_morph: %s\n", err.msg);
                return 1;
            }
    double c_ms = 1e3 * (now_s() - t0) / ((double)reps * m);
    int flags[5] = { 0 };
    double nfev = 0;
    for (int i = 0; i < m; i++) {
        flags[res[i].flag <= 4 ? res[i].flag : 4]++;
        nfev += res[i].asym_nfev;
    }
    printf("asymmetry evaluations per cutout: %.0f\n", nfev / m);
    printf("C morph (1 thread): %.3f ms/cutout over %d cutouts x %d reps (flags 0/1/2/4: %d/%d/%d/%d)\n",
           c_ms, m, reps, flags[0], flags[1], flags[2], flags[4]);
    int nt = omp_get_max_threads();
    t0 = now_s();
    if (gx_morph_measure_batch(im, NULL, n, S, S, NULL, nt, res, &err)) {
        fprintf(stderr, "bench_morph: %s\n", err.msg);
        return 1;
    }
    double tb = now_s() - t0;
    printf("C morph batch (%d threads): %lld cutouts in %.3f s, %.0f cutouts/s\n", nt, (long long)n, tb,
           (double)n / tb);
    int rc = 0;
    if (argc > 3) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s bench/morph/bench_statmorph.py time %s %d", argv[3], argv[1], m);
        FILE *p = popen(cmd, "r");
        double s_ms = -1;
        char line[256];
        while (p && fgets(line, sizeof line, p)) {
            fputs(line, stdout);
            sscanf(line, "statmorph_ms_per_cutout %lf", &s_ms);
        }
        if (p) pclose(p);
        if (s_ms > 0) {
            double ratio = s_ms / c_ms;
            printf("ratio statmorph / C (1 thread, same %d cutouts): %.0fx (goal >= 50x: %s)\n", m, ratio,
                   ratio >= 50 ? "met" : "NOT met");
            rc = ratio >= 50 ? 0 : 1;
        } else {
            printf("statmorph timing unavailable (is statmorph installed for %s?)\n", argv[3]);
        }
    }
    print_load("after");
    free(im);
    free(res);
    return rc;
}
