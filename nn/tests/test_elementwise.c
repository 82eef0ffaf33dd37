/* nn/tests/test_elementwise.c: unary math and activations, pow, maximum/minimum, comparisons,
 * where, masked_fill, dropout_mask and mul_: forward against double-precision libm references on
 * contiguous, strided and broadcast inputs in float32 and float64; backward against finite
 * differences (inputs kept away from kinks and domain edges); NaN propagation; bad input. */
#include "harness.h"

#include <math.h>
#include <string.h>

static nn_tensor *req(nn_tensor *t) {
  nn_tensor_set_requires_grad(t, true);
  return t;
}

/* Replaces t by a strided copy with the same values. */
static nn_tensor *noncontig(nn_tensor *t) {
  nn_tensor *v = th_noncontig(t);
  nn_tensor_free(t);
  return v;
}

/* Moves every element within margin of one of the points to that distance, so that finite
 * differences of step 1e-3 never straddle a kink. */
static void avoid(nn_tensor *t, const double *pts, int n_pts, double margin) {
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double x = nn_tensor_get_flat(t, i);
    for (int k = 0; k < n_pts; k++)
      if (fabs(x - pts[k]) < margin) x = pts[k] + (x < pts[k] ? -margin : margin);
    nn_tensor_set_flat(t, i, x);
  }
}

/* ---- unary ops ---- */

enum {
  U_NEG,
  U_EXP,
  U_LOG,
  U_SQRT,
  U_RSQRT,
  U_ABS,
  U_POW,
  U_CLAMP,
  U_RELU,
  U_LEAKY,
  U_TANH,
  U_SIGMOID,
  U_GELU,
  U_GELU_TANH,
  U_SOFTPLUS
};

typedef struct {
  const char *name;
  int op;
  double p0, p1; /* op parameters */
  double lo, hi; /* input range */
  int n_kinks;
  double kinks[2];
} un_case;

static const un_case un_cases[] = {
    {"neg", U_NEG, 0, 0, -2, 2, 0, {0}},
    {"exp", U_EXP, 0, 0, -2, 2, 0, {0}},
    {"log", U_LOG, 0, 0, 0.2, 3, 0, {0}},
    {"sqrt", U_SQRT, 0, 0, 0.2, 3, 0, {0}},
    {"rsqrt", U_RSQRT, 0, 0, 0.2, 3, 0, {0}},
    {"abs", U_ABS, 0, 0, -2, 2, 1, {0}},
    {"pow 3", U_POW, 3, 0, -2, 2, 0, {0}},
    {"pow 2", U_POW, 2, 0, -2, 2, 0, {0}},
    {"pow 1", U_POW, 1, 0, -2, 2, 0, {0}},
    {"pow 0", U_POW, 0, 0, -2, 2, 0, {0}},
    {"pow 0.5", U_POW, 0.5, 0, 0.2, 3, 0, {0}},
    {"pow -1.5", U_POW, -1.5, 0, 0.2, 3, 0, {0}},
    {"clamp", U_CLAMP, -0.5, 0.7, -2, 2, 2, {-0.5, 0.7}},
    {"clamp max only", U_CLAMP, -INFINITY, 0.3, -2, 2, 1, {0.3}},
    {"clamp min only", U_CLAMP, 0.2, INFINITY, -2, 2, 1, {0.2}},
    {"clamp lo > hi", U_CLAMP, 1.0, -1.0, -2, 2, 2, {1.0, -1.0}},
    {"relu", U_RELU, 0, 0, -2, 2, 1, {0}},
    {"leaky_relu", U_LEAKY, 0.1, 0, -2, 2, 1, {0}},
    {"tanh", U_TANH, 0, 0, -3, 3, 0, {0}},
    {"sigmoid", U_SIGMOID, 0, 0, -4, 4, 0, {0}},
    {"gelu", U_GELU, 0, 0, -3, 3, 0, {0}},
    {"gelu tanh", U_GELU_TANH, 0, 0, -3, 3, 0, {0}},
    {"softplus", U_SOFTPLUS, 1, 20, -3, 3, 0, {0}},
    {"softplus beta 2 threshold 1", U_SOFTPLUS, 2, 1, -2, 2, 1, {0.5}}, /* linear above 0.5 */
};

static int un_call(const un_case *c, nn_tensor **out, nn_tensor *x) {
  switch (c->op) {
  case U_NEG:
    return nn_neg(out, x);
  case U_EXP:
    return nn_exp(out, x);
  case U_LOG:
    return nn_log(out, x);
  case U_SQRT:
    return nn_sqrt(out, x);
  case U_RSQRT:
    return nn_rsqrt(out, x);
  case U_ABS:
    return nn_abs(out, x);
  case U_POW:
    return nn_pow_scalar(out, x, c->p0);
  case U_CLAMP:
    return nn_clamp(out, x, c->p0, c->p1);
  case U_RELU:
    return nn_relu(out, x);
  case U_LEAKY:
    return nn_leaky_relu(out, x, c->p0);
  case U_TANH:
    return nn_tanh(out, x);
  case U_SIGMOID:
    return nn_sigmoid(out, x);
  case U_GELU:
    return nn_gelu(out, x, false);
  case U_GELU_TANH:
    return nn_gelu(out, x, true);
  default:
    return nn_softplus(out, x, c->p0, c->p1);
  }
}

static double un_ref(const un_case *c, double x) {
  switch (c->op) {
  case U_NEG:
    return -x;
  case U_EXP:
    return exp(x);
  case U_LOG:
    return log(x);
  case U_SQRT:
    return sqrt(x);
  case U_RSQRT:
    return 1 / sqrt(x);
  case U_ABS:
    return fabs(x);
  case U_POW:
    return pow(x, c->p0);
  case U_CLAMP:
    return isnan(x) ? x : fmin(fmax(x, c->p0), c->p1);
  case U_RELU:
    return x > 0 ? x : 0;
  case U_LEAKY:
    return x > 0 ? x : c->p0 * x;
  case U_TANH:
    return tanh(x);
  case U_SIGMOID:
    return 1 / (1 + exp(-x));
  case U_GELU:
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  case U_GELU_TANH:
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  default:
    return c->p0 * x > c->p1 ? x : log1p(exp(c->p0 * x)) / c->p0;
  }
}

static int un_fn(void *ctx, nn_tensor **in, nn_tensor **out) { return un_call(ctx, out, in[0]); }

