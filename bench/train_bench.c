/* bench/train_bench.c: wb's side of the training benchmark against PyTorch (bench/train_bench.sh
 * runs both in one run and prints the ratios).
 *
 * The recipe of ../shared/refbench/torch_train.py: Fashion-MNIST, inputs in [0, 1], batch 128,
 * SGD lr 0.05 momentum 0.9, a seeded random order; the MLP 784-512-512-10 (ReLU) and the
 * LeNet-style CNN (conv 5x5 1->32 pad 2, ReLU, max-pool 2, conv 5x5 32->64 pad 2, ReLU,
 * max-pool 2, linear 3136->256, ReLU, linear 256->10). Prints one line per model in the same
 * format as torch_train.py: training samples/s (wall clock, data in memory) and test accuracy
 * after the given number of training samples.
 *
 * With --device cuda the model lives on the GPU (nn_module_to) and each batch is produced on the
 * CPU and copied there, as a script would do; the line then starts "wb[cuda]".
 *
 *   wb_bench_train [--model mlp|lenet|all] [--threads N] [--samples N] [--seed N] [--device
 * cpu|cuda]
 */
#include "backend.h"
#include "data.h"
#include "module.h"
#include "nn.h"
#include "optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define TRY(call)                                                                                  \
  do {                                                                                             \
    if ((call) != NN_OK) {                                                                         \
      fprintf(stderr, "wb_bench_train: %s\n", nn_errmsg());                                        \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static nn_module *build(const char *name) {
  nn_module *l[12], *m;
  int n = 0;
  if (!strcmp(name, "mlp")) {
    TRY(nn_flatten_new(&l[n++], 1, -1));
    TRY(nn_linear_new(&l[n++], 784, 512, true));
    TRY(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
    TRY(nn_linear_new(&l[n++], 512, 512, true));
    TRY(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
    TRY(nn_linear_new(&l[n++], 512, 10, true));
  } else {
    nn_conv2d_opts p2 = {{1, 1}, {2, 2}, {1, 1}, 1};
    TRY(nn_conv2d_new(&l[n++], 1, 32, 5, 5, &p2, true));
    TRY(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
    TRY(nn_maxpool2d_new(&l[n++], 2, 2, 0));
    TRY(nn_conv2d_new(&l[n++], 32, 64, 5, 5, &p2, true));
    TRY(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
    TRY(nn_maxpool2d_new(&l[n++], 2, 2, 0));
    TRY(nn_flatten_new(&l[n++], 1, -1));
    TRY(nn_linear_new(&l[n++], 3136, 256, true));
    TRY(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
    TRY(nn_linear_new(&l[n++], 256, 10, true));
  }
  TRY(nn_sequential_new(&m, n, l));
  for (int i = 0; i < n; i++) nn_module_free(l[i]);
  return m;
}

static nn_device dev = {NN_DEVICE_CPU, 0};

/* t moved to the benchmark's device (the reference is consumed) */
static nn_tensor *on_dev(nn_tensor *t) {
  if (dev.type == NN_DEVICE_CPU) return t;
  nn_tensor *o = NULL;
  TRY(nn_to_device(&o, t, dev));
  nn_tensor_free(t);
  return o;
}

static double accuracy(nn_module *m, const nn_dataset *d) {
  bool prev = nn_set_grad_enabled(false);
  nn_module_train(m, false);
  nn_batcher *b = NULL;
  nn_batcher_opts bo = {1000, false, false, 0};
  TRY(nn_batcher_new(&b, d, &bo));
  int64_t correct = 0;
  nn_tensor *x = NULL, *y = NULL;
  int64_t *p = malloc(1000 * sizeof *p);
  while (nn_batcher_next(b, &x, &y) == 1) {
    nn_tensor *logits = NULL, *pred = NULL;
    x = on_dev(x);
    TRY(nn_module_forward(m, x, &logits));
    TRY(nn_argmax(&pred, logits, 1, false));
    TRY(nn_tensor_to_host(pred, NN_DTYPE_I64, p)); /* waits for the device */
    const int64_t *t = nn_tensor_data(y);
    for (int64_t i = 0; i < nn_tensor_numel(y); i++) correct += p[i] == t[i];
    nn_tensor_free(logits);
    nn_tensor_free(pred);
    nn_tensor_free(x);
    nn_tensor_free(y);
  }
  free(p);
  nn_batcher_free(b);
  nn_module_train(m, true);
  nn_set_grad_enabled(prev);
  return (double)correct / (double)d->n;
}

static void run(const char *name, const nn_dataset *train, const nn_dataset *test, int64_t samples,
                int batch, uint64_t seed) {
  nn_manual_seed(seed);
  nn_module *m = build(name);
  TRY(nn_module_to(m, dev)); /* before the optimizer: its state is made on the parameters' device */
  nn_named *pl = NULL;
  int np = 0;
  TRY(nn_module_parameters(m, &pl, &np));
  nn_tensor **ps = malloc((size_t)np * sizeof *ps);
  for (int i = 0; i < np; i++) ps[i] = pl[i].t;
  nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
  o.lr = 0.05;
  o.momentum = 0.9;
  nn_optim *opt = NULL;
  TRY(nn_optim_new(&opt, NN_OPTIM_SGD, np, ps, &o));
  nn_batcher *b = NULL;
  nn_batcher_opts bo = {batch, true, false, seed};
  TRY(nn_batcher_new(&b, train, &bo));
  int64_t done = 0;
  double t0 = now_s(), last = 0;
  while (done < samples) {
    nn_tensor *x = NULL, *y = NULL, *logits = NULL, *loss = NULL;
    int got = nn_batcher_next(b, &x, &y);
    if (got < 0) TRY(got);
    if (got == 0) continue; /* next epoch */
    x = on_dev(x);
    y = on_dev(y);
    TRY(nn_module_forward(m, x, &logits));
    TRY(nn_cross_entropy(&loss, logits, y, NN_REDUCTION_MEAN));
    nn_optim_zero_grad(opt, true);
    TRY(nn_backward(loss, NULL));
    TRY(nn_optim_step(opt));
    done += x->shape[0];
    if (done >= samples) TRY(nn_tensor_item(loss, &last)); /* the device finishes its queue */
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_tensor_free(logits);
    nn_tensor_free(loss);
  }
  double dt = now_s() - t0;
  double acc = accuracy(m, test);
  printf("%s %s threads=%d samples_per_s=%.0f test_acc=%.4f seconds=%.2f samples=%lld\n",
         dev.type == NN_DEVICE_CPU ? "wb" : "wb[cuda]", name, nn_get_num_threads(),
         (double)done / dt, acc, dt, (long long)done);
  fflush(stdout);
  nn_batcher_free(b);
  nn_optim_free(opt);
  free(ps);
  nn_named_list_free(pl, np);
  nn_module_free(m);
}

int main(int argc, char **argv) {
  nn_blas_init(argv);
  const char *model = "all";
  int threads = 1, batch = 128;
  int64_t samples = 0;
  uint64_t seed = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc)
      model = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--samples") && i + 1 < argc)
      samples = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
      if (nn_device_parse(&dev, argv[++i])) {
        fprintf(stderr, "wb_bench_train: %s\n", nn_errmsg());
        return 2;
      }
      if (dev.type != NN_DEVICE_CPU && !nn_backend_get(dev.type)) {
        fprintf(stderr,
                "wb_bench_train: device %s is not available (built without it, or no GPU)\n",
                argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: wb_bench_train [--model mlp|lenet|all] [--threads N] [--samples N] "
                      "[--batch N] [--seed N] "
                      "[--device cpu|cuda]\n");
      return 2;
    }
  }
  if (strcmp(model, "mlp") && strcmp(model, "lenet") && strcmp(model, "all")) {
    fprintf(stderr, "wb_bench_train: unknown model \"%s\"; known: mlp, lenet, all\n", model);
    return 2;
  }
  nn_set_num_threads(threads);
  nn_dataset *train = NULL, *test = NULL;
  TRY(nn_fashion_mnist_load(&train, NULL, "train"));
  TRY(nn_fashion_mnist_load(&test, NULL, "test"));
  const char *names[2] = {"mlp", "lenet"};
  int64_t defaults[2] = {60000, 12800};
  for (int k = 0; k < 2; k++)
    if (!strcmp(model, "all") || !strcmp(model, names[k]))
      run(names[k], train, test, samples ? samples : defaults[k], batch, seed);
  nn_dataset_free(train);
  nn_dataset_free(test);
  return 0;
}
