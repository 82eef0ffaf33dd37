/* nn/tests/harness.c: see harness.h. */
#include "harness.h"

#include <math.h>
#include <string.h>

int th_passed, th_failed;
static uint64_t th_state = 0x9E3779B97F4A7C15ull;

void th_seed(uint64_t s) { th_state = s * 0x9E3779B97F4A7C15ull + 1; }

double th_uniform(void) {
  th_state ^= th_state >> 12;
  th_state ^= th_state << 25;
  th_state ^= th_state >> 27;
  return (double)((th_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

nn_tensor *th_rand_dt(int ndim, const int64_t *shape, double lo, double hi, nn_dtype dt) {
  nn_tensor *t = NULL;
  if (nn_tensor_empty(&t, ndim, shape, dt, nn_cpu)) {
    fprintf(stderr, "th_rand: %s\n", nn_errmsg());
    exit(2);
  }
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) nn_tensor_set_flat(t, i, lo + (hi - lo) * th_uniform());
  return t;
}

nn_tensor *th_rand(int ndim, const int64_t *shape, double lo, double hi) {
  return th_rand_dt(ndim, shape, lo, hi, NN_DTYPE_F32);
}

nn_tensor *th_randint(int ndim, const int64_t *shape, int64_t n) {
  nn_tensor *t = th_rand_dt(ndim, shape, 0, 0, NN_DTYPE_I64);
  int64_t m = nn_tensor_numel(t);
  for (int64_t i = 0; i < m; i++) {
    int64_t v = (int64_t)(th_uniform() * (double)n);
    nn_tensor_set_flat(t, i, (double)(v < n ? v : n - 1));
  }
  return t;
}

nn_tensor *th_noncontig(const nn_tensor *t) {
  int64_t sh[NN_MAX_DIMS];
  memcpy(sh, t->shape, sizeof sh);
  if (t->ndim == 0) {
    nn_tensor *c = NULL;
    nn_clone(&c, (nn_tensor *)t);
    return c;
  }
  sh[t->ndim - 1] *= 2;
  nn_tensor *big = NULL, *v = NULL;
  if (nn_tensor_full(&big, t->ndim, sh, NAN, t->dtype, nn_cpu) ||
      nn_slice(&v, big, -1, 0, sh[t->ndim - 1], 2) || nn_copy_(v, t)) {
    fprintf(stderr, "th_noncontig: %s\n", nn_errmsg());
    exit(2);
  }
  nn_tensor_free(big);
  return v;
}

double *th_to_double(const nn_tensor *t) {
  int64_t n = nn_tensor_numel(t);
  double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
  for (int64_t i = 0; i < n; i++) d[i] = nn_tensor_get_flat(t, i);
  return d;
}

int th_close(const nn_tensor *t, const double *ref, double atol, double rtol, const char *what) {
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double v = nn_tensor_get_flat(t, i), r = ref[i];
    if ((isnan(r) && isnan(v)) || (isinf(r) && v == r)) continue;
    if (!(fabs(v - r) <= atol + rtol * fabs(r))) {
      th_failed++;
      fprintf(stderr, "FAIL %s: element %lld is %.9g, reference %.9g\n", what, (long long)i, v, r);
      return 0;
    }
  }
  th_passed++;
  return 1;
}

void th_expect_err(int rc, int code, const char *want, const char *expr, const char *file,
                   int line) {
  if (rc == code && strstr(nn_errmsg(), want)) {
    th_passed++;
    return;
  }
  th_failed++;
  fprintf(stderr, "FAIL %s:%d: %s: got %d \"%s\", want %d containing \"%s\"\n", file, line, expr,
          rc, rc ? nn_errmsg() : "", code, want);
}

/* sum(out * R) in double, R the fixed weights. */
static double weighted(const nn_tensor *out, const double *R) {
  double s = 0;
  int64_t n = nn_tensor_numel(out);
  for (int64_t i = 0; i < n; i++) s += nn_tensor_get_flat(out, i) * R[i];
  return s;
}

int th_gradcheck(th_fn fn, void *ctx, int n_in, nn_tensor **in, double eps, double atol,
                 double rtol, const char *what) {
  nn_tensor *out = NULL;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->requires_grad) nn_tensor_zero_grad(in[i], true);
  if (fn(ctx, in, &out)) {
    th_failed++;
    fprintf(stderr, "FAIL %s: forward failed: %s\n", what, nn_errmsg());
    return 0;
  }
  int64_t n = nn_tensor_numel(out);
  double *R = malloc((size_t)(n ? n : 1) * sizeof *R);
  nn_tensor *Rt = NULL;
  nn_tensor_empty(&Rt, out->ndim, out->shape, out->dtype, nn_cpu);
  for (int64_t i = 0; i < n; i++) {
    R[i] = th_uniform() * 2 - 1;
    nn_tensor_set_flat(Rt, i, R[i]);
    R[i] = nn_tensor_get_flat(Rt, i); /* the weights as the dtype holds them */
  }
  int ok = 1;
  if (nn_backward(out, Rt)) {
    th_failed++;
    fprintf(stderr, "FAIL %s: backward failed: %s\n", what, nn_errmsg());
    ok = 0;
  }
  nn_tensor_free(out);
  nn_tensor_free(Rt);
  bool prev = nn_set_grad_enabled(false);
  for (int i = 0; ok && i < n_in; i++) {
    nn_tensor *x = in[i];
    if (!x || !x->requires_grad) continue;
    if (!x->grad) {
      th_failed++;
      fprintf(stderr, "FAIL %s: input %d received no gradient\n", what, i);
      ok = 0;
      break;
    }
    int64_t m = nn_tensor_numel(x);
    for (int64_t j = 0; ok && j < m; j++) {
      double x0 = nn_tensor_get_flat(x, j);
      nn_tensor *o1 = NULL, *o2 = NULL;
      nn_tensor_set_flat(x, j, x0 + eps);
      double xp = nn_tensor_get_flat(x, j);
      int rc = fn(ctx, in, &o1);
      nn_tensor_set_flat(x, j, x0 - eps);
      double xm = nn_tensor_get_flat(x, j);
      rc |= fn(ctx, in, &o2);
      nn_tensor_set_flat(x, j, x0);
      if (rc) {
        th_failed++;
        fprintf(stderr, "FAIL %s: forward failed during finite differences: %s\n", what,
                nn_errmsg());
        ok = 0;
      } else {
        double num = (weighted(o1, R) - weighted(o2, R)) / (xp - xm);
        double ana = nn_tensor_get_flat(x->grad, j);
        if (!(fabs(num - ana) <= atol + rtol * fabs(num))) {
          th_failed++;
          fprintf(stderr, "FAIL %s: d/d input %d [%lld]: analytic %.7g, numeric %.7g\n", what, i,
                  (long long)j, ana, num);
          ok = 0;
        }
      }
      nn_tensor_free(o1);
      nn_tensor_free(o2);
    }
  }
  nn_set_grad_enabled(prev);
  free(R);
  if (ok) th_passed++;
  return ok;
}

int th_done(void) {
  printf("%d passed, %d failed\n", th_passed, th_failed);
  return th_failed ? 1 : 0;
}
