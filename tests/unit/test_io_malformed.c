/*
 * test_io_malformed.c — malformed inputs: each must give its specific
 * status and message, never crash, never leak (run under ASan too).
 *
 * The cases are built in memory from valid fixtures (truncation, byte
 * flips, header fields patched with recomputed PNG CRCs) or, for FITS,
 * from header cards. Every case names the status and a substring of the
 * message it must produce; the table is the documentation of what each
 * decoder refuses and how it says so.
 */
#include "test_io_util.h"

typedef enum { TIO_ANY, TIO_PNG, TIO_JPEG, TIO_FITS } tio_entry;

/* Decode through `entry` (ANY = the sniffing dispatcher) and check. */
static void tio_expect(gx_test_state *T, const char *label, tio_entry entry, const uint8_t *b,
                       size_t n, const gx_image_limits *lim, gx_status want, const char *substr) {
    gx_image im;
    gx_err err = { "" };
    memset(&im, 0xAB, sizeof im);   /* the decoder must zero it */
    gx_status s = entry == TIO_PNG  ? gx_png_decode(b, n, lim, &im, &err)
                : entry == TIO_JPEG ? gx_jpeg_decode(b, n, lim, &im, &err)
                : entry == TIO_FITS ? gx_fits_decode(b, n, lim, NULL, &im, &err)
                                    : gx_image_decode(b, n, lim, NULL, &im, &err);
    CHECK_MSG(s == want, "%s: status %s (%s), want %s", label, gx_status_str(s), err.msg,
              gx_status_str(want));
    CHECK_MSG(strstr(err.msg, substr) != NULL, "%s: message \"%s\" lacks \"%s\"", label, err.msg,
              substr);
    CHECK_MSG(im.data == NULL && im.mask == NULL, "%s: output not cleared", label);
    gx_image_free(&im);
}

static uint8_t *tio_dup(const uint8_t *b, size_t n) {
    uint8_t *d = malloc(n ? n : 1);
    memcpy(d, b, n);
    return d;
}

/* ------------------------------------------------------------- generic */

GX_TEST(io_malformed_generic) {
    tio_expect(T, "empty", TIO_ANY, (const uint8_t *)"", 0, NULL, GX_ERR_FORMAT, "empty input");
    tio_expect(T, "NULL", TIO_ANY, NULL, 10, NULL, GX_ERR_FORMAT, "empty input");
    tio_expect(T, "gif", TIO_ANY, (const uint8_t *)"GIF89a\x01\x00\x01\x00", 10, NULL,
               GX_ERR_UNSUPPORTED, "unknown format");
    tio_expect(T, "one byte", TIO_ANY, (const uint8_t *)"\x89", 1, NULL, GX_ERR_UNSUPPORTED,
               "unknown format");
    tio_expect(T, "png empty", TIO_PNG, NULL, 0, NULL, GX_ERR_FORMAT, "png: empty input");
    tio_expect(T, "jpeg empty", TIO_JPEG, NULL, 0, NULL, GX_ERR_FORMAT, "jpeg: empty input");
    tio_expect(T, "fits empty", TIO_FITS, NULL, 0, NULL, GX_ERR_FORMAT, "fits: empty input");
}

/* ----------------------------------------------------------------- PNG */

