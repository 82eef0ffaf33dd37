/* nn/data_idx.c: the IDX file format (LeCun et al.'s MNIST files) and Fashion-MNIST.
 *
 * IDX layout: a big-endian magic 0x0000TTDD (TT = 0x08 for unsigned bytes, DD = number of dims),
 * DD big-endian uint32 sizes, then prod(sizes) bytes in row-major order. Files are read through
 * zlib's gzread, which also reads plain (uncompressed) files. Images (N, H, W) become float32
 * (N, 1, H, W) in [0, 1]; labels (N) become int64 (N).
 */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAX_SIDE 4096
#define INSTALL_HINT                                                                               \
  "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass the "    \
  "directory"

/* Reads up to n bytes; returns the count read (short at end of file or on a zlib error). */
static size_t read_upto(gzFile f, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
    int r = gzread(f, (char *)buf + got, (unsigned)want);
    if (r <= 0) break;
    got += (size_t)r;
  }
  return got;
}

/* " (gzip stream cut short: unexpected end of file)" when zlib reported an error, else "". */
static const char *zlib_note(gzFile f, char *buf, size_t n) {
  int err = Z_OK;
  const char *msg = gzerror(f, &err);
  if (err == Z_OK) return "";
  if (err == Z_BUF_ERROR)
    snprintf(buf, n, " (the gzip stream is cut short: %s)", msg);
  else
    snprintf(buf, n, " (zlib: %s)", msg);
  return buf;
}

/* Reads an IDX file of unsigned bytes with want_ndim dims. On success *data (malloc'd, caller
 * frees) holds prod(dims) bytes. hint (may be NULL) is appended to the missing-file message. */
static int idx_read(const char *op, const char *path, const char *hint, int want_ndim,
                    unsigned char **data, int64_t *dims) {
  char note[160];
  *data = NULL;
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f)
    return nn_seterr(NN_ERR_IO, "%s: cannot open %s: %s%s%s", op, path,
                     errno ? strerror(errno) : "out of memory", hint ? "; " : "", hint ? hint : "");
  gzbuffer(f, 1u << 18);
  int rc = NN_OK;
  unsigned char hdr[4 + 4 * 3];
  size_t hbytes = 4 + 4 * (size_t)want_ndim;
  size_t got = read_upto(f, hdr, 4);
  uint32_t want_magic = 0x0800u | (uint32_t)want_ndim, magic = 0;
  if (got == 4) magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | hdr[2] << 8 | hdr[3];
  if (got == 4 && magic != want_magic) {
    rc = nn_seterr(NN_ERR_IO,
                   "%s: %s: bad magic number 0x%08x, expected 0x%08x (IDX unsigned bytes, %d "
                   "dims)%s",
                   op, path, magic, want_magic, want_ndim, zlib_note(f, note, sizeof note));
    goto done;
  }
  if (got == 4) got += read_upto(f, hdr + 4, hbytes - 4);
  if (got < hbytes) {
    rc = nn_seterr(NN_ERR_IO,
                   "%s: %s is truncated: expected a %zu-byte header, the file holds %zu bytes%s",
                   op, path, hbytes, got, zlib_note(f, note, sizeof note));
    goto done;
  }
  int64_t payload = 1;
  for (int d = 0; d < want_ndim; d++) {
    const unsigned char *p = hdr + 4 + 4 * d;
    dims[d] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    if (d > 0 && (dims[d] < 1 || dims[d] > IDX_MAX_SIDE)) {
      rc = nn_seterr(NN_ERR_IO, "%s: %s: wrong dims: dim %d is %lld, expected 1..%d", op, path, d,
                     (long long)dims[d], IDX_MAX_SIDE);
      goto done;
    }
    payload *= dims[d]; /* < 2^32 * 2^24: no overflow */
  }
  *data = malloc((size_t)(payload ? payload : 1));
  if (!*data) {
    rc =
        nn_seterr(NN_ERR_NOMEM, "%s: %s: cannot allocate %lld bytes", op, path, (long long)payload);
    goto done;
  }
  got = read_upto(f, *data, (size_t)payload);
  if ((int64_t)got < payload) {
    rc = nn_seterr(NN_ERR_IO,
                   "%s: %s is truncated: the header promises %lld bytes (%zu header + %lld data), "
                   "the file holds %lld%s",
                   op, path, (long long)(payload + (int64_t)hbytes), hbytes, (long long)payload,
                   (long long)(got + hbytes), zlib_note(f, note, sizeof note));
    goto done;
  }
  unsigned char extra;
  int r = gzread(f, &extra, 1);
  if (r > 0) {
    rc = nn_seterr(NN_ERR_IO,
                   "%s: %s holds more than the %lld bytes its header promises (corrupt or not "
                   "an IDX file of this shape)",
                   op, path, (long long)(payload + (int64_t)hbytes));
    goto done;
  }
  if (*zlib_note(f, note, sizeof note)) {
    rc = nn_seterr(NN_ERR_IO,
                   "%s: %s is truncated or corrupt after its data: expected %lld bytes and a "
                   "complete gzip stream, read %lld bytes%s",
                   op, path, (long long)(payload + (int64_t)hbytes), (long long)(got + hbytes),
                   note);
    goto done;
  }
