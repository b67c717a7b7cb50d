/*
 * gx_tool_device.h — the --device flag of galaxyd and galaxy-train.
 *
 * `--device cpu|cuda|auto` (default auto). gx_device_select (kernels/gx_cuda.h)
 * answers which backend is usable and why not; the binaries print its line.
 * The CUDA launchers exist (kernels/cuda/) but the models do not dispatch to
 * them yet (issue 10), so even with a usable GPU the work runs on the CPU and
 * the log line says so — the flag never claims a device it does not use.
 */
#ifndef GX_TOOL_DEVICE_H
#define GX_TOOL_DEVICE_H

#include <stdio.h>
#include <string.h>
#include "gx_cuda.h"

/* Prints the device line to f. Returns 0, or 2 (usage error, message on
 * stderr) for a value other than cpu, cuda, auto. */
static inline int gx_tool_device_report(const char *prog, const char *want, FILE *f) {
    gx_device dev;
    char line[256];
    if (gx_device_select(want, &dev, line, sizeof line) != GX_OK) {
        fprintf(stderr, "%s: --device: %s\n", prog, line);
        return 2;
    }
    if (dev == GX_DEVICE_CUDA)
        fprintf(f, "%s: device: cpu (%s found, but the models do not run on the CUDA backend yet)\n",
                prog, line + (sizeof "device: " - 1));
    else
        fprintf(f, "%s: %s\n", prog, line);
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

#endif
