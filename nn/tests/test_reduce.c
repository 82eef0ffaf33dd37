/* nn/tests/test_reduce.c: sum/mean/var, max/min/argmax, softmax, the losses, topk and sort:
 * forward against plain double references on random shapes (every dim, both keepdim, contiguous,
 * strided and transposed storage), tie and NaN rules, backward against finite differences,
 * thread-count independence, and the error messages of bad input. Shapes: N rows, C classes. */
#include "harness.h"

#include <math.h>
#include <string.h>

static nn_tensor *req(nn_tensor *t) {
  nn_tensor_set_requires_grad(t, true);
  return t;
}

/* Same values as t in another layout (takes t): 0 contiguous, 1 stride 2 in the last dim,
 * 2 stored with dims 0 and -1 swapped (a transposed view). */
static nn_tensor *layout(nn_tensor *t, int kind) {
  nn_tensor *r = NULL;
  if (kind == 1) {
    r = th_noncontig(t);
  } else if (kind == 2 && t->ndim >= 2) {
    nn_tensor *a = NULL, *c = NULL;
    OK(nn_transpose(&a, t, 0, -1));
    OK(nn_contiguous(&c, a));
    OK(nn_transpose(&r, c, 0, -1));
    nn_tensor_free(a);
    nn_tensor_free(c);
  } else {
    r = nn_tensor_retain(t);
  }
  nn_tensor_free(t);
  return r;
}

/* Random shape: 1-4 dims of sizes 1-5. */
static int rand_shape(int64_t *sh) {
  int nd = 1 + (int)(th_uniform() * 4);
  for (int d = 0; d < nd; d++) sh[d] = 1 + (int64_t)(th_uniform() * 5);
  return nd;
}

/* Integer values 0..3: many ties, to exercise the first-index and stability rules. */
static nn_tensor *rand_ties(int nd, const int64_t *sh) {
  nn_tensor *t = th_rand(nd, sh, 0, 4);
  for (int64_t i = 0; i < nn_tensor_numel(t); i++)
    nn_tensor_set_flat(t, i, floor(nn_tensor_get_flat(t, i)));
  return t;
}

/* Distinct values 0.1 apart in random order: no ties within finite-difference steps. */
static nn_tensor *rand_distinct(int nd, const int64_t *sh) {
  nn_tensor *t = th_rand(nd, sh, 0, 1);
  int64_t n = nn_tensor_numel(t);
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(th_uniform() * (double)(i + 1)), x = perm[i];
    j = j > i ? i : j;
    perm[i] = perm[j];
    perm[j] = x;
  }
  for (int64_t i = 0; i < n; i++)
    nn_tensor_set_flat(t, i, 0.1 * (double)perm[i] - 0.05 * (double)n);
  free(perm);
  return t;
}

/* Reduction along d in row-major logical order: element (o, j, i) is at (o * L + j) * inner + i. */
typedef struct {
  int64_t outer, L, inner;
} geo;

static geo geo_of(const nn_tensor *t, int d) {
  geo g = {1, t->shape[d], 1};
  for (int k = 0; k < d; k++) g.outer *= t->shape[k];
  for (int k = d + 1; k < t->ndim; k++) g.inner *= t->shape[k];
  return g;
}

/* out has t's shape with dim d of size len (keep) or without d. */
static int shape_ok(const nn_tensor *o, const nn_tensor *t, int d, bool keep, int64_t len) {
  if (o->ndim != t->ndim - !keep) return 0;
  for (int k = 0, m = 0; k < t->ndim; k++) {
    if (k == d) {
      if (keep && o->shape[m++] != len) return 0;
    } else if (o->shape[m++] != t->shape[k]) {
      return 0;
    }
  }
  return 1;
}

/* ---------------------------------------------------------------- reductions along one dim */

static void test_reductions_dim(void) {
  for (int trial = 0; trial < 40; trial++) {
    int64_t sh[NN_MAX_DIMS];
    int nd = rand_shape(sh);
    for (int lay = 0; lay < 3; lay++) {
      nn_tensor *t = layout(trial % 3 ? th_rand(nd, sh, -2, 2) : rand_ties(nd, sh), lay);
      double *x = th_to_double(t);
      for (int d = 0; d < nd; d++)
        for (int keep = 0; keep < 2; keep++) {
          int dim = (trial + d + keep) % 2 ? d - nd : d; /* negative dims too */
          geo g = geo_of(t, d);
          int64_t no = g.outer * g.inner;
          double *rs = calloc((size_t)no, sizeof *rs), *rm = calloc((size_t)no, sizeof *rm);
          double *rv0 = calloc((size_t)no, sizeof *rv0), *rv1 = calloc((size_t)no, sizeof *rv1);
          double *rmax = calloc((size_t)no, sizeof *rmax), *rmin = calloc((size_t)no, sizeof *rmin);
          double *rimax = calloc((size_t)no, sizeof *rimax),
                 *rimin = calloc((size_t)no, sizeof *rimin);
          for (int64_t o = 0; o < g.outer; o++)
            for (int64_t i = 0; i < g.inner; i++) {
              int64_t q = o * g.inner + i;
              double s = 0, ss = 0, mx = -INFINITY, mn = INFINITY;
              for (int64_t j = 0; j < g.L; j++) {
                double v = x[(o * g.L + j) * g.inner + i];
                s += v;
                if (v > mx) mx = v, rimax[q] = (double)j;
                if (v < mn) mn = v, rimin[q] = (double)j;
              }
              double mean = s / (double)g.L;
              for (int64_t j = 0; j < g.L; j++) {
                double e = x[(o * g.L + j) * g.inner + i] - mean;
                ss += e * e;
              }
              rs[q] = s;
              rm[q] = mean;
              rv0[q] = ss / (double)g.L;
              rv1[q] = ss / (double)(g.L - 1); /* L = 1: 0/0 = NaN, as the op */
              rmax[q] = mx;
              rmin[q] = mn;
            }
          char what[96];
          nn_tensor *o = NULL, *ix = NULL;
#define CMP(call, ref, tol, name, len)                                                             \
  do {                                                                                             \
    OK(call);                                                                                      \
    snprintf(what, sizeof what, "%s trial %d layout %d dim %d keep %d", name, trial, lay, dim,     \
             keep);                                                                                \
    if (o) {                                                                                       \
      CHECK(shape_ok(o, t, d, keep, len), "%s: output shape", what);                               \
      th_close(o, ref, tol, tol, what);                                                            \
    }                                                                                              \
    nn_tensor_free(o);                                                                             \
    o = NULL;                                                                                      \
  } while (0)
          CMP(nn_sum(&o, t, dim, keep), rs, 1e-5, "sum", 1);
          CMP(nn_mean(&o, t, dim, keep), rm, 1e-5, "mean", 1);
          CMP(nn_var(&o, t, dim, keep, 0), rv0, 1e-5, "var0", 1);
          CMP(nn_var(&o, t, dim, keep, 1), rv1, 1e-5, "var1", 1);
          CMP(nn_argmax(&o, t, dim, keep), rimax, 0, "argmax", 1);
          CMP(nn_argmin(&o, t, dim, keep), rimin, 0, "argmin", 1);
          OK(nn_max(&o, &ix, t, dim, keep));
          snprintf(what, sizeof what, "max trial %d layout %d dim %d keep %d", trial, lay, dim,
                   keep);
          if (o) {
            CHECK(shape_ok(o, t, d, keep, 1) && shape_ok(ix, t, d, keep, 1), "%s: shapes", what);
            CHECK(ix->dtype == NN_DTYPE_I64, "%s: indices int64", what);
            th_close(o, rmax, 0, 0, what);
            th_close(ix, rimax, 0, 0, what);
          }
          nn_tensor_free(o);
          nn_tensor_free(ix);
          OK(nn_min(&o, &ix, t, dim, keep));
          snprintf(what, sizeof what, "min trial %d layout %d dim %d keep %d", trial, lay, dim,
                   keep);
          if (o) {
            th_close(o, rmin, 0, 0, what);
            th_close(ix, rimin, 0, 0, what);
          }
          nn_tensor_free(o);
          nn_tensor_free(ix);
          o = NULL;
          free(rs), free(rm), free(rv0), free(rv1), free(rmax), free(rmin), free(rimax),
              free(rimin);
        }
      /* whole-tensor reductions */
      int64_t n = nn_tensor_numel(t);
      double s = 0, mx = -INFINITY, mn = INFINITY;
      for (int64_t i = 0; i < n; i++) s += x[i], mx = fmax(mx, x[i]), mn = fmin(mn, x[i]);
      double r[4] = {s, s / (double)n, mx, mn};
      nn_tensor *o = NULL;
      int (*all[4])(nn_tensor **, nn_tensor *) = {nn_sum_all, nn_mean_all, nn_max_all, nn_min_all};
      for (int k = 0; k < 4; k++) {
        OK(all[k](&o, t));
        if (!o) continue;
        CHECK(o->ndim == 0, "whole-tensor reduction %d is 0-dim", k);
        th_close(o, &r[k], 1e-5, 1e-5, "whole-tensor reduction");
        nn_tensor_free(o);
      }
      free(x);
      nn_tensor_free(t);
    }
  }
}

