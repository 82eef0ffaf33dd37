/* nn/tests/test_checkpoint.c: checkpoints round-trip bit-exactly, resumed training equals
 * uninterrupted training, and truncated, corrupted, mismatched and half-written files give clear
 * errors while leaving the model untouched. */
#include "checkpoint.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static nn_module *small_model(void) {
  nn_module *a, *r, *bn, *b, *m;
  nn_linear_new(&a, 6, 8, true);
  nn_batchnorm_new(&bn, 8, 2, 1e-5, 0.1, true);
  nn_activation_new(&r, NN_ACT_RELU, 0);
  nn_linear_new(&b, 8, 3, true);
  nn_sequential_new(&m, 4, (nn_module *[]){a, bn, r, b});
  nn_module_free(a);
  nn_module_free(bn);
  nn_module_free(r);
  nn_module_free(b);
  return m;
}

static nn_optim *make_opt(nn_module *m) {
  nn_named *l;
  int n;
  nn_module_parameters(m, &l, &n);
  nn_tensor *ps[16];
  for (int i = 0; i < n; i++) ps[i] = l[i].t;
  nn_named_list_free(l, n);
  nn_optim *o = NULL;
  nn_optim_opts oo = nn_optim_defaults(NN_OPTIM_ADAM);
  nn_optim_new(&o, NN_OPTIM_ADAM, n, ps, &oo);
  return o;
}