static void test_unary(void) {
  struct {
    int nd;
    int64_t sh[3];
  } shapes[] = {{2, {3, 4}}, {3, {2, 3, 5}}, {1, {7}}, {0, {0}}, {2, {0, 3}}};
  for (size_t ci = 0; ci < sizeof un_cases / sizeof *un_cases; ci++) {
    const un_case *c = &un_cases[ci];
    char what[96];
    /* forward, float32 and float64, contiguous and strided */
    for (int dt = 0; dt < 2; dt++)
      for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int nc = 0; nc < 2; nc++) {
          nn_tensor *x = th_rand_dt(shapes[si].nd, shapes[si].sh, c->lo, c->hi,
                                    dt ? NN_DTYPE_F64 : NN_DTYPE_F32),
                    *o = NULL;
          if (nc) x = noncontig(x);
          OK(un_call(c, &o, x));
          if (o) {
            int64_t n = nn_tensor_numel(x);
            double *ref = th_to_double(x);
            for (int64_t i = 0; i < n; i++) ref[i] = un_ref(c, ref[i]);
            snprintf(what, sizeof what, "%s %s shape %zu nc %d", c->name, dt ? "f64" : "f32", si,
                     nc);
            CHECK(o->dtype == x->dtype && nn_tensor_same_shape(o, x) && nn_tensor_is_contiguous(o),
                  "%s: output dtype/shape", what);
            if (dt)
              th_close(o, ref, 1e-14, 1e-12, what);
            else
              th_close(o, ref, 1e-6, 2e-6, what);
            free(ref);
          }
          nn_tensor_free(o);
          nn_tensor_free(x);
        }
    /* backward: float32 contiguous and strided, float64 with a tight tolerance */
    for (int k = 0; k < 3; k++) {
      nn_tensor *x =
          th_rand_dt(2, (int64_t[]){2, 3}, c->lo, c->hi, k == 2 ? NN_DTYPE_F64 : NN_DTYPE_F32);
      avoid(x, c->kinks, c->n_kinks, 0.05);
      if (k == 1) x = noncontig(x);
      req(x);
      snprintf(what, sizeof what, "%s grad %s", c->name,
               k == 0   ? "f32"
               : k == 1 ? "f32 strided"
                        : "f64");
      if (k == 2)
        th_gradcheck(un_fn, (void *)c, 1, &x, 1e-6, 1e-8, 1e-6, what);
      else
        th_gradcheck(un_fn, (void *)c, 1, &x, 1e-3, 2e-3, 2e-2, what);
      nn_tensor_free(x);
    }
  }
  /* known values */
  nn_tensor *x = NULL, *o = NULL;
  OK(nn_tensor_from_data(&x, 1, (int64_t[]){3}, NN_DTYPE_F64, (double[]){1.0, -1.0, 30.0}));
  OK(nn_gelu(&o, x, false));
  th_close(o, (double[]){0.8413447460685429, -0.15865525393145707, 30.0}, 1e-15, 1e-15, "gelu(1)");
  nn_tensor_free(o);
  OK(nn_gelu(&o, x, true));
  th_close(o, (double[]){0.8411919906082768, -0.15880800939172324, 30.0}, 1e-15, 1e-15,
           "gelu tanh(1)");
  nn_tensor_free(o);
  OK(nn_softplus(&o, x, 1, 20)); /* 30 > threshold: exactly x */
  CHECK(nn_tensor_get_flat(o, 2) == 30.0, "softplus linear above threshold");
  nn_tensor_free(o);
  nn_tensor_free(x);
}

/* ---- float32 math: the kernels evaluate exp, log, tanh and the normal CDF with their own
 * vectorizable polynomials, so check them densely against double libm, in ulps ---- */

/* Like th_close, but equal infinities match (th_close computes inf - inf). */
static void close_special(const nn_tensor *t, const double *ref, double atol, double rtol,
                          const char *what) {
  int64_t n = nn_tensor_numel(t), bad = -1;
  for (int64_t i = 0; i < n && bad < 0; i++) {
    double v = nn_tensor_get_flat(t, i), r = ref[i];
    if (!((isnan(v) && isnan(r)) || v == r || fabs(v - r) <= atol + rtol * fabs(r))) bad = i;
  }
  CHECK(bad < 0, "%s: element %lld is %.9g, reference %.9g", what, (long long)bad,
        bad < 0 ? 0 : nn_tensor_get_flat(t, bad), bad < 0 ? 0 : ref[bad]);
}

static double ulp_f32(double r) {
  float f = (float)fabs(r);
  if (f == 0) return 1.4e-45; /* smallest subnormal */
  return (double)nextafterf(f, INFINITY) - f;
}

enum {
  M_EXP,
  M_LOG,
  M_TANH,
  M_SIGMOID,
  M_SOFTPLUS,
  M_GELU,
  M_GELU_TANH,
  M_GELU_GRAD,
  M_GELU_TANH_GRAD,
  M_SOFTPLUS_GRAD,
  M_COUNT
};

static double math_ref(int f, double v) {
  const double k = sqrt(2 / M_PI), c = 0.044715;
  double u2 = 2 * k * (v + c * v * v * v); /* gelu tanh form: x sigmoid(u2) */
  switch (f) {
  case M_EXP:
    return exp(v);
  case M_LOG:
    return log(v);
  case M_TANH:
    return tanh(v);
  case M_SIGMOID:
    return 1 / (1 + exp(-v));
  case M_SOFTPLUS:
    return v > 20 ? v : log1p(exp(v));
  case M_GELU:
    return 0.5 * v * erfc(-v / sqrt(2.0));
  case M_GELU_TANH:
    return v / (1 + exp(-u2));
  case M_GELU_GRAD:
    return 0.5 * erfc(-v / sqrt(2.0)) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
  case M_GELU_TANH_GRAD: {
    double sg = 1 / (1 + exp(-u2));
    return sg + 2 * k * v * sg * (1 - sg) * (1 + 3 * c * v * v);
  }
  default:
    return 1 / (1 + exp(-v));
  }
}

static int math_call(int f, nn_tensor **out, nn_tensor *x) {
  switch (f) {
  case M_EXP:
    return nn_exp(out, x);
  case M_LOG:
    return nn_log(out, x);
  case M_TANH:
    return nn_tanh(out, x);
  case M_SIGMOID:
    return nn_sigmoid(out, x);
  case M_SOFTPLUS:
  case M_SOFTPLUS_GRAD:
    return nn_softplus(out, x, 1, 20);
  case M_GELU:
  case M_GELU_GRAD:
    return nn_gelu(out, x, false);
  default:
    return nn_gelu(out, x, true);
  }
}