/* ---------------------------------------------------------------- mean/var over masks */

static void test_reductions_mask(void) {
  int64_t sh[3] = {3, 4, 5};
  for (int lay = 0; lay < 3; lay++)
    for (unsigned mask = 0; mask < 8; mask++)
      for (int keep = 0; keep < 2; keep++) {
        nn_tensor *t = layout(th_rand(3, sh, -1, 1), lay), *o = NULL;
        double *x = th_to_double(t), cnt[60] = {0}, sum[60] = {0}, ss[60] = {0}, ref[60];
        int64_t idx[60];
        for (int i = 0; i < 60; i++) { /* output index from the kept dims */
          int64_t a = i / 20, b = i / 5 % 4, c = i % 5, q = 0;
          if (!(mask & 1)) q = q * 3 + a;
          if (!(mask & 2)) q = q * 4 + b;
          if (!(mask & 4)) q = q * 5 + c;
          idx[i] = q;
          sum[q] += x[i];
          cnt[q] += 1;
        }
        for (int i = 0; i < 60; i++) {
          double e = x[i] - sum[idx[i]] / cnt[idx[i]];
          ss[idx[i]] += e * e;
        }
        int64_t no = 1;
        for (int d = 0; d < 3; d++) no *= (mask >> d) & 1 ? 1 : sh[d];
        char what[64];
        snprintf(what, sizeof what, "mean_dims mask %u keep %d layout %d", mask, keep, lay);
        OK(nn_mean_dims(&o, t, mask, keep));
        for (int64_t q = 0; q < no; q++) ref[q] = sum[q] / cnt[q];
        if (o) {
          CHECK(nn_tensor_numel(o) == no && o->ndim == (keep ? 3 : 3 - __builtin_popcount(mask)),
                "%s: shape", what);
          th_close(o, ref, 1e-5, 1e-5, what);
        }
        nn_tensor_free(o);
        for (int c = 0; c < 2; c++) {
          snprintf(what, sizeof what, "var_dims mask %u keep %d layout %d corr %d", mask, keep, lay,
                   c);
          OK(nn_var_dims(&o, t, mask, keep, c));
          for (int64_t q = 0; q < no; q++) ref[q] = ss[q] / (cnt[q] - c);
          if (o) {
            CHECK(nn_tensor_numel(o) == no && o->ndim == (keep ? 3 : 3 - __builtin_popcount(mask)),
                  "%s: shape", what);
            th_close(o, ref, 1e-5, 1e-5, what);
          }
          nn_tensor_free(o);
        }
        free(x);
        nn_tensor_free(t);
      }
  /* float64 and 0-dim inputs */
  nn_tensor *t = th_rand_dt(2, (int64_t[]){4, 6}, -1, 1, NN_DTYPE_F64), *o = NULL;
  double *x = th_to_double(t), ref[4];
  for (int r = 0; r < 4; r++) {
    double m = 0, s = 0;
    for (int j = 0; j < 6; j++) m += x[r * 6 + j] / 6;
    for (int j = 0; j < 6; j++) s += (x[r * 6 + j] - m) * (x[r * 6 + j] - m);
    ref[r] = s / 5;
  }
  OK(nn_var(&o, t, 1, false, 1));
  if (o) {
    CHECK(o->dtype == NN_DTYPE_F64, "var keeps float64");
    th_close(o, ref, 1e-13, 1e-13, "var float64");
  }
  nn_tensor_free(o);
  free(x);
  nn_tensor_free(t);
  nn_tensor *z = NULL, *ix = NULL;
  OK(nn_tensor_full(&z, 0, NULL, 2.5, NN_DTYPE_F32, nn_cpu));
  OK(nn_sum(&o, z, -1, false));
  CHECK(o && o->ndim == 0 && nn_tensor_get_flat(o, 0) == 2.5, "sum of a 0-dim tensor");
  nn_tensor_free(o);
  OK(nn_max(&o, &ix, z, 0, true));
  CHECK(o && o->ndim == 0 && nn_tensor_get_flat(o, 0) == 2.5 && nn_tensor_get_flat(ix, 0) == 0,
        "max of a 0-dim tensor");
  nn_tensor_free(o);
  nn_tensor_free(ix);
  OK(nn_softmax(&o, z, 0));
  CHECK(o && o->ndim == 0 && nn_tensor_get_flat(o, 0) == 1.0, "softmax of a 0-dim tensor");
  nn_tensor_free(o);
  nn_tensor_free(z);
}

/* ---------------------------------------------------------------- softmax */

static void ref_softmax(const double *x, geo g, int lg, double *y) {
  for (int64_t o = 0; o < g.outer; o++)
    for (int64_t i = 0; i < g.inner; i++) {
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < g.L; j++) m = fmax(m, x[(o * g.L + j) * g.inner + i]);
      for (int64_t j = 0; j < g.L; j++) s += exp(x[(o * g.L + j) * g.inner + i] - m);
      for (int64_t j = 0; j < g.L; j++) {
        int64_t q = (o * g.L + j) * g.inner + i;
        y[q] = lg ? x[q] - m - log(s) : exp(x[q] - m) / s;
      }
    }
}

