/*
 * test_io_util.h — helpers shared by the tests/unit/test_io_*.c files:
 * loading fixtures from tests/fixtures/io/, and byte surgery on PNG, JPEG
 * and FITS buffers to build malformed inputs.
 */
#ifndef TEST_IO_UTIL_H
#define TEST_IO_UTIL_H

#include "gx_image.h"
#include "gx_test.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Reads tests/fixtures/io/<name> (GX_FIXTURE_DIR overrides tests/fixtures)
 * into a malloc'ed buffer; NULL (and *n = 0) if missing. */
static inline uint8_t *tio_read(const char *name, size_t *n) {
    const char *dir = getenv("GX_FIXTURE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/io/%s", dir ? dir : "tests/fixtures", name);
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    if (b) *n = (size_t)len;
    return b;
}

static inline uint32_t tio_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void tio_put_be32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Offset of the first PNG chunk with this tag (its length field), or -1. */
static inline long tio_png_chunk(const uint8_t *b, size_t n, const char *tag) {
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = tio_be32(b + off);
        if (memcmp(b + off + 4, tag, 4) == 0) return (long)off;
        off += 12 + (size_t)len;
    }
    return -1;
}

/* Recompute the CRC of the chunk at off after editing it. */
static inline void tio_png_fix_crc(uint8_t *b, long off) {
    uint32_t len = tio_be32(b + off);
    uint32_t crc = (uint32_t)crc32(0L, b + off + 4, len + 4);
    tio_put_be32(b + off + 8 + len, crc);
}

/* Offset of the first JPEG marker FF <m> (the FF byte), or -1. */
static inline long tio_jpeg_marker(const uint8_t *b, size_t n, uint8_t m) {
    for (size_t i = 2; i + 1 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == m) return (long)i;
    return -1;
}

/* Builds a FITS buffer: header cards (each up to 80 chars; "END" appended
 * unless no_end), padded to 2880, then nbytes of data (zeros when data is
 * NULL), padded to 2880 unless exact. Returns malloc'ed bytes. */
static inline uint8_t *tio_fits(const char *const *cards, int ncards, int no_end,
                                const void *data, size_t nbytes, int exact, size_t *n) {
    size_t hcards = (size_t)ncards + (no_end ? 0 : 1);
    size_t hbytes = (hcards * 80 + 2879) / 2880 * 2880;
    size_t dbytes = exact ? nbytes : (nbytes + 2879) / 2880 * 2880;
    uint8_t *b = calloc(hbytes + dbytes + 1, 1);
    memset(b, ' ', hbytes);
    for (int i = 0; i < ncards; i++) {
        size_t l = strlen(cards[i]);
        memcpy(b + (size_t)i * 80, cards[i], l > 80 ? 80 : l);
    }
    if (!no_end) memcpy(b + (size_t)ncards * 80, "END", 3);
    if (data) memcpy(b + hbytes, data, nbytes);
    *n = hbytes + dbytes;
    return b;
}

/* A FITS card "KEY     = value" (value right-aligned as FITS expects). */
static inline const char *tio_card(char buf[81], const char *key, const char *val) {
    snprintf(buf, 81, "%-8s= %20s", key, val);
    return buf;
}

#endif
