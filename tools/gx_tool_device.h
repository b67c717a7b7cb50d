/*
 * gx_tool_device.h — the --device flag of galaxyd and galaxy-train.
 *
 * `--device cpu|cuda|auto` (default auto). gx_device_select (kernels/gx_cuda.h)
 * answers which backend is usable and why not; the binaries print its line.
 * galaxyd serves its models from the CUDA backend (tensors on the device,
 * kernels/gx_device.c), galaxy-train's three trainers train there
 * (trainer/gx_train_common.h, gx_train_device), score scores and eval
 * evaluates there; its other commands run on the CPU, and with a usable GPU
 * their line says so — the flag never claims a device it does not use.
 * (Neither path has run on a GPU yet: kernels/cuda/README.md, "Unproven".)
 */
#ifndef GX_TOOL_DEVICE_H
#define GX_TOOL_DEVICE_H

#include <stdio.h>
#include <string.h>
#include "gx_cuda.h"

/* Prints the device line to f and sets *out (may be NULL) to the backend
 * the program will use. cuda_note: what runs on the device when it is
 * chosen (e.g. "every model on the device"), or NULL
 * for a command that does not run on the CUDA backend (the line then
 * says cpu). Returns 0, or 2 (usage error, message on stderr) for a value
 * other than cpu, cuda, auto. */
static inline int gx_tool_device_report(const char *prog, const char *want, const char *cuda_note,
                                        gx_device *out, FILE *f) {
    gx_device dev;
    char line[256];
    if (gx_device_select(want, &dev, line, sizeof line) != GX_OK) {
        fprintf(stderr, "%s: --device: %s\n", prog, line);
        return 2;
    }
    if (dev == GX_DEVICE_CUDA && !cuda_note) {
        fprintf(f, "%s: device: cpu (%s found, but this command does not run on the CUDA backend)\n",
                prog, line + (sizeof "device: " - 1));
        dev = GX_DEVICE_CPU;
    } else if (dev == GX_DEVICE_CUDA) {
        fprintf(f, "%s: %s (%s)\n", prog, line, cuda_note);
    } else {
        fprintf(f, "%s: %s\n", prog, line);
    }
    if (out) *out = dev;
    return 0;
}

/* Removes every "--device V" / "--device=V" from argv (so that each
 * subcommand's parser need not know it) and returns the last V, or NULL.
 * *argc is updated; argv stays NULL-terminated. */
static inline const char *gx_tool_take_device(int *argc, char **argv) {
    const char *v = NULL;
    int w = 0;
    for (int r = 0; r < *argc; r++) {
        const char *a = argv[r];
        if (!strncmp(a, "--device=", 9)) { v = a + 9; continue; }
        if (!strcmp(a, "--device") && r + 1 < *argc) { v = argv[++r]; continue; }
        argv[w++] = argv[r];
    }
    argv[w] = NULL;
    *argc = w;
    return v;
}

/* The --tf32 line: ignored (cpu_words say what runs on the CPU instead) or
 * TF32 on cuda:0. Returns tf32 as it applies: 0 on the CPU. */
static inline int gx_tool_tf32_report(const char *prog, int tf32, gx_device dev, const char *cpu_words, FILE *f) {
    if (tf32 && dev != GX_DEVICE_CUDA) fprintf(f, "%s: --tf32 ignored: %s\n", prog, cpu_words);
    else if (tf32) fprintf(f, "%s: matrix products in TF32 on cuda:0 (--tf32)\n", prog);
    return tf32 && dev == GX_DEVICE_CUDA;
}

/* The device pool of cuda:0 (galaxyd and bench_serve_fwd serve from one);
 * 0, or 1 with "PROG: device cuda:0: ..." on stderr. */
static inline int gx_tool_open_pool(const char *prog, gx_cuda_pool **pool) {
    gx_cuda_backend be;
    gx_err err;
    if (gx_cuda_device_backend(0, &be, &err) != GX_OK || gx_cuda_pool_create(&be, 0, pool, &err) != GX_OK) {
        fprintf(stderr, "%s: device cuda:0: %s\n", prog, err.msg);
        return 1;
    }
    return 0;
}

/* Removes every "--tf32" from argv (like gx_tool_take_device); 1 when one
 * was there. cuBLAS may then use TF32 tensor cores on the device. */
static inline int gx_tool_take_tf32(int *argc, char **argv) {
    int w = 0, on = 0;
    for (int r = 0; r < *argc; r++) {
        if (!strcmp(argv[r], "--tf32")) { on = 1; continue; }
        argv[w++] = argv[r];
    }
    argv[w] = NULL;
    *argc = w;
    return on;
}

#endif
