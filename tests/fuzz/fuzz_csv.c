/*
 * fuzz_csv.c — libFuzzer target for gx_catalog_parse (the folder dataset's
 * CSV catalogue: RFC 4180 quoting, header mapping, numbers, class names).
 *
 * Built by mk/fuzz.mk with clang -fsanitize=fuzzer,address,undefined; seeds
 * are the .csv files in tests/fixtures/io/csv/. The first input byte picks n_classes
 * (1..11) so range checks are explored too. Invariant: a failure leaves a
 * message and a zeroed catalogue; a success has n >= 1 rows, each with a
 * non-empty file name, a label in range, finite-or-NaN coordinates and a
 * line number that increases row to row. Anything else aborts (a finding).
 */
#include "gx_dataset.h"

#include <math.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ok(const gx_catalog *c, int n_classes) {
    if (c->n < 1 || !c->file || !c->label || !c->ra || !c->dec || !c->redshift || !c->line)
        abort();
    for (int64_t i = 0; i < c->n; i++) {
        if (!c->file[i] || c->file[i][0] == 0) abort();
        if (c->label[i] < 0 || c->label[i] >= n_classes) abort();
        if (isinf(c->ra[i]) || isinf(c->dec[i]) || isinf(c->redshift[i])) abort();
        if (c->line[i] < 1 || (i > 0 && c->line[i] <= c->line[i - 1])) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int n_classes = size ? 1 + data[0] % GX_CLASSES_MAX : GX_CLASSES_MAX;
    gx_catalog c;
    gx_err err;
    err.msg[0] = 0;
    gx_status s = gx_catalog_parse((const char *)data, size, n_classes, &c, &err);
    if (s == GX_OK) {
        check_ok(&c, n_classes);
        gx_catalog_free(&c);
    } else if (err.msg[0] == 0 || c.n != 0 || c.file || c.label || c.domain) {
        abort();
    }
    return 0;
}