static void test_softmax(void) {
  for (int trial = 0; trial < 30; trial++) {
    int64_t sh[NN_MAX_DIMS];
    int nd = rand_shape(sh);
    for (int lay = 0; lay < 3; lay++) {
      nn_tensor *t = layout(th_rand(nd, sh, -4, 4), lay);
      double *x = th_to_double(t), *ref = malloc((size_t)nn_tensor_numel(t) * sizeof *ref);
      for (int d = 0; d < nd; d++)
        for (int lg = 0; lg < 2; lg++) {
          nn_tensor *o = NULL;
          int dim = (trial + d) % 2 ? d - nd : d;
          ref_softmax(x, geo_of(t, d), lg, ref);
          OK(lg ? nn_log_softmax(&o, t, dim) : nn_softmax(&o, t, dim));
          char what[80];
          snprintf(what, sizeof what, "%s trial %d layout %d dim %d",
                   lg ? "log_softmax" : "softmax", trial, lay, dim);
          if (o) {
            CHECK(nn_tensor_same_shape(o, t), "%s: shape", what);
            th_close(o, ref, 1e-6, 1e-5, what);
          }
          nn_tensor_free(o);
        }
      free(x);
      free(ref);
      nn_tensor_free(t);
    }
  }
  /* large logits do not overflow; -inf entries get exactly 0; a NaN poisons its row only */
  float v[12] = {1000, 1001, 1002, -1000, 1, 2, 3, -INFINITY, 0, NAN, 1, 2};
  nn_tensor *t = NULL, *o = NULL;
  OK(nn_tensor_from_data(&t, 2, (int64_t[]){3, 4}, NN_DTYPE_F32, v));
  OK(nn_softmax(&o, t, 1));
  double e0 = exp(-2.0) + exp(-1.0) + 1.0, e1 = e0; /* row 1 is row 0 shifted by -999 */
  double ref[12] = {exp(-2.0) / e0,
                    exp(-1.0) / e0,
                    1 / e0,
                    0,
                    exp(-2.0) / e1,
                    exp(-1.0) / e1,
                    1 / e1,
                    0,
                    NAN,
                    NAN,
                    NAN,
                    NAN};
  if (o) {
    th_close(o, ref, 1e-6, 1e-5, "softmax extreme values");
    CHECK(nn_tensor_get_flat(o, 3) == 0.0 && nn_tensor_get_flat(o, 7) == 0.0,
          "exp(-inf) and exp(-2000) are exactly 0");
    for (int j = 8; j < 12; j++) CHECK(isnan(nn_tensor_get_flat(o, j)), "NaN row is NaN");
  }
  nn_tensor_free(o);
  OK(nn_log_softmax(&o, t, 1));
  if (o) CHECK(fabs(nn_tensor_get_flat(o, 2) + log(e0)) < 1e-5, "log_softmax of large logits");
  nn_tensor_free(o);
  nn_tensor_free(t);
  /* float64 */
  t = th_rand_dt(2, (int64_t[]){3, 7}, -3, 3, NN_DTYPE_F64);
  double *x = th_to_double(t), r64[21];
  ref_softmax(x, geo_of(t, 1), 0, r64);
  OK(nn_softmax(&o, t, -1));
  if (o) th_close(o, r64, 1e-14, 1e-13, "softmax float64");
  nn_tensor_free(o);
  free(x);
  nn_tensor_free(t);
}

/* ---------------------------------------------------------------- sort, topk */

typedef struct {
  double v;
  int64_t i;
} vi;
static int sort_desc;

/* NaN largest, ties by index: the order of a stable sort */
static int cmp_vi(const void *pa, const void *pb) {
  const vi *a = pa, *b = pb;
  int an = isnan(a->v), bn = isnan(b->v), c = 0;
  if (an != bn)
    c = an ? 1 : -1;
  else if (!an && a->v != b->v)
    c = a->v < b->v ? -1 : 1;
  if (sort_desc) c = -c;
  return c ? c : (a->i < b->i ? -1 : 1);
}

/* Reference of the first k sorted elements along d: values and indices, output layout. */
static void ref_sort(const double *x, geo g, int64_t k, int desc, double *rv, double *ri) {
  vi *row = malloc((size_t)(g.L ? g.L : 1) * sizeof *row);
  sort_desc = desc;
  for (int64_t o = 0; o < g.outer; o++)
    for (int64_t i = 0; i < g.inner; i++) {
      for (int64_t j = 0; j < g.L; j++) row[j] = (vi){x[(o * g.L + j) * g.inner + i], j};
      qsort(row, (size_t)g.L, sizeof *row, cmp_vi);
      for (int64_t j = 0; j < k; j++) {
        rv[(o * k + j) * g.inner + i] = row[j].v;
        ri[(o * k + j) * g.inner + i] = (double)row[j].i;
      }
    }
  free(row);
}

static void check_sorted(nn_tensor *t, int d, int64_t k, int desc, int topk, const char *what) {
  geo g = geo_of(t, d);
  double *x = th_to_double(t);
  int64_t n = g.outer * g.inner * k;
  double *rv = malloc((size_t)(n ? n : 1) * sizeof *rv),
         *ri = malloc((size_t)(n ? n : 1) * sizeof *ri);
  ref_sort(x, g, k, desc, rv, ri);
  nn_tensor *v = NULL, *ix = NULL;
  OK(topk ? nn_topk(&v, &ix, t, k, d - (k % 2) * t->ndim, desc, true)
          : nn_sort(&v, &ix, t, d, desc));
  if (v) {
    CHECK(shape_ok(v, t, d, true, k) && shape_ok(ix, t, d, true, k), "%s: shapes", what);
    th_close(v, rv, 0, 0, what);
    th_close(ix, ri, 0, 0, what);
  }
  nn_tensor_free(v);
  nn_tensor_free(ix);
  if (!topk) {
    OK(nn_argsort(&ix, t, d, desc));
    if (ix) th_close(ix, ri, 0, 0, what);
    nn_tensor_free(ix);
  }
  free(x);
  free(rv);
  free(ri);
}

