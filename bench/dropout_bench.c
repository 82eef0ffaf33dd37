/* bench/dropout_bench.c: training step time of block-wise dropout against conventional dropout
 * on the 3x1024 MLP of the gyro study (784-1024-1024-1024-10, ReLU, dropout after each hidden
 * layer), batch 128, SGD momentum 0.9, synthetic inputs (time does not depend on the data).
 *
 * For each p in {0.25, 0.5, 0.75} and block in {16, 32, 64}: a Sequential with Dropout(p)
 * (dense, per-unit masks) and a BlockSequential with BlockDropout(p, block) (one block mask per
 * minibatch; the products skip dropped blocks, nn/gyro_dropout.h). Before timing, the block-wise
 * model is checked against the same layers run densely with the same mask (outputs within 1e-4).
 * Steps alternate dense / block-wise so that drift of the machine hits both; each configuration
 * reports the median of --reps repetitions of --steps steps after --warmup steps.
 *
 * With --device cuda the models, the data and the masks live on the GPU; each timed loop ends by
 * reading the last loss, which waits for the device's queue.
 *
 *   wb_bench_dropout [--threads N] [--reps N] [--steps N] [--warmup N] [--batch N] [--groups N]
 *                    [--device cpu|cuda]
 */
#include "backend.h"
#include "gyro_dropout.h"
#include "module.h"
#include "nn.h"
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRY(call)                                                                                  \
  do {                                                                                             \
    if ((call) != NN_OK) {                                                                         \
      fprintf(stderr, "wb_bench_dropout: %s\n", nn_errmsg());                                      \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static nn_device dev = {NN_DEVICE_CPU, 0};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* the MLP with drop[0..2] after the hidden ReLUs, in a Sequential or a BlockSequential */
static nn_module *mlp(nn_module *const *drop, bool block) {
  static const int64_t sz[] = {784, 1024, 1024, 1024, 10};
  nn_module *ch[10];
  int n = 0;
  for (int l = 0; l < 4; l++) {
    TRY(nn_linear_new(&ch[n++], sz[l], sz[l + 1], true));
    if (l == 3) break;
    TRY(nn_activation_new(&ch[n++], NN_ACT_RELU, 0));
    ch[n++] = nn_module_retain(drop[l]);
  }
  nn_module *m = NULL;
  TRY(block ? nn_block_sequential_new(&m, n, ch) : nn_sequential_new(&m, n, ch));
  for (int i = 0; i < n; i++) nn_module_free(ch[i]);
  TRY(nn_module_to(m, dev)); /* before the optimizer: its state is made on the parameters' device */
  return m;
}

static nn_optim *sgd(nn_module *m) {
  nn_named *l;
  int n;
  TRY(nn_module_parameters(m, &l, &n));
  nn_tensor *ps[16];
  for (int i = 0; i < n; i++) ps[i] = l[i].t;
  nn_named_list_free(l, n);
  nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
  o.lr = 0.01;
  o.momentum = 0.9;
  nn_optim *opt = NULL;
  TRY(nn_optim_new(&opt, NN_OPTIM_SGD, n, ps, &o));
  return opt;
}

/* one training step; with sync, waits until the device has finished it */
static void step(nn_module *m, nn_optim *o, nn_tensor *x, nn_tensor *y, bool sync) {
  nn_tensor *out = NULL, *loss = NULL;
  nn_optim_zero_grad(o, true);
  TRY(nn_module_forward(m, x, &out));
  TRY(nn_cross_entropy(&loss, out, y, NN_REDUCTION_MEAN));
  TRY(nn_backward(loss, NULL));
  TRY(nn_optim_step(o));
  if (sync) {
    double v;
    TRY(nn_tensor_item(loss, &v));
  }
  nn_tensor_free(out);
  nn_tensor_free(loss);
}

/* The block-wise model's output equals its layers run densely with the same draws. */
static void check(nn_module *const *drop, nn_tensor *x) {
  nn_module *dense = mlp(drop, false), *blk = mlp(drop, true);
  nn_named *a, *b;
  int na, nb;
  TRY(nn_module_parameters(dense, &a, &na));
  TRY(nn_module_parameters(blk, &b, &nb));
  for (int i = 0; i < na; i++) TRY(nn_copy_(b[i].t, a[i].t));
  nn_named_list_free(a, na);
  nn_named_list_free(b, nb);
  nn_tensor *o1 = NULL, *o2 = NULL;
  nn_manual_seed(123);
  TRY(nn_module_forward(dense, x, &o1));
  nn_manual_seed(123);
  TRY(nn_module_forward(blk, x, &o2));
  TRY(nn_to_device(&o1, o1, nn_cpu)); /* the references are consumed */
  TRY(nn_to_device(&o2, o2, nn_cpu));
  double worst = 0;
  for (int64_t i = 0; i < nn_tensor_numel(o1); i++) {
    double d = fabs(nn_tensor_get_flat(o1, i) - nn_tensor_get_flat(o2, i));
    double s = 1e-4 * (1 + fabs(nn_tensor_get_flat(o1, i)));
    if (d > worst * s) worst = d / s;
  }
  if (worst > 1) {
    fprintf(stderr, "wb_bench_dropout: block-wise output differs from dense with mask\n");
    exit(1);
  }
  nn_tensor_free(o1);
  nn_tensor_free(o2);
  nn_module_free(dense);
  nn_module_free(blk);
}

int main(int argc, char **argv) {
  nn_blas_init(argv);
  int threads = 0, reps = 7, steps = 3, warmup = 3, groups = 1;
  int64_t batch = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--threads"))
      threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps"))
      reps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--steps"))
      steps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--warmup"))
      warmup = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch"))
      batch = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--groups"))
      groups = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--device")) {
      if (nn_device_parse(&dev, argv[i + 1])) {
        fprintf(stderr, "wb_bench_dropout: %s\n", nn_errmsg());
        return 2;
      }
      if (dev.type != NN_DEVICE_CPU && !nn_backend_get(dev.type)) {
        fprintf(stderr,
                "wb_bench_dropout: device %s is not available (built without it, or no GPU)\n",
                argv[i + 1]);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: wb_bench_dropout [--threads N] [--reps N] [--steps N] [--warmup N] "
                      "[--batch N] [--groups N] [--device cpu|cuda]\n");
      return 2;
    }
  }
  if (reps < 1 || steps < 1 || batch < 1 || groups < 1) return 2;
  nn_set_num_threads(threads);
  nn_manual_seed(1);
  nn_tensor *x = NULL, *y = NULL;
  TRY(nn_tensor_empty(&x, 2, (int64_t[]){batch, 784}, NN_DTYPE_F32, nn_cpu));
  TRY(nn_uniform_(x, 0, 1, NULL));
  TRY(nn_tensor_zeros(&y, 1, &batch, NN_DTYPE_I64, nn_cpu));
  for (int64_t i = 0; i < batch; i++) nn_tensor_set_flat(y, i, (double)(i % 10));
  TRY(nn_to_device(&x, x, dev));
  TRY(nn_to_device(&y, y, dev));
  if (dev.type == NN_DEVICE_CPU)
    printf(
        "# wb_bench_dropout: MLP 784-3x1024-10, batch %lld, cpu, %d threads, BLAS %s, groups %d, "
        "median of %d x %d steps\n",
        (long long)batch, nn_get_num_threads(), nn_blas_core(), groups, reps, steps);
  else
    printf("# wb_bench_dropout: MLP 784-3x1024-10, batch %lld, device %s, groups %d, median of %d "
           "x %d steps\n",
           (long long)batch, nn_device_name(dev.type), groups, reps, steps);
  printf("%-6s %-6s %14s %14s %8s\n", "p", "block", "dense_ms/step", "block_ms/step", "speedup");
  static const double ps[] = {0.25, 0.5, 0.75};
  static const int64_t bss[] = {16, 32, 64};
  double *td = malloc((size_t)reps * sizeof *td), *tb = malloc((size_t)reps * sizeof *tb);
  for (size_t pi = 0; pi < 3; pi++)
    for (size_t bi = 0; bi < 3; bi++) {
      nn_module *dd[3], *bd[3];
      for (int l = 0; l < 3; l++) {
        TRY(nn_dropout_new(&dd[l], ps[pi]));
        TRY(nn_block_dropout_new(&bd[l], ps[pi], bss[bi], groups));
      }
      check(bd, x);
      nn_module *md = mlp(dd, false), *mb = mlp(bd, true);
      nn_optim *od = sgd(md), *ob = sgd(mb);
      for (int w = 0; w < warmup; w++) {
        step(md, od, x, y, w == warmup - 1);
        step(mb, ob, x, y, w == warmup - 1);
      }
      for (int r = 0; r < reps; r++) { /* alternate: dense, block-wise, dense, ... */
        double t0 = now_s();
        for (int s = 0; s < steps; s++) step(md, od, x, y, s == steps - 1);
        double t1 = now_s();
        for (int s = 0; s < steps; s++) step(mb, ob, x, y, s == steps - 1);
        double t2 = now_s();
        td[r] = (t1 - t0) * 1e3 / steps;
        tb[r] = (t2 - t1) * 1e3 / steps;
      }
      qsort(td, (size_t)reps, sizeof *td, cmp_d);
      qsort(tb, (size_t)reps, sizeof *tb, cmp_d);
      double md_ms = td[reps / 2], mb_ms = tb[reps / 2];
      printf("%-6.2f %-6lld %14.2f %14.2f %7.2fx\n", ps[pi], (long long)bss[bi], md_ms, mb_ms,
             md_ms / mb_ms);
      fflush(stdout);
      nn_optim_free(od);
      nn_optim_free(ob);
      nn_module_free(md);
      nn_module_free(mb);
      for (int l = 0; l < 3; l++) {
        nn_module_free(dd[l]);
        nn_module_free(bd[l]);
      }
    }
  free(td);
  free(tb);
  nn_tensor_free(x);
  nn_tensor_free(y);
  return 0;
}