static void test_f32_math(void) {
  static const char *names[M_COUNT] = {
      "exp",  "log",       "tanh",      "sigmoid",        "softplus",
      "gelu", "gelu tanh", "gelu grad", "gelu tanh grad", "softplus grad"};
  int64_t n = 200001;
  for (int f = 0; f < M_COUNT; f++) {
    nn_tensor *x = NULL, *o = NULL, *ones = NULL;
    OK(nn_tensor_empty(&x, 1, &n, NN_DTYPE_F32, nn_cpu));
    for (int64_t i = 0; i < n; i++) {
      double t = (double)i / (double)(n - 1);
      /* exp: all of float's range incl. subnormal results; log: 1e-44 (subnormal) to 1e38 */
      nn_tensor_set_flat(x, i,
                         f == M_EXP   ? -104 + 192.7 * t
                         : f == M_LOG ? pow(10, -44 + 82 * t)
                                      : -20 + 40 * t);
    }
    bool grad = f >= M_GELU_GRAD;
    req(x);
    OK(math_call(f, &o, x));
    if (!o) continue;
    nn_tensor *res = o;
    if (grad) {
      OK(nn_tensor_full(&ones, 1, &n, 1.0, NN_DTYPE_F32, nn_cpu));
      OK(nn_backward(o, ones));
      res = x->grad;
    }
    double worst = 0, at = 0;
    for (int64_t i = 0; res && i < n; i++) {
      double v = nn_tensor_get_flat(x, i), y = nn_tensor_get_flat(res, i), r = math_ref(f, v);
      /* allowance beyond ulps: the gelu forms evaluate exp of -x^2/2 (or of the tanh form's
       * cubic), whose rounding costs a few ulp per unit of that exponent where the output is small
       * (x < -4, |output| < 1e-4; PyTorch's float formula returns 0 there); outputs below 1e-37
       * underflow; the derivatives cross zero, so they get an absolute allowance. */
      double ulps = 4, extra = 0;
      if (f == M_GELU || f == M_GELU_TANH) { /* erfc's fit is good to 2 ulp, then 4 ulp per
                                              * unit of the exponent's size */
        ulps = 8 + 4 * (f == M_GELU ? 0.5 * v * v : 1.6 * (fabs(v) + 0.045 * fabs(v * v * v)));
        extra = 1e-37;
      } else if (f == M_GELU_GRAD || f == M_GELU_TANH_GRAD) {
        extra = 2e-7;
      }
      double e = (fabs(y - r) - extra) / ulp_f32(r) / ulps;
      if (!(e <= worst)) { /* also catches NaN */
        worst = isnan(e) ? INFINITY : e;
        at = v;
      }
    }
    CHECK(worst <= 1, "float32 %s: error %.3g times the allowance at x = %.9g", names[f], worst,
          at);
    nn_tensor_free(o);
    nn_tensor_free(ones);
    nn_tensor_free(x);
  }
  /* special values */
  const float xs[] = {-INFINITY, INFINITY, NAN,     0.0f,   -0.0f,
                      88.72f,    89.0f,    -103.0f, 1e-30f, -1e-30f};
  const int64_t ns = sizeof xs / sizeof *xs;
  nn_tensor *x = NULL, *o = NULL;
  OK(nn_tensor_from_data(&x, 1, &ns, NN_DTYPE_F32, xs));
  OK(nn_exp(&o, x));
  close_special(o,
                (double[]){0, INFINITY, NAN, 1, 1, exp((double)88.72f), INFINITY,
                           (double)expf(-103.0f), 1, 1},
                0, 1e-6, "exp special values");
  CHECK(nn_tensor_get_flat(o, 7) > 0, "exp(-103) is a nonzero subnormal");
  nn_tensor_free(o);
  OK(nn_log(&o, x));
  close_special(o,
                (double[]){NAN, INFINITY, NAN, -INFINITY, -INFINITY, log((double)88.72f), log(89.0),
                           NAN, log((double)1e-30f), NAN},
                0, 1e-6, "log special values");
  nn_tensor_free(o);
  OK(nn_tanh(&o, x));
  close_special(o, (double[]){-1, 1, NAN, 0, 0, 1, 1, -1, (double)1e-30f, -(double)1e-30f}, 0, 1e-6,
                "tanh special values");
  nn_tensor_free(o);
  OK(nn_sigmoid(&o, x));
  close_special(o, (double[]){0, 1, NAN, 0.5, 0.5, 1, 1, 1 / (1 + exp(103.0)), 0.5, 0.5}, 1e-44,
                1e-6, "sigmoid special values");
  nn_tensor_free(o);
  OK(nn_gelu(&o, x, false));
  CHECK(isnan(nn_tensor_get_flat(o, 2)) && nn_tensor_get_flat(o, 1) == INFINITY &&
            nn_tensor_get_flat(o, 6) == 89.0f,
        "gelu special values");
  nn_tensor_free(o);
  OK(nn_softplus(&o, x, 1, 1e30)); /* never linear: the stable form must not overflow */
  close_special(
      o,
      (double[]){0, INFINITY, NAN, log(2.0), log(2.0), 88.72, 89, exp(-103.0), log(2.0), log(2.0)},
      1e-44, 1e-6, "softplus special values");
  nn_tensor_free(o);
  nn_tensor_free(x);
}

/* The fused backward kernel on strided dout, saved tensor and output alike (the engine usually
 * hands contiguous gradients, so call the kernel directly). */