static void test_sort(void) {
  for (int trial = 0; trial < 30; trial++) {
    int64_t sh[NN_MAX_DIMS];
    int nd = rand_shape(sh);
    for (int lay = 0; lay < 3; lay++) {
      nn_tensor *t = layout(trial % 2 ? th_rand(nd, sh, -2, 2) : rand_ties(nd, sh), lay);
      for (int d = 0; d < nd; d++)
        for (int desc = 0; desc < 2; desc++) {
          char what[80];
          snprintf(what, sizeof what, "sort trial %d layout %d dim %d desc %d", trial, lay, d,
                   desc);
          check_sorted(t, d, t->shape[d], desc, 0, what);
          int64_t k = (int64_t)(th_uniform() * (double)(t->shape[d] + 1));
          snprintf(what, sizeof what, "topk %lld trial %d layout %d dim %d largest %d",
                   (long long)k, trial, lay, d, desc);
          check_sorted(t, d, k, desc, 1, what);
        }
      nn_tensor_free(t);
    }
  }
  /* long rows: the heap path of topk (k small) and the merge sort, with ties and NaNs, and a
   * strided row longer than one packing block */
  for (int lay = 0; lay < 2; lay++) {
    nn_tensor *t = layout(rand_ties(2, (int64_t[]){3, 200}), lay);
    nn_tensor_set_flat(t, 17, NAN);
    nn_tensor_set_flat(t, 250, NAN);
    nn_tensor_set_flat(t, 260, NAN);
    int64_t ks[] = {0, 1, 7, 49, 50, 51, 199, 200};
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++)
      for (int desc = 0; desc < 2; desc++) {
        char what[64];
        snprintf(what, sizeof what, "topk long k %lld largest %d layout %d", (long long)ks[i], desc,
                 lay);
        check_sorted(t, 1, ks[i], desc, 1, what);
      }
    check_sorted(t, 1, 200, 1, 0, "sort long rows");
    nn_tensor_free(t);
  }
  nn_tensor *big = layout(th_rand(1, (int64_t[]){70001}, -1, 1), 1);
  check_sorted(big, 0, 70001, 0, 0, "sort of a strided row of 70001");
  check_sorted(big, 0, 5, 1, 1, "topk of a strided row of 70001");
  nn_tensor_free(big);
  /* int64 input */
  nn_tensor *li = th_randint(2, (int64_t[]){4, 9}, 5), *v = NULL, *ix = NULL;
  check_sorted(li, 1, 9, 0, 0, "sort int64");
  OK(nn_max(&v, &ix, li, 1, false));
  CHECK(v && v->dtype == NN_DTYPE_I64, "max of int64 is int64");
  nn_tensor_free(v);
  nn_tensor_free(ix);
  nn_tensor_free(li);
}

/* ---------------------------------------------------------------- NaN and tie rules */

static void test_nan_ties(void) {
  float a[12] = {1, NAN, 3, NAN, 2, 5, 5, 1, NAN, 5, NAN, 0};
  nn_tensor *t = NULL, *v = NULL, *ix = NULL;
  OK(nn_tensor_from_data(&t, 2, (int64_t[]){3, 4}, NN_DTYPE_F32, a));
  OK(nn_max(&v, &ix, t, 1, false));
  if (v) {
    CHECK(isnan(nn_tensor_get_flat(v, 0)) && nn_tensor_get_flat(ix, 0) == 1, "max: first NaN wins");
    CHECK(nn_tensor_get_flat(v, 1) == 5 && nn_tensor_get_flat(ix, 1) == 1, "max: first of ties");
    CHECK(isnan(nn_tensor_get_flat(v, 2)) && nn_tensor_get_flat(ix, 2) == 0, "max: NaN at 0 wins");
  }
  nn_tensor_free(v);
  nn_tensor_free(ix);
  OK(nn_min(&v, &ix, t, 1, false));
  if (v) {
    CHECK(isnan(nn_tensor_get_flat(v, 0)) && nn_tensor_get_flat(ix, 0) == 1, "min: first NaN wins");
    CHECK(nn_tensor_get_flat(v, 1) == 1 && nn_tensor_get_flat(ix, 1) == 3, "min: the 1");
    CHECK(isnan(nn_tensor_get_flat(v, 2)) && nn_tensor_get_flat(ix, 2) == 0, "min: NaN at 0 wins");
  }
  nn_tensor_free(v);
  nn_tensor_free(ix);
  OK(nn_max_all(&v, t));
  CHECK(v && isnan(nn_tensor_get_flat(v, 0)), "max_all propagates NaN");
  nn_tensor_free(v);
  OK(nn_sort(&v, &ix, t, 1, false));
  double sv[12] = {1, 3, NAN, NAN, 1, 2, 5, 5, 0, 5, NAN, NAN},
         si[12] = {0, 2, 1, 3, 3, 0, 1, 2, 3, 1, 0, 2};
  if (v) {
    th_close(v, sv, 0, 0, "sort ascending: NaN last, stable");
    th_close(ix, si, 0, 0, "sort ascending indices");
  }
  nn_tensor_free(v);
  nn_tensor_free(ix);
  OK(nn_sort(&v, &ix, t, 1, true));
  double dv[12] = {NAN, NAN, 3, 1, 5, 5, 2, 1, NAN, NAN, 5, 0},
         di[12] = {1, 3, 2, 0, 1, 2, 0, 3, 0, 2, 1, 3};
  if (v) {
    th_close(v, dv, 0, 0, "sort descending: NaN first, stable");
    th_close(ix, di, 0, 0, "sort descending indices");
  }
  nn_tensor_free(v);
  nn_tensor_free(ix);
  nn_tensor_free(t);
  /* the gradient of max goes to the first of tied maxima only */
  float b[3] = {1, 3, 3};
  OK(nn_tensor_from_data(&t, 1, (int64_t[]){3}, NN_DTYPE_F32, b));
  req(t);
  OK(nn_max(&v, NULL, t, 0, false));
  OK(nn_backward(v, NULL));
  double g[3] = {0, 1, 0};
  if (t->grad) th_close(t->grad, g, 0, 0, "max gradient to the first tied element");
  nn_tensor_free(v);
  nn_tensor_free(t);
}

/* ---------------------------------------------------------------- losses */

static double ref_ce_row(const double *x, int64_t C, int64_t lab) {
  double m = -INFINITY, s = 0;
  for (int64_t j = 0; j < C; j++) m = fmax(m, x[j]);
  for (int64_t j = 0; j < C; j++) s += exp(x[j] - m);
  return m + log(s) - x[lab];
}

