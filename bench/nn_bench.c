/* bench/nn_bench.c: kernel benchmark of wb's core on the CPU.
 *
 * Prints float32 GEMM GFLOP/s through the core (nn_matmul, which allocates its output from the
 * caching allocator and dispatches to OpenBLAS) beside OpenBLAS's cblas_sgemm called directly
 * in the same run, as a ratio, at n = 256, 1024, 2048; then the throughput of the hot ops of a
 * training step; then a linear layer's two gradient products as one matmul_pair (side by side
 * on the threads) against the two products one after the other (each threaded), at the MLP's
 * 512-unit layer. Every measurement checks its result first, then times: warm-up, then the
 * median of several repetitions.
 *
 *   wb_bench_nn [--threads N] [--quick]
 */
#include "backend.h"
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "wb_bench_nn: " __VA_ARGS__);                                                  \
    fprintf(stderr, "\n");                                                                         \
    exit(1);                                                                                       \
  } while (0)
#define TRY(call)                                                                                  \
  do {                                                                                             \
    if ((call) != NN_OK) DIE("%s: %s", #call, nn_errmsg());                                        \
  } while (0)

typedef void (*bench_fn)(void *ctx);

/* median seconds per call of fn over reps after warm-up */
static double time_it(bench_fn fn, void *ctx, int warm, int reps) {
  for (int i = 0; i < warm; i++) fn(ctx);
  double *t = malloc((size_t)reps * sizeof *t);
  for (int i = 0; i < reps; i++) {
    double t0 = now_s();
    fn(ctx);
    t[i] = now_s() - t0;
  }
  double m = median(t, reps);
  free(t);
  return m;
}

typedef struct {
  nn_tensor *a, *b;
  float *c;
  int n;
} gemm_ctx;

static void gemm_core(void *vctx) {
  gemm_ctx *g = vctx;
  nn_tensor *c = NULL;
  TRY(nn_matmul(&c, g->a, g->b));
  nn_tensor_free(c);
}

static void gemm_direct(void *vctx) {
  gemm_ctx *g = vctx;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f,
              nn_tensor_data(g->a), g->n, nn_tensor_data(g->b), g->n, 0.0f, g->c, g->n);
}

static void bench_gemm(int quick) {
  int sizes[3] = {256, 1024, 2048};
  printf("%-28s %12s %12s %8s\n", "sgemm n x n x n", "core GF/s", "openblas GF/s", "ratio");
  for (int s = 0; s < 3; s++) {
    int n = sizes[s];
    gemm_ctx g = {NULL, NULL, NULL, n};
    int64_t sh[2] = {n, n};
    TRY(nn_tensor_empty(&g.a, 2, sh, NN_DTYPE_F32, nn_cpu));
    TRY(nn_tensor_empty(&g.b, 2, sh, NN_DTYPE_F32, nn_cpu));
    nn_rng r;
    nn_rng_init(&r, 42, 0);
    float *a = nn_tensor_data(g.a), *b = nn_tensor_data(g.b);
    for (int64_t i = 0; i < (int64_t)n * n; i++) {
      a[i] = (float)nn_rng_uniform(&r) - 0.5f;
      b[i] = (float)nn_rng_uniform(&r) - 0.5f;
    }
    g.c = malloc((size_t)n * n * sizeof(float));
    /* check: the core's result equals the direct call's bit for bit */
    nn_tensor *c = NULL;
    TRY(nn_matmul(&c, g.a, g.b));
    gemm_direct(&g);
    if (memcmp(nn_tensor_data(c), g.c, (size_t)n * n * sizeof(float)))
      DIE("sgemm n=%d: the core's result differs from cblas_sgemm's", n);
    nn_tensor_free(c);
    double flop = 2.0 * n * n * n;
    int reps = quick ? 3 : (int)fmax(5, fmin(50, 4e9 / flop));
    /* interleave the two so drift on a shared machine hits both alike */
    double tc[3], td[3];
    for (int k = 0; k < 3; k++) {
      tc[k] = time_it(gemm_core, &g, 1, reps);
      td[k] = time_it(gemm_direct, &g, 1, reps);
    }
    double mc = median(tc, 3), md = median(td, 3);
    char label[64];
    snprintf(label, sizeof label, "sgemm n=%d", n);
    printf("%-28s %12.1f %12.1f %8.3f\n", label, flop / mc * 1e-9, flop / md * 1e-9, md / mc);
    free(g.c);
    nn_tensor_free(g.a);
    nn_tensor_free(g.b);
  }
}