GX_TEST(io_malformed_png) {
    size_t n;
    uint8_t *ok = tio_read("rgb8.png", &n);
    CHECK(ok != NULL);
    if (!ok) return;
    long ihdr = tio_png_chunk(ok, n, "IHDR"), idat = tio_png_chunk(ok, n, "IDAT");
    CHECK(ihdr == 8 && idat > 0);
    uint8_t *b;

    tio_expect(T, "png wrong magic", TIO_PNG, (const uint8_t *)"\xFF\xD8\xFF\xE0xxxxxxxx", 12,
               NULL, GX_ERR_FORMAT, "png: bad signature");
    tio_expect(T, "png signature only", TIO_ANY, ok, 8, NULL, GX_ERR_FORMAT, "truncated");
    tio_expect(T, "png truncated in IHDR", TIO_ANY, ok, 20, NULL, GX_ERR_FORMAT, "truncated");
    tio_expect(T, "png truncated in IDAT", TIO_ANY, ok, (size_t)idat + 20, NULL, GX_ERR_FORMAT,
               "png:");
    tio_expect(T, "png truncated before IEND", TIO_ANY, ok, n - 12, NULL, GX_ERR_FORMAT,
               "truncated");

    b = tio_dup(ok, n); b[ihdr + 8 + 12] ^= 0xFF;     /* a CRC byte */
    tio_expect(T, "png IHDR CRC", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "CRC");
    free(b);

    b = tio_dup(ok, n);                               /* lying dimensions, valid CRC */
    tio_put_be32(b + ihdr + 8, 100000); tio_put_be32(b + ihdr + 12, 100000);
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png 100000x100000", TIO_ANY, b, n, NULL, GX_ERR_NOMEM,
               "png: image 100000x100000 exceeds limit 4096x4096");
    tio_put_be32(b + ihdr + 8, 4096); tio_put_be32(b + ihdr + 12, 4097);
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png 4096x4097", TIO_ANY, b, n, NULL, GX_ERR_NOMEM, "exceeds limit");
    gx_image_limits lim = { 1 << 20, 1 << 20, 1000 };
    tio_put_be32(b + ihdr + 8, 2000); tio_put_be32(b + ihdr + 12, 2);
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png pixel limit", TIO_ANY, b, n, &lim, GX_ERR_NOMEM, "more than 1000 pixels");
    tio_put_be32(b + ihdr + 8, 0x7FFFFFFF);
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png width 2^31-1", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "png:");
    tio_put_be32(b + ihdr + 8, 0); tio_put_be32(b + ihdr + 12, 7);
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png width 0", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "zero");
    tio_put_be32(b + ihdr + 8, 13); tio_put_be32(b + ihdr + 12, 70);   /* data for 7 rows */
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png height lies (short data)", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "png:");
    free(b);

    b = tio_dup(ok, n); b[ihdr + 16] = 7;             /* bit depth 7 */
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png bit depth 7", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "bit depth");
    free(b);
    b = tio_dup(ok, n); b[ihdr + 17] = 5;             /* colour type 5 */
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png colour type 5", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "color type");
    free(b);
    b = tio_dup(ok, n); b[ihdr + 20] = 2;             /* interlace method 2 */
    tio_png_fix_crc(b, ihdr);
    tio_expect(T, "png interlace 2", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "interlace");
    free(b);

    b = tio_dup(ok, n);                               /* corrupt zlib, CRC fixed */
    for (int i = 10; i < 30 && idat + 8 + i < (long)n - 12; i++) b[idat + 8 + i] ^= 0x5A;
    tio_png_fix_crc(b, idat);
    tio_expect(T, "png corrupt zlib", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "png:");
    free(b);
    b = tio_dup(ok, n); b[idat + 8] = 0x78 ^ 0x0F;    /* bad zlib header */
    tio_png_fix_crc(b, idat);
    tio_expect(T, "png bad zlib header", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "png:");
    free(b);

    /* no IDAT: signature + IHDR + IEND */
    size_t m = 8 + 25;
    b = malloc(m + 12);
    memcpy(b, ok, m);
    memcpy(b + m, ok + n - 12, 12);
    tio_expect(T, "png no IDAT", TIO_ANY, b, m + 12, NULL, GX_ERR_FORMAT, "IEND: out of place");
    free(b);

    /* a chunk claiming 2^31-1 bytes (a "huge header") after IHDR */
    b = tio_dup(ok, n);
    tio_put_be32(b + idat, 0x7FFFFFFF);
    memcpy(b + idat + 4, "tEXt", 4);
    tio_expect(T, "png huge chunk", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "png:");
    free(b);
    free(ok);

    /* palette image without its PLTE chunk */
    uint8_t *pal = tio_read("palette.png", &n);
    long plte = pal ? tio_png_chunk(pal, n, "PLTE") : -1;
    CHECK(plte > 0);
    if (plte > 0) {
        uint32_t len = tio_be32(pal + plte);
        b = malloc(n);
        memcpy(b, pal, (size_t)plte);
        memcpy(b + plte, pal + plte + 12 + len, n - plte - 12 - len);
        tio_expect(T, "png palette without PLTE", TIO_ANY, b, n - 12 - len, NULL, GX_ERR_FORMAT,
                   "PLTE");
        free(b);
    }
    free(pal);

    /* 16-bit RGB cut at an odd byte inside IDAT */
    uint8_t *p16 = tio_read("rgb16.png", &n);
    long d16 = p16 ? tio_png_chunk(p16, n, "IDAT") : -1;
    CHECK(d16 > 0);
    if (d16 > 0)
        tio_expect(T, "png 16-bit odd truncation", TIO_ANY, p16, (size_t)d16 + 8 + 33, NULL,
                   GX_ERR_FORMAT, "png:");
    free(p16);
}

/* ---------------------------------------------------------------- JPEG */