static void test_losses(void) {
  /* hand-computed: rows [1, 2, 3] label 2 and [1, 1, 1] label 0 */
  float lv[6] = {1, 2, 3, 1, 1, 1};
  int64_t yv[2] = {2, 0};
  nn_tensor *x = NULL, *y = NULL, *o = NULL;
  OK(nn_tensor_from_data(&x, 2, (int64_t[]){2, 3}, NN_DTYPE_F32, lv));
  OK(nn_tensor_from_data(&y, 1, (int64_t[]){2}, NN_DTYPE_I64, yv));
  double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3.0, l1 = log(3.0);
  double rmean = (l0 + l1) / 2, rsum = l0 + l1, rnone[2] = {l0, l1};
  OK(nn_cross_entropy(&o, x, y, NN_REDUCTION_MEAN));
  CHECK(o && o->ndim == 0 && fabs(nn_tensor_get_flat(o, 0) - 0.7531091) < 1e-6,
        "cross_entropy mean by hand: %.7f", o ? nn_tensor_get_flat(o, 0) : 0.0);
  if (o) th_close(o, &rmean, 1e-6, 1e-6, "cross_entropy mean");
  nn_tensor_free(o);
  OK(nn_cross_entropy(&o, x, y, NN_REDUCTION_SUM));
  if (o) th_close(o, &rsum, 1e-6, 1e-6, "cross_entropy sum");
  nn_tensor_free(o);
  OK(nn_cross_entropy(&o, x, y, NN_REDUCTION_NONE));
  if (o) {
    CHECK(o->ndim == 1 && o->shape[0] == 2, "cross_entropy none is (N,)");
    th_close(o, rnone, 1e-6, 1e-6, "cross_entropy none");
  }
  nn_tensor_free(o);
  nn_tensor_free(x);
  nn_tensor_free(y);

  /* against log_softmax + nll composed, value and gradient, on strided logits and labels */
  for (int lay = 0; lay < 3; lay++)
    for (int red = 0; red < 3; red++) {
      int64_t N = 7, C = 5;
      nn_tensor *a = req(layout(th_rand(2, (int64_t[]){N, C}, -3, 3), lay));
      nn_tensor *lab = layout(th_randint(1, &N, C), lay ? 1 : 0);
      nn_tensor *b = NULL, *f = NULL, *lp = NULL, *c = NULL, *w = NULL, *s1 = NULL, *s2 = NULL;
      OK(nn_clone(&c, a));
      OK(nn_detach(&b, c));
      nn_tensor_free(c);
      req(b);
      OK(nn_cross_entropy(&f, a, lab, (nn_reduction)red));
      OK(nn_log_softmax(&lp, b, 1));
      OK(nn_nll_loss(&c, lp, lab, (nn_reduction)red));
      char what[64];
      snprintf(what, sizeof what, "cross_entropy vs nll(log_softmax) red %d layout %d", red, lay);
      double *rf = th_to_double(c), *xa = th_to_double(a), *ly = th_to_double(lab), ref[7];
      th_close(f, rf, 1e-5, 1e-5, what);
      double s = 0;
      for (int64_t n = 0; n < N; n++) s += ref[n] = ref_ce_row(xa + n * C, C, (int64_t)ly[n]);
      if (red != NN_REDUCTION_NONE) ref[0] = red == NN_REDUCTION_MEAN ? s / (double)N : s;
      th_close(f, ref, 1e-5, 1e-5, what);
      /* same weights on both losses, then compare the gradients */
      if (red == NN_REDUCTION_NONE) {
        nn_tensor *r = th_rand(1, &N, -1, 1);
        OK(nn_mul(&w, f, r));
        OK(nn_sum_all(&s1, w));
        nn_tensor_free(w);
        OK(nn_mul(&w, c, r));
        OK(nn_sum_all(&s2, w));
        nn_tensor_free(w);
        nn_tensor_free(r);
      } else {
        s1 = nn_tensor_retain(f);
        s2 = nn_tensor_retain(c);
      }
      OK(nn_backward(s1, NULL));
      OK(nn_backward(s2, NULL));
      if (a->grad && b->grad) {
        double *gb = th_to_double(b->grad);
        th_close(a->grad, gb, 1e-6, 1e-5, what);
        free(gb);
      }
      free(rf), free(xa), free(ly);
      nn_tensor_free(s1), nn_tensor_free(s2), nn_tensor_free(f), nn_tensor_free(lp);
      nn_tensor_free(c), nn_tensor_free(a), nn_tensor_free(b), nn_tensor_free(lab);
    }

  /* soft targets: one-hot targets reproduce the hard loss; random ones against a reference */
  {
    int64_t N = 6, C = 4;
    nn_tensor *a = th_rand(2, (int64_t[]){N, C}, -2, 2), *lab = th_randint(1, &N, C), *t = NULL;
    OK(nn_tensor_zeros(&t, 2, (int64_t[]){N, C}, NN_DTYPE_F32, nn_cpu));
    for (int64_t n = 0; n < N; n++)
      nn_tensor_set_flat(t, n * C + (int64_t)nn_tensor_get_flat(lab, n), 1.0);
    nn_tensor *h = NULL, *s = NULL;
    OK(nn_cross_entropy(&h, a, lab, NN_REDUCTION_NONE));
    OK(nn_cross_entropy_soft(&s, a, t, NN_REDUCTION_NONE));
    if (h && s) {
      double *rh = th_to_double(h);
      th_close(s, rh, 1e-6, 1e-5, "cross_entropy_soft with one-hot targets");
      free(rh);
    }
    nn_tensor_free(h), nn_tensor_free(s), nn_tensor_free(t);
    t = layout(th_rand(2, (int64_t[]){N, C}, 0, 1), 1);
    double *xa = th_to_double(a), *ta = th_to_double(t), ref[6], tot = 0;
    for (int64_t n = 0; n < N; n++) {
      double m = -INFINITY, z = 0, l = 0;
      for (int64_t j = 0; j < C; j++) m = fmax(m, xa[n * C + j]);
      for (int64_t j = 0; j < C; j++) z += exp(xa[n * C + j] - m);
      for (int64_t j = 0; j < C; j++) l -= ta[n * C + j] * (xa[n * C + j] - m - log(z));
      tot += ref[n] = l;
    }
    OK(nn_cross_entropy_soft(&s, a, t, NN_REDUCTION_NONE));
    if (s) th_close(s, ref, 1e-5, 1e-5, "cross_entropy_soft none");
    nn_tensor_free(s);
    OK(nn_cross_entropy_soft(&s, a, t, NN_REDUCTION_MEAN));
    ref[0] = tot / (double)N;
    if (s) th_close(s, ref, 1e-5, 1e-5, "cross_entropy_soft mean");
    nn_tensor_free(s);
    free(xa), free(ta);
    nn_tensor_free(a), nn_tensor_free(lab), nn_tensor_free(t);
  }

  /* nll on strided log-probabilities; cross-entropy in float64 */
  for (int lay = 0; lay < 3; lay++) {
    int64_t N = 6, C = 5;
    nn_tensor *lp = layout(th_rand(2, (int64_t[]){N, C}, -4, 0), lay), *lab = th_randint(1, &N, C);
    double *xl = th_to_double(lp), *ly = th_to_double(lab), ref[6];
    for (int64_t n = 0; n < N; n++) ref[n] = -xl[n * C + (int64_t)ly[n]];
    OK(nn_nll_loss(&o, lp, lab, NN_REDUCTION_NONE));
    if (o) th_close(o, ref, 0, 0, "nll_loss none, strided");
    nn_tensor_free(o);
    free(xl), free(ly);
    nn_tensor_free(lp), nn_tensor_free(lab);
  }
  {
    int64_t N = 5, C = 9;
    nn_tensor *a = layout(th_rand_dt(2, (int64_t[]){N, C}, -30, 30, NN_DTYPE_F64), 2);
    nn_tensor *lab = th_randint(1, &N, C);
    double *xa = th_to_double(a), *ly = th_to_double(lab), ref[5];
    for (int64_t n = 0; n < N; n++) ref[n] = ref_ce_row(xa + n * C, C, (int64_t)ly[n]);
    OK(nn_cross_entropy(&o, a, lab, NN_REDUCTION_NONE));
    if (o) {
      CHECK(o->dtype == NN_DTYPE_F64, "cross_entropy float64 dtype");
      th_close(o, ref, 1e-12, 1e-12, "cross_entropy float64");
    }
    nn_tensor_free(o);
    free(xa), free(ly);
    nn_tensor_free(a), nn_tensor_free(lab);
  }

  /* mse */
  for (int red = 0; red < 3; red++)
    for (int lay = 0; lay < 3; lay++) {
      int64_t sh[3] = {3, 4, 5};
      nn_tensor *a = layout(th_rand(3, sh, -1, 1), lay),
                *b = layout(th_rand(3, sh, -1, 1), 2 - lay);
      double *xa = th_to_double(a), *xb = th_to_double(b), ref[60], s = 0;
      for (int i = 0; i < 60; i++) s += ref[i] = (xa[i] - xb[i]) * (xa[i] - xb[i]);
      if (red != NN_REDUCTION_NONE) ref[0] = red == NN_REDUCTION_MEAN ? s / 60 : s;
      OK(nn_mse_loss(&o, a, b, (nn_reduction)red));
      char what[48];
      snprintf(what, sizeof what, "mse_loss red %d layout %d", red, lay);
      if (o) {
        CHECK(red == NN_REDUCTION_NONE ? nn_tensor_same_shape(o, a) : o->ndim == 0, "%s: shape",
              what);
        th_close(o, ref, 1e-6, 1e-5, what);
      }
      nn_tensor_free(o);
      free(xa), free(xb);
      nn_tensor_free(a), nn_tensor_free(b);
    }
  /* a long contiguous mse runs in chunks: check it against the serial strided path */
  {
    int64_t n = 100003;
    nn_tensor *a = th_rand(1, &n, -1, 1), *b = th_rand(1, &n, -1, 1);
    nn_tensor *a2 = th_noncontig(a), *b2 = th_noncontig(b), *o2 = NULL;
    OK(nn_mse_loss(&o, a, b, NN_REDUCTION_SUM));
    OK(nn_mse_loss(&o2, a2, b2, NN_REDUCTION_SUM));
    double *xa = th_to_double(a), *xb = th_to_double(b), s = 0;
    for (int64_t i = 0; i < n; i++) s += (xa[i] - xb[i]) * (xa[i] - xb[i]);
    if (o && o2) {
      th_close(o, &s, 0, 1e-6, "mse long contiguous");
      th_close(o2, &s, 0, 1e-6, "mse long strided");
    }
    free(xa), free(xb);
    nn_tensor_free(o), nn_tensor_free(o2), nn_tensor_free(a), nn_tensor_free(b);
    nn_tensor_free(a2), nn_tensor_free(b2);
  }
}