/* ---- hot ops of a training step: per-op throughput ---- */

typedef struct {
  nn_tensor *x, *y, *w, *bias;
} op_ctx;

static void op_add(void *vctx) {
  op_ctx *c = vctx;
  nn_tensor *o = NULL;
  TRY(nn_add(&o, c->x, c->y));
  nn_tensor_free(o);
}

static void op_linear_fwd_bwd(void *vctx) {
  op_ctx *c = vctx;
  nn_tensor *o = NULL, *s = NULL;
  TRY(nn_linear(&o, c->x, c->w, c->bias));
  TRY(nn_sum_dims(&s, o, 3u, false));
  TRY(nn_backward(s, NULL));
  nn_tensor_free(o);
  nn_tensor_free(s);
}

typedef struct {
  nn_tensor *x, *w, *b, *logits, *labels;
  nn_conv2d_opts o;
} conv_ctx;

static void op_conv_fwd(void *vctx) {
  conv_ctx *c = vctx;
  nn_tensor *o = NULL;
  bool prev = nn_set_grad_enabled(false);
  TRY(nn_conv2d(&o, c->x, c->w, c->b, &c->o));
  nn_set_grad_enabled(prev);
  nn_tensor_free(o);
}

static void op_conv_fwd_bwd(void *vctx) {
  conv_ctx *c = vctx;
  nn_tensor *o = NULL, *s = NULL;
  TRY(nn_conv2d(&o, c->x, c->w, c->b, &c->o));
  TRY(nn_sum_all(&s, o));
  TRY(nn_backward(s, NULL));
  nn_tensor_free(o);
  nn_tensor_free(s);
  nn_tensor_zero_grad(c->x, true);
  nn_tensor_zero_grad(c->w, true);
  nn_tensor_zero_grad(c->b, true);
}

static void op_ce_fwd_bwd(void *vctx) {
  conv_ctx *c = vctx;
  nn_tensor *l = NULL;
  TRY(nn_cross_entropy(&l, c->logits, c->labels, NN_REDUCTION_MEAN));
  TRY(nn_backward(l, NULL));
  nn_tensor_free(l);
  nn_tensor_zero_grad(c->logits, true);
}

static void op_softmax(void *vctx) {
  conv_ctx *c = vctx;
  nn_tensor *o = NULL;
  TRY(nn_softmax(&o, c->logits, -1));
  nn_tensor_free(o);
}

static void op_relu(void *vctx) {
  op_ctx *c = vctx;
  nn_tensor *o = NULL;
  TRY(nn_relu(&o, c->x));
  nn_tensor_free(o);
}