static void test_backward_kernel_strided(void) {
  const int codes[4] = {NN_UN_RELU, NN_UN_SIGMOID, NN_UN_TANH, NN_UN_GELU};
  for (int k = 0; k < 4; k++) {
    int64_t sh[2] = {5, 6};
    nn_tensor *g = noncontig(th_rand(2, sh, -1, 1)), *v = noncontig(th_rand(2, sh, -2, 2));
    if (codes[k] != NN_UN_RELU && codes[k] != NN_UN_GELU) { /* these read the output y */
      nn_tensor *y = NULL;
      OK(codes[k] == NN_UN_SIGMOID ? nn_sigmoid(&y, v) : nn_tanh(&y, v));
      nn_tensor_free(v);
      v = noncontig(y);
    }
    nn_tensor *o = noncontig(th_rand(2, sh, 0, 0));
    nn_op_params p = {0};
    p.i[0] = codes[k];
    nn_tensor *in[2] = {g, v};
    OK(nn_dispatch(NN_OP_UNARY_BACKWARD, 1, &o, 2, in, &p));
    double ref[30];
    for (int i = 0; i < 30; i++) {
      double gi = nn_tensor_get_flat(g, i), vi = nn_tensor_get_flat(v, i);
      ref[i] = codes[k] == NN_UN_RELU      ? (vi > 0 ? gi : 0)
               : codes[k] == NN_UN_SIGMOID ? gi * vi * (1 - vi)
               : codes[k] == NN_UN_TANH    ? gi * (1 - vi * vi)
                                           : gi * math_ref(M_GELU_GRAD, vi);
    }
    th_close(o, ref, 1e-6, 1e-5, "unary_backward kernel, strided operands");
    nn_tensor_free(g);
    nn_tensor_free(v);
    nn_tensor_free(o);
  }
}

/* Large tensors take the OpenMP path; results must not depend on the thread count. */
static int act_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  switch (*(int *)ctx) {
  case 0:
    return nn_relu(out, in[0]);
  case 1:
    return nn_sigmoid(out, in[0]);
  case 2:
    return nn_tanh(out, in[0]);
  default:
    return nn_gelu(out, in[0], false);
  }
}

static void test_large(void) {
  int64_t sh[2] = {300, 257}; /* 77100 elements > CPU_PAR_MIN */
  for (int op = 0; op < 4; op++)
    for (int nc = 0; nc < 2; nc++) {
      nn_tensor *x = th_rand(2, sh, -3, 3), *g = th_rand(2, sh, -1, 1);
      if (nc) x = noncontig(x);
      req(x);
      nn_tensor *res[2][2] = {{NULL, NULL}, {NULL, NULL}};
      for (int run = 0; run < 2; run++) {
        nn_set_num_threads(run ? 1 : 0);
        nn_tensor *o = NULL;
        OK(act_fn(&op, &x, &o));
        OK(nn_backward(o, g));
        OK(nn_detach(&res[run][0], o));
        res[run][1] = nn_tensor_retain(x->grad);
        nn_tensor_zero_grad(x, true);
        nn_tensor_free(o);
      }
      nn_set_num_threads(0);
      int64_t n = nn_tensor_numel(x);
      double *ry = malloc((size_t)n * sizeof *ry), *rg = malloc((size_t)n * sizeof *rg);
      for (int64_t i = 0; i < n; i++) {
        double v = nn_tensor_get_flat(x, i), gi = nn_tensor_get_flat(g, i), y, d;
        switch (op) {
        case 0:
          y = v > 0 ? v : 0;
          d = v > 0;
          break;
        case 1:
          y = 1 / (1 + exp(-v));
          d = y * (1 - y);
          break;
        case 2:
          y = tanh(v);
          d = 1 - y * y;
          break;
        default:
          y = 0.5 * v * (1 + erf(v / sqrt(2.0)));
          d = 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
        }
        ry[i] = y;
        rg[i] = gi * d;
      }
      char what[64];
      snprintf(what, sizeof what, "large act %d nc %d forward", op, nc);
      th_close(res[0][0], ry, 1e-6, 2e-6, what);
      snprintf(what, sizeof what, "large act %d nc %d backward", op, nc);
      th_close(res[0][1], rg, 1e-6, 1e-5, what);
      for (int k = 0; k < 2; k++)
        CHECK(memcmp(nn_tensor_data(res[0][k]), nn_tensor_data(res[1][k]), (size_t)n * 4) == 0,
              "act %d: %s identical with 1 and all threads", op, k ? "backward" : "forward");
      free(ry);
      free(rg);
      for (int r = 0; r < 2; r++)
        for (int k = 0; k < 2; k++) nn_tensor_free(res[r][k]);
      nn_tensor_free(x);
      nn_tensor_free(g);
    }
}

/* ---- broadcasting binary ops: pow, maximum, minimum ---- */

static const struct {
  int na;
  int64_t a[3];
  int nb;
  int64_t b[3];
} bcast[] = {
    {2, {3, 4}, 2, {3, 4}}, {2, {3, 4}, 1, {4}},    {3, {2, 1, 4}, 2, {3, 1}},
    {1, {5}, 0, {0}},       {2, {1, 4}, 2, {3, 1}},
};

static int bin2_call(int op, nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  switch (op) {
  case 0:
    return nn_pow(out, a, b);
  case 1:
    return nn_maximum(out, a, b);
  default:
    return nn_minimum(out, a, b);
  }
}

static double bin2_ref(int op, double x, double y) {
  if (op == 0) return pow(x, y);
  if (isnan(x) || isnan(y)) return NAN;
  return op == 1 ? fmax(x, y) : fmin(x, y);
}

static int bin2_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return bin2_call(*(int *)ctx, out, in[0], in[1]);
}

/* Values on two interleaved grids (k/5 + 0.05 and k/5 + 0.15), so that a and b never come
 * within 0.1 of each other and finite differences of max/min never cross a tie. */
static void grid(nn_tensor *t, double off) {
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++)
    nn_tensor_set_flat(t, i, floor(nn_tensor_get_flat(t, i) * 5) / 5 + off);
}

