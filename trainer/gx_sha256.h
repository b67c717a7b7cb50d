/*
 * gx_sha256.h — a small SHA-256 (FIPS 180-4) for checkpoint hashes
 * (trainer/gx_sha256.c). The database stores checkpoints with the sha256 of
 * their bytes so the daemon can check that the file it loads is the file the
 * trainer recorded. Streaming (init / update / final) plus a one-shot helper
 * that writes 64 lowercase hex digits.
 */
#ifndef GX_SHA256_H
#define GX_SHA256_H

#include <stddef.h>

#include "gx.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gx_sha256 {
    uint32_t h[8];          /* chaining state */
    uint64_t len;           /* bytes hashed so far */
    uint8_t  buf[64];       /* pending partial block */
    size_t   nbuf;
} gx_sha256;

void gx_sha256_init(gx_sha256 *s);
void gx_sha256_update(gx_sha256 *s, const void *data, size_t n);
void gx_sha256_final(gx_sha256 *s, uint8_t digest[32]);
/* hex[65]: 64 lowercase hex digits and a NUL. */
void gx_sha256_hex(const void *data, size_t n, char hex[65]);
/* sha256 of a whole file, streamed, as 64 lowercase hex digits (the
 * checkpoints' database rows). GX_ERR_IO names the file. */
gx_status gx_sha256_file(const char *path, char hex[65], gx_err *err);

#ifdef __cplusplus
}
#endif
#endif