/* ---------------------------------------------------------------- gradients */

typedef struct {
  int op, dim, keep, arg;
  nn_tensor *labels;
} gctx;

enum {
  G_SUM,
  G_MEAN,
  G_VAR,
  G_VAR_DIMS,
  G_MEAN_DIMS,
  G_MAX,
  G_MIN,
  G_TOPK,
  G_SORT,
  G_SOFTMAX,
  G_LOG_SOFTMAX,
  G_CE,
  G_NLL,
  G_CE_SOFT,
  G_MSE,
  G_MAX_ALL
};

static int gfn(void *vc, nn_tensor **in, nn_tensor **out) {
  gctx *c = vc;
  nn_tensor *ix = NULL, *t = NULL;
  int rc;
  switch (c->op) {
  case G_SUM:
    return nn_sum(out, in[0], c->dim, c->keep);
  case G_MEAN:
    return nn_mean(out, in[0], c->dim, c->keep);
  case G_VAR:
    return nn_var(out, in[0], c->dim, c->keep, c->arg);
  case G_VAR_DIMS:
    return nn_var_dims(out, in[0], (unsigned)c->dim, c->keep, c->arg);
  case G_MEAN_DIMS:
    return nn_mean_dims(out, in[0], (unsigned)c->dim, c->keep);
  case G_MAX:
    rc = nn_max(out, &ix, in[0], c->dim, c->keep);
    break;
  case G_MIN:
    rc = nn_min(out, &ix, in[0], c->dim, c->keep);
    break;
  case G_TOPK:
    rc = nn_topk(out, &ix, in[0], c->arg, c->dim, c->keep, true);
    break;
  case G_SORT:
    rc = nn_sort(out, &ix, in[0], c->dim, c->keep);
    break;
  case G_SOFTMAX:
    return nn_softmax(out, in[0], c->dim);
  case G_LOG_SOFTMAX:
    return nn_log_softmax(out, in[0], c->dim);
  case G_CE:
    return nn_cross_entropy(out, in[0], c->labels, (nn_reduction)c->arg);
  case G_NLL: /* through log_softmax, so the input is a proper log-probability */
    rc = nn_log_softmax(&t, in[0], 1);
    if (!rc) rc = nn_nll_loss(out, t, c->labels, (nn_reduction)c->arg);
    nn_tensor_free(t);
    return rc;
  case G_CE_SOFT:
    return nn_cross_entropy_soft(out, in[0], in[1], (nn_reduction)c->arg);
  case G_MSE:
    return nn_mse_loss(out, in[0], in[1], (nn_reduction)c->arg);
  default:
    return nn_max_all(out, in[0]);
  }
  nn_tensor_free(ix);
  return rc;
}

static void gcheck(gctx c, int n_in, nn_tensor **in, const char *name) {
  char what[96];
  snprintf(what, sizeof what, "%s grad dim %d keep %d arg %d", name, c.dim, c.keep, c.arg);
  th_gradcheck(gfn, &c, n_in, in, 1e-3, 2e-3, 2e-2, what);
}

