/* nn/tests/test_data.c: the data layer: IDX parsing of generated gzip files and every error path,
 * the real Fashion-MNIST files when installed, datasets, splits, class subsets, k-shot,
 * normalisation, the batcher, augmentations, corruptions and the synthetic sets. */
#include "harness.h"

#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[64];

/* ---------------------------------------------------------------- IDX fixtures */

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* Writes an IDX file: magic, dims, then n_data bytes of data (which may disagree with dims). */
static void write_idx(const char *path, uint32_t magic, int ndim, const uint32_t *dims,
                      const unsigned char *data, size_t n_data, bool gz) {
  unsigned char hdr[4 + 4 * 4];
  put_be32(hdr, magic);
  for (int d = 0; d < ndim; d++) put_be32(hdr + 4 + 4 * d, dims[d]);
  size_t hb = 4 + 4 * (size_t)ndim;
  if (gz) {
    gzFile f = gzopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    gzwrite(f, hdr, (unsigned)hb);
    if (n_data) gzwrite(f, data, (unsigned)n_data);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fwrite(hdr, 1, hb, f);
    fwrite(data, 1, n_data, f);
    fclose(f);
  }
}

static char *tpath(char *buf, const char *name) {
  snprintf(buf, 256, "%s/%s", tmpdir, name);
  return buf;
}

static long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fclose(f);
  return n;
}

/* pixel bytes i * 7 % 256 and labels i % k */
static void write_pair(const char *img, const char *lab, uint32_t n, uint32_t h, uint32_t w, int k,
                       bool gz) {
  size_t np = (size_t)n * h * w;
  unsigned char *px = malloc(np ? np : 1), *lb = malloc(n ? n : 1);
  for (size_t i = 0; i < np; i++) px[i] = (unsigned char)(i * 7 % 256);
  for (uint32_t i = 0; i < n; i++) lb[i] = (unsigned char)(i % (uint32_t)k);
  uint32_t di[3] = {n, h, w}, dl[1] = {n};
  write_idx(img, 0x803, 3, di, px, np, gz);
  write_idx(lab, 0x801, 1, dl, lb, n, gz);
  free(px);
  free(lb);
}

static void test_idx_parse(void) {
  char pi[256], pl[256];
  for (int gz = 0; gz < 2; gz++) {
    tpath(pi, gz ? "a-img.gz" : "a-img");
    tpath(pl, gz ? "a-lab.gz" : "a-lab");
    write_pair(pi, pl, 5, 3, 4, 3, gz);
    nn_dataset *d = NULL;
    OK(nn_idx_load(&d, pi, pl, 3, 0, 0));
    if (!d) continue;
    CHECK(d->n == 5 && d->n_classes == 3, "n %lld classes %d", (long long)d->n, d->n_classes);
    CHECK(d->x->ndim == 4 && d->x->shape[0] == 5 && d->x->shape[1] == 1 && d->x->shape[2] == 3 &&
              d->x->shape[3] == 4 && d->x->dtype == NN_DTYPE_F32,
          "x shape");
    CHECK(d->y->ndim == 1 && d->y->shape[0] == 5 && d->y->dtype == NN_DTYPE_I64, "y shape");
    int bad = 0;
    for (int64_t i = 0; i < 60; i++)
      bad += nn_tensor_get_flat(d->x, i) != (float)(i * 7 % 256) / 255.0f;
    for (int64_t i = 0; i < 5; i++) bad += nn_tensor_get_flat(d->y, i) != i % 3;
    CHECK(bad == 0, "%d values differ from the file (gz %d)", bad, gz);
    nn_dataset_free(d);
    OK(nn_idx_load(&d, pi, pl, 3, 3, 4)); /* the stated size matches */
    nn_dataset_free(d);
  }
  /* a byte of 255 is exactly 1 */
  unsigned char px[4] = {0, 255, 128, 1}, lb[1] = {0};
  uint32_t di[3] = {1, 2, 2}, dl[1] = {1};
  write_idx(tpath(pi, "b-img.gz"), 0x803, 3, di, px, 4, true);
  write_idx(tpath(pl, "b-lab.gz"), 0x801, 1, dl, lb, 1, true);
  nn_dataset *d = NULL;
  OK(nn_idx_load(&d, pi, pl, 10, 0, 0));
  if (d) {
    CHECK(nn_tensor_get_flat(d->x, 1) == 1.0 && nn_tensor_get_flat(d->x, 0) == 0.0,
          "255 -> %g, 0 -> %g", nn_tensor_get_flat(d->x, 1), nn_tensor_get_flat(d->x, 0));
  }
  nn_dataset_free(d);
}

/* A fake Fashion-MNIST directory with 28 x 28 images (n train, m test). */
static void make_fashion_dir(const char *dir, uint32_t n, uint32_t m) {
  char a[300], b[300];
  snprintf(a, sizeof a, "%s/train-images-idx3-ubyte.gz", dir);
  snprintf(b, sizeof b, "%s/train-labels-idx1-ubyte.gz", dir);
  write_pair(a, b, n, 28, 28, 10, true);
  snprintf(a, sizeof a, "%s/t10k-images-idx3-ubyte.gz", dir);
  snprintf(b, sizeof b, "%s/t10k-labels-idx1-ubyte.gz", dir);
  write_pair(a, b, m, 28, 28, 10, true);
}

static void test_fashion_fake(void) {
  char dir[256], empty[256];
  tpath(dir, "fm");
  tpath(empty, "empty");
  CHECK(mkdir(dir, 0700) == 0 && mkdir(empty, 0700) == 0, "mkdir");
  make_fashion_dir(dir, 7, 3);
  nn_dataset *d = (nn_dataset *)1;
  OK(nn_fashion_mnist_load(&d, dir, "train"));
  CHECK(d && d->n == 7 && d->x->shape[2] == 28 && d->n_classes == 10, "fake train set");
  nn_dataset_free(d);
  OK(nn_fashion_mnist_load(&d, dir, "test"));
  CHECK(d && d->n == 3, "fake test set");
  nn_dataset_free(d);

  /* missing files: the path and the install hint */
  d = (nn_dataset *)1;
  EXPECT_ERR(nn_fashion_mnist_load(&d, empty, "train"), NN_ERR_IO, "train-images-idx3-ubyte.gz");
  CHECK(d == NULL, "out not NULL on error");
  CHECK(strstr(nn_errmsg(), empty) != NULL, "message names the directory: %s", nn_errmsg());
  EXPECT_ERR(nn_fashion_mnist_load(&d, empty, "test"), NN_ERR_IO,
             "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or "
             "pass the directory");
  EXPECT_ERR(nn_fashion_mnist_load(&d, dir, "valid"), NN_ERR_ARG, "valid splits: train, test");

  /* $WB_FASHION_MNIST_DIR is used when dir is NULL; an explicit dir wins over it */
  setenv("WB_FASHION_MNIST_DIR", dir, 1);
  OK(nn_fashion_mnist_load(&d, NULL, "train"));
  CHECK(d && d->n == 7, "env dir");
  nn_dataset_free(d);
  EXPECT_ERR(nn_fashion_mnist_load(&d, empty, "train"), NN_ERR_IO, empty);
  setenv("WB_FASHION_MNIST_DIR", empty, 1);
  EXPECT_ERR(nn_fashion_mnist_load(&d, NULL, "train"), NN_ERR_IO, empty);
  unsetenv("WB_FASHION_MNIST_DIR");

  /* a plain (not gzipped) file is read when the .gz is absent */
  char a[300], b[300], plain[256];
  tpath(plain, "plain");
  CHECK(mkdir(plain, 0700) == 0, "mkdir");
  snprintf(a, sizeof a, "%s/train-images-idx3-ubyte", plain);
  snprintf(b, sizeof b, "%s/train-labels-idx1-ubyte", plain);
  write_pair(a, b, 4, 28, 28, 10, false);
  OK(nn_fashion_mnist_load(&d, plain, "train"));
  CHECK(d && d->n == 4, "plain files");
  nn_dataset_free(d);
  CHECK(strcmp(nn_fashion_mnist_class_name(9), "Ankle boot") == 0, "class name");
}

