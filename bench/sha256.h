/* bench/sha256.h: SHA-256 (FIPS 180-4), for the digest of the script each run records. */
#ifndef WB_SHA256_H
#define WB_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct wb_sha256 {
  uint32_t h[8];    /* chaining state */
  uint64_t n_bytes; /* message bytes absorbed so far */
  uint8_t buf[64];  /* partial block */
  size_t n_buf;
} wb_sha256;

void wb_sha256_init(wb_sha256 *c);
void wb_sha256_update(wb_sha256 *c, const void *data, size_t n);
/* Pads, writes the 32-byte digest to out and leaves c to be re-initialised. */
void wb_sha256_final(wb_sha256 *c, uint8_t out[32]);
/* Writes the lowercase hex digest of data (64 characters and a NUL) to hex. */
void wb_sha256_hex(const void *data, size_t n, char hex[65]);
/* Hex digest of the file at path into hex; returns 0, or -1 (errno set) when it cannot be read. */
int wb_sha256_file(const char *path, char hex[65]);

#endif
