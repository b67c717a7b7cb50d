/*
 * fuzz_fits.c — libFuzzer target for gx_fits_decode (cfitsio memory files, HDU selection, stretch).
 *
 * Built by mk/fuzz.mk with clang -fsanitize=fuzzer,address,undefined; the
 * invariant checked is in fuzz_common.h.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gx_image_limits lim = GX_FUZZ_LIMITS;
    gx_image im;
    gx_err err;
    err.msg[0] = 0;
    if (gx_fuzz_check_decoded(gx_fits_decode(data, size, &lim, NULL, &im, &err), &im, &err)) gx_image_free(&im);
    return 0;
}
