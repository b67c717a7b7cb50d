/*
 * fuzz_common.h — the invariant every decoder fuzz target checks, written once.
 *
 * Limits are smaller than the defaults so the fuzzer explores parsing rather
 * than allocating and filling large (but legal) images. Any input either
 * fails with a message and a cleared image, or succeeds with 3 bands whose
 * values are finite and in [0,1]; anything else aborts (a finding).
 */
#ifndef GX_FUZZ_COMMON_H
#define GX_FUZZ_COMMON_H

#include "gx_image.h"

#include <stdlib.h>

#define GX_FUZZ_LIMITS ((gx_image_limits){ 1024, 1024, 1 << 18 })

/* Returns 1 when the decode succeeded (im then holds a checked image the
 * caller frees), 0 when it failed as it should. */
static inline int gx_fuzz_check_decoded(gx_status s, gx_image *im, const gx_err *err) {
    if (s != GX_OK) {
        if (err->msg[0] == 0 || im->data || im->mask) abort();
        return 0;
    }
    if (im->c != 3 || im->h <= 0 || im->w <= 0) abort();
    size_t n = (size_t)3 * im->h * im->w;
    for (size_t i = 0; i < n; i++)
        if (!(im->data[i] >= 0.0f && im->data[i] <= 1.0f)) abort();
    return 1;
}

#endif
