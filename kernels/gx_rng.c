/*
 * gx_rng.c — the counter-based RNG (Philox4x32-10 from gx_math.h).
 *
 * A draw at position c of stream (seed) is philox(counter = c, key = seed):
 * no hidden state beyond the position, so any element of a fill can be
 * computed independently (threads, GPU) and runs are reproducible.
 * Each Philox call yields 4 words; a uniform double uses 2, a normal pair
 * (Box-Muller) uses all 4.
 */
#include "gx_impl.h"

void gx_rng_init(gx_rng *r, uint64_t seed) { r->seed = seed; r->counter = 0; }

gx_rng gx_rng_fork(const gx_rng *r, uint64_t stream) {
    /* Mix the stream id into the key with a splitmix64 step so forks of
     * nearby ids are unrelated. */
    uint64_t z = r->seed + 0x9E3779B97F4A7C15ull * (stream + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    gx_rng f = { z, 0 };
    return f;
}

static void gx_rng_block(uint64_t seed, uint64_t ctr, uint32_t out[4]) {
    out[0] = (uint32_t)ctr; out[1] = (uint32_t)(ctr >> 32); out[2] = 0; out[3] = 0;
    gx_philox4x32(out, (uint32_t)seed, (uint32_t)(seed >> 32));
}

uint32_t gx_rng_u32(gx_rng *r) {
    uint32_t w[4];
    gx_rng_block(r->seed, r->counter++, w);
    return w[0];
}

double gx_rng_uniform(gx_rng *r) {
    uint32_t w[4];
    gx_rng_block(r->seed, r->counter++, w);
    return gx_u01_from_bits(w[0], w[1]);
}

static void gx_normal_pair(const uint32_t w[4], double *z0, double *z1) {
    double u1 = gx_u01_from_bits(w[0], w[1]);
    double u2 = gx_u01_from_bits(w[2], w[3]);
    double rad = sqrt(-2.0 * log(1.0 - u1));     /* 1-u1 in (0,1]: log finite */
    *z0 = rad * cos(2.0 * GX_PI * u2);
    *z1 = rad * sin(2.0 * GX_PI * u2);
}

double gx_rng_normal(gx_rng *r) {
    uint32_t w[4];
    double z0, z1;
    gx_rng_block(r->seed, r->counter++, w);
    gx_normal_pair(w, &z0, &z1);
    return z0;
}

void gx_rng_fill_uniform(gx_rng *r, gx_real *out, int64_t n, double lo, double hi) {
    uint64_t base = r->counter;
    #pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint32_t w[4];
        gx_rng_block(r->seed, base + (uint64_t)i, w);
        out[i] = (gx_real)(lo + (hi - lo) * gx_u01_from_bits(w[0], w[1]));
    }
    r->counter = base + (uint64_t)n;
}

void gx_rng_fill_normal(gx_rng *r, gx_real *out, int64_t n, double mean, double std) {
    uint64_t base = r->counter;
    int64_t pairs = (n + 1) / 2;
    #pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < pairs; i++) {
        uint32_t w[4];
        double z0, z1;
        gx_rng_block(r->seed, base + (uint64_t)i, w);
        gx_normal_pair(w, &z0, &z1);
        out[2 * i] = (gx_real)(mean + std * z0);
        if (2 * i + 1 < n) out[2 * i + 1] = (gx_real)(mean + std * z1);
    }
    r->counter = base + (uint64_t)pairs;
}