static void test_idx_errors(void) {
  char pi[256], pl[256], pj[256];
  nn_dataset *d = (nn_dataset *)1;
  unsigned char px[60] = {0}, lb[5] = {0, 1, 2, 1, 0};
  uint32_t di[3] = {5, 3, 4}, dl[1] = {5};
  tpath(pl, "ok-lab.gz");
  write_idx(pl, 0x801, 1, dl, lb, 5, true);

  /* bad magic: wrong type byte, and a labels file where images are expected */
  write_idx(tpath(pi, "magic-img.gz"), 0x804, 3, di, px, 60, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "bad magic number 0x00000804");
  CHECK(d == NULL && strstr(nn_errmsg(), pi), "names the file: %s", nn_errmsg());
  write_idx(tpath(pi, "magic2-img.gz"), 0x00090803, 3, di, px, 60, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "expected 0x00000803");
  EXPECT_ERR(nn_idx_load(&d, pl, pl, 3, 0, 0), NN_ERR_IO, "bad magic number 0x00000801");

  /* wrong dims: 27 x 28 images where 28 x 28 are required; a zero-size side */
  {
    char dir[256], a[300], b[300];
    tpath(dir, "fm27");
    CHECK(mkdir(dir, 0700) == 0, "mkdir");
    snprintf(a, sizeof a, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(b, sizeof b, "%s/train-labels-idx1-ubyte.gz", dir);
    write_pair(a, b, 2, 27, 28, 10, true);
    EXPECT_ERR(nn_fashion_mnist_load(&d, dir, "train"), NN_ERR_IO,
               "wrong dims: images are 27 x 28, expected 28 x 28");
    CHECK(strstr(nn_errmsg(), a) != NULL, "names the file: %s", nn_errmsg());
  }
  uint32_t dz[3] = {5, 0, 4};
  write_idx(tpath(pi, "zero-img.gz"), 0x803, 3, dz, px, 0, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "wrong dims: dim 1 is 0");

  /* images/labels count mismatch */
  write_idx(tpath(pi, "ok-img.gz"), 0x803, 3, di, px, 60, true);
  uint32_t dl4[1] = {4};
  write_idx(tpath(pj, "four-lab.gz"), 0x801, 1, dl4, lb, 4, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pj, 3, 0, 0), NN_ERR_IO, "holds 5 images but");
  CHECK(strstr(nn_errmsg(), "holds 4 labels") && strstr(nn_errmsg(), pj), "%s", nn_errmsg());

  /* label out of range */
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 2, 0, 0), NN_ERR_IO, "label 2 at index 2 is outside 0..1");
  CHECK(strstr(nn_errmsg(), pl) != NULL, "names the labels file: %s", nn_errmsg());

  /* complete gzip stream, fewer bytes than the header promises: 16 + 60 promised, 16 + 36 held */
  write_idx(tpath(pi, "short-img.gz"), 0x803, 3, di, px, 36, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO,
             "is truncated: the header promises 76 bytes (16 header + 60 data), the file holds 52");
  CHECK(strstr(nn_errmsg(), pi) != NULL, "names the file: %s", nn_errmsg());
  /* the same for a plain file */
  write_idx(tpath(pi, "short-img"), 0x803, 3, di, px, 50, false);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "promises 76 bytes");
  /* header cut short */
  write_idx(tpath(pi, "hdr-img.gz"), 0x803, 1, di, px, 0, true);
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO,
             "expected a 16-byte header, the file holds 8 bytes");
  /* more data than promised */
  write_idx(tpath(pi, "long-img.gz"), 0x803, 3, di, px, 60, true);
  {
    gzFile f = gzopen(pi, "ab"); /* a second gzip member: read as a continuation */
    gzwrite(f, "xyz", 3);
    gzclose(f);
  }
  EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "holds more than the 76 bytes");

  /* a gzip stream cut short in the middle of the data (incompressible bytes so the cut lands in
   * the data, not the header) */
  {
    enum { N = 40, H = 10, W = 10 };
    unsigned char *big = malloc(N * H * W);
    uint64_t s = 12345;
    for (int i = 0; i < N * H * W; i++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      big[i] = (unsigned char)(s >> 56);
    }
    uint32_t db[3] = {N, H, W};
    write_idx(tpath(pi, "cut-img.gz"), 0x803, 3, db, big, N * H * W, true);
    long full = file_size(pi);
    CHECK(full > 2000 && truncate(pi, full / 2) == 0, "truncate %ld", full);
    unsigned char lb40[N] = {0};
    uint32_t dl40[1] = {N};
    write_idx(tpath(pj, "cut-lab.gz"), 0x801, 1, dl40, lb40, N, true);
    EXPECT_ERR(nn_idx_load(&d, pi, pj, 3, 0, 0), NN_ERR_IO,
               "is truncated: the header promises 4016 bytes (16 header + 4000 data)");
    CHECK(strstr(nn_errmsg(), "gzip stream is cut short") && strstr(nn_errmsg(), pi), "message: %s",
          nn_errmsg());
    /* cut inside the 8-byte trailer: every data byte arrives, the stream is still incomplete */
    write_idx(pi, 0x803, 3, db, big, N * H * W, true);
    CHECK(truncate(pi, full - 3) == 0, "truncate");
    EXPECT_ERR(nn_idx_load(&d, pi, pj, 3, 0, 0), NN_ERR_IO,
               "expected 4016 bytes and a complete gzip stream, read 4016 bytes");
    CHECK(d == NULL, "out NULL after an error");
    free(big);
  }
  /* a plain file that is not IDX at all */
  {
    FILE *f = fopen(tpath(pi, "text.txt"), "w");
    fputs("hello world, not an idx file", f);
    fclose(f);
    EXPECT_ERR(nn_idx_load(&d, pi, pl, 3, 0, 0), NN_ERR_IO, "bad magic number 0x68656c6c");
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void test_fashion_real(void) {
  char p[512];
  snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", NN_FASHION_MNIST_DIR);
  if (access(p, R_OK) != 0) {
    printf("fashion_mnist: %s not installed, real-data checks skipped\n", NN_FASHION_MNIST_DIR);
    return;
  }
  const char *splits[2] = {"train", "test"};
  int64_t want[2] = {60000, 10000};
  for (int s = 0; s < 2; s++) {
    nn_dataset *d = NULL;
    double t0 = now_ms();
    OK(nn_fashion_mnist_load(&d, NULL, splits[s]));
    double ms = now_ms() - t0;
    if (!d) continue;
    printf("fashion_mnist %s: %lld samples loaded in %.1f ms\n", splits[s], (long long)d->n, ms);
    CHECK(d->n == want[s] && d->x->shape[0] == want[s] && d->x->shape[1] == 1 &&
              d->x->shape[2] == 28 && d->x->shape[3] == 28,
          "%s: n = %lld", splits[s], (long long)d->n);
    int64_t counts[10];
    OK(nn_dataset_class_counts(d, counts));
    int bal = 0; /* Fashion-MNIST is balanced: N / 10 of every class */
    for (int c = 0; c < 10; c++) bal += counts[c] == want[s] / 10;
    CHECK(bal == 10, "%s: class counts not balanced (class 0: %lld)", splits[s],
          (long long)counts[0]);
    const float *px = nn_tensor_data(d->x);
    float lo = 1, hi = 0;
    double sum = 0;
    for (int64_t i = 0; i < d->n * 784; i++) {
      lo = fminf(lo, px[i]);
      hi = fmaxf(hi, px[i]);
      sum += px[i];
    }
    double mean = sum / (double)(d->n * 784);
    CHECK(lo == 0.0f && hi == 1.0f, "%s: pixels in [%g, %g]", splits[s], lo, hi);
    /* the well-known training-set mean is 0.2860 */
    CHECK(fabs(mean - 0.286) < 0.01, "%s: pixel mean %g", splits[s], mean);
    nn_dataset_free(d);
  }
}

/* ---------------------------------------------------------------- datasets */

/* n samples, x (n, 1, 2, 2) filled with the sample index, y from labels (or i % k). */
static nn_dataset *indexed(int64_t n, int k, const int64_t *labels) {
  int64_t xs[4] = {n, 1, 2, 2};
  nn_tensor *x = NULL, *y = NULL;
  OK(nn_tensor_empty(&x, 4, xs, NN_DTYPE_F32, nn_cpu));
  OK(nn_tensor_empty(&y, 1, &n, NN_DTYPE_I64, nn_cpu));
  for (int64_t i = 0; i < n; i++) {
    for (int j = 0; j < 4; j++) ((float *)nn_tensor_data(x))[i * 4 + j] = (float)i;
    ((int64_t *)nn_tensor_data(y))[i] = labels ? labels[i] : i % k;
  }
  nn_dataset *d = NULL;
  OK(nn_dataset_new(&d, x, y, k));
  nn_tensor_free(x);
  nn_tensor_free(y);
  return d;
}

/* Sample index held in row i of a dataset or batch x. */
static int64_t sid(const nn_tensor *x, int64_t i) {
  return (int64_t)((const float *)nn_tensor_data(x))[i * (nn_tensor_numel(x) / x->shape[0])];
}

static void test_dataset_new(void) {
  int64_t xs[2] = {4, 3}, ys[1] = {4}, y3[1] = {3};
  nn_tensor *x = th_rand(2, xs, 0, 1), *y = th_randint(1, ys, 5), *yb = th_randint(1, y3, 5);
  nn_dataset *d = (nn_dataset *)1;
  EXPECT_ERR(nn_dataset_new(&d, x, yb, 5), NN_ERR_SHAPE, "x (4, 3) and y (3,)");
  CHECK(d == NULL, "out NULL");
  EXPECT_ERR(nn_dataset_new(&d, y, y, 5), NN_ERR_DTYPE, "x must be float32 or float64, got int64");
  EXPECT_ERR(nn_dataset_new(&d, x, x, 5), NN_ERR_DTYPE, "y must be int64 (N), got float32");
  EXPECT_ERR(nn_dataset_new(&d, x, y, 0), NN_ERR_DTYPE, "must be float, got int64");
  nn_tensor_set_flat(y, 2, 7);
  EXPECT_ERR(nn_dataset_new(&d, x, y, 5), NN_ERR_INDEX, "label 7 at index 2 is outside 0..4");
  nn_tensor_set_flat(y, 2, 1);
  /* a non-contiguous x is copied into a contiguous one */
  nn_tensor *xn = th_noncontig(x);
  OK(nn_dataset_new(&d, xn, y, 5));
  if (d) {
    CHECK(nn_tensor_is_contiguous(d->x) && d->n == 4, "contiguous copy");
    double *a = th_to_double(x);
    CHECK(th_close(d->x, a, 0, 0, "dataset x"), "values kept");
    free(a);
    int64_t cnt[5];
    OK(nn_dataset_class_counts(d, cnt));
    int64_t tot = 0;
    for (int c = 0; c < 5; c++) tot += cnt[c];
    CHECK(tot == 4 && cnt[nn_tensor_get_flat(y, 0) > 0 ? (int)nn_tensor_get_flat(y, 0) : 0] >= 1,
          "class counts");
  }
  nn_dataset_free(d);
  nn_dataset_free(NULL);
  nn_tensor_free(xn);
  nn_tensor_free(x);
  nn_tensor_free(y);
  nn_tensor_free(yb);
}

/* ---------------------------------------------------------------- batching */

/* Runs one epoch; order[] gets the sample ids; returns the number of batches, sizes[] each size. */
static int run_epoch(nn_batcher *b, int64_t *order, int64_t *sizes, int64_t *n_out) {
  nn_tensor *x, *y;
  int nb = 0, rc;
  int64_t k = 0;
  while ((rc = nn_batcher_next(b, &x, &y)) == 1) {
    sizes[nb++] = x->shape[0];
    CHECK(x->ndim == 4 && x->shape[1] == 1 && x->shape[2] == 2 && y->ndim == 1 &&
              y->shape[0] == x->shape[0],
          "batch shapes");
    for (int64_t i = 0; i < x->shape[0]; i++) {
      order[k] = sid(x, i);
      /* the label travels with its image */
      CHECK(nn_tensor_get_flat(y, i) == order[k] % 3, "label of sample %lld", (long long)order[k]);
      k++;
    }
    nn_tensor_free(x);
    nn_tensor_free(y);
  }
  CHECK(rc == 0 && x == NULL && y == NULL, "end of epoch: rc %d", rc);
  *n_out = k;
  return nb;
}

static void test_batcher(void) {
  nn_dataset *d = indexed(10, 3, NULL);
  nn_batcher *b = NULL;
  nn_batcher_opts o = {.batch_size = 4, .shuffle = true, .drop_last = false, .seed = 7};
  OK(nn_batcher_new(&b, d, &o));
  int64_t e0[10], e1[10], e0b[10], sizes[8], n;
  CHECK(nn_batcher_num_batches(b) == 3, "num_batches");
  int nb = run_epoch(b, e0, sizes, &n);
  CHECK(nb == 3 && sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2 && n == 10,
        "batches %d: %lld %lld %lld", nb, (long long)sizes[0], (long long)sizes[1],
        (long long)sizes[2]);
  int seen[10] = {0};
  for (int i = 0; i < 10; i++) seen[e0[i]]++;
  int once = 0;
  for (int i = 0; i < 10; i++) once += seen[i] == 1;
  CHECK(once == 10, "every sample exactly once per epoch");
  /* the documented order: randperm's Fisher-Yates on stream "batch" ^ epoch */
  {
    nn_rng pr;
    nn_rng_init(&pr, 7, 0x6261746368ull ^ 0);
    int64_t p[10];
    for (int i = 0; i < 10; i++) p[i] = i;
    for (int i = 9; i > 0; i--) {
      int64_t j = (int64_t)nn_rng_below(&pr, (uint64_t)i + 1), t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    CHECK(memcmp(p, e0, sizeof p) == 0, "epoch 0 order differs from the documented rule");
  }
  CHECK(nn_batcher_epoch(b) == 1, "epoch advanced to %lld", (long long)nn_batcher_epoch(b));
  run_epoch(b, e1, sizes, &n);
  CHECK(memcmp(e0, e1, sizeof e0) != 0, "epoch 1 repeats epoch 0's order");
  nn_batcher_set_epoch(b, 0);
  run_epoch(b, e0b, sizes, &n);
  CHECK(memcmp(e0, e0b, sizeof e0) == 0, "epoch 0 not reproducible");
  nn_batcher_free(b);

  /* same seed on a new batcher: same order; another seed: another order */
  OK(nn_batcher_new(&b, d, &o));
  run_epoch(b, e0b, sizes, &n);
  CHECK(memcmp(e0, e0b, sizeof e0) == 0, "same seed, different order");
  nn_batcher_free(b);
  o.seed = 8;
  OK(nn_batcher_new(&b, d, &o));
  run_epoch(b, e0b, sizes, &n);
  CHECK(memcmp(e0, e0b, sizeof e0) != 0, "seed 8 gave seed 7's order");
  nn_batcher_free(b);

  /* drop_last: two full batches of distinct samples */
  o.drop_last = true;
  OK(nn_batcher_new(&b, d, &o));
  CHECK(nn_batcher_num_batches(b) == 2, "num_batches with drop_last");
  nb = run_epoch(b, e0b, sizes, &n);
  CHECK(nb == 2 && n == 8 && sizes[1] == 4, "drop_last: %d batches, %lld samples", nb,
        (long long)n);
  int seen2[10] = {0}, dup = 0;
  for (int i = 0; i < 8; i++) dup += seen2[e0b[i]]++ > 0;
  CHECK(dup == 0, "drop_last repeats a sample");
  nn_batcher_free(b);

  /* no shuffle: in order */
  o = (nn_batcher_opts){.batch_size = 3, .shuffle = false};
  OK(nn_batcher_new(&b, d, &o));
  nb = run_epoch(b, e0b, sizes, &n);
  int inorder = 0;
  for (int i = 0; i < 10; i++) inorder += e0b[i] == i;
  CHECK(nb == 4 && sizes[3] == 1 && inorder == 10, "unshuffled order");

  /* memory: a freed batch is refilled in place; a held one is left alone */
  nn_batcher_set_epoch(b, 0);
  nn_tensor *x1, *y1, *x2, *y2;
  CHECK(nn_batcher_next(b, &x1, &y1) == 1, "batch");
  void *p1 = nn_tensor_data(x1);
  nn_tensor_free(x1);
  nn_tensor_free(y1);
  CHECK(nn_batcher_next(b, &x1, &y1) == 1, "batch");
  CHECK(nn_tensor_data(x1) == p1 && sid(x1, 0) == 3, "freed batch not reused in place");
  nn_tensor *view = NULL;
  OK(nn_flatten(&view, x1, 1, -1)); /* a view keeps the storage */
  nn_tensor_free(x1);
  CHECK(nn_batcher_next(b, &x2, &y2) == 1, "batch");
  CHECK(nn_tensor_data(x2) != p1 && sid(view, 0) == 3 && sid(x2, 0) == 6 &&
            nn_tensor_get_flat(y1, 0) == 0,
        "a held batch was overwritten");
  nn_tensor_free(view);
  nn_tensor_free(y1);
  nn_tensor_free(x2);
  nn_tensor_free(y2);
  nn_batcher_free(b);

  nn_batcher_opts bad = {.batch_size = 0};
  EXPECT_ERR(nn_batcher_new(&b, d, &bad), NN_ERR_ARG, "batch_size = 0 must be >= 1");
  CHECK(b == NULL, "out NULL");
  nn_dataset_free(d);

  /* a larger set: coverage for batch 128, and the batcher outlives its dataset */
  d = indexed(1000, 3, NULL);
  o = (nn_batcher_opts){.batch_size = 128, .shuffle = true, .seed = 1};
  OK(nn_batcher_new(&b, d, &o));
  nn_dataset_free(d);
  int64_t *ord = malloc(1000 * sizeof *ord), sz[16];
  for (int e = 0; e < 2; e++) {
    nb = run_epoch(b, ord, sz, &n);
    int *cnt = calloc(1000, sizeof *cnt), ok = 0;
    for (int i = 0; i < 1000; i++) cnt[ord[i]]++;
    for (int i = 0; i < 1000; i++) ok += cnt[i] == 1;
    CHECK(nb == 8 && sz[7] == 1000 - 7 * 128 && ok == 1000, "epoch %d: %d batches, %d covered", e,
          nb, ok);
    free(cnt);
  }
  free(ord);
  nn_batcher_free(b);
}

/* ---------------------------------------------------------------- subsets and splits */

static nn_dataset *unbalanced(void) {
  int64_t lab[100];
  for (int i = 0; i < 100; i++) lab[i] = (i * 37 % 100) < 50 ? 0 : (i * 37 % 100) < 80 ? 1 : 2;
  return indexed(100, 3, lab); /* 50, 30, 20 */
}

static void check_partition(const nn_dataset *a, const nn_dataset *b, int64_t n, const char *w) {
  int *seen = calloc((size_t)n, sizeof *seen), ok = 0;
  for (int64_t i = 0; i < a->n; i++) seen[sid(a->x, i)]++;
  for (int64_t i = 0; i < b->n; i++) seen[sid(b->x, i)]++;
  for (int64_t i = 0; i < n; i++) ok += seen[i] == 1;
  CHECK(ok == n && a->n + b->n == n, "%s: parts not disjoint or not covering (%d of %lld)", w, ok,
        (long long)n);
  /* labels still belong to their samples (y = original label) */
  free(seen);
}

static void test_splits(void) {
  nn_dataset *d = unbalanced(), *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL;
  const int64_t *lab = nn_tensor_data(d->y);
  OK(nn_dataset_split(&tr, &va, d, 25, 3, false));
  CHECK(tr && va && tr->n == 75 && va->n == 25, "split sizes");
  check_partition(tr, va, 100, "split");
  int keep = 0;
  for (int64_t i = 0; i < va->n; i++) keep += nn_tensor_get_flat(va->y, i) == lab[sid(va->x, i)];
  CHECK(keep == 25, "labels moved with their samples");
  int asc = 1;
  for (int64_t i = 1; i < tr->n; i++) asc &= sid(tr->x, i) > sid(tr->x, i - 1);
  CHECK(asc, "train part keeps the original order");
  OK(nn_dataset_split(&tr2, &va2, d, 25, 3, false));
  int same = 1;
  for (int64_t i = 0; i < 25; i++) same &= sid(va->x, i) == sid(va2->x, i);
  CHECK(same, "same seed, different split");
  nn_dataset_free(tr2);
  nn_dataset_free(va2);
  OK(nn_dataset_split(&tr2, &va2, d, 25, 4, false));
  same = 1;
  for (int64_t i = 0; i < 25; i++) same &= sid(va->x, i) == sid(va2->x, i);
  CHECK(!same, "seed 4 gave seed 3's split");
  nn_dataset_free(tr2);
  nn_dataset_free(va2);
  nn_dataset_free(tr);
  nn_dataset_free(va);

  /* stratified: 25 * (50, 30, 20) / 100 = 12.5, 7.5, 5 -> 13, 7, 5 (tie to the smaller class) */
  OK(nn_dataset_split(&tr, &va, d, 25, 3, true));
  int64_t cv[3], ct[3];
  OK(nn_dataset_class_counts(va, cv));
  OK(nn_dataset_class_counts(tr, ct));
  CHECK(cv[0] == 13 && cv[1] == 7 && cv[2] == 5, "stratified val counts %lld %lld %lld",
        (long long)cv[0], (long long)cv[1], (long long)cv[2]);
  CHECK(ct[0] == 37 && ct[1] == 23 && ct[2] == 15, "stratified train counts");
  check_partition(tr, va, 100, "stratified split");
  nn_dataset_free(tr);
  nn_dataset_free(va);
  OK(nn_dataset_split(&tr, &va, d, 0, 3, true));
  CHECK(tr->n == 100 && va->n == 0, "empty val");
  nn_dataset_free(tr);
  nn_dataset_free(va);
  OK(nn_dataset_split(&tr, &va, d, 100, 3, true));
  CHECK(tr->n == 0 && va->n == 100, "everything in val");
  nn_dataset_free(tr);
  nn_dataset_free(va);
  EXPECT_ERR(nn_dataset_split(&tr, &va, d, 101, 3, false), NN_ERR_ARG,
             "n_val = 101 is outside 0..100");
  CHECK(tr == NULL && va == NULL, "out NULL");

  /* subset by index, repeats allowed, order kept */
  int64_t ix[3] = {3, 1, 3}, is[1] = {3};
  nn_tensor *idx = NULL;
  OK(nn_tensor_from_data(&idx, 1, is, NN_DTYPE_I64, ix));
  nn_dataset *s = NULL;
  OK(nn_dataset_subset(&s, d, idx));
  CHECK(s && s->n == 3 && sid(s->x, 0) == 3 && sid(s->x, 1) == 1 && sid(s->x, 2) == 3 &&
            nn_tensor_get_flat(s->y, 1) == lab[1],
        "subset rows");
  nn_dataset_free(s);
  nn_tensor_set_flat(idx, 1, 100);
  EXPECT_ERR(nn_dataset_subset(&s, d, idx), NN_ERR_INDEX,
             "index 100 at position 1 is outside 0..99");
  nn_tensor *fidx = th_rand(1, is, 0, 1);
  EXPECT_ERR(nn_dataset_subset(&s, d, fidx), NN_ERR_DTYPE, "indices must be int64, got float32");
  nn_tensor_free(fidx);
  nn_tensor_free(idx);

  /* class subsets */
  int64_t cls[2] = {2, 0};
  OK(nn_dataset_select_classes(&s, d, cls, 2, true));
  int64_t cc[2];
  OK(nn_dataset_class_counts(s, cc));
  CHECK(s->n == 70 && s->n_classes == 2 && cc[0] == 20 && cc[1] == 50, "relabelled subset");
  int rel = 0;
  for (int64_t i = 0; i < s->n; i++)
    rel += nn_tensor_get_flat(s->y, i) == (lab[sid(s->x, i)] == 2 ? 0 : 1);
  CHECK(rel == 70, "relabel maps classes[i] to i");
  nn_dataset_free(s);
  OK(nn_dataset_select_classes(&s, d, cls, 2, false));
  int64_t c3[3];
  OK(nn_dataset_class_counts(s, c3));
  CHECK(s->n == 70 && s->n_classes == 3 && c3[1] == 0 && c3[2] == 20, "subset without relabel");
  nn_dataset_free(s);
  int64_t dupc[2] = {1, 1}, badc[1] = {3};
  EXPECT_ERR(nn_dataset_select_classes(&s, d, dupc, 2, true), NN_ERR_ARG,
             "class 1 is listed twice");
  EXPECT_ERR(nn_dataset_select_classes(&s, d, badc, 1, true), NN_ERR_INDEX,
             "class 3 is outside 0..2");

  /* k-shot */
  OK(nn_dataset_kshot(&s, d, 5, 11));
  OK(nn_dataset_class_counts(s, c3));
  CHECK(s->n == 15 && c3[0] == 5 && c3[1] == 5 && c3[2] == 5, "k-shot counts");
  nn_dataset *s2 = NULL;
  OK(nn_dataset_kshot(&s2, d, 5, 11));
  same = 1;
  for (int64_t i = 0; i < 15; i++) same &= sid(s->x, i) == sid(s2->x, i);
  CHECK(same, "k-shot not reproducible");
  nn_dataset_free(s2);
  OK(nn_dataset_kshot(&s2, d, 5, 12));
  same = 1;
  for (int64_t i = 0; i < 15; i++) same &= sid(s->x, i) == sid(s2->x, i);
  CHECK(!same, "k-shot seed ignored");
  nn_dataset_free(s2);
  nn_dataset_free(s);
  /* absent classes are skipped */
  OK(nn_dataset_select_classes(&s, d, cls, 2, false));
  OK(nn_dataset_kshot(&s2, s, 20, 1));
  CHECK(s2->n == 40, "k-shot over the present classes: %lld", (long long)s2->n);
  nn_dataset_free(s2);
  nn_dataset_free(s);
  EXPECT_ERR(nn_dataset_kshot(&s, d, 25, 1), NN_ERR_ARG,
             "class 2 has 20 samples, fewer than k = 25");
  nn_dataset_free(d);

  nn_dataset *r = NULL;
  OK(nn_data_regression1d(&r, 10, -1, 1, 0.1, 1));
  EXPECT_ERR(nn_dataset_split(&tr, &va, r, 3, 1, true), NN_ERR_ARG, "needs class labels");
  EXPECT_ERR(nn_dataset_kshot(&s, r, 3, 1), NN_ERR_ARG, "no class labels");
  nn_dataset_free(r);
}

/* ---------------------------------------------------------------- normalisation */

static void test_normalize(void) {
  int64_t xs[4] = {4, 2, 3, 3}, ys[1] = {4};
  th_seed(5);
  nn_tensor *x = th_rand(4, xs, 0, 1), *y = th_randint(1, ys, 2);
  nn_tensor_set_flat(x, 0, 0.9); /* channel 0 */
  nn_dataset *d = NULL;
  OK(nn_dataset_new(&d, x, y, 2));
  nn_tensor *mean = NULL, *std = NULL;
  OK(nn_dataset_channel_stats(&mean, &std, d));
  double ref_m[2] = {0, 0}, ref_v[2] = {0, 0};
  for (int64_t i = 0; i < 72; i++) ref_m[(i / 9) % 2] += nn_tensor_get_flat(x, i) / 36;
  for (int64_t i = 0; i < 72; i++) {
    double v = nn_tensor_get_flat(x, i) - ref_m[(i / 9) % 2];
    ref_v[(i / 9) % 2] += v * v / 36;
  }
  double ref_s[2] = {sqrt(ref_v[0]), sqrt(ref_v[1])};
  CHECK(th_close(mean, ref_m, 1e-6, 1e-6, "channel mean"), "mean");
  CHECK(th_close(std, ref_s, 1e-6, 1e-6, "channel std"), "std");
  nn_dataset *nd = NULL;
  OK(nn_dataset_normalize(&nd, d, mean, std));
  nn_tensor *m2 = NULL, *s2 = NULL;
  OK(nn_dataset_channel_stats(&m2, &s2, nd));
  double zero[2] = {0, 0}, one[2] = {1, 1};
  CHECK(th_close(m2, zero, 1e-5, 0, "normalised mean") && th_close(s2, one, 1e-5, 0, "std"),
        "normalised stats");
  CHECK(nd->y == d->y, "labels shared");
  /* applied to another tensor (strided) with the first set's statistics */
  nn_tensor *xn = th_noncontig(x), *o = NULL;
  OK(nn_data_normalize(&o, xn, mean, std));
  double *ref = th_to_double(x);
  for (int64_t i = 0; i < 72; i++) ref[i] = (ref[i] - ref_m[(i / 9) % 2]) / ref_s[(i / 9) % 2];
  CHECK(th_close(o, ref, 1e-5, 1e-5, "normalize strided"), "normalize");
  free(ref);
  nn_tensor_free(o);
  nn_tensor_set_flat(std, 1, 0);
  EXPECT_ERR(nn_data_normalize(&o, x, mean, std), NN_ERR_ARG, "std[1] = 0 must be > 0");
  EXPECT_ERR(nn_data_normalize(&o, x, mean, y), NN_ERR_DTYPE, "must be float");
  int64_t three = 3;
  nn_tensor *m3 = NULL;
  OK(nn_tensor_zeros(&m3, 1, &three, NN_DTYPE_F32, nn_cpu));
  EXPECT_ERR(nn_data_normalize(&o, x, m3, m3), NN_ERR_SHAPE, "has 2 channels (dim 1)");
  CHECK(o == NULL, "out NULL");
  nn_tensor_free(m3);
  nn_tensor_free(xn);
  nn_tensor_free(m2);
  nn_tensor_free(s2);
  nn_tensor_free(mean);
  nn_tensor_free(std);
  nn_dataset_free(nd);
  nn_dataset_free(d);
  nn_tensor_free(x);
  nn_tensor_free(y);
}

/* ---------------------------------------------------------------- augmentations */

static bool equal(const nn_tensor *a, const nn_tensor *b) {
  if (!nn_tensor_same_shape(a, b)) return false;
  for (int64_t i = 0; i < nn_tensor_numel(a); i++)
    if (nn_tensor_get_flat(a, i) != nn_tensor_get_flat(b, i)) return false;
  return true;
}

static double maxdiff(const nn_tensor *a, const nn_tensor *b) {
  double m = 0;
  for (int64_t i = 0; i < nn_tensor_numel(a); i++)
    m = fmax(m, fabs(nn_tensor_get_flat(a, i) - nn_tensor_get_flat(b, i)));
  return m;
}

static bool in01(const nn_tensor *t) {
  for (int64_t i = 0; i < nn_tensor_numel(t); i++) {
    double v = nn_tensor_get_flat(t, i);
    if (!(v >= 0 && v <= 1)) return false;
  }
  return true;
}

/* Sample n of t as its own (1, C, H, W) tensor (a view). */
static nn_tensor *sample(nn_tensor *t, int64_t n) {
  nn_tensor *v = NULL;
  OK(nn_narrow(&v, t, 0, n, 1));
  return v;
}

static void test_augment(void) {
  th_seed(9);
  int64_t xs[4] = {6, 2, 5, 7};
  nn_tensor *x = th_rand(4, xs, 0, 1), *a = NULL, *b = NULL;
  OK(nn_data_hflip(&a, x));
  CHECK(nn_tensor_get_flat(a, 0) == nn_tensor_get_flat(x, 6), "hflip moves column 6 to 0");
  OK(nn_data_hflip(&b, a));
  CHECK(equal(b, x), "flip twice is not the identity");
  CHECK(!equal(a, x), "flip changed nothing");
  nn_tensor_free(a);
  nn_tensor_free(b);
  OK(nn_data_translate(&a, x, 0, 0));
  CHECK(equal(a, x), "translate (0, 0) is not the identity");
  nn_tensor_free(a);
  OK(nn_data_translate(&a, x, 1, -2)); /* out[i, j] = x[i - 1, j + 2] */
  int ok = 1;
  for (int64_t n = 0; n < 6; n++)
    for (int64_t c = 0; c < 2; c++)
      for (int64_t i = 0; i < 5; i++)
        for (int64_t j = 0; j < 7; j++) {
          int64_t si = i - 1, sj = j + 2, k = ((n * 2 + c) * 5 + i) * 7 + j;
          double want = (si >= 0 && sj < 7) ? nn_tensor_get_flat(x, k - 7 + 2) : 0;
          ok &= nn_tensor_get_flat(a, k) == want;
        }
  CHECK(ok, "translate (1, -2) values");
  nn_tensor_free(a);
  OK(nn_data_rotate(&a, x, 0));
  CHECK(equal(a, x), "rotation by 0 is not the identity");
  nn_tensor_free(a);

  /* square images: four quarter turns come back; a half turn flips both axes; the direction */
  int64_t qs[4] = {3, 1, 6, 6};
  nn_tensor *q = th_rand(4, qs, 0, 1), *r1 = NULL, *r2 = NULL;
  nn_tensor_retain(q);
  a = q;
  for (int t = 0; t < 4; t++) {
    OK(nn_data_rotate(&r1, a, 90));
    nn_tensor_free(a);
    a = r1;
  }
  CHECK(maxdiff(a, q) < 1e-5, "four quarter turns: %g", maxdiff(a, q));
  nn_tensor_free(a);
  OK(nn_data_rotate(&r2, q, 180));
  ok = 1;
  for (int64_t k = 0; k < 108; k++) {
    int64_t n = k / 36, i = k / 6 % 6, j = k % 6;
    ok &= fabs(nn_tensor_get_flat(r2, k) - nn_tensor_get_flat(q, n * 36 + (5 - i) * 6 + 5 - j)) <
          1e-5;
  }
  CHECK(ok, "half turn");
  nn_tensor_free(r2);
  nn_tensor *dot = NULL;
  int64_t ds[4] = {1, 1, 5, 5};
  OK(nn_tensor_zeros(&dot, 4, ds, NN_DTYPE_F32, nn_cpu));
  nn_tensor_set_flat(dot, 0 * 5 + 2, 1.0); /* top middle */
  OK(nn_data_rotate(&r2, dot, 90));
  CHECK(fabs(nn_tensor_get_flat(r2, 2 * 5 + 0) - 1) < 1e-6, "counter-clockwise: top -> left");
  nn_tensor_free(r2);
  OK(nn_data_rotate(&r2, dot, 45)); /* bilinear: mass spreads, stays in [0, 1] */
  CHECK(in01(r2) && nn_tensor_get_flat(r2, 2) < 1, "45 degrees");
  nn_tensor_free(r2);
  nn_tensor_free(dot);
  nn_tensor_free(q);

  /* random crop: pad 0 is the identity; otherwise every sample is a translate within pad */
  nn_rng r;
  nn_rng_init(&r, 42, 0);
  OK(nn_data_random_crop(&a, x, 0, &r));
  CHECK(equal(a, x) && r.offset == 6, "crop with zero shift, offset %llu",
        (unsigned long long)r.offset);
  nn_tensor_free(a);
  int64_t bs[4] = {40, 1, 8, 8};
  nn_tensor *big = th_rand(4, bs, 0.01, 1);
  OK(nn_data_random_crop(&a, big, 2, &r));
  int matched = 0, moved = 0;
  for (int64_t n = 0; n < 40; n++) {
    nn_tensor *sa = sample(a, n), *sx = sample(big, n);
    int hit = 0;
    for (int dy = -2; dy <= 2 && !hit; dy++)
      for (int dx = -2; dx <= 2 && !hit; dx++) {
        nn_tensor *t = NULL;
        OK(nn_data_translate(&t, sx, dy, dx));
        if (equal(t, sa)) hit = 1, moved += dy != 0 || dx != 0;
        nn_tensor_free(t);
      }
    matched += hit;
    nn_tensor_free(sa);
    nn_tensor_free(sx);
  }
  CHECK(matched == 40 && moved > 20, "random crop: %d of 40 are shifts, %d moved", matched, moved);
  nn_tensor_free(a);
  /* same generator state, same output; the generator advanced by N */
  nn_rng r0;
  nn_rng_init(&r0, 42, 0);
  r0.offset = 6;
  OK(nn_data_random_crop(&b, big, 2, &r0));
  nn_rng_init(&r, 42, 0);
  r.offset = 6;
  OK(nn_data_random_crop(&a, big, 2, &r));
  CHECK(equal(a, b) && r.offset == 46, "random crop reproducible");
  nn_tensor_free(a);
  nn_tensor_free(b);

  /* random flip: each sample either kept or mirrored, about half mirrored */
  int64_t fs[4] = {200, 1, 3, 4};
  nn_tensor *fx = th_rand(4, fs, 0, 1), *ff = NULL;
  OK(nn_data_hflip(&ff, fx));
  OK(nn_data_random_hflip(&a, fx, 0.5, &r));
  int kept = 0, flipped = 0;
  for (int64_t n = 0; n < 200; n++) {
    nn_tensor *sa = sample(a, n), *sx = sample(fx, n), *sf = sample(ff, n);
    kept += equal(sa, sx);
    flipped += equal(sa, sf);
    nn_tensor_free(sa);
    nn_tensor_free(sx);
    nn_tensor_free(sf);
  }
  CHECK(kept + flipped == 200 && flipped > 70 && flipped < 130, "random flip: %d kept %d flipped",
        kept, flipped);
  nn_tensor_free(a);
  OK(nn_data_random_hflip(&a, fx, 0, &r));
  CHECK(equal(a, fx), "p = 0 flips");
  nn_tensor_free(a);
  OK(nn_data_random_hflip(&a, fx, 1, &r));
  CHECK(equal(a, ff), "p = 1 keeps");
  nn_tensor_free(a);
  nn_tensor_free(fx);
  nn_tensor_free(ff);

  /* random rotation: 0 degrees is the identity; outputs in [0, 1]; strided input gives the same */
  OK(nn_data_random_rotate(&a, big, 0, &r));
  CHECK(equal(a, big), "random rotation by 0");
  nn_tensor_free(a);
  nn_rng_init(&r, 3, 0);
  OK(nn_data_random_rotate(&a, big, 30, &r));
  nn_tensor *bn = th_noncontig(big);
  nn_rng_init(&r, 3, 0);
  OK(nn_data_random_rotate(&b, bn, 30, &r));
  CHECK(in01(a) && equal(a, b) && !equal(a, big), "random rotation range / strided input");
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(bn);
  nn_tensor_free(big);

  /* clamping: input outside [0, 1] comes back inside */
  nn_tensor *wide = th_rand(4, xs, -2, 3);
  OK(nn_data_translate(&a, wide, 0, 0));
  CHECK(in01(a), "translate clamps");
  nn_tensor_free(a);
  nn_tensor_free(wide);

  /* errors */
  int64_t s3[3] = {2, 5, 5};
  nn_tensor *x3 = th_rand(3, s3, 0, 1), *x64 = th_rand_dt(4, xs, 0, 1, NN_DTYPE_F64);
  a = (nn_tensor *)1;
  EXPECT_ERR(nn_data_hflip(&a, x3), NN_ERR_SHAPE, "hflip: x must be (N, C, H, W), got (2, 5, 5)");
  CHECK(a == NULL, "out NULL");
  EXPECT_ERR(nn_data_random_crop(&a, x64, 2, &r), NN_ERR_DTYPE, "must be float32, got float64");
  EXPECT_ERR(nn_data_random_crop(&a, x, -1, &r), NN_ERR_ARG, "pad = -1 must be >= 0");
  EXPECT_ERR(nn_data_random_hflip(&a, x, 1.5, &r), NN_ERR_ARG, "p = 1.5 must be in [0, 1]");
  nn_tensor_free(x3);
  nn_tensor_free(x64);
  nn_tensor_free(x);
}

/* ---------------------------------------------------------------- corruptions */

/* n images (1, 28, 28): a bright rectangle and a dim one at seeded positions. */
static nn_tensor *shapes(int64_t n) {
  int64_t s[4] = {n, 1, 28, 28};
  nn_tensor *t = NULL;
  OK(nn_tensor_zeros(&t, 4, s, NN_DTYPE_F32, nn_cpu));
  float *p = nn_tensor_data(t);
  th_seed(77);
  for (int64_t k = 0; k < n; k++)
    for (int r = 0; r < 2; r++) {
      int y0 = 2 + (int)(th_uniform() * 12), x0 = 2 + (int)(th_uniform() * 12);
      int hh = 4 + (int)(th_uniform() * 10), ww = 3 + (int)(th_uniform() * 10);
      for (int i = y0; i < y0 + hh && i < 28; i++)
        for (int j = x0; j < x0 + ww && j < 28; j++) p[k * 784 + i * 28 + j] = r ? 0.3f : 0.85f;
    }
  return t;
}

static double dist(const nn_tensor *a, const nn_tensor *b) {
  double s = 0;
  for (int64_t i = 0; i < nn_tensor_numel(a); i++) {
    double d = nn_tensor_get_flat(a, i) - nn_tensor_get_flat(b, i);
    s += d * d;
  }
  return sqrt(s / (double)a->shape[0]);
}

static void test_corrupt(void) {
  nn_tensor *x = shapes(16);
  for (int k = 0; k < NN_CORRUPT_COUNT; k++) {
    const char *name = nn_data_corruption_name((nn_corruption)k);
    nn_corruption kk;
    OK(nn_data_corruption_from_name(&kk, name));
    CHECK((int)kk == k, "name round trip %s", name);
    double prev = 0;
    for (int s = 1; s <= 5; s++) {
      nn_tensor *a = NULL, *b = NULL, *c = NULL;
      OK(nn_data_corrupt(&a, x, (nn_corruption)k, s, 5));
      OK(nn_data_corrupt(&b, x, (nn_corruption)k, s, 5));
      OK(nn_data_corrupt(&c, x, (nn_corruption)k, s, 6));
      if (!a || !b || !c) continue;
      double d = dist(a, x);
      CHECK(d > prev, "%s: severity %d distance %g not above severity %d's %g", name, s, d, s - 1,
            prev);
      CHECK(in01(a), "%s severity %d leaves [0, 1]", name, s);
      CHECK(equal(a, b), "%s severity %d not deterministic", name, s);
      if (k == NN_CORRUPT_GAUSSIAN_NOISE || k == NN_CORRUPT_ROTATE)
        CHECK(!equal(a, c), "%s ignores the seed", name);
      else
        CHECK(equal(a, c), "%s should not depend on the seed", name);
      prev = d;
      nn_tensor_free(a);
      nn_tensor_free(b);
      nn_tensor_free(c);
    }
  }
  /* spot checks of the definitions */
  nn_tensor *a = NULL;
  OK(nn_data_corrupt(&a, x, NN_CORRUPT_CONTRAST, 1, 0)); /* (x - m) * 0.4 + m */
  double m = 0;
  for (int i = 0; i < 784; i++) m += nn_tensor_get_flat(x, i) / 784;
  CHECK(fabs(nn_tensor_get_flat(a, 0) - 0.6 * m) < 1e-6, "contrast: background %g, want %g",
        nn_tensor_get_flat(a, 0), 0.6 * m);
  nn_tensor_free(a);
  int64_t cs[4] = {1, 1, 28, 28};
  nn_tensor *flat = NULL;
  OK(nn_tensor_full(&flat, 4, cs, 0.5, NN_DTYPE_F32, nn_cpu));
  OK(nn_data_corrupt(&a, flat, NN_CORRUPT_GAUSSIAN_NOISE, 3, 1));
  double s1 = 0, s2 = 0;
  for (int i = 0; i < 784; i++) {
    double v = nn_tensor_get_flat(a, i) - 0.5;
    s1 += v;
    s2 += v * v;
  }
  double sd = sqrt(s2 / 784 - (s1 / 784) * (s1 / 784));
  CHECK(fabs(sd - 0.18) < 0.02 && fabs(s1 / 784) < 0.02, "noise std %g mean %g", sd, s1 / 784);
  /* the exact values: the normal rule of rng.h on the documented stream, clamped */
  nn_rng nr;
  nn_rng_init(&nr, 1, 0x6e6f697365ull);
  int exact = 0;
  for (int k = 0; k < 784; k++) {
    int w = 2 * (k % 2);
    double u1 = ((nn_rng_word(&nr, (uint64_t)k / 2, w) >> 8) + 0.5) / 16777216.0;
    double u2 = ((nn_rng_word(&nr, (uint64_t)k / 2, w + 1) >> 8) + 0.5) / 16777216.0;
    double v = 0.5f + (float)(0.18 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    v = fmin(fmax(v, 0), 1);
    exact += fabs(nn_tensor_get_flat(a, k) - v) < 1e-6;
  }
  CHECK(exact == 784, "noise values: %d of 784 follow the rng.h rule", exact);
  nn_tensor_free(a);
  OK(nn_data_corrupt(&a, flat, NN_CORRUPT_GAUSSIAN_BLUR, 5, 1)); /* a constant image is fixed */
  CHECK(maxdiff(a, flat) < 1e-6, "blur of a constant image");
  nn_tensor_free(a);
  OK(nn_data_corrupt(&a, flat, NN_CORRUPT_PIXELATE, 5, 1));
  CHECK(maxdiff(a, flat) < 1e-6, "pixelate of a constant image");
  nn_tensor_free(a);
  nn_tensor_free(flat);

  /* the thread count does not change any output (128 images: large enough to run threaded) */
  nn_tensor *xb = shapes(128);
  int same_all = 0, nt = nn_get_num_threads();
  for (int k = 0; k <= NN_CORRUPT_COUNT; k++) {
    nn_tensor *t1 = NULL, *t4 = NULL;
    nn_rng ra, rb;
    nn_rng_init(&ra, 9, 1);
    rb = ra;
    nn_set_num_threads(1);
    if (k < NN_CORRUPT_COUNT)
      OK(nn_data_corrupt(&t1, xb, (nn_corruption)k, 3, 2));
    else
      OK(nn_data_random_rotate(&t1, xb, 20, &ra));
    nn_set_num_threads(4);
    if (k < NN_CORRUPT_COUNT)
      OK(nn_data_corrupt(&t4, xb, (nn_corruption)k, 3, 2));
    else
      OK(nn_data_random_rotate(&t4, xb, 20, &rb));
    same_all += t1 && t4 && equal(t1, t4);
    nn_tensor_free(t1);
    nn_tensor_free(t4);
  }
  nn_set_num_threads(nt);
  CHECK(same_all == NN_CORRUPT_COUNT + 1, "%d of %d outputs agree between 1 and 4 threads",
        same_all, NN_CORRUPT_COUNT + 1);
  nn_tensor_free(xb);

  a = (nn_tensor *)1;
  EXPECT_ERR(nn_data_corrupt(&a, x, NN_CORRUPT_CONTRAST, 0, 1), NN_ERR_ARG,
             "contrast severity 0 is outside 1..5");
  CHECK(a == NULL, "out NULL");
  EXPECT_ERR(nn_data_corrupt(&a, x, NN_CORRUPT_PIXELATE, 6, 1), NN_ERR_ARG, "outside 1..5");
  EXPECT_ERR(nn_data_corrupt(&a, x, NN_CORRUPT_COUNT, 1, 1), NN_ERR_ARG, "unknown corruption");
  nn_corruption kk;
  EXPECT_ERR(nn_data_corruption_from_name(&kk, "fog"), NN_ERR_ARG,
             "unknown corruption \"fog\"; valid names: gaussian_noise, gaussian_blur, contrast, "
             "rotate, pixelate");
  CHECK(nn_data_corruption_name(NN_CORRUPT_COUNT) == NULL, "name out of range");
  nn_tensor_free(x);
}

/* ---------------------------------------------------------------- synthetic sets */

static void test_synthetic(void) {
  nn_dataset *d = NULL, *d2 = NULL;
  OK(nn_data_regression1d(&d, 20000, -3, 3, 0.2, 1));
  CHECK(d->x->ndim == 2 && d->x->shape[1] == 1 && d->y->shape[0] == 20000 && d->n_classes == 0,
        "regression shapes");
  double lo = 1e9, hi = -1e9, rs[2] = {0, 0}, rq[2] = {0, 0}, wq[2] = {0, 0};
  int64_t rn[2] = {0, 0};
  for (int64_t i = 0; i < d->n; i++) {
    double xi = nn_tensor_get_flat(d->x, i), e = nn_tensor_get_flat(d->y, i) - sin(3 * xi);
    lo = fmin(lo, xi);
    hi = fmax(hi, xi);
    int g = fabs(xi) > 2; /* near 0 vs far out */
    if (fabs(xi) < 1 || g) {
      double s = 0.2 * (0.1 + fabs(xi));
      rs[g] += e;
      rq[g] += e * e;
      wq[g] += s * s;
      rn[g]++;
    }
  }
  CHECK(lo >= -3 && hi < 3 && hi - lo > 5.9, "x range [%g, %g]", lo, hi);
  for (int g = 0; g < 2; g++)
    CHECK(fabs(rq[g] / wq[g] - 1) < 0.1 && fabs(rs[g] / (double)rn[g]) < 0.02,
          "group %d: residual variance / stated variance = %g", g, rq[g] / wq[g]);
  CHECK(rq[1] / (double)rn[1] > 4 * rq[0] / (double)rn[0], "noise grows with |x|");
  OK(nn_data_regression1d(&d2, 20000, -3, 3, 0.2, 1));
  CHECK(equal(d->y, d2->y), "regression reproducible");
  nn_dataset_free(d);
  nn_dataset_free(d2);

  OK(nn_data_blobs(&d, 3000, 3, 4, 0.5, 2));
  CHECK(d->x->shape[0] == 3000 && d->x->shape[1] == 4 && d->n_classes == 3, "blobs shapes");
  int64_t cnt[3];
  OK(nn_dataset_class_counts(d, cnt));
  CHECK(cnt[0] == 1000 && cnt[1] == 1000 && cnt[2] == 1000, "blobs balanced");
  int centred = 0;
  for (int c = 0; c < 3; c++) {
    double ctr[4], mean[4] = {0, 0, 0, 0};
    nn_data_blob_center(ctr, c, 3, 4);
    for (int64_t i = 0; i < d->n; i++)
      if (nn_tensor_get_flat(d->y, i) == c)
        for (int j = 0; j < 4; j++) mean[j] += nn_tensor_get_flat(d->x, i * 4 + j) / 1000;
    int ok = 1; /* std of a mean of 1000 draws: 0.5 / 31.6 = 0.016 */
    for (int j = 0; j < 4; j++) ok &= fabs(mean[j] - ctr[j]) < 0.07;
    centred += ok;
  }
  double c1[2];
  nn_data_blob_center(c1, 1, 4, 2);
  CHECK(centred == 3 && fabs(c1[0]) < 1e-12 && fabs(c1[1] - 4) < 1e-12, "blob centres");
  nn_dataset_free(d);

  OK(nn_data_two_moons(&d, 1001, 0.1, 3));
  OK(nn_dataset_class_counts(d, cnt));
  CHECK(d->x->shape[1] == 2 && cnt[0] == 501 && cnt[1] == 500, "moons balance %lld %lld",
        (long long)cnt[0], (long long)cnt[1]);
  double mx[2] = {0, 0}, my[2] = {0, 0};
  for (int64_t i = 0; i < d->n; i++) {
    int c = (int)nn_tensor_get_flat(d->y, i);
    mx[c] += nn_tensor_get_flat(d->x, 2 * i) / (double)cnt[c];
    my[c] += nn_tensor_get_flat(d->x, 2 * i + 1) / (double)cnt[c];
  }
  /* E cos t = 0, E sin t = 2 / pi for t uniform in [0, pi) */
  CHECK(fabs(mx[0]) < 0.08 && fabs(my[0] - 2 / M_PI) < 0.05 && fabs(mx[1] - 1) < 0.08 &&
            fabs(my[1] - (0.5 - 2 / M_PI)) < 0.05,
        "moon means (%g, %g) (%g, %g)", mx[0], my[0], mx[1], my[1]);
  OK(nn_data_two_moons(&d2, 1001, 0.1, 4));
  CHECK(!equal(d->x, d2->x), "moons seed ignored");
  nn_dataset_free(d);
  nn_dataset_free(d2);

  EXPECT_ERR(nn_data_blobs(&d, 10, 0, 2, 1, 1), NN_ERR_ARG, "k = 0");
  CHECK(d == NULL, "out NULL");
  EXPECT_ERR(nn_data_two_moons(&d, 10, -1, 1), NN_ERR_ARG, "noise = -1");
  EXPECT_ERR(nn_data_regression1d(&d, 10, 1, 1, 0.1, 1), NN_ERR_ARG, "[1, 1)");
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/wb_test_data_XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  test_idx_parse();
  test_fashion_fake();
  test_idx_errors();
  test_fashion_real();
  test_dataset_new();
  test_batcher();
  test_splits();
  test_normalize();
  test_augment();
  test_corrupt();
  test_synthetic();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return th_done();
}