GX_TEST(io_malformed_jpeg) {
    size_t n;
    uint8_t *ok = tio_read("baseline_rgb.jpg", &n);
    CHECK(ok != NULL);
    if (!ok) return;
    long sof = tio_jpeg_marker(ok, n, 0xC0), sos = tio_jpeg_marker(ok, n, 0xDA);
    long dqt = tio_jpeg_marker(ok, n, 0xDB);
    CHECK(sof > 0 && sos > 0 && dqt > 0);
    uint8_t *b;

    tio_expect(T, "jpeg wrong magic", TIO_JPEG, (const uint8_t *)"\x89PNG\r\n\x1a\n", 8, NULL,
               GX_ERR_FORMAT, "jpeg: bad signature");
    tio_expect(T, "jpeg SOI only", TIO_ANY, ok, 3, NULL, GX_ERR_FORMAT, "jpeg:");
    tio_expect(T, "jpeg truncated in header", TIO_ANY, ok, (size_t)sof + 4, NULL, GX_ERR_FORMAT,
               "jpeg:");
    tio_expect(T, "jpeg truncated in scan", TIO_ANY, ok, (size_t)sos + (n - sos) / 2, NULL,
               GX_ERR_FORMAT, "corrupt data");
    tio_expect(T, "jpeg missing EOI", TIO_ANY, ok, n - 2, NULL, GX_ERR_FORMAT, "corrupt data");

    b = tio_dup(ok, n);                               /* SOF: height, width */
    b[sof + 5] = 0xEA; b[sof + 6] = 0x60; b[sof + 7] = 0xEA; b[sof + 8] = 0x60;
    tio_expect(T, "jpeg 60000x60000", TIO_ANY, b, n, NULL, GX_ERR_NOMEM,
               "jpeg: image 60000x60000 exceeds limit");
    b[sof + 7] = 0; b[sof + 8] = 0;
    tio_expect(T, "jpeg width 0", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "jpeg:");
    free(b);

    b = tio_dup(ok, n);                               /* entropy-coded data garbled */
    for (long i = sos + 20; i < (long)n - 4; i += 3) b[i] = (uint8_t)(b[i] * 31 + 7) & 0x7F;
    tio_expect(T, "jpeg corrupt scan", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "jpeg:");
    free(b);

    b = tio_dup(ok, n); b[dqt + 4] = 0x07;            /* quant table id 7 */
    tio_expect(T, "jpeg bad DQT", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "jpeg:");
    free(b);

    b = tio_dup(ok, n); b[sof + 4] = 12;              /* 12-bit precision */
    tio_expect(T, "jpeg 12-bit", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "jpeg:");
    free(b);

    b = tio_dup(ok, n); b[sof + 9] = 0;               /* zero components */
    tio_expect(T, "jpeg 0 components", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "jpeg:");
    free(b);

    static const uint8_t junk[] = { 0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37, 0x42, 0x42 };
    tio_expect(T, "jpeg junk after SOI", TIO_ANY, junk, sizeof junk, NULL, GX_ERR_FORMAT,
               "jpeg:");
    free(ok);

    uint8_t *pr = tio_read("progressive_rgb.jpg", &n);
    CHECK(pr != NULL);
    if (pr)
        tio_expect(T, "jpeg progressive truncated", TIO_ANY, pr, n * 2 / 5, NULL, GX_ERR_FORMAT,
                   "jpeg:");
    free(pr);
}

/* ---------------------------------------------------------------- FITS */