static void test_grads(void) {
  int64_t shapes[2][3] = {{3, 4, 1}, {2, 3, 2}};
  int nds[2] = {2, 3};
  for (int s = 0; s < 2; s++)
    for (int lay = 0; lay < 3; lay++) {
      int nd = nds[s];
      nn_tensor *smooth = req(layout(th_rand(nd, shapes[s], -1, 1), lay));
      nn_tensor *dist = req(layout(rand_distinct(nd, shapes[s]), lay));
      for (int d = -nd; d < nd; d++)
        for (int keep = 0; keep < 2; keep++) {
          gcheck((gctx){G_SUM, d, keep, 0, NULL}, 1, &smooth, "sum");
          gcheck((gctx){G_MEAN, d, keep, 0, NULL}, 1, &smooth, "mean");
          gcheck((gctx){G_VAR, d, keep, keep, NULL}, 1, &smooth, "var");
          gcheck((gctx){G_MAX, d, keep, 0, NULL}, 1, &dist, "max");
          gcheck((gctx){G_MIN, d, keep, 0, NULL}, 1, &dist, "min");
          int dd = d < 0 ? d + nd : d;
          gcheck((gctx){G_TOPK, d, keep, (int)(shapes[s][dd] + 1) / 2, NULL}, 1, &dist, "topk");
          gcheck((gctx){G_SORT, d, keep, 0, NULL}, 1, &dist, "sort");
          if (keep) continue;
          gcheck((gctx){G_SOFTMAX, d, 0, 0, NULL}, 1, &smooth, "softmax");
          gcheck((gctx){G_LOG_SOFTMAX, d, 0, 0, NULL}, 1, &smooth, "log_softmax");
        }
      for (unsigned mask = 0; mask < (1u << nd); mask++) {
        gcheck((gctx){G_VAR_DIMS, (int)mask, (int)mask % 2, mask != 0, NULL}, 1, &smooth,
               "var_dims");
        gcheck((gctx){G_MEAN_DIMS, (int)mask, (int)mask % 2, 0, NULL}, 1, &smooth, "mean_dims");
      }
      gcheck((gctx){G_MAX_ALL, 0, 0, 0, NULL}, 1, &dist, "max_all");
      nn_tensor_free(smooth);
      nn_tensor_free(dist);
    }
  for (int lay = 0; lay < 3; lay++)
    for (int red = 0; red < 3; red++) {
      int64_t N = 4, C = 5;
      nn_tensor *x = req(layout(th_rand(2, (int64_t[]){N, C}, -2, 2), lay));
      nn_tensor *t = req(layout(th_rand(2, (int64_t[]){N, C}, 0, 1), 2 - lay));
      nn_tensor *lab = th_randint(1, &N, C);
      gcheck((gctx){G_CE, 0, 0, red, lab}, 1, &x, "cross_entropy");
      gcheck((gctx){G_NLL, 0, 0, red, lab}, 1, &x, "nll_loss");
      nn_tensor *in[2] = {x, t};
      gcheck((gctx){G_CE_SOFT, 0, 0, red, NULL}, 2, in, "cross_entropy_soft");
      gcheck((gctx){G_MSE, 0, 0, red, NULL}, 2, in, "mse_loss");
      nn_tensor_set_requires_grad(x, false); /* gradient to one side only */
      gcheck((gctx){G_CE_SOFT, 0, 0, red, NULL}, 2, in, "cross_entropy_soft targets only");
      gcheck((gctx){G_MSE, 0, 0, red, NULL}, 2, in, "mse_loss b only");
      nn_tensor_free(x), nn_tensor_free(t), nn_tensor_free(lab);
    }
  /* float64 cross-entropy gradient at a tight tolerance */
  nn_tensor *x = req(th_rand_dt(2, (int64_t[]){3, 4}, -2, 2, NN_DTYPE_F64));
  nn_tensor *lab = th_randint(1, (int64_t[]){3}, 4);
  gctx c = {G_CE, 0, 0, NN_REDUCTION_MEAN, lab};
  th_gradcheck(gfn, &c, 1, &x, 1e-6, 1e-8, 1e-6, "cross_entropy float64 grad");
  c.op = G_SOFTMAX;
  th_gradcheck(gfn, &c, 1, &x, 1e-6, 1e-8, 1e-6, "softmax float64 grad");
  nn_tensor_free(x), nn_tensor_free(lab);
}

/* ---------------------------------------------------------------- threads */

/* Runs the big ops (parallel paths: more than CPU_PAR_MIN elements, rows split in chunks) and
 * copies every result to host memory. */
typedef struct {
  int n;
  size_t bytes[16];
  char *data[16];
} snap;

static void keep(snap *s, nn_tensor *t) {
  if (!t) return;
  size_t b = (size_t)nn_tensor_numel(t) * nn_dtype_size(t->dtype);
  s->data[s->n] = malloc(b ? b : 1);
  s->bytes[s->n] = b;
  nn_tensor_to_host(t, t->dtype, s->data[s->n]);
  s->n++;
  nn_tensor_free(t);
}

static void run_big(snap *s, nn_tensor *x, nn_tensor *xt, nn_tensor *lab) {
  nn_tensor *o = NULL, *ix = NULL;
  OK(nn_softmax(&o, x, 1));
  keep(s, o);
  OK(nn_log_softmax(&o, xt, 0));
  keep(s, o); /* dim 0 of a transposed view: packed rows */
  OK(nn_var(&o, x, 1, false, 1));
  keep(s, o);
  OK(nn_mean(&o, xt, 0, false));
  keep(s, o);
  OK(nn_max(&o, &ix, xt, 0, false));
  keep(s, o);
  keep(s, ix);
  OK(nn_topk(&o, &ix, x, 5, 1, true, true));
  keep(s, o);
  keep(s, ix);
  OK(nn_cross_entropy(&o, x, lab, NN_REDUCTION_MEAN));
  keep(s, o);
  /* backward of cross-entropy and softmax */
  nn_tensor *xr = NULL, *l = NULL, *sm = NULL, *w = NULL;
  OK(nn_clone(&xr, x));
  req(xr);
  OK(nn_cross_entropy(&l, xr, lab, NN_REDUCTION_SUM));
  OK(nn_backward(l, NULL));
  keep(s, nn_tensor_retain(xr->grad));
  nn_tensor_zero_grad(xr, true);
  OK(nn_softmax(&sm, xr, 0));
  OK(nn_mul(&w, sm, x));
  nn_tensor_free(l);
  OK(nn_sum_all(&l, w));
  OK(nn_backward(l, NULL));
  keep(s, nn_tensor_retain(xr->grad));
  nn_tensor_free(xr), nn_tensor_free(l), nn_tensor_free(sm), nn_tensor_free(w);
}

static void test_threads(void) {
  int64_t N = 300, C = 257;
  nn_tensor *x = th_rand(2, (int64_t[]){N, C}, -5, 5), *lab = th_randint(1, &N, C);
  nn_tensor *xt = layout(th_rand(2, (int64_t[]){N, C}, -5, 5), 2);
  /* the parallel results are right */
  double *xa = th_to_double(x), *ref = malloc((size_t)(N * C) * sizeof *ref),
         *ly = th_to_double(lab);
  nn_tensor *o = NULL;
  ref_softmax(xa, geo_of(x, 1), 0, ref);
  OK(nn_softmax(&o, x, 1));
  if (o) th_close(o, ref, 1e-7, 1e-5, "softmax (300, 257)");
  nn_tensor_free(o);
  double s = 0;
  for (int64_t n = 0; n < N; n++) s += ref_ce_row(xa + n * C, C, (int64_t)ly[n]);
  s /= (double)N;
  OK(nn_cross_entropy(&o, x, lab, NN_REDUCTION_MEAN));
  if (o) th_close(o, &s, 1e-6, 1e-6, "cross_entropy (300, 257)");
  nn_tensor_free(o);
  free(xa), free(ref), free(ly);
  /* and bit-identical across thread counts and runs */
  int nt = nn_get_num_threads();
  snap a = {0}, b = {0}, c = {0};
  nn_set_num_threads(1);
  run_big(&a, x, xt, lab);
  nn_set_num_threads(4);
  run_big(&b, x, xt, lab);
  run_big(&c, x, xt, lab);
  nn_set_num_threads(nt);
  CHECK(a.n == b.n && a.n == c.n && a.n == 11, "snapshots %d %d %d", a.n, b.n, c.n);
  for (int i = 0; i < a.n && i < b.n && i < c.n; i++) {
    CHECK(a.bytes[i] == b.bytes[i] && !memcmp(a.data[i], b.data[i], a.bytes[i]),
          "result %d differs between 1 and 4 threads", i);
    CHECK(!memcmp(b.data[i], c.data[i], b.bytes[i]), "result %d differs run to run", i);
    free(a.data[i]), free(b.data[i]), free(c.data[i]);
  }
  nn_tensor_free(x), nn_tensor_free(xt), nn_tensor_free(lab);
}

/* ---------------------------------------------------------------- errors */