done:
  if (gzclose(f) != Z_OK && !rc)
    rc = nn_seterr(NN_ERR_IO, "%s: %s: error closing the file (truncated gzip stream?)", op, path);
  if (rc) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

static int idx_pair(nn_dataset **out, const char *op, const char *hint, const char *ipath,
                    const char *lpath, int n_classes, int64_t h, int64_t w) {
  *out = NULL;
  if (n_classes < 1 || n_classes > 256)
    return nn_seterr(NN_ERR_ARG, "%s: n_classes = %d must be in 1..256", op, n_classes);
  unsigned char *img = NULL, *lab = NULL;
  int64_t idims[3], ldims[1];
  nn_tensor *x = NULL, *y = NULL;
  int rc = idx_read(op, ipath, hint, 3, &img, idims);
  if (!rc && ((h && idims[1] != h) || (w && idims[2] != w)))
    rc = nn_seterr(NN_ERR_IO, "%s: %s: wrong dims: images are %lld x %lld, expected %lld x %lld",
                   op, ipath, (long long)idims[1], (long long)idims[2], (long long)h, (long long)w);
  if (!rc) rc = idx_read(op, lpath, hint, 1, &lab, ldims);
  if (!rc && ldims[0] != idims[0])
    rc = nn_seterr(NN_ERR_IO, "%s: %s holds %lld images but %s holds %lld labels", op, ipath,
                   (long long)idims[0], lpath, (long long)ldims[0]);
  for (int64_t i = 0; !rc && i < ldims[0]; i++)
    if (lab[i] >= n_classes)
      rc = nn_seterr(NN_ERR_IO, "%s: %s: label %d at index %lld is outside 0..%d", op, lpath,
                     lab[i], (long long)i, n_classes - 1);
  int64_t n = idims[0], xs[4] = {n, 1, idims[1], idims[2]};
  if (!rc) rc = nn_tensor_empty(&x, 4, xs, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_tensor_empty(&y, 1, &n, NN_DTYPE_I64, nn_cpu);
  if (!rc) {
    float *px = nn_tensor_data(x);
    int64_t *py = nn_tensor_data(y), total = n * idims[1] * idims[2];
#pragma omp parallel for schedule(static) if (total > 1000000)
    for (int64_t i = 0; i < total; i++) px[i] = (float)img[i] / 255.0f; /* 255 -> exactly 1 */
    for (int64_t i = 0; i < n; i++) py[i] = lab[i];
    rc = nn_dataset_new(out, x, y, n_classes);
  }
  nn_tensor_free(x);
  nn_tensor_free(y);
  free(img);
  free(lab);
  return rc;
}

int nn_idx_load(nn_dataset **out, const char *images_path, const char *labels_path, int n_classes,
                int64_t h, int64_t w) {
  if (h < 0 || w < 0) {
    *out = NULL;
    return nn_seterr(NN_ERR_ARG, "idx_load: image size %lld x %lld must be >= 0", (long long)h,
                     (long long)w);
  }
  return idx_pair(out, "idx_load", NULL, images_path, labels_path, n_classes, h, w);
}

/* dir/name.gz, or dir/name when only the plain file exists. */
static void data_path(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
  if (access(buf, R_OK) == 0) return;
  char plain[4096];
  snprintf(plain, sizeof plain, "%s/%.*s", dir, (int)strlen(name) - 3, name);
  if (access(plain, R_OK) == 0) snprintf(buf, n, "%s", plain);
}

int nn_fashion_mnist_load(nn_dataset **out, const char *dir, const char *split) {
  *out = NULL;
  const char *prefix;
  if (split && strcmp(split, "train") == 0)
    prefix = "train";
  else if (split && strcmp(split, "test") == 0)
    prefix = "t10k";
  else
    return nn_seterr(NN_ERR_ARG, "fashion_mnist: unknown split \"%s\"; valid splits: train, test",
                     split ? split : "(null)");
  if (!dir) {
    const char *env = getenv("WB_FASHION_MNIST_DIR");
    dir = env && *env ? env : NN_FASHION_MNIST_DIR;
  }
  char name[64], ipath[4096], lpath[4096];
  snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
  data_path(ipath, sizeof ipath, dir, name);
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
  data_path(lpath, sizeof lpath, dir, name);
  return idx_pair(out, "fashion_mnist", INSTALL_HINT, ipath, lpath, 10, 28, 28);
}

const char *nn_fashion_mnist_class_name(int c) {
  static const char *names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return c >= 0 && c < 10 ? names[c] : "?";
}