static void bench_ops(int quick) {
  int reps = quick ? 5 : 30;
  printf("\n%-44s %12s %14s\n", "op (float32)", "ms/call", "throughput");
  op_ctx c = {0};
  int64_t sh[2] = {128, 512};
  TRY(nn_rand(&c.x, 2, sh, NULL));
  TRY(nn_rand(&c.y, 2, sh, NULL));
  double t = time_it(op_add, &c, 3, reps);
  printf("%-44s %12.4f %11.2f GB/s\n", "add (128, 512) + (128, 512)", t * 1e3,
         3.0 * 128 * 512 * 4 / t * 1e-9);
  t = time_it(op_relu, &c, 3, reps);
  printf("%-44s %12.4f %11.2f GB/s\n", "relu (128, 512)", t * 1e3, 2.0 * 128 * 512 * 4 / t * 1e-9);
  nn_tensor_free(c.y);
  TRY(nn_rand(&c.w, 2, (int64_t[]){512, 512}, NULL));
  TRY(nn_rand(&c.bias, 1, (int64_t[]){512}, NULL));
  nn_tensor_set_requires_grad(c.w, true);
  nn_tensor_set_requires_grad(c.bias, true);
  nn_tensor_set_requires_grad(c.x, true);
  t = time_it(op_linear_fwd_bwd, &c, 3, reps);
  printf("%-44s %12.4f %11.1f GF/s\n", "linear 128x512 -> 512 fwd+bwd", t * 1e3,
         3 * 2.0 * 128 * 512 * 512 / t * 1e-9);
  nn_tensor_free(c.x);
  nn_tensor_free(c.w);
  nn_tensor_free(c.bias);
  /* the LeNet-style CNN's second convolution at batch 128 */
  conv_ctx k = {0};
  k.o = (nn_conv2d_opts){{1, 1}, {2, 2}, {1, 1}, 1};
  TRY(nn_randn(&k.x, 4, (int64_t[]){128, 32, 14, 14}, NULL));
  TRY(nn_randn(&k.w, 4, (int64_t[]){64, 32, 5, 5}, NULL));
  TRY(nn_randn(&k.b, 1, (int64_t[]){64}, NULL));
  double flop = 2.0 * 128 * 64 * 14 * 14 * 32 * 25;
  int creps = quick ? 3 : 10;
  t = time_it(op_conv_fwd, &k, 1, creps);
  printf("%-44s %12.4f %11.1f GF/s\n", "conv2d (128,32,14,14) 64x5x5 pad 2 fwd", t * 1e3,
         flop / t * 1e-9);
  nn_tensor_set_requires_grad(k.x, true);
  nn_tensor_set_requires_grad(k.w, true);
  nn_tensor_set_requires_grad(k.b, true);
  t = time_it(op_conv_fwd_bwd, &k, 1, creps);
  printf("%-44s %12.4f %11.1f GF/s\n", "conv2d same, fwd+bwd (input and weight)", t * 1e3,
         3 * flop / t * 1e-9);
  /* softmax and cross-entropy over 1000 classes */
  TRY(nn_randn(&k.logits, 2, (int64_t[]){1024, 1000}, NULL));
  nn_tensor_set_requires_grad(k.logits, true);
  k.labels = NULL;
  TRY(nn_tensor_empty(&k.labels, 1, (int64_t[]){1024}, NN_DTYPE_I64, nn_cpu));
  for (int i = 0; i < 1024; i++) ((int64_t *)nn_tensor_data(k.labels))[i] = (i * 7919) % 1000;
  t = time_it(op_softmax, &k, 3, reps);
  printf("%-44s %12.4f %11.2f GB/s\n", "softmax (1024, 1000)", t * 1e3,
         2.0 * 1024 * 1000 * 4 / t * 1e-9);
  t = time_it(op_ce_fwd_bwd, &k, 3, reps);
  printf("%-44s %12.4f %11.2f GB/s\n", "cross_entropy (1024, 1000) fwd+bwd", t * 1e3,
         2.0 * 1024 * 1000 * 4 / t * 1e-9);
  nn_tensor_free(k.x);
  nn_tensor_free(k.w);
  nn_tensor_free(k.b);
  nn_tensor_free(k.logits);
  nn_tensor_free(k.labels);
}

/* ---- a linear layer's gradients: matmul_pair against two matmuls ---- */

typedef struct {
  nn_tensor *dout, *w, *doutT, *x; /* dx = dout @ w, dw = dout^T @ x (all 3-D, batch 1) */
  nn_tensor *dx, *dw;
} pair_ctx;