/* one step on a batch drawn from rng (inputs and labels depend on the RNG state) */
static int step(nn_module *m, nn_optim *o, nn_rng *rng) {
  nn_tensor *x = NULL, *y = NULL, *out = NULL, *loss = NULL;
  int rc = nn_tensor_empty(&x, 2, (int64_t[]){16, 6}, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_normal_(x, 0, 1, rng);
  if (!rc) rc = nn_tensor_empty(&y, 1, (int64_t[]){16}, NN_DTYPE_I64, nn_cpu);
  for (int i = 0; !rc && i < 16; i++) nn_tensor_set_flat(y, i, (double)nn_rng_below(rng, 3));
  if (!rc) rc = nn_module_forward(m, x, &out);
  if (!rc) rc = nn_cross_entropy(&loss, out, y, NN_REDUCTION_MEAN);
  nn_optim_zero_grad(o, false);
  if (!rc) rc = nn_backward(loss, NULL);
  if (!rc) rc = nn_optim_step(o);
  nn_tensor_free(x);
  nn_tensor_free(y);
  nn_tensor_free(out);
  nn_tensor_free(loss);
  return rc;
}

static int same_params(nn_module *a, nn_module *b) {
  nn_named *la, *lb;
  int na, nb, same = 1;
  nn_module_parameters(a, &la, &na);
  nn_module_parameters(b, &lb, &nb);
  same = na == nb;
  for (int i = 0; same && i < na; i++)
    same = !memcmp(nn_tensor_data(la[i].t), nn_tensor_data(lb[i].t),
                   (size_t)nn_tensor_numel(la[i].t) * 4);
  nn_named_list_free(la, na);
  nn_named_list_free(lb, nb);
  nn_module_buffers(a, &la, &na);
  nn_module_buffers(b, &lb, &nb);
  for (int i = 0; same && i < na; i++)
    same = !memcmp(nn_tensor_data(la[i].t), nn_tensor_data(lb[i].t),
                   (size_t)nn_tensor_numel(la[i].t) * 4);
  nn_named_list_free(la, na);
  nn_named_list_free(lb, nb);
  return same;
}

static void test_resume(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/a.ckpt", dir);
  /* uninterrupted: 10 steps */
  nn_manual_seed(9);
  nn_module *m1 = small_model();
  nn_optim *o1 = make_opt(m1);
  nn_rng r1;
  nn_rng_init(&r1, 77, 1);
  for (int i = 0; i < 10; i++) OK(step(m1, o1, &r1));
  /* interrupted: 4 steps, save, load into a fresh model, 6 more */
  nn_manual_seed(9);
  nn_module *m2 = small_model();
  nn_optim *o2 = make_opt(m2);
  nn_rng r2;
  nn_rng_init(&r2, 77, 1);
  for (int i = 0; i < 4; i++) OK(step(m2, o2, &r2));
  nn_ckpt *extra = NULL;
  OK(nn_ckpt_new(&extra));
  OK(nn_ckpt_put_int(extra, "step", 4));
  OK(nn_checkpoint_save(path, m2, o2, &r2, extra));
  nn_ckpt_free(extra);
  nn_manual_seed(12345); /* a different init: the load must overwrite it */
  nn_module *m3 = small_model();
  nn_optim *o3 = make_opt(m3);
  nn_rng r3;
  nn_rng_init(&r3, 0, 0);
  nn_ckpt *got = NULL;
  OK(nn_checkpoint_load(path, m3, o3, &r3, &got));
  int64_t s = 0;
  CHECK(got && nn_ckpt_int(got, "extra.step", &s) == NN_OK && s == 4, "extra entries round-trip");
  nn_ckpt_free(got);
  CHECK(same_params(m2, m3), "loaded model equals the saved one bit for bit");
  CHECK(r3.seed == r2.seed && r3.stream == r2.stream && r3.offset == r2.offset,
        "RNG state restored");
  for (int i = 0; i < 6; i++) OK(step(m3, o3, &r3));
  CHECK(same_params(m1, m3), "resumed training is identical to uninterrupted training");
  nn_optim_free(o1);
  nn_optim_free(o2);
  nn_optim_free(o3);
  nn_module_free(m1);
  nn_module_free(m2);
  nn_module_free(m3);
}

static long file_size(const char *p) {
  FILE *f = fopen(p, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fclose(f);
  return n;
}

static void copy_prefix(const char *src, const char *dst, long n, long flip_at) {
  FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
  for (long i = 0; i < n; i++) {
    int c = fgetc(f);
    if (i == flip_at) c ^= 0x10;
    fputc(c, g);
  }
  fclose(f);
  fclose(g);
}

static void test_bad_files(void) {
  char path[128], bad[128];
  snprintf(path, sizeof path, "%s/good.ckpt", dir);
  snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
  nn_module *m = small_model();
  nn_optim *o = make_opt(m);
  nn_rng r;
  nn_rng_init(&r, 1, 0);
  OK(step(m, o, &r));
  OK(nn_checkpoint_save(path, m, o, &r, NULL));
  long n = file_size(path);
  CHECK(n > 500, "checkpoint written (%ld bytes)", n);
  nn_module *fresh = small_model();
  nn_module *pristine = small_model();
  nn_optim *fo = make_opt(fresh);
  /* make pristine a copy of fresh to detect any write */
  nn_named *lf, *lp;
  int nf, np;
  nn_module_parameters(fresh, &lf, &nf);
  nn_module_parameters(pristine, &lp, &np);
  for (int i = 0; i < nf; i++) nn_copy_(lp[i].t, lf[i].t);
  nn_named_list_free(lf, nf);
  nn_named_list_free(lp, np);

  copy_prefix(path, bad, n / 2, -1);
  EXPECT_ERR(nn_checkpoint_load(bad, fresh, fo, NULL, NULL), NN_ERR_IO, "truncated or corrupt");
  copy_prefix(path, bad, n, n / 2);
  EXPECT_ERR(nn_checkpoint_load(bad, fresh, fo, NULL, NULL), NN_ERR_IO, "CRC-32 mismatch");
  copy_prefix(path, bad, 5, -1);
  EXPECT_ERR(nn_checkpoint_load(bad, fresh, fo, NULL, NULL), NN_ERR_IO, "not a wb checkpoint");
  EXPECT_ERR(nn_checkpoint_load("/nonexistent/x.ckpt", fresh, fo, NULL, NULL), NN_ERR_IO,
             "cannot open");
  CHECK(same_params(fresh, pristine), "failed loads leave the model untouched");
  /* a model of another shape */
  nn_module *a, *other;
  nn_linear_new(&a, 6, 9, true);
  nn_sequential_new(&other, 1, &a);
  EXPECT_ERR(
      nn_checkpoint_load(path, other, NULL, NULL, NULL), NN_ERR_SHAPE,
      "parameter \"0.weight\" is float32 (8, 6) in the file and float32 (9, 6) in the model");
  nn_module_free(a);
  nn_module_free(other);
  /* optimizer of another kind: nothing is written, not even the model */
  nn_named *pl;
  int pn;
  nn_module_parameters(fresh, &pl, &pn);
  nn_tensor *ps[16];
  for (int i = 0; i < pn; i++) ps[i] = pl[i].t;
  nn_named_list_free(pl, pn);
  nn_optim *sgd = NULL;
  OK(nn_optim_new(&sgd, NN_OPTIM_SGD, pn, ps, NULL));
  EXPECT_ERR(nn_checkpoint_load(path, fresh, sgd, NULL, NULL), NN_ERR_SHAPE,
             "holds Adam state, the optimizer is SGD");
  CHECK(same_params(fresh, pristine), "a mismatched optimizer leaves the model untouched");
  nn_optim_free(sgd);
  /* a crash mid-save leaves a stale .tmp beside the intact checkpoint; a failed save keeps it too
   */
  char tmp[140];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  copy_prefix(path, tmp, n / 3, -1);
  OK(nn_checkpoint_load(path, fresh, fo, NULL, NULL));
  CHECK(same_params(fresh, m), "checkpoint intact beside a half-written temp file");
  EXPECT_ERR(nn_checkpoint_save("/nonexistent/dir/c.ckpt", m, o, &r, NULL), NN_ERR_IO,
             "cannot create");
  nn_optim_free(o);
  nn_optim_free(fo);
  nn_module_free(m);
  nn_module_free(fresh);
  nn_module_free(pristine);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/wb_ckpt_XXXXXX");
  if (!mkdtemp(dir)) return 1;
  test_resume();
  test_bad_files();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
  return th_done();
}