static void test_binary2(void) {
  for (int op = 0; op < 3; op++)
    for (size_t c = 0; c < sizeof bcast / sizeof *bcast; c++)
      for (int nc = 0; nc < 2; nc++)
        for (int dt = 0; dt < 2; dt++) {
          nn_dtype d = dt ? NN_DTYPE_F64 : NN_DTYPE_F32;
          nn_tensor *a = op == 0 ? th_rand_dt(bcast[c].na, bcast[c].a, 0.3, 2.0, d)
                                 : th_rand_dt(bcast[c].na, bcast[c].a, -2, 2, d);
          nn_tensor *b = th_rand_dt(bcast[c].nb, bcast[c].b, -2, 2, d);
          if (op) {
            grid(a, 0.05);
            grid(b, 0.15);
          }
          if (nc) {
            a = noncontig(a);
            b = noncontig(b);
          }
          nn_tensor *o = NULL;
          OK(bin2_call(op, &o, a, b));
          char what[64];
          snprintf(what, sizeof what, "binary2 op %d case %zu nc %d dt %d", op, c, nc, dt);
          if (o) {
            int64_t n = nn_tensor_numel(o);
            double *ref = malloc((size_t)n * sizeof *ref);
            nn_tensor *ea = NULL, *eb = NULL;
            nn_expand(&ea, a, o->ndim, o->shape);
            nn_expand(&eb, b, o->ndim, o->shape);
            for (int64_t i = 0; i < n; i++)
              ref[i] = bin2_ref(op, nn_tensor_get_flat(ea, i), nn_tensor_get_flat(eb, i));
            if (dt)
              close_special(o, ref, 1e-14, 1e-12, what);
            else
              close_special(o, ref, 1e-6, 2e-6, what);
            free(ref);
            nn_tensor_free(ea);
            nn_tensor_free(eb);
          }
          nn_tensor_free(o);
          req(a);
          req(b);
          nn_tensor *in[2] = {a, b};
          if (dt)
            th_gradcheck(bin2_fn, &op, 2, in, 1e-6, 1e-8, 1e-6, what);
          else
            th_gradcheck(bin2_fn, &op, 2, in, 1e-3, 2e-3, 2e-2, what);
          nn_tensor_free(a);
          nn_tensor_free(b);
        }
}

/* Conventions at ties, zero bases and NaN. */
static void test_binary2_edges(void) {
  /* ties: a (3, 1) and b (1, 4) all equal: each output element gives half its gradient to each */
  for (int op = 1; op < 3; op++) {
    nn_tensor *a = NULL, *b = NULL, *o = NULL, *s = NULL;
    OK(nn_tensor_full(&a, 2, (int64_t[]){3, 1}, 1.5, NN_DTYPE_F32, nn_cpu));
    OK(nn_tensor_full(&b, 2, (int64_t[]){1, 4}, 1.5, NN_DTYPE_F32, nn_cpu));
    req(a);
    req(b);
    OK(bin2_call(op, &o, a, b));
    OK(nn_sum_dims(&s, o, 3u, false));
    OK(nn_backward(s, NULL));
    if (a->grad && b->grad) {
      CHECK(nn_tensor_get_flat(a->grad, 1) == 2.0, "tie: a gets half of 4, got %g",
            nn_tensor_get_flat(a->grad, 1));
      CHECK(nn_tensor_get_flat(b->grad, 2) == 1.5, "tie: b gets half of 3, got %g",
            nn_tensor_get_flat(b->grad, 2));
    }
    nn_tensor_free(a);
    nn_tensor_free(b);
    nn_tensor_free(o);
    nn_tensor_free(s);
  }
  /* NaN in either operand wins (PyTorch), unlike fmax */
  nn_tensor *a = NULL, *b = NULL, *o = NULL;
  OK(nn_tensor_from_data(&a, 1, (int64_t[]){3}, NN_DTYPE_F32, (float[]){NAN, 1.0f, 2.0f}));
  OK(nn_tensor_from_data(&b, 1, (int64_t[]){3}, NN_DTYPE_F32, (float[]){1.0f, NAN, 3.0f}));
  for (int op = 1; op < 3; op++) {
    OK(bin2_call(op, &o, a, b));
    CHECK(isnan(nn_tensor_get_flat(o, 0)) && isnan(nn_tensor_get_flat(o, 1)),
          "%s: NaN propagates from both sides", op == 1 ? "maximum" : "minimum");
    CHECK(nn_tensor_get_flat(o, 2) == (op == 1 ? 3.0 : 2.0), "max/min of numbers");
    nn_tensor_free(o);
  }
  nn_tensor_free(a);
  nn_tensor_free(b);
  /* pow: d/db at a == 0 with b >= 0 is 0 (not NaN from 0 * log 0); d/da at b == 0 is 0 */
  OK(nn_tensor_from_data(&a, 1, (int64_t[]){3}, NN_DTYPE_F64, (double[]){0.0, 2.0, 0.0}));
  OK(nn_tensor_from_data(&b, 1, (int64_t[]){3}, NN_DTYPE_F64, (double[]){2.0, 0.0, 0.0}));
  req(a);
  req(b);
  nn_tensor *s = NULL;
  OK(nn_pow(&o, a, b));
  close_special(o, (double[]){0.0, 1.0, 1.0}, 0, 0, "pow forward at 0");
  OK(nn_sum_dims(&s, o, 1u, false));
  OK(nn_backward(s, NULL));
  if (a->grad && b->grad) {
    th_close(a->grad, (double[]){0.0, 0.0, 0.0}, 0, 0, "pow da at 0");
    th_close(b->grad, (double[]){0.0, log(2.0), 0.0}, 1e-15, 1e-15, "pow db at a == 0");
  }
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(o);
  nn_tensor_free(s);
}

/* ---- NaN through activations ---- */

static void test_nan(void) {
  nn_tensor *x = NULL, *o = NULL, *s = NULL;
  OK(nn_tensor_from_data(&x, 1, (int64_t[]){4}, NN_DTYPE_F32, (float[]){NAN, -1.0f, 0.5f, 2.0f}));
  req(x);
  OK(nn_relu(&o, x));
  CHECK(isnan(nn_tensor_get_flat(o, 0)), "relu(NaN) is NaN");
  close_special(o, (double[]){NAN, 0.0, 0.5, 2.0}, 0, 0, "relu values");
  nn_tensor *ones = th_rand(1, (int64_t[]){4}, 1, 1);
  OK(nn_backward(o, ones));
  nn_tensor_free(ones);
  CHECK(x->grad && nn_tensor_get_flat(x->grad, 0) == 0.0, "relu gradient at NaN is 0");
  nn_tensor_zero_grad(x, true);
  nn_tensor_free(o);
  OK(nn_clamp(&o, x, 0.0, 1.0));
  close_special(o, (double[]){NAN, 0.0, 0.5, 1.0}, 0, 0, "clamp passes NaN through");
  OK(nn_sum_dims(&s, o, 1u, false));
  OK(nn_backward(s, NULL));
  if (x->grad) th_close(x->grad, (double[]){0.0, 0.0, 1.0, 0.0}, 0, 0, "clamp gradient (0 at NaN)");
  nn_tensor_zero_grad(x, true);
  nn_tensor_free(o);
  nn_tensor_free(s);
  /* clamp includes its bounds in the gradient (PyTorch) */
  OK(nn_clamp(&o, x, -1.0, 2.0));
  OK(nn_sum_dims(&s, o, 1u, false));
  OK(nn_backward(s, NULL));
  if (x->grad) th_close(x->grad, (double[]){0.0, 1.0, 1.0, 1.0}, 0, 0, "clamp gradient at bounds");
  nn_tensor_free(o);
  nn_tensor_free(s);
  OK(nn_leaky_relu(&o, x, 0.1));
  CHECK(isnan(nn_tensor_get_flat(o, 0)), "leaky_relu(NaN) is NaN");
  nn_tensor_free(o);
  OK(nn_sigmoid(&o, x));
  CHECK(isnan(nn_tensor_get_flat(o, 0)), "sigmoid(NaN) is NaN");
  nn_tensor_free(o);
  nn_tensor_free(x);
}