/* Builds a FITS image from "KEY=VALUE" strings (header only, data zeros). */
static uint8_t *tio_fits_kv(const char *const *kv, int nkv, size_t data_bytes, int exact,
                            size_t *n) {
    char store[64][81];
    const char *cards[64];
    for (int i = 0; i < nkv && i < 64; i++) {
        char key[16];
        const char *eq = strchr(kv[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        cards[i] = tio_card(store[i], key, eq + 1);
    }
    return tio_fits(cards, nkv, 0, NULL, data_bytes, exact, n);
}

static void tio_fits_case(gx_test_state *T, const char *label, const char *const *kv, int nkv,
                          size_t data_bytes, int exact, gx_status want, const char *substr) {
    size_t n;
    uint8_t *b = tio_fits_kv(kv, nkv, data_bytes, exact, &n);
    tio_expect(T, label, TIO_ANY, b, n, NULL, want, substr);
    free(b);
}

#define KV(...) ((const char *const[]){ __VA_ARGS__ }), \
                (int)(sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *))

GX_TEST(io_malformed_fits) {
    tio_expect(T, "fits wrong magic", TIO_FITS, (const uint8_t *)"XTENSION= 'IMAGE   '", 20, NULL,
               GX_ERR_FORMAT, "fits:");
    size_t n;
    uint8_t *ok = tio_fits_kv(KV("SIMPLE=T", "BITPIX=8", "NAXIS=2", "NAXIS1=4", "NAXIS2=3"), 12,
                              0, &n);
    tio_expect(T, "fits short", TIO_ANY, ok, 2000, NULL, GX_ERR_FORMAT, "fits: truncated");
    uint8_t *b = tio_dup(ok, n);
    memcpy(b, "SIMPLX  =", 9);
    tio_expect(T, "fits no SIMPLE", TIO_FITS, b, n, NULL, GX_ERR_FORMAT, "bad signature");
    free(b);
    free(ok);

    tio_fits_case(T, "fits BITPIX 64", KV("SIMPLE=T", "BITPIX=64", "NAXIS=2", "NAXIS1=4",
                                          "NAXIS2=3"), 96, 0, GX_ERR_UNSUPPORTED, "BITPIX 64");
    tio_fits_case(T, "fits BITPIX 12", KV("SIMPLE=T", "BITPIX=12", "NAXIS=2", "NAXIS1=4",
                                          "NAXIS2=3"), 96, 0, GX_ERR_FORMAT, "fits:");
    tio_fits_case(T, "fits NAXIS 4", KV("SIMPLE=T", "BITPIX=8", "NAXIS=4", "NAXIS1=4", "NAXIS2=3",
                                        "NAXIS3=3", "NAXIS4=2"), 72, 0, GX_ERR_UNSUPPORTED,
                  "NAXIS 4");
    tio_fits_case(T, "fits NAXIS 1", KV("SIMPLE=T", "BITPIX=8", "NAXIS=1", "NAXIS1=4"), 4, 0,
                  GX_ERR_UNSUPPORTED, "1-D");
    tio_fits_case(T, "fits zero planes", KV("SIMPLE=T", "BITPIX=8", "NAXIS=3", "NAXIS1=4",
                                            "NAXIS2=3", "NAXIS3=0"), 0, 0, GX_ERR_FORMAT,
                  "0 planes");
    tio_fits_case(T, "fits two planes", KV("SIMPLE=T", "BITPIX=8", "NAXIS=3", "NAXIS1=4",
                                           "NAXIS2=3", "NAXIS3=2"), 24, 0, GX_ERR_UNSUPPORTED,
                  "2 planes");
    tio_fits_case(T, "fits no data", KV("SIMPLE=T", "BITPIX=8", "NAXIS=0"), 0, 0, GX_ERR_FORMAT,
                  "no image data");
    tio_fits_case(T, "fits zero width", KV("SIMPLE=T", "BITPIX=8", "NAXIS=2", "NAXIS1=0",
                                           "NAXIS2=3"), 0, 0, GX_ERR_FORMAT, "zero size");
    tio_fits_case(T, "fits negative width", KV("SIMPLE=T", "BITPIX=8", "NAXIS=2", "NAXIS1=-5",
                                               "NAXIS2=3"), 0, 0, GX_ERR_FORMAT, "fits:");
    tio_fits_case(T, "fits NAXIS2 missing", KV("SIMPLE=T", "BITPIX=8", "NAXIS=2", "NAXIS1=4"), 0,
                  0, GX_ERR_FORMAT, "fits:");
    tio_fits_case(T, "fits 100000x100000", KV("SIMPLE=T", "BITPIX=-32", "NAXIS=2",
                                              "NAXIS1=100000", "NAXIS2=100000"), 0, 0,
                  GX_ERR_NOMEM, "fits: image 100000x100000 exceeds limit");
    tio_fits_case(T, "fits data truncated", KV("SIMPLE=T", "BITPIX=-32", "NAXIS=2",
                                               "NAXIS1=2000", "NAXIS2=2000"), 4000, 0,
                  GX_ERR_FORMAT, "data truncated");
    /* BITPIX 16 at odd sizes: 11x9x2 = 198 bytes; one byte short */
    tio_fits_case(T, "fits 16-bit odd short", KV("SIMPLE=T", "BITPIX=16", "NAXIS=2", "NAXIS1=11",
                                                 "NAXIS2=9"), 197, 1, GX_ERR_FORMAT,
                  "data truncated");

    /* header without END, and a huge header without END (200 blocks) */
    const char *noend[] = { "SIMPLE  =                    T", "BITPIX  =                    8",
                            "NAXIS   =                    2", "NAXIS1  =                    4",
                            "NAXIS2  =                    3" };
    b = tio_fits(noend, 5, 1, NULL, 12, 0, &n);
    tio_expect(T, "fits no END", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "fits:");
    free(b);
    enum { NH = 36 * 200 };
    const char **cards = malloc(sizeof(char *) * NH);
    for (int i = 0; i < NH; i++) cards[i] = i < 5 ? noend[i] : "COMMENT   padding";
    b = tio_fits(cards, NH, 1, NULL, 0, 0, &n);
    tio_expect(T, "fits huge header no END", TIO_ANY, b, n, NULL, GX_ERR_FORMAT, "fits:");
    free(b);
    free(cards);

    /* multi-HDU layouts: two images, three of different sizes, cube after image */
    const char *prim[] = { "SIMPLE  =                    T", "BITPIX  =                    8",
                           "NAXIS   =                    0", "EXTEND  =                    T" };
    const char *ext4x3[] = { "XTENSION= 'IMAGE   '", "BITPIX  =                    8",
                             "NAXIS   =                    2", "NAXIS1  =                    4",
                             "NAXIS2  =                    3", "PCOUNT  =                    0",
                             "GCOUNT  =                    1" };
    const char *ext5x3[] = { "XTENSION= 'IMAGE   '", "BITPIX  =                    8",
                             "NAXIS   =                    2", "NAXIS1  =                    5",
                             "NAXIS2  =                    3", "PCOUNT  =                    0",
                             "GCOUNT  =                    1" };
    const char *extcube[] = { "XTENSION= 'IMAGE   '", "BITPIX  =                    8",
                              "NAXIS   =                    3", "NAXIS1  =                    4",
                              "NAXIS2  =                    3", "NAXIS3  =                    3",
                              "PCOUNT  =                    0", "GCOUNT  =                    1" };
    size_t np, ne1, ne2, nc;
    uint8_t *p = tio_fits(prim, 4, 0, NULL, 0, 0, &np);
    uint8_t *e1 = tio_fits(ext4x3, 7, 0, NULL, 12, 0, &ne1);
    uint8_t *e2 = tio_fits(ext5x3, 7, 0, NULL, 15, 0, &ne2);
    uint8_t *ec = tio_fits(extcube, 8, 0, NULL, 36, 0, &nc);
    const struct { const char *label; const uint8_t *parts[3]; size_t sizes[3]; gx_status s;
                   const char *msg; } multi[] = {
        { "fits two image HDUs", { e1, e1, NULL }, { ne1, ne1, 0 }, GX_ERR_UNSUPPORTED, "two image HDUs" },
        { "fits HDU sizes differ", { e1, e2, e1 }, { ne1, ne2, ne1 }, GX_ERR_FORMAT, "differ in size" },
        { "fits cube after image", { e1, ec, NULL }, { ne1, nc, 0 }, GX_ERR_UNSUPPORTED, "is a cube" },
        { "fits truncated extension", { e1, e1, e1 }, { ne1, ne1, 2880 + 5 }, GX_ERR_FORMAT, "data truncated" },
    };
    for (size_t k = 0; k < sizeof multi / sizeof multi[0]; k++) {
        size_t tot = np;
        for (int j = 0; j < 3; j++) tot += multi[k].sizes[j];
        uint8_t *f = malloc(tot), *q = f;
        memcpy(q, p, np); q += np;
        for (int j = 0; j < 3; j++) { if (multi[k].parts[j]) memcpy(q, multi[k].parts[j], multi[k].sizes[j]); q += multi[k].sizes[j]; }
        tio_expect(T, multi[k].label, TIO_ANY, f, tot, NULL, multi[k].s, multi[k].msg);
        free(f);
    }
    free(p); free(e1); free(e2); free(ec);
}

/* Truncating every valid fixture at many points never crashes and always
 * yields an error or a valid image (ASan checks the memory side). */
GX_TEST(io_malformed_truncation_sweep) {
    const char *names[] = { "rgb8.png", "interlaced_gray16.png", "palette_trns.png",
                            "baseline_gray.jpg", "progressive_rgb.jpg", "i32_3hdu.fits",
                            "f32_cube_nan.fits" };
    int errors = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n;
        uint8_t *b = tio_read(names[k], &n);
        CHECK(b != NULL);
        if (!b) continue;
        for (size_t cut = 0; cut < n; cut += 1 + n / 97) {
            uint8_t *c = tio_dup(b, cut);         /* exact-size copy so ASan sees overreads */
            gx_image im;
            gx_err err = { "" };
            gx_status s = gx_image_decode(c, cut, NULL, NULL, &im, &err);
            if (s != GX_OK) { errors++; CHECK(err.msg[0] != 0 && im.data == NULL); }
            gx_image_free(&im);
            free(c);
        }
        free(b);
    }
    CHECK(errors > 500);
}