static void pair_one(void *vctx) {
  pair_ctx *c = vctx;
  nn_tensor *o[2] = {c->dx, c->dw}, *in[4] = {c->dout, c->w, c->doutT, c->x};
  nn_op_params p = {0};
  TRY(nn_dispatch(NN_OP_MATMUL_PAIR, 2, o, 4, in, &p));
}

static void pair_two(void *vctx) {
  pair_ctx *c = vctx;
  nn_op_params p = {0};
  nn_tensor *i0[2] = {c->dout, c->w}, *i1[2] = {c->doutT, c->x};
  TRY(nn_dispatch(NN_OP_MATMUL, 1, &c->dx, 2, i0, &p));
  TRY(nn_dispatch(NN_OP_MATMUL, 1, &c->dw, 2, i1, &p));
}

static void bench_pair(int quick) {
  const int64_t rows = 128, outs = 512, ins = 512;
  pair_ctx c = {0};
  nn_tensor *dout = NULL, *t = NULL;
  TRY(nn_tensor_empty(&dout, 3, (int64_t[]){1, rows, outs}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_tensor_empty(&c.w, 3, (int64_t[]){1, outs, ins}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_tensor_empty(&c.x, 3, (int64_t[]){1, rows, ins}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_tensor_empty(&c.dx, 3, (int64_t[]){1, rows, ins}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_tensor_empty(&c.dw, 3, (int64_t[]){1, outs, ins}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_uniform_(dout, -1, 1, NULL));
  TRY(nn_uniform_(c.w, -1, 1, NULL));
  TRY(nn_uniform_(c.x, -1, 1, NULL));
  c.dout = dout;
  TRY(nn_transpose(&t, dout, 1, 2));
  c.doutT = t;
  /* check: both ways give the same products up to float32 summation order */
  nn_tensor *r0 = NULL, *r1 = NULL;
  pair_two(&c);
  TRY(nn_contiguous(&r0, c.dx));
  TRY(nn_contiguous(&r1, c.dw));
  pair_one(&c);
  for (int64_t i = 0; i < rows * ins; i++)
    if (fabs(nn_tensor_get_flat(r0, i) - nn_tensor_get_flat(c.dx, i)) > 1e-3)
      DIE("matmul_pair: dx differs from matmul's");
  for (int64_t i = 0; i < outs * ins; i++)
    if (fabs(nn_tensor_get_flat(r1, i) - nn_tensor_get_flat(c.dw, i)) > 1e-3)
      DIE("matmul_pair: dw differs from matmul's");
  nn_tensor_free(r0);
  nn_tensor_free(r1);
  int reps = quick ? 5 : 50;
  double t1[5], t2[5]; /* interleaved, so drift on a shared machine hits both alike */
  for (int k = 0; k < 5; k++) {
    t2[k] = time_it(pair_two, &c, 2, reps);
    t1[k] = time_it(pair_one, &c, 2, reps);
  }
  double m1 = median(t1, 5), m2 = median(t2, 5);
  printf("\n%-40s %10s %10s %8s\n", "linear gradients, 128 x 512 -> 512", "pair us", "two us",
         "speedup");
  printf("%-40s %10.1f %10.1f %7.2fx\n", "dx = dout @ w, dw = dout^T @ x", m1 * 1e6, m2 * 1e6,
         m2 / m1);
  nn_tensor_free(dout);
  nn_tensor_free(t);
  nn_tensor_free(c.w);
  nn_tensor_free(c.x);
  nn_tensor_free(c.dx);
  nn_tensor_free(c.dw);
}

int main(int argc, char **argv) {
  nn_blas_init(argv);
  int threads = 0, quick = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else {
      fprintf(stderr, "usage: wb_bench_nn [--threads N] [--quick]\n");
      return 2;
    }
  }
  nn_set_num_threads(threads);
  printf("wb core benchmark: %d thread(s), OpenBLAS kernels %s\n\n", nn_get_num_threads(),
         nn_blas_core());
  bench_gemm(quick);
  bench_ops(quick);
  bench_pair(quick);
  return 0;
}