/* ---- comparisons ---- */

static int cmp_call(int op, nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  switch (op) {
  case 0:
    return nn_eq(out, a, b);
  case 1:
    return nn_ne(out, a, b);
  case 2:
    return nn_gt(out, a, b);
  case 3:
    return nn_ge(out, a, b);
  case 4:
    return nn_lt(out, a, b);
  default:
    return nn_le(out, a, b);
  }
}

static int cmp_scalar_call(int op, nn_tensor **out, nn_tensor *a, double s) {
  switch (op) {
  case 0:
    return nn_eq_scalar(out, a, s);
  case 1:
    return nn_ne_scalar(out, a, s);
  case 2:
    return nn_gt_scalar(out, a, s);
  case 3:
    return nn_ge_scalar(out, a, s);
  case 4:
    return nn_lt_scalar(out, a, s);
  default:
    return nn_le_scalar(out, a, s);
  }
}

static double cmp_ref(int op, double x, double y) {
  switch (op) {
  case 0:
    return x == y;
  case 1:
    return x != y;
  case 2:
    return x > y;
  case 3:
    return x >= y;
  case 4:
    return x < y;
  default:
    return x <= y;
  }
}

static void test_compare(void) {
  const nn_dtype dts[3] = {NN_DTYPE_F32, NN_DTYPE_F64, NN_DTYPE_I64};
  for (int op = 0; op < 6; op++)
    for (int di = 0; di < 3; di++)
      for (size_t c = 0; c < sizeof bcast / sizeof *bcast; c++)
        for (int nc = 0; nc < 2; nc++) {
          /* small integers, so that ties occur */
          nn_tensor *a = th_rand_dt(bcast[c].na, bcast[c].a, 0, 3, dts[di]);
          nn_tensor *b = th_rand_dt(bcast[c].nb, bcast[c].b, 0, 3, dts[di]), *o = NULL;
          if (di < 2) {
            grid(a, 0);
            grid(b, 0);
            req(a); /* comparisons never record a graph */
          }
          if (nc) {
            a = noncontig(a);
            b = noncontig(b);
          }
          OK(cmp_call(op, &o, a, b));
          char what[64];
          snprintf(what, sizeof what, "compare %d dtype %d case %zu nc %d", op, di, c, nc);
          if (o) {
            CHECK(o->dtype == (di == 1 ? NN_DTYPE_F64 : NN_DTYPE_F32) && !o->requires_grad &&
                      !o->grad_fn,
                  "%s: result dtype / no graph", what);
            int64_t n = nn_tensor_numel(o);
            double *ref = malloc((size_t)n * sizeof *ref);
            nn_tensor *ea = NULL, *eb = NULL;
            nn_expand(&ea, a, o->ndim, o->shape);
            nn_expand(&eb, b, o->ndim, o->shape);
            for (int64_t i = 0; i < n; i++)
              ref[i] = cmp_ref(op, nn_tensor_get_flat(ea, i), nn_tensor_get_flat(eb, i));
            close_special(o, ref, 0, 0, what);
            free(ref);
            nn_tensor_free(ea);
            nn_tensor_free(eb);
            nn_tensor_free(o);
          }
          /* with a scalar */
          OK(cmp_scalar_call(op, &o, a, 1.0));
          if (o) {
            int64_t n = nn_tensor_numel(a);
            double *ref = th_to_double(a);
            for (int64_t i = 0; i < n; i++) ref[i] = cmp_ref(op, ref[i], 1.0);
            close_special(o, ref, 0, 0, "compare scalar");
            free(ref);
            nn_tensor_free(o);
          }
          nn_tensor_free(a);
          nn_tensor_free(b);
        }
  /* NaN compares false, except ne; the scalar rounds to float32 first */
  nn_tensor *a = NULL, *o = NULL;
  OK(nn_tensor_from_data(&a, 1, (int64_t[]){2}, NN_DTYPE_F32, (float[]){NAN, 0.1f}));
  OK(nn_eq(&o, a, a));
  close_special(o, (double[]){0, 1}, 0, 0, "eq with NaN");
  nn_tensor_free(o);
  OK(nn_ne(&o, a, a));
  close_special(o, (double[]){1, 0}, 0, 0, "ne with NaN");
  nn_tensor_free(o);
  OK(nn_eq_scalar(&o, a, 0.1));
  close_special(o, (double[]){0, 1}, 0, 0, "eq_scalar rounds the scalar to float32");
  nn_tensor_free(o);
  nn_tensor *l = th_randint(1, (int64_t[]){2}, 5), *b = th_rand(1, (int64_t[]){3}, 0, 1);
  EXPECT_ERR(nn_eq(&o, a, l), NN_ERR_DTYPE,
             "eq: operands must share a dtype, got float32 and int64");
  CHECK(o == NULL, "out NULL on error");
  EXPECT_ERR(nn_lt(&o, a, b), NN_ERR_SHAPE, "lt: shapes (2,) and (3,) cannot be broadcast");
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(l);
}

/* ---- where, masked_fill, dropout_mask ---- */

static int where_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_where(out, ctx, in[0], in[1]);
}

