/*
 * fuzz_png.c — libFuzzer target for gx_png_decode (libpng, all colour types, interlacing, limits).
 *
 * Built by mk/fuzz.mk with clang -fsanitize=fuzzer,address,undefined and the
 * io sources linked directly. Limits are smaller than the defaults so that
 * the fuzzer explores parsing rather than spending its time allocating and
 * filling large (but legal) images. The invariants checked: any input either
 * fails with a message and a cleared image, or succeeds with 3 bands whose
 * values are finite and in [0,1].
 */
#include "gx_image.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gx_image_limits lim = { 1024, 1024, 1 << 18 };
    gx_image im;
    gx_err err;
    err.msg[0] = 0;
    gx_status s = gx_png_decode(data, size, &lim, &im, &err);
    if (s != GX_OK) {
        if (err.msg[0] == 0 || im.data || im.mask) abort();
        return 0;
    }
    if (im.c != 3 || im.h <= 0 || im.w <= 0) abort();
    size_t n = (size_t)3 * im.h * im.w;
    for (size_t i = 0; i < n; i++)
        if (!(im.data[i] >= 0.0f && im.data[i] <= 1.0f)) abort();
    gx_image_free(&im);
    return 0;
}
