/*
 * gx_tool_omp.h — one process-level setting shared by galaxyd and galaxy-train:
 * OpenMP's wait policy.
 *
 * Why: libgomp's default lets a thread that reaches a barrier spin for a long
 * while before it sleeps. The engine opens many short parallel regions per
 * forward pass; on a machine whose cores are shared (galaxyd's own HTTP
 * threads decoding PNGs, other jobs) a barrier then waits for a partner that
 * is not running. Measured on the 2-core machine (docs/benchmarks.md,
 * "Survey-scale ingest"): offline scoring 6x, /v1/anomaly/batch 6-19x slower
 * with the default policy than with OMP_WAIT_POLICY=passive.
 *
 * libgomp reads the variable once, when it is loaded, before main runs, so
 * setting it in main is too late: when the user has not chosen a policy, the
 * program re-executes itself once with OMP_WAIT_POLICY=passive (same pid,
 * same arguments). A user's explicit OMP_WAIT_POLICY (e.g. active) is kept,
 * and GX_OMP_KEEP_DEFAULT=1 keeps libgomp's own default (the benchmarks use it
 * to measure the difference).
 * If the re-exec fails the program simply goes on with the default policy.
 */
#ifndef GX_TOOL_OMP_H
#define GX_TOOL_OMP_H

#include <stdlib.h>
#include <unistd.h>

static inline void gx_tool_prefer_passive_omp(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GX_OMP_KEEP_DEFAULT")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* execv returned: keep running with libgomp's default. */
}

#endif