static void test_where(void) {
  struct {
    int nc, na, nb;
    int64_t c[3], a[3], b[3];
  } cases[] = {
      {2, 2, 2, {3, 4}, {3, 4}, {3, 4}},
      {
          2,
          2,
          1,
          {3, 1},
          {1, 4},
          {4},
      },
      {1, 3, 2, {4}, {2, 3, 4}, {3, 1}},
      {0, 2, 2, {0}, {2, 3}, {2, 3}},
  };
  const nn_dtype cdts[3] = {NN_DTYPE_F32, NN_DTYPE_F64, NN_DTYPE_I64};
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
    for (int cd = 0; cd < 3; cd++)
      for (int nc = 0; nc < 2; nc++) {
        /* cond values in {0, 1, 2} (and negative for floats): nonzero is true */
        nn_tensor *cond = th_rand_dt(cases[ci].nc, cases[ci].c, cd == 2 ? 0 : -1, 3, cdts[cd]);
        if (cd < 2) grid(cond, 0);
        nn_tensor *a = th_rand(cases[ci].na, cases[ci].a, -1, 1);
        nn_tensor *b = th_rand(cases[ci].nb, cases[ci].b, -1, 1), *o = NULL;
        if (nc) {
          cond = noncontig(cond);
          a = noncontig(a);
          b = noncontig(b);
        }
        OK(nn_where(&o, cond, a, b));
        char what[64];
        snprintf(what, sizeof what, "where case %zu cond dtype %d nc %d", ci, cd, nc);
        if (o) {
          int64_t n = nn_tensor_numel(o);
          double *ref = malloc((size_t)n * sizeof *ref);
          nn_tensor *e[3] = {NULL, NULL, NULL}, *src[3] = {cond, a, b};
          for (int k = 0; k < 3; k++) nn_expand(&e[k], src[k], o->ndim, o->shape);
          for (int64_t i = 0; i < n; i++)
            ref[i] = nn_tensor_get_flat(e[0], i) != 0 ? nn_tensor_get_flat(e[1], i)
                                                      : nn_tensor_get_flat(e[2], i);
          close_special(o, ref, 0, 0, what);
          free(ref);
          for (int k = 0; k < 3; k++) nn_tensor_free(e[k]);
          nn_tensor_free(o);
        }
        req(a);
        req(b);
        nn_tensor *in[2] = {a, b};
        th_gradcheck(where_fn, cond, 2, in, 1e-3, 2e-3, 2e-2, what);
        nn_tensor_free(cond);
        nn_tensor_free(a);
        nn_tensor_free(b);
      }
  nn_tensor *cond = th_rand(1, (int64_t[]){3}, 0, 1), *a = th_rand(2, (int64_t[]){2, 4}, 0, 1);
  nn_tensor *b = th_rand(1, (int64_t[]){4}, 0, 1), *l = th_randint(1, (int64_t[]){4}, 3), *o = NULL;
  EXPECT_ERR(nn_where(&o, cond, a, b), NN_ERR_SHAPE,
             "where: shapes cond (3,), a (2, 4), b (4,) cannot be broadcast");
  CHECK(o == NULL, "out NULL on error");
  EXPECT_ERR(nn_where(&o, b, a, l), NN_ERR_DTYPE,
             "where: operands must be float32 or float64 of one dtype, got float32 and int64");
  nn_tensor_free(cond);
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(l);
}

static int mf_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_masked_fill(out, in[0], ctx, -7.0);
}

static void test_masked_fill(void) {
  struct {
    int nm;
    int64_t m[3];
  } masks[] = {{2, {3, 4}}, {2, {3, 1}}, {1, {4}}, {0, {0}}};
  for (size_t mi = 0; mi < sizeof masks / sizeof *masks; mi++)
    for (int md = 0; md < 2; md++)
      for (int dt = 0; dt < 2; dt++)
        for (int nc = 0; nc < 2; nc++) {
          nn_tensor *mask = md ? th_randint(masks[mi].nm, masks[mi].m, 2)
                               : th_rand(masks[mi].nm, masks[mi].m, 0, 2);
          if (!md) grid(mask, 0);
          nn_tensor *a = th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, dt ? NN_DTYPE_F64 : NN_DTYPE_F32);
          if (nc) {
            a = noncontig(a);
            mask = noncontig(mask);
          }
          req(a);
          nn_tensor *o = NULL;
          OK(nn_masked_fill(&o, a, mask, -7.0));
          char what[64];
          snprintf(what, sizeof what, "masked_fill mask %zu dtype %d dt %d nc %d", mi, md, dt, nc);
          nn_tensor *em = NULL;
          nn_expand(&em, mask, 2, (int64_t[]){3, 4});
          double ref[12], gref[12];
          nn_tensor *g = th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, a->dtype);
          for (int i = 0; i < 12; i++) {
            bool fill = nn_tensor_get_flat(em, i) != 0;
            ref[i] = fill ? -7.0 : nn_tensor_get_flat(a, i);
            gref[i] = fill ? 0.0 : nn_tensor_get_flat(g, i);
          }
          if (o) {
            close_special(o, ref, 0, 0, what);
            OK(nn_backward(o, g));
            if (a->grad) th_close(a->grad, gref, 0, 0, "masked_fill gradient zero where filled");
          }
          nn_tensor_zero_grad(a, true);
          th_gradcheck(mf_fn, mask, 1, &a, 1e-3, 2e-3, 2e-2, what);
          nn_tensor_free(o);
          nn_tensor_free(g);
          nn_tensor_free(em);
          nn_tensor_free(mask);
          nn_tensor_free(a);
        }
  nn_tensor *a = th_rand(2, (int64_t[]){3, 4}, 0, 1), *m = th_randint(1, (int64_t[]){5}, 2),
            *o = NULL;
  EXPECT_ERR(nn_masked_fill(&o, a, m, 0), NN_ERR_SHAPE,
             "masked_fill: mask of shape (5,) does not broadcast to the input's shape (3, 4)");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor *m3 = th_randint(3, (int64_t[]){2, 3, 4}, 2);
  EXPECT_ERR(nn_masked_fill(&o, a, m3, 0), NN_ERR_SHAPE,
             "masked_fill: mask of shape (2, 3, 4) does not broadcast to the input's shape (3, 4)");
  EXPECT_ERR(nn_masked_fill(&o, m, a, 0), NN_ERR_DTYPE, "masked_fill: int64 input");
  nn_tensor_free(a);
  nn_tensor_free(m);
  nn_tensor_free(m3);
}

static int dm_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_dropout_mask(out, in[0], ctx, 1.25);
}

