/*
 * bench_io.c — decode throughput of io/: PNG, JPEG and FITS at 64x64 and
 * 256x256, from memory, as the daemon decodes uploads.
 *
 *   build/bench_io DIR   (DIR holds img{64,256}.{png,jpg,fits}, written by
 *                         bench/io/ref_io.py make DIR with PIL and astropy)
 *
 * Prints "row<TAB>format<TAB>size<TAB>images/s" per file; scripts/bench_io.sh
 * joins it with the Python reference. Single-threaded: one request decodes
 * one image, so per-image latency is what matters.
 */
#include "gx_image.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned char *bench_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); buf = NULL; }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* Decodes buf until `seconds` have passed (at least 3 times); images/s, or
 * -1 with the error printed when the file does not decode. */
static double bench_rate(const unsigned char *buf, size_t n, double seconds, const char *path) {
    gx_image im;
    gx_err err = {{0}};
    if (gx_image_decode(buf, n, NULL, NULL, &im, &err) != GX_OK) {
        fprintf(stderr, "bench_io: %s: %s\n", path, err.msg);
        return -1;
    }
    gx_image_free(&im);
    long reps = 0;
    double t0 = bench_now(), dt;
    do {
        if (gx_image_decode(buf, n, NULL, NULL, &im, &err) != GX_OK) return -1;
        gx_image_free(&im);
        reps++;
        dt = bench_now() - t0;
    } while (dt < seconds || reps < 3);
    return (double)reps / dt;
}

int main(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: bench_io DIR   (images written by bench/io/ref_io.py make DIR)\n");
        return 2;
    }
    const char *env = getenv("GX_BENCH_SECONDS");
    double seconds = env ? atof(env) : 1.0;
    static const int sizes[] = { 64, 256 };
    static const char *const fmts[][2] = { { "png", "png" }, { "jpeg", "jpg" }, { "fits", "fits" } };
    int status = 0;
    for (int s = 0; s < 2; s++)
        for (int f = 0; f < 3; f++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/img%d.%s", argv[1], sizes[s], fmts[f][1]);
            size_t n = 0;
            unsigned char *buf = bench_read(path, &n);
            if (!buf) { fprintf(stderr, "bench_io: cannot read %s\n", path); status = 1; continue; }
            double r = bench_rate(buf, n, seconds, path);
            if (r < 0) status = 1;
            else printf("row\t%s\t%d\t%.1f\n", fmts[f][0], sizes[s], r);
            fflush(stdout);
            free(buf);
        }
    return status;
}