static void test_errors(void) {
  nn_tensor *x = th_rand(2, (int64_t[]){3, 4}, -1, 1), *o = (nn_tensor *)1, *ix = (nn_tensor *)1;
  EXPECT_ERR(nn_max(&o, &ix, x, 2, false), NN_ERR_INDEX,
             "max: dim 2 out of range for shape (3, 4)");
  CHECK(o == NULL && ix == NULL, "out-parameters NULL on error");
  EXPECT_ERR(nn_softmax(&o, x, -3), NN_ERR_INDEX, "softmax: dim -3 out of range for shape (3, 4)");
  EXPECT_ERR(nn_sum(&o, x, 5, true), NN_ERR_INDEX, "sum: dim 5 out of range for shape (3, 4)");
  EXPECT_ERR(nn_var(&o, x, -5, true, 1), NN_ERR_INDEX, "var: dim -5 out of range for shape (3, 4)");
  EXPECT_ERR(nn_sort(&o, NULL, x, 2, false), NN_ERR_INDEX,
             "sort: dim 2 out of range for shape (3, 4)");
  EXPECT_ERR(nn_argmax(&o, x, 7, false), NN_ERR_INDEX, "argmax: dim 7 out of range");
  EXPECT_ERR(nn_mean_dims(&o, x, 4u, false), NN_ERR_INDEX,
             "mean: dim mask 0x4 names dims out of range for shape (3, 4)");
  EXPECT_ERR(nn_var(&o, x, 1, false, -1), NN_ERR_ARG, "var: correction -1 is negative");
  ix = (nn_tensor *)1;
  EXPECT_ERR(nn_topk(&o, &ix, x, 5, 1, true, true), NN_ERR_ARG,
             "topk: k = 5 is out of range for dim 1 of size 4 (shape (3, 4))");
  CHECK(o == NULL && ix == NULL, "topk out-parameters NULL on error");
  EXPECT_ERR(nn_topk(&o, NULL, x, -1, 0, true, true), NN_ERR_ARG, "topk: k = -1 is out of range");
  nn_tensor *e = NULL;
  OK(nn_tensor_zeros(&e, 2, (int64_t[]){3, 0}, NN_DTYPE_F32, nn_cpu));
  EXPECT_ERR(nn_max(&o, NULL, e, 1, false), NN_ERR_SHAPE,
             "max: cannot reduce dim 1 of size 0 (shape (3, 0))");
  EXPECT_ERR(nn_min_all(&o, e), NN_ERR_SHAPE, "min_all: empty tensor of shape (3, 0)");
  nn_tensor *li = th_randint(2, (int64_t[]){3, 4}, 4);
  EXPECT_ERR(nn_softmax(&o, li, 1), NN_ERR_DTYPE, "softmax: input is int64");
  EXPECT_ERR(nn_mean(&o, li, 1, false), NN_ERR_DTYPE, "mean: input is int64");

  /* losses */
  int64_t bad[3] = {0, 4, 1}, neg[3] = {0, 1, -2};
  nn_tensor *lab = NULL, *labn = NULL, *lab5 = th_randint(1, (int64_t[]){5}, 4);
  OK(nn_tensor_from_data(&lab, 1, (int64_t[]){3}, NN_DTYPE_I64, bad));
  OK(nn_tensor_from_data(&labn, 1, (int64_t[]){3}, NN_DTYPE_I64, neg));
  EXPECT_ERR(nn_cross_entropy(&o, x, lab, NN_REDUCTION_MEAN), NN_ERR_INDEX,
             "cross_entropy: label 4 at row 1 is out of range [0, 4)");
  CHECK(o == NULL, "cross_entropy out-parameter NULL on error");
  EXPECT_ERR(nn_cross_entropy(&o, x, labn, NN_REDUCTION_NONE), NN_ERR_INDEX,
             "cross_entropy: label -2 at row 2 is out of range [0, 4)");
  EXPECT_ERR(nn_nll_loss(&o, x, lab, NN_REDUCTION_SUM), NN_ERR_INDEX,
             "nll_loss: label 4 at row 1 is out of range [0, 4)");
  nn_tensor *flab = th_rand(1, (int64_t[]){3}, 0, 3);
  EXPECT_ERR(nn_cross_entropy(&o, x, flab, NN_REDUCTION_MEAN), NN_ERR_DTYPE,
             "cross_entropy: labels must be int64 class indices, got float32");
  EXPECT_ERR(nn_cross_entropy(&o, x, lab5, NN_REDUCTION_MEAN), NN_ERR_SHAPE,
             "cross_entropy: logits (3, 4) and labels (5,): expected labels of shape (3,)");
  EXPECT_ERR(nn_nll_loss(&o, x, lab5, NN_REDUCTION_MEAN), NN_ERR_SHAPE,
             "nll_loss: logp (3, 4) and labels (5,): expected labels of shape (3,)");
  EXPECT_ERR(nn_cross_entropy(&o, li, lab, NN_REDUCTION_MEAN), NN_ERR_DTYPE,
             "cross_entropy: logits is int64");
  nn_tensor *x1 = th_rand(1, (int64_t[]){4}, 0, 1);
  EXPECT_ERR(nn_cross_entropy(&o, x1, lab, NN_REDUCTION_MEAN), NN_ERR_SHAPE,
             "cross_entropy: logits must be (N, C) with C >= 1, got (4,)");
  EXPECT_ERR(nn_cross_entropy(&o, x, lab, (nn_reduction)7), NN_ERR_ARG,
             "cross_entropy: unknown reduction 7");
  nn_tensor *t5 = th_rand(2, (int64_t[]){3, 5}, 0, 1);
  EXPECT_ERR(nn_cross_entropy_soft(&o, x, t5, NN_REDUCTION_MEAN), NN_ERR_SHAPE,
             "cross_entropy_soft: logits (3, 4) and targets (3, 5) must have the same shape");
  nn_tensor *x64 = th_rand_dt(2, (int64_t[]){3, 4}, 0, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_cross_entropy_soft(&o, x, x64, NN_REDUCTION_MEAN), NN_ERR_DTYPE,
             "cross_entropy_soft: targets must have the logits' dtype float32, got float64");
  EXPECT_ERR(nn_mse_loss(&o, x, t5, NN_REDUCTION_MEAN), NN_ERR_SHAPE,
             "mse_loss: shapes (3, 4) and (3, 5) differ (no broadcasting)");
  EXPECT_ERR(nn_mse_loss(&o, x, x64, NN_REDUCTION_MEAN), NN_ERR_DTYPE,
             "mse_loss: operands must be float32 or float64 of one dtype, got float32 and float64");
  CHECK(o == NULL, "mse out-parameter NULL on error");
  nn_tensor_free(x), nn_tensor_free(e), nn_tensor_free(li), nn_tensor_free(lab);
  nn_tensor_free(labn), nn_tensor_free(lab5), nn_tensor_free(flab), nn_tensor_free(x1);
  nn_tensor_free(t5), nn_tensor_free(x64);
}

int main(void) {
  th_seed(7);
  test_reductions_dim();
  test_reductions_mask();
  test_softmax();
  test_sort();
  test_nan_ties();
  test_losses();
  test_grads();
  test_threads();
  test_errors();
  return th_done();
}
