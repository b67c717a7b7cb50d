/*
 * fuzz_image.c — libFuzzer target for gx_image_decode (sniffing + dispatch), then the preprocessing pipeline.
 *
 * Built by mk/fuzz.mk with clang -fsanitize=fuzzer,address,undefined and the
 * io sources linked directly. Limits are smaller than the defaults so that
 * the fuzzer explores parsing rather than spending its time allocating and
 * filling large (but legal) images. The invariants checked: any input either
 * fails with a message and a cleared image, or succeeds with 3 bands whose
 * values are finite and in [0,1].
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gx_image_limits lim = GX_FUZZ_LIMITS;
    gx_image im;
    gx_err err;
    err.msg[0] = 0;
    if (!gx_fuzz_check_decoded(gx_image_decode(data, size, &lim, NULL, &im, &err), &im, &err)) return 0;
    gx_image x;
    gx_pre_opts o = { 0.8, 16 };
    if (gx_pre_prepare(&im, &o, &x, &err) != GX_OK) abort();
    gx_image_free(&x);
    gx_image_free(&im);
    return 0;
}