static void test_dropout_mask(void) {
  struct {
    int nm;
    int64_t m[3];
  } masks[] = {{2, {3, 4}}, {2, {1, 4}}, {1, {4}}};
  for (size_t mi = 0; mi < sizeof masks / sizeof *masks; mi++)
    for (int dt = 0; dt < 2; dt++)
      for (int nc = 0; nc < 2; nc++) {
        nn_dtype d = dt ? NN_DTYPE_F64 : NN_DTYPE_F32;
        nn_tensor *mask = th_rand_dt(masks[mi].nm, masks[mi].m, 0, 2, d);
        grid(mask, 0);
        nn_tensor *a = th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, d);
        if (nc) {
          a = noncontig(a);
          mask = noncontig(mask);
        }
        req(a);
        req(mask); /* treated as a constant: receives no gradient */
        nn_tensor *o = NULL, *em = NULL, *g = th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, d);
        OK(nn_dropout_mask(&o, a, mask, 1.25));
        nn_expand(&em, mask, 2, (int64_t[]){3, 4});
        double ref[12], gref[12];
        for (int i = 0; i < 12; i++) {
          double m = nn_tensor_get_flat(em, i);
          ref[i] = nn_tensor_get_flat(a, i) * m * 1.25;
          gref[i] = nn_tensor_get_flat(g, i) * m * 1.25;
        }
        char what[64];
        snprintf(what, sizeof what, "dropout_mask %zu dt %d nc %d", mi, dt, nc);
        if (o) {
          close_special(o, ref, 1e-7, 1e-7, what);
          OK(nn_backward(o, g));
          if (a->grad) th_close(a->grad, gref, 1e-7, 1e-7, "dropout_mask gradient");
          CHECK(mask->grad == NULL, "dropout_mask: no gradient to the mask");
        }
        nn_tensor_zero_grad(a, true);
        th_gradcheck(dm_fn, mask, 1, &a, 1e-3, 2e-3, 2e-2, what);
        nn_tensor_free(o);
        nn_tensor_free(g);
        nn_tensor_free(em);
        nn_tensor_free(mask);
        nn_tensor_free(a);
      }
  nn_tensor *a = th_rand(2, (int64_t[]){3, 4}, 0, 1), *m = th_rand(1, (int64_t[]){3}, 0, 1);
  nn_tensor *m64 = th_rand_dt(1, (int64_t[]){4}, 0, 1, NN_DTYPE_F64), *o = NULL;
  EXPECT_ERR(nn_dropout_mask(&o, a, m, 2.0), NN_ERR_SHAPE,
             "dropout_mask: mask of shape (3,) does not broadcast to the input's shape (3, 4)");
  CHECK(o == NULL, "out NULL on error");
  EXPECT_ERR(
      nn_dropout_mask(&o, a, m64, 2.0), NN_ERR_DTYPE,
      "dropout_mask: operands must be float32 or float64 of one dtype, got float32 and float64");
  nn_tensor_free(a);
  nn_tensor_free(m);
  nn_tensor_free(m64);
}

/* ---- in place t *= x ---- */

static void test_mul_(void) {
  for (int dt = 0; dt < 2; dt++) {
    nn_dtype d = dt ? NN_DTYPE_F64 : NN_DTYPE_F32;
    nn_tensor *t = noncontig(th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, d));
    nn_tensor *x = th_rand_dt(1, (int64_t[]){4}, -1, 1, d);
    double ref[12];
    for (int i = 0; i < 12; i++) ref[i] = nn_tensor_get_flat(t, i) * nn_tensor_get_flat(x, i % 4);
    void *before = nn_tensor_data(t);
    OK(nn_mul_(t, x));
    CHECK(nn_tensor_data(t) == before, "mul_ writes in place");
    th_close(t, ref, 1e-7, 1e-7, "mul_");
    nn_tensor_free(t);
    nn_tensor_free(x);
  }
  nn_tensor *t = th_rand(2, (int64_t[]){3, 4}, 0, 1), *x = th_rand(2, (int64_t[]){3, 5}, 0, 1);
  EXPECT_ERR(nn_mul_(t, x), NN_ERR_SHAPE, "mul_: shape (3, 5) does not broadcast to (3, 4)");
  nn_tensor_free(x);
  x = th_rand_dt(1, (int64_t[]){4}, 0, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_mul_(t, x), NN_ERR_DTYPE, "mul_: operands must be float32 or float64 of one dtype");
  nn_tensor_free(x);
  nn_tensor_free(t);
}

/* ---- bad input to the unary ops and maximum ---- */

static void test_errors(void) {
  nn_tensor *l = th_randint(2, (int64_t[]){2, 3}, 5), *x = th_rand(2, (int64_t[]){2, 3}, 0, 1);
  nn_tensor *o = (nn_tensor *)&o; /* not NULL: the call must reset it */
  EXPECT_ERR(nn_exp(&o, l), NN_ERR_DTYPE, "exp: int64 input; convert to float first");
  CHECK(o == NULL, "out NULL on error");
  EXPECT_ERR(nn_relu(&o, l), NN_ERR_DTYPE, "relu: int64 input");
  EXPECT_ERR(nn_gelu(&o, l, true), NN_ERR_DTYPE, "gelu: int64 input");
  EXPECT_ERR(nn_clamp(&o, x, NAN, 1), NN_ERR_ARG, "clamp: bounds must not be NaN");
  CHECK(o == NULL, "out NULL on error");
  EXPECT_ERR(nn_softplus(&o, x, 0, 20), NN_ERR_ARG, "softplus: beta must be nonzero");
  nn_tensor *y = th_rand(1, (int64_t[]){2}, 0, 1);
  EXPECT_ERR(nn_maximum(&o, x, y), NN_ERR_SHAPE,
             "maximum: shapes (2, 3) and (2,) cannot be broadcast");
  EXPECT_ERR(nn_minimum(&o, x, l), NN_ERR_DTYPE, "minimum: operands must be float32 or float64");
  EXPECT_ERR(nn_pow(&o, x, y), NN_ERR_SHAPE, "pow: shapes (2, 3) and (2,) cannot be broadcast");
  nn_tensor_free(l);
  nn_tensor_free(x);
  nn_tensor_free(y);
}

int main(void) {
  th_seed(2);
  test_unary();
  test_f32_math();
  test_backward_kernel_strided();
  test_large();
  test_binary2();
  test_binary2_edges();
  test_nan();
  test_compare();
  test_where();
  test_masked_fill();
  test_dropout_mask();
  test_mul_();
  test_errors();
  return th_done();
}
