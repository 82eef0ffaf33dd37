/* nn/tests/test_backend_ops.c: the op-conformance suite (ggml's test-backend-ops idea): every
 * kernel of the op list, forward and backward, through the op front-ends, on every built device
 * backend against the CPU reference. CTest label "gpu"; exits 77 with "skipped: no GPU" when
 * the CUDA backend is not built or cudaGetDeviceCount reports no device.
 *
 * Each case builds fresh random inputs on the CPU, lays them out the same way on both devices
 * (contiguous, every other element of a wider tensor, or a transposed view), runs the op and
 * the backward of sum(out * R) (R random) on both, and compares outputs and input gradients
 * within the case's tolerances (atol + rtol * |reference|; NaN must meet NaN, integers exactly).
 * The device backend is wrapped so that every kernel call first fills its outputs with NaN
 * (int64 outputs with a sentinel): an element a kernel forgets to write shows up as a mismatch.
 * The whole suite runs twice: normally, then in deterministic mode, where every case also runs
 * twice on the device and the two runs must agree bit for bit. Tolerances: float32 kernels that
 * use CUDA's math library or a different summation order agree to a few ulp (rtol 1e-5 .. 1e-4);
 * products and convolutions of K terms sum in another order (rtol 1e-4 at K <= 800); float64 and
 * the integer-valued results (argmax, sort indices, pooling argmax, random draws) match exactly.
 * Kernels the device may leave unset (the fused conv2d+relu+max_pool2d ops) must then give
 * "<op> is not implemented on <device>". */
#include "backend.h"
#include "gyro_dropout.h"
#include "harness.h"
#include "module.h"
#include "ops_block.h"
#include "optim.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- the poisoning wrapper */

static const nn_backend_i *dev_be; /* the real backend */
static nn_backend_i wrapped;

/* Inputs of kernel op (nn_dispatch passes exactly these); new ops default to one. */
static int n_inputs(int op, const nn_op_params *p) {
  switch (op) {
  case NN_OP_FILL:
  case NN_OP_RNG_UNIFORM:
  case NN_OP_RNG_NORMAL:
  case NN_OP_RNG_BERNOULLI:
    return 0;
  case NN_OP_COMPARE:
    return p->i[1] ? 1 : 2;
  case NN_OP_BINARY:
  case NN_OP_MATMUL:
  case NN_OP_UNARY_BACKWARD:
  case NN_OP_MASKED_FILL:
  case NN_OP_MUL_SCALED:
  case NN_OP_GATHER:
  case NN_OP_SCATTER_ADD:
  case NN_OP_SELECT_BACKWARD:
  case NN_OP_SOFTMAX_BACKWARD:
  case NN_OP_CROSS_ENTROPY:
  case NN_OP_CROSS_ENTROPY_SOFT:
  case NN_OP_NLL_LOSS:
  case NN_OP_NLL_LOSS_BACKWARD:
  case NN_OP_MSE_LOSS:
  case NN_OP_CONV2D_BACKWARD_INPUT:
  case NN_OP_CONV2D_BACKWARD_WEIGHT:
  case NN_OP_MAXPOOL2D_BACKWARD:
    return 2;
  case NN_OP_BINARY_BACKWARD:
  case NN_OP_WHERE:
  case NN_OP_VAR_BACKWARD:
  case NN_OP_CONV2D:
  case NN_OP_LAYERNORM:
  case NN_OP_MSE_LOSS_BACKWARD:
  case NN_OP_SGD_STEP:
    return 3;
  case NN_OP_CROSS_ENTROPY_BACKWARD:
  case NN_OP_CROSS_ENTROPY_SOFT_BACKWARD:
  case NN_OP_ADAM_STEP:
  case NN_OP_BATCHNORM_BACKWARD_REDUCE:
  case NN_OP_LAYERNORM_BACKWARD_WEIGHT:
    return 4;
  case NN_OP_BATCHNORM:
  case NN_OP_LAYERNORM_BACKWARD:
  case NN_OP_RMSPROP_STEP:
  case NN_OP_BLOCK_LINEAR:
  case NN_OP_BLOCK_LINEAR_BACKWARD:
    return 5;
  case NN_OP_BATCHNORM_BACKWARD:
    return 6;
  default:
    return 1;
  }
}

/* Outputs of kernel op that it must write completely: bit k for out[k]. Outputs that share
 * memory with an input (in-place updates: add_, the running statistics, scatter_add's base,
 * an accumulating matmul) are left alone. */
static int poison_mask(int op, nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  int mask;
  switch (op) {
  case NN_OP_SGD_STEP:
  case NN_OP_ADAM_STEP:
  case NN_OP_RMSPROP_STEP:
  case NN_OP_SCATTER_ADD:
    return 0;
  case NN_OP_MATMUL:
    mask = p->i[0] ? 0 : 1;
    break;
  case NN_OP_MAX:
  case NN_OP_VAR:
  case NN_OP_SORT:
  case NN_OP_MAXPOOL2D:
    mask = 3;
    break;
  case NN_OP_LAYERNORM:
  case NN_OP_BATCHNORM:
    mask = 7;
    break; /* batch norm's 3, 4 update in place */
  case NN_OP_CROSS_ENTROPY:
  case NN_OP_CROSS_ENTROPY_SOFT:
  case NN_OP_NLL_LOSS:
    mask = 7;
    break;
  case NN_OP_CONV2D_BACKWARD_WEIGHT:
    mask = p->i[7] ? 3 : 1;
    break;
  case NN_OP_CROSS_ENTROPY_SOFT_BACKWARD:
  case NN_OP_MSE_LOSS_BACKWARD:
    mask = (p->i[1] & 3) == 3 ? 3 : 1;
    break;
  case NN_OP_BLOCK_LINEAR_BACKWARD: /* dx, dw, dbias as flagged, all written in full */
    mask = (1 << __builtin_popcount((unsigned)(p->i[5] & 7))) - 1;
    break;
  default:
    mask = 1;
  }
  int ni = n_inputs(op, p);
  for (int k = 0; k < 3; k++)
    for (int j = 0; j < ni && (mask >> k & 1); j++)
      if (out[k] && in[j] && in[j]->storage == out[k]->storage) mask &= ~(1 << k);
  return mask;
}

/* off during the reference run (which goes through the wrapper too with --self) */
static bool poison_on;
static long n_poisoned;

static int poisoned_call(int op, nn_tensor *const *out, nn_tensor *const *in,
                         const nn_op_params *p) {
  int mask = poison_on ? poison_mask(op, out, in, p) : 0;
  for (int k = 0; k < 3; k++) {
    if (!(mask & (1 << k)) || !out[k]) continue;
    nn_op_params f = {0};
    f.f[0] = out[k]->dtype == NN_DTYPE_I64 ? -123456789.0 : NAN;
    nn_tensor *o = out[k];
    int rc = dev_be->kernels[NN_OP_FILL](&o, NULL, &f);
    if (rc) return rc;
    n_poisoned++;
  }
  return dev_be->kernels[op](out, in, p);
}

#define NN_OP(id, name)                                                                            \
  static int wrap_##id(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {       \
    return poisoned_call(NN_OP_##id, out, in, p);                                                  \
  }
#include "ops.def"
#undef NN_OP

static void install_wrapper(nn_device_type d) {
  dev_be = nn_backend_get(d);
  wrapped = *dev_be;
#define NN_OP(id, name)                                                                            \
  wrapped.kernels[NN_OP_##id] = dev_be->kernels[NN_OP_##id] ? wrap_##id : NULL;
#include "ops.def"
#undef NN_OP
  nn_backend_register(d, &wrapped);
}

/* ---------------------------------------------------------------- cases */

#define MAX_IN 6
#define MAX_OUT 6

typedef struct tcase tcase;
typedef int (*case_fn)(const tcase *c, nn_tensor **in, nn_tensor **out, int *n_out);
struct tcase {
  const char *name;
  case_fn fn;
  int n_in;
  nn_tensor *in[MAX_IN]; /* CPU values (owned) */
  int layout[MAX_IN];    /* 0 contiguous, 1 every other element, 2 transposed last two dims */
  unsigned grad;         /* bit i: input i requires grad */
  double atol, rtol;
  int64_t i[8];
  double f[4];
};

static nn_device cur_dev;
static bool det_pass;
/* the device under test: cuda, or the CPU itself with --self (checks this harness anywhere) */
static nn_device_type test_dev = NN_DEVICE_CUDA;

/* A leaf on dev holding src's values in the given layout. */
static nn_tensor *place(const nn_tensor *src, int layout, nn_device dev, bool req) {
  nn_tensor *base = NULL, *v = NULL, *s = NULL;
  int64_t sh[NN_MAX_DIMS];
  int nd = src->ndim;
  memcpy(sh, src->shape, sizeof sh);
  if (layout == 1 && nd >= 1) sh[nd - 1] *= 2;
  if (layout == 2 && nd >= 2) sh[nd - 1] = src->shape[nd - 2], sh[nd - 2] = src->shape[nd - 1];
  int rc = nn_to_device(&s, (nn_tensor *)src, dev);
  if (!rc) rc = nn_tensor_zeros(&base, nd, sh, src->dtype, dev);
  if (!rc) {
    if (layout == 1 && nd >= 1)
      rc = nn_slice(&v, base, -1, 0, sh[nd - 1], 2);
    else if (layout == 2 && nd >= 2)
      rc = nn_transpose(&v, base, -1, -2);
    else
      v = nn_tensor_retain(base);
  }
  if (!rc) rc = nn_copy_(v, s);
  if (!rc && req) rc = nn_tensor_set_requires_grad(v, true);
  if (rc) {
    fprintf(stderr, "place: %s\n", nn_errmsg());
    exit(2);
  }
  nn_tensor_free(base);
  nn_tensor_free(s);
  return v;
}

/* CPU contiguous copy (no graph). */
static nn_tensor *to_cpu(nn_tensor *t) {
  bool prev = nn_set_grad_enabled(false);
  nn_tensor *o = NULL, *c = NULL;
  if (nn_to_device(&o, t, nn_cpu) || nn_contiguous(&c, o)) {
    fprintf(stderr, "to_cpu: %s\n", nn_errmsg());
    exit(2);
  }
  nn_tensor_free(o);
  nn_set_grad_enabled(prev);
  return c;
}

typedef struct {
  int rc;
  char msg[256];
  int n;
  nn_tensor *t[2 * MAX_OUT]; /* CPU copies: outputs, then input grads */
} results;

static void results_free(results *r) {
  for (int k = 0; k < r->n; k++) nn_tensor_free(r->t[k]);
  r->n = 0;
}

/* Runs case c on dev; R (random weights of the backward, made on the CPU run) are reused. */
static void run_on(const tcase *c, nn_device dev, nn_tensor **R, results *res) {
  nn_tensor *in[MAX_IN] = {0}, *out[MAX_OUT] = {0}, *loss = NULL;
  int n_out = 0;
  memset(res, 0, sizeof *res);
  cur_dev = dev;
  for (int k = 0; k < c->n_in; k++)
    in[k] = c->in[k] ? place(c->in[k], c->layout[k], dev, (c->grad >> k) & 1) : NULL;
  res->rc = c->fn(c, in, out, &n_out);
  if (res->rc) {
    snprintf(res->msg, sizeof res->msg, "%s", nn_errmsg());
    goto done;
  }
  for (int k = 0; k < n_out; k++) res->t[res->n++] = to_cpu(out[k]);
  if (c->grad) {
    for (int k = 0; k < n_out; k++) {
      if (out[k]->dtype == NN_DTYPE_I64 || !out[k]->requires_grad) continue;
      if (!R[k]) R[k] = th_rand_dt(out[k]->ndim, out[k]->shape, -1, 1, out[k]->dtype);
      nn_tensor *r = NULL, *p = NULL, *s = NULL, *acc = NULL;
      OK(nn_to_device(&r, R[k], dev));
      OK(nn_mul(&p, out[k], r));
      OK(nn_sum_all(&s, p));
      if (loss) {
        OK(nn_add(&acc, loss, s));
        nn_tensor_free(loss);
        nn_tensor_free(s);
        loss = acc;
      } else {
        loss = s;
      }
      nn_tensor_free(r);
      nn_tensor_free(p);
    }
    if (loss) {
      int rc = nn_backward(loss, NULL);
      CHECK(rc == NN_OK, "%s: backward on %s: %s", c->name, nn_device_name(dev.type), nn_errmsg());
    }
    for (int k = 0; k < c->n_in; k++)
      if ((c->grad >> k) & 1 && in[k]->grad) res->t[res->n++] = to_cpu(in[k]->grad);
  }
done:
  nn_tensor_free(loss);
  for (int k = 0; k < n_out; k++) nn_tensor_free(out[k]);
  for (int k = 0; k < c->n_in; k++) nn_tensor_free(in[k]);
}

/* a (reference) against b within atol + rtol |a|; exact bits when exact */
static int compare(const char *what, const nn_tensor *a, const nn_tensor *b, double atol,
                   double rtol, bool exact) {
  char s1[128], s2[128];
  if (a->dtype != b->dtype || !nn_tensor_same_shape(a, b)) {
    fprintf(stderr, "FAIL %s: reference %s %s, device %s %s\n", what, nn_dtype_name(a->dtype),
            nn_shape_str(a, s1, sizeof s1), nn_dtype_name(b->dtype),
            nn_shape_str(b, s2, sizeof s2));
    return 0;
  }
  bool ints = a->dtype == NN_DTYPE_I64;
  for (int64_t i = 0; i < nn_tensor_numel(a); i++) {
    double r = nn_tensor_get_flat(a, i), v = nn_tensor_get_flat(b, i);
    bool ok;
    if (isnan(r) || isnan(v))
      ok = isnan(r) && isnan(v);
    else if (ints || exact || isinf(r))
      ok = r == v;
    else
      ok = fabs(v - r) <= atol + rtol * fabs(r);
    if (!ok) {
      fprintf(stderr, "FAIL %s: element %lld is %.9g, reference %.9g (shape %s)\n", what,
              (long long)i, v, r, nn_shape_str(a, s1, sizeof s1));
      return 0;
    }
  }
  return 1;
}

static int n_cases;

static void check_case(tcase *c) {
  nn_tensor *R[MAX_OUT] = {0};
  results ref, got, again;
  n_cases++;
  poison_on = false;
  run_on(c, nn_cpu, R, &ref);
  poison_on = true;
  nn_device d = {test_dev, 0};
  const char *dn = nn_device_name(test_dev);
  run_on(c, d, R, &got);
  CHECK(ref.rc == got.rc, "%s: cpu returned %d (%s), %s %d (%s)", c->name, ref.rc, ref.msg, dn,
        got.rc, got.msg);
  if (ref.rc && ref.rc == got.rc)
    CHECK(!strcmp(ref.msg, got.msg), "%s: cpu says \"%s\", %s \"%s\"", c->name, ref.msg, dn,
          got.msg);
  if (!ref.rc && !got.rc) {
    CHECK(ref.n == got.n, "%s: %d results on cpu, %d on %s", c->name, ref.n, got.n, dn);
    for (int k = 0; k < ref.n && k < got.n; k++) {
      char what[160];
      snprintf(what, sizeof what, "%s%s: %s %d", c->name, det_pass ? " (deterministic)" : "",
               k < ref.n - __builtin_popcount(c->grad) || !c->grad ? "output" : "grad", k);
      CHECK(compare(what, ref.t[k], got.t[k], c->atol, c->rtol, c->atol < 0), "see above");
    }
    if (det_pass) { /* a second device run: the same bits */
      run_on(c, d, R, &again);
      CHECK(again.rc == got.rc && again.n == got.n, "%s: second run differs", c->name);
      for (int k = 0; k < got.n && k < again.n; k++) {
        char what[160];
        snprintf(what, sizeof what, "%s: deterministic rerun, result %d", c->name, k);
        CHECK(compare(what, got.t[k], again.t[k], 0, 0, true), "see above");
      }
      results_free(&again);
    }
  }
  results_free(&ref);
  results_free(&got);
  for (int k = 0; k < MAX_OUT; k++) nn_tensor_free(R[k]);
}

static void case_free(tcase *c) {
  for (int k = 0; k < c->n_in; k++) nn_tensor_free(c->in[k]);
}

#define SH(...) (int64_t[]){__VA_ARGS__}, sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)
static nn_tensor *rnd(const int64_t *sh, int nd, double lo, double hi) {
  return th_rand(nd, sh, lo, hi);
}
static nn_tensor *rndd(const int64_t *sh, int nd, double lo, double hi) {
  return th_rand_dt(nd, sh, lo, hi, NN_DTYPE_F64);
}
static nn_tensor *ints(const int64_t *sh, int nd, int64_t n) { return th_randint(nd, sh, n); }
/* integer-valued floats in [0, n): ties for max/sort/pool */
static nn_tensor *tied(const int64_t *sh, int nd, int64_t n) {
  nn_tensor *i = th_randint(nd, sh, n), *f = NULL;
  nn_to_dtype(&f, i, NN_DTYPE_F32);
  nn_tensor_free(i);
  return f;
}
/* sets a few elements to NaN */
static nn_tensor *with_nans(nn_tensor *t, int k) {
  for (int j = 0; j < k; j++)
    nn_tensor_set_flat(t, (int64_t)(th_uniform() * (double)nn_tensor_numel(t)), NAN);
  return t;
}

/* ---------------------------------------------------------------- case functions */

static int f_binary(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  int (*fs[])(nn_tensor **, nn_tensor *, nn_tensor *) = {nn_add, nn_sub,     nn_mul,    nn_div,
                                                         nn_pow, nn_maximum, nn_minimum};
  *n = 1;
  return fs[c->i[0]](&out[0], in[0], in[1]);
}

static int f_scalar(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  switch (c->i[0]) {
  case 0:
    return nn_add_scalar(&out[0], in[0], c->f[0]);
  case 1:
    return nn_mul_scalar(&out[0], in[0], c->f[0]);
  case 2:
    return nn_rsub_scalar(&out[0], in[0], c->f[0]);
  case 3:
    return nn_rdiv_scalar(&out[0], in[0], c->f[0]);
  default:
    return nn_pow_scalar(&out[0], in[0], c->f[0]);
  }
}

static int f_unary(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  nn_tensor *x = in[0], **o = &out[0];
  *n = 1;
  switch (c->i[0]) {
  case 0:
    return nn_neg(o, x);
  case 1:
    return nn_exp(o, x);
  case 2:
    return nn_log(o, x);
  case 3:
    return nn_sqrt(o, x);
  case 4:
    return nn_rsqrt(o, x);
  case 5:
    return nn_abs(o, x);
  case 6:
    return nn_pow_scalar(o, x, 3.0);
  case 7:
    return nn_clamp(o, x, -0.5, 0.5);
  case 8:
    return nn_relu(o, x);
  case 9:
    return nn_leaky_relu(o, x, 0.1);
  case 10:
    return nn_tanh(o, x);
  case 11:
    return nn_sigmoid(o, x);
  case 12:
    return nn_gelu(o, x, false);
  case 13:
    return nn_gelu(o, x, true);
  default:
    return nn_softplus(o, x, 2.0, 5.0);
  }
}

static int f_compare(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  int (*fs[])(nn_tensor **, nn_tensor *, nn_tensor *) = {nn_eq, nn_ne, nn_gt, nn_ge, nn_lt, nn_le};
  int (*fss[])(nn_tensor **, nn_tensor *, double) = {nn_eq_scalar, nn_ne_scalar, nn_gt_scalar,
                                                     nn_ge_scalar, nn_lt_scalar, nn_le_scalar};
  *n = 1;
  return c->i[1] ? fss[c->i[0]](&out[0], in[0], c->f[0]) : fs[c->i[0]](&out[0], in[0], in[1]);
}

static int f_where(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  if (c->i[0] == 0) return nn_where(&out[0], in[0], in[1], in[2]);
  if (c->i[0] == 1) return nn_masked_fill(&out[0], in[1], in[0], -7.0);
  return nn_dropout_mask(&out[0], in[1], in[0], 2.0);
}

static int f_copy(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  if (c->i[0] == 3) { /* fill and copy into a strided view */
    nn_tensor *z = NULL, *v = NULL;
    int rc = nn_tensor_zeros(&z, 2, (int64_t[]){in[0]->shape[0], 2 * in[0]->shape[1]}, NN_DTYPE_F32,
                             cur_dev);
    if (!rc) rc = nn_slice(&v, z, 1, 1, 2 * in[0]->shape[1], 2);
    if (!rc) rc = nn_fill_(v, 3.5);
    if (!rc) rc = nn_copy_(v, in[0]);
    nn_tensor_free(v);
    out[0] = z;
    return rc;
  }
  if (c->i[0] == 4) return nn_contiguous(&out[0], in[0]);
  return nn_to_dtype(&out[0], in[0], (nn_dtype)c->i[1]);
}

static int f_matmul(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  if (c->i[0]) return nn_linear(&out[0], in[0], in[1], in[2]);
  return nn_matmul(&out[0], in[0], in[1]);
}

static int f_sum(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  switch (c->i[0]) {
  case 0:
    return nn_sum_dims(&out[0], in[0], (unsigned)c->i[1], c->i[2]);
  case 1:
    return nn_mean(&out[0], in[0], (int)c->i[1], c->i[2]);
  case 2:
    return nn_sum_all(&out[0], in[0]);
  default:
    return nn_var(&out[0], in[0], (int)c->i[1], c->i[2], 1);
  }
}

static int f_max(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 2;
  return c->i[1] ? nn_min(&out[0], &out[1], in[0], (int)c->i[0], c->i[2])
                 : nn_max(&out[0], &out[1], in[0], (int)c->i[0], c->i[2]);
}

static int f_softmax(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  return c->i[1] ? nn_log_softmax(&out[0], in[0], (int)c->i[0])
                 : nn_softmax(&out[0], in[0], (int)c->i[0]);
}

static int f_loss(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  nn_reduction red = (nn_reduction)c->i[1];
  switch (c->i[0]) {
  case 0:
    return nn_cross_entropy(&out[0], in[0], in[1], red);
  case 1:
    return nn_cross_entropy_soft(&out[0], in[0], in[1], red);
  case 2: {
    nn_tensor *lp = NULL;
    int rc = nn_log_softmax(&lp, in[0], 1);
    if (!rc) rc = nn_nll_loss(&out[0], lp, in[1], red);
    nn_tensor_free(lp);
    return rc;
  }
  default:
    return nn_mse_loss(&out[0], in[0], in[1], red);
  }
}

static int f_sort(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 2;
  if (c->i[2] >= 0) return nn_topk(&out[0], &out[1], in[0], c->i[2], (int)c->i[0], c->i[1], true);
  return nn_sort(&out[0], &out[1], in[0], (int)c->i[0], c->i[1]);
}

static int f_conv(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  nn_conv2d_opts o = {{(int)c->i[0], (int)c->i[1]},
                      {(int)c->i[2], (int)c->i[3]},
                      {(int)c->i[4], (int)c->i[5]},
                      (int)c->i[6]};
  *n = 1;
  return nn_conv2d(&out[0], in[0], in[1], in[2], &o);
}

static int f_pool(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  int k[2] = {(int)c->i[1], (int)c->i[1]}, s[2] = {(int)c->i[2], (int)c->i[2]},
      p[2] = {(int)c->i[3], (int)c->i[3]};
  *n = 1;
  if (c->i[0] == 0) return nn_max_pool2d(&out[0], in[0], k, s, p);
  if (c->i[0] == 1) return nn_avg_pool2d(&out[0], in[0], k, s, p, c->i[4]);
  return nn_global_avg_pool2d(&out[0], in[0]);
}

static int f_norm(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  if (c->i[0] == 2) {
    *n = 1;
    return nn_layer_norm(&out[0], in[0], (int)c->i[1], in[1], in[2], 1e-5);
  }
  /* batch norm: the running statistics are outputs too (updated in place in training) */
  int64_t C = in[0]->shape[1];
  nn_tensor *rm = NULL, *rv = NULL;
  int rc = nn_tensor_zeros(&rm, 1, &C, in[0]->dtype, cur_dev);
  if (!rc) rc = nn_tensor_full(&rv, 1, &C, 1.5, in[0]->dtype, cur_dev);
  if (!rc) rc = nn_batch_norm(&out[0], in[0], in[1], in[2], rm, rv, c->i[0] == 0, 0.1, 1e-5);
  out[1] = rm;
  out[2] = rv;
  *n = rc ? 0 : 3;
  if (rc) nn_tensor_free(rm), nn_tensor_free(rv), out[1] = out[2] = NULL;
  return rc;
}

static int f_index(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  switch (c->i[0]) {
  case 0:
    return nn_embedding(&out[0], in[0], in[1]);
  case 1:
    return nn_index_select(&out[0], in[0], (int)c->i[1], in[1]);
  case 2:
    return nn_gather(&out[0], in[0], (int)c->i[1], in[1]);
  case 3:
    return nn_scatter_add(&out[0], in[0], (int)c->i[1], in[1], in[2]);
  case 4:
    return nn_one_hot(&out[0], in[1], c->i[1]);
  case 5:
    return nn_concat(&out[0], 2, in, (int)c->i[1]);
  case 6:
    return nn_stack(&out[0], 2, in, (int)c->i[1]);
  default: {
    nn_tensor *parts[2] = {0};
    int rc = nn_split(parts, in[0], 2, (int64_t[]){1, in[0]->shape[c->i[1]] - 1}, (int)c->i[1]);
    if (!rc) rc = nn_mul(&out[0], parts[1], parts[1]);
    nn_tensor_free(parts[0]);
    nn_tensor_free(parts[1]);
    return rc;
  }
  }
}

/* draws with the same seed on either device: out = the drawn tensor */
static int f_rng(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  nn_rng r;
  nn_rng_init(&r, 1234 + (uint64_t)c->i[1], 7);
  r.offset = 3;
  *n = 1;
  if (c->i[0] == 3) return nn_categorical(&out[0], in[0], 257, &r);
  int64_t sh[2] = {37, 11};
  int rc = nn_tensor_empty(&out[0], 2, sh, (nn_dtype)c->i[2], cur_dev);
  if (rc) return rc;
  if (c->i[0] == 0)
    rc = nn_uniform_(out[0], -2.0, 3.0, &r);
  else if (c->i[0] == 1)
    rc = nn_normal_(out[0], 0.5, 2.0, &r);
  else
    rc = nn_bernoulli_(out[0], 0.3, &r);
  return rc;
}

/* a few optimizer steps on the inputs (parameter, grads): out = the parameter */
static int f_optim(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  nn_tensor *w = NULL;
  int rc = nn_clone(&w, in[0]);
  nn_tensor *wd = NULL;
  if (!rc) rc = nn_detach(&wd, w);
  nn_tensor_free(w);
  if (rc) return rc;
  nn_tensor_set_requires_grad(wd, true);
  nn_optim_opts o = nn_optim_defaults((nn_optim_kind)c->i[0]);
  o.lr = 0.05;
  o.momentum = c->f[0];
  o.nesterov = c->i[1];
  o.centered = c->i[2];
  o.weight_decay = c->f[1];
  nn_optim *opt = NULL;
  rc = nn_optim_new(&opt, (nn_optim_kind)c->i[0], 1, &wd, &o);
  for (int s = 0; !rc && s < 3; s++) {
    nn_tensor *g = NULL;
    rc = nn_mul_scalar(&g, in[1], 1.0 + s);
    if (!rc) {
      nn_tensor_free(wd->grad);
      wd->grad = g;
      rc = nn_optim_step(opt);
    }
  }
  nn_optim_free(opt);
  nn_tensor_set_requires_grad(wd, false);
  out[0] = wd;
  *n = 1;
  return rc;
}

/* Moves model m (taken) to the device under test and trains it three SGD steps on in[0], in[1]:
 * out[0] = the stacked losses, then the first parameter and, with last, the last one. */
static int train3(nn_module *m, nn_tensor **in, nn_tensor **out, int *n, bool last) {
  int rc = nn_module_to(m, cur_dev);
  nn_named *ps = NULL;
  int np = 0;
  if (!rc) rc = nn_module_parameters(m, &ps, &np);
  nn_tensor *pt[8];
  for (int k = 0; k < np && k < 8; k++) pt[k] = ps[k].t;
  nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
  o.lr = 0.1;
  o.momentum = 0.9;
  nn_optim *opt = NULL;
  if (!rc) rc = nn_optim_new(&opt, NN_OPTIM_SGD, np, pt, &o);
  nn_tensor *losses[3] = {0};
  for (int s = 0; !rc && s < 3; s++) {
    nn_tensor *y = NULL;
    rc = nn_module_forward(m, in[0], &y);
    if (!rc) rc = nn_cross_entropy(&losses[s], y, in[1], NN_REDUCTION_MEAN);
    nn_tensor_free(y);
    nn_optim_zero_grad(opt, true);
    if (!rc) rc = nn_backward(losses[s], NULL);
    if (!rc) rc = nn_optim_step(opt);
  }
  if (!rc) rc = nn_stack(&out[0], 3, losses, 0);
  if (!rc) out[1] = nn_tensor_retain(ps[0].t);
  if (!rc && last) out[2] = nn_tensor_retain(ps[np - 1].t);
  for (int s = 0; s < 3; s++) nn_tensor_free(losses[s]);
  nn_named_list_free(ps, np);
  nn_optim_free(opt);
  nn_module_free(m);
  *n = rc ? 0 : last ? 3 : 2;
  if (rc) nn_tensor_free(out[0]), out[0] = NULL;
  return rc;
}

/* a small MLP moved with nn_module_to, three SGD steps: out = the losses and a parameter */
static int f_model(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  (void)c;
  nn_manual_seed(5);
  nn_module *l[3], *m = NULL;
  int rc = nn_linear_new(&l[0], 12, 16, true);
  if (!rc) rc = nn_activation_new(&l[1], NN_ACT_GELU, 0);
  if (!rc) rc = nn_linear_new(&l[2], 16, 4, true);
  if (!rc) rc = nn_sequential_new(&m, 3, l);
  for (int k = 0; k < 3; k++) nn_module_free(l[k]);
  if (rc) return rc;
  return train3(m, in, out, n, false);
}

/* block-wise dropout's products: i[0] 0 block_linear (in: x, w, bias?, kin?, kout?; block sizes
 * i[1], i[2]), 1 block_mask_expand (in0 the mask; i[1] rows, i[2] block size) */
static int f_block(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  *n = 1;
  if (c->i[0] == 1) return nn_block_mask_expand(&out[0], in[0], c->i[1], c->i[2]);
  return nn_block_linear(&out[0], in[0], in[1], in[2], in[3], c->i[1], in[4], c->i[2]);
}

/* A (G, nb) block mask of 0/1 flags (keep 1/2); row zero_row (if >= 0) drops every block, and
 * one kept flag is 2 (any nonzero keeps). */
static nn_tensor *bmask(int64_t G, int64_t nb, int64_t zero_row) {
  nn_tensor *m = tied((int64_t[]){G, nb}, 2, 2);
  for (int64_t b = 0; zero_row >= 0 && b < nb; b++) nn_tensor_set_flat(m, zero_row * nb + b, 0);
  for (int64_t i = 0; i < G * nb; i++)
    if (i / nb != zero_row && nn_tensor_get_flat(m, i) != 0) {
      nn_tensor_set_flat(m, i, 2);
      break;
    }
  return m;
}

/* a BlockSequential with BlockDropout and GyroDropout (fused block-sparse products, and a gyro
 * layer with unit masks run densely), moved with nn_module_to, three SGD steps (the gyro period
 * starts again at step 2): out = the losses and two weights */
static int f_block_model(const tcase *c, nn_tensor **in, nn_tensor **out, int *n) {
  (void)c;
  nn_manual_seed(9);
  nn_module *l[10], *m = NULL;
  nn_gyro_opts g1 = {.p = 0.5, .size = 32, .sigma = 6, .tau = 3, .period = 2, .block = 16};
  nn_gyro_opts g2 = {.p = 0.3, .size = 16, .sigma = 4, .tau = 2, .period = 1, .block = 1};
  int rc = nn_linear_new(&l[0], 12, 32, true);
  if (!rc) rc = nn_activation_new(&l[1], NN_ACT_RELU, 0);
  if (!rc) rc = nn_block_dropout_new(&l[2], 0.5, 8, 3);
  if (!rc) rc = nn_linear_new(&l[3], 32, 32, true);
  if (!rc) rc = nn_activation_new(&l[4], NN_ACT_GELU, 0);
  if (!rc) rc = nn_gyro_dropout_new(&l[5], &g1);
  if (!rc) rc = nn_linear_new(&l[6], 32, 16, true);
  if (!rc) rc = nn_activation_new(&l[7], NN_ACT_TANH, 0);
  if (!rc) rc = nn_gyro_dropout_new(&l[8], &g2);
  if (!rc) rc = nn_linear_new(&l[9], 16, 4, false);
  if (rc) return rc; /* cannot happen with these options */
  rc = nn_block_sequential_new(&m, 10, l);
  for (int k = 0; k < 10; k++) nn_module_free(l[k]);
  if (rc) return rc;
  return train3(m, in, out, n, true);
}

/* ---------------------------------------------------------------- the suite */

#define CASE(...)                                                                                  \
  do {                                                                                             \
    tcase c_ = {__VA_ARGS__};                                                                      \
    check_case(&c_);                                                                               \
    case_free(&c_);                                                                                \
  } while (0)
#define F32TOL .atol = 1e-6, .rtol = 1e-5
#define EXACT .atol = -1, .rtol = 0

static void suite(void) {
  /* copy, convert, fill */
  for (int dt = 0; dt < 3; dt++)
    CASE("to_dtype from float32", f_copy, 1, {rnd(SH(5, 7), -9, 9)}, {1}, 0, EXACT, .i = {0, dt});
  CASE("to_dtype from int64", f_copy, 1, {ints(SH(4, 6), 50)}, {2}, 0, EXACT,
       .i = {0, NN_DTYPE_F64});
  CASE("fill and copy into a strided view", f_copy, 1, {rnd(SH(6, 5), -1, 1)}, {2}, 0, EXACT,
       .i = {3});
  CASE("contiguous of a transposed view", f_copy, 1, {rndd(SH(3, 4, 5), -1, 1)}, {2}, 1, EXACT,
       .i = {4});

  /* binary with broadcasting, and its backward */
  for (int op = 0; op < 7; op++) {
    CASE("binary", f_binary, 2, {rnd(SH(3, 4, 5), 0.5, 2), rnd(SH(4, 1), 0.5, 2)}, {1, 0}, 3,
         F32TOL, .i = {op});
    CASE("binary float64 strided", f_binary, 2, {rndd(SH(4, 5), 0.5, 2), rndd(SH(4, 5), 0.5, 2)},
         {2, 1}, 3, .atol = 1e-12, .rtol = 1e-12, .i = {op});
  }
  CASE("maximum with NaN and ties", f_binary, 2,
       {with_nans(tied(SH(6, 7), 3), 4), tied(SH(6, 7), 3)}, {0, 0}, 3, F32TOL, .i = {5});
  for (int op = 0; op < 5; op++)
    CASE("scalar", f_scalar, 1, {rnd(SH(4, 6), 0.5, 2)}, {1}, 1, F32TOL, .i = {op}, .f = {1.7});

  /* unary and activations */
  for (int op = 0; op < 15; op++) {
    double lo = op >= 2 && op <= 4 ? 0.1 : -3, hi = 3;
    CASE("unary", f_unary, 1, {rnd(SH(5, 9), lo, hi)}, {1}, 1, .atol = 1e-6, .rtol = 2e-5,
         .i = {op});
    CASE("unary float64", f_unary, 1, {rndd(SH(3, 4, 5), lo, hi)}, {2}, 1, .atol = 1e-13,
         .rtol = 1e-12, .i = {op});
  }
  CASE("relu passes NaN", f_unary, 1, {with_nans(rnd(SH(50), -1, 1), 5)}, {0}, 0, F32TOL, .i = {8});

  /* comparisons, where, masked_fill, dropout's product */
  for (int op = 0; op < 6; op++) {
    CASE("compare", f_compare, 2, {tied(SH(5, 6), 3), tied(SH(6), 3)}, {1, 0}, 0, EXACT,
         .i = {op, 0});
    CASE("compare scalar int64", f_compare, 1, {ints(SH(5, 6), 4)}, {2}, 0, EXACT, .i = {op, 1},
         .f = {2});
  }
  CASE("where", f_where, 3, {tied(SH(4, 5), 2), rnd(SH(4, 5), -1, 1), rnd(SH(5), -1, 1)}, {0, 1, 0},
       6, F32TOL, .i = {0});
  CASE("masked_fill", f_where, 2, {ints(SH(4, 5), 2), rnd(SH(4, 5), -1, 1)}, {1, 2}, 2, F32TOL,
       .i = {1});
  CASE("dropout mask", f_where, 2, {tied(SH(4, 5), 2), rnd(SH(4, 5), -1, 1)}, {0, 1}, 2, F32TOL,
       .i = {2});

  /* matrix products: 2-D, batched, broadcast, transposed and strided operands; linear */
  CASE("matmul", f_matmul, 2, {rnd(SH(17, 33), -1, 1), rnd(SH(33, 9), -1, 1)}, {0, 0}, 3,
       .atol = 1e-5, .rtol = 1e-4);
  CASE("matmul transposed", f_matmul, 2, {rnd(SH(17, 33), -1, 1), rnd(SH(33, 9), -1, 1)}, {2, 2}, 3,
       .atol = 1e-5, .rtol = 1e-4);
  CASE("matmul strided", f_matmul, 2, {rnd(SH(17, 33), -1, 1), rnd(SH(33, 9), -1, 1)}, {1, 1}, 3,
       .atol = 1e-5, .rtol = 1e-4);
  CASE("matmul batched", f_matmul, 2, {rnd(SH(3, 7, 20), -1, 1), rnd(SH(3, 20, 5), -1, 1)}, {0, 2},
       3, .atol = 1e-5, .rtol = 1e-4);
  CASE("matmul broadcast", f_matmul, 2, {rnd(SH(3, 7, 20), -1, 1), rnd(SH(20, 5), -1, 1)}, {1, 0},
       3, .atol = 1e-5, .rtol = 1e-4);
  CASE("matmul float64", f_matmul, 2, {rndd(SH(2, 9, 30), -1, 1), rndd(SH(2, 30, 8), -1, 1)},
       {2, 0}, 3, .atol = 1e-12, .rtol = 1e-12);
  CASE("matmul vector", f_matmul, 2, {rnd(SH(25), -1, 1), rnd(SH(25, 6), -1, 1)}, {0, 1}, 3,
       .atol = 1e-5, .rtol = 1e-4);
  CASE("linear", f_matmul, 3, {rnd(SH(16, 40), -1, 1), rnd(SH(12, 40), -1, 1), rnd(SH(12), -1, 1)},
       {0, 0, 0}, 7, .atol = 1e-5, .rtol = 1e-4, .i = {1});

  /* sums and means over dims, var */
  CASE("sum dims", f_sum, 1, {rnd(SH(4, 5, 6), -1, 1)}, {1}, 1, F32TOL, .i = {0, 5, 1});
  CASE("sum dims long", f_sum, 1, {rnd(SH(3, 700), -1, 1)}, {2}, 1, F32TOL, .i = {0, 2, 0});
  CASE("mean", f_sum, 1, {rndd(SH(4, 5, 6), -1, 1)}, {2}, 1, .atol = 1e-13, .rtol = 1e-12,
       .i = {1, 1, 0});
  CASE("sum all", f_sum, 1, {rnd(SH(300, 7), -1, 1)}, {1}, 1, F32TOL, .i = {2});
  CASE("var", f_sum, 1, {rnd(SH(6, 50), -1, 1)}, {2}, 1, F32TOL, .i = {3, 1, 1});
  CASE("var long rows", f_sum, 1, {rnd(SH(3, 5000), -1, 1)}, {0}, 1, .atol = 1e-6, .rtol = 1e-4,
       .i = {3, 1, 0});

  /* max/min: ties (first index), NaN (first NaN wins); backward scatters to the argmax */
  for (int mn = 0; mn < 2; mn++) {
    CASE("max ties", f_max, 1, {tied(SH(7, 40), 4)}, {1}, 1, F32TOL, .i = {1, mn, 0});
    CASE("max NaN", f_max, 1, {with_nans(tied(SH(9, 12), 3), 6)}, {2}, 0, F32TOL, .i = {0, mn, 1});
    CASE("max long rows", f_max, 1, {rnd(SH(2, 6000), -1, 1)}, {0}, 1, F32TOL, .i = {1, mn, 0});
    CASE("max int64", f_max, 1, {ints(SH(5, 33), 7)}, {1}, 0, EXACT, .i = {1, mn, 1});
  }

  /* softmax and log_softmax along either dim */
  for (int lg = 0; lg < 2; lg++) {
    CASE("softmax", f_softmax, 1, {rnd(SH(8, 10), -4, 4)}, {0}, 1, .atol = 1e-6, .rtol = 2e-5,
         .i = {1, lg});
    CASE("softmax dim 0 strided", f_softmax, 1, {rnd(SH(13, 6), -4, 4)}, {1}, 1, .atol = 1e-6,
         .rtol = 2e-5, .i = {0, lg});
    CASE("softmax long rows", f_softmax, 1, {rnd(SH(3, 5000), -4, 4)}, {2}, 1, .atol = 1e-7,
         .rtol = 1e-4, .i = {1, lg});
    CASE("softmax float64", f_softmax, 1, {rndd(SH(5, 7), -4, 4)}, {0}, 1, .atol = 1e-14,
         .rtol = 1e-12, .i = {1, lg});
  }

  /* losses, every reduction; backward through both inputs where they are float */
  for (int red = 0; red < 3; red++) {
    CASE("cross_entropy", f_loss, 2, {rnd(SH(12, 10), -3, 3), ints(SH(12), 10)}, {1, 0}, 1,
         .atol = 1e-6, .rtol = 2e-5, .i = {0, red});
    CASE("cross_entropy_soft", f_loss, 2, {rnd(SH(12, 10), -3, 3), rnd(SH(12, 10), 0, 1)}, {2, 0},
         3, .atol = 1e-6, .rtol = 2e-5, .i = {1, red});
    CASE("nll_loss", f_loss, 2, {rnd(SH(9, 5), -3, 3), ints(SH(9), 5)}, {0, 0}, 1, .atol = 1e-6,
         .rtol = 2e-5, .i = {2, red});
    CASE("mse_loss", f_loss, 2, {rnd(SH(7, 9), -2, 2), rnd(SH(7, 9), -2, 2)}, {1, 2}, 3,
         .atol = 1e-6, .rtol = 2e-5, .i = {3, red});
  }
  CASE("cross_entropy many classes", f_loss, 2, {rnd(SH(4, 3000), -3, 3), ints(SH(4), 3000)},
       {0, 0}, 1, .atol = 1e-6, .rtol = 1e-4, .i = {0, 0});
  {
    nn_tensor *bad = ints(SH(6), 4);
    nn_tensor_set_flat(bad, 3, 9);
    CASE("cross_entropy bad label", f_loss, 2, {rnd(SH(6, 4), -1, 1), bad}, {0, 0}, 0, F32TOL,
         .i = {0, 0});
  }

  /* sort, topk: stable, NaN largest, either direction; long rows take the merge passes */
  for (int desc = 0; desc < 2; desc++) {
    CASE("sort ties NaN", f_sort, 1, {with_nans(tied(SH(6, 50), 5), 8)}, {1}, 1, EXACT,
         .i = {1, desc, -1});
    CASE("sort dim 0", f_sort, 1, {tied(SH(40, 3), 9)}, {2}, 1, EXACT, .i = {0, desc, -1});
    CASE("sort long rows", f_sort, 1, {tied(SH(3, 5000), 1000)}, {0}, 1, EXACT, .i = {1, desc, -1});
    CASE("topk", f_sort, 1, {rnd(SH(5, 300), -1, 1)}, {1}, 1, EXACT, .i = {1, desc, 7});
    CASE("sort int64", f_sort, 1, {ints(SH(4, 77), 10)}, {0}, 0, EXACT, .i = {1, desc, -1});
  }

  /* convolution: stride, padding, dilation, groups, bias or not; strided input */
  {
    struct {
      int64_t N, C, H, W, O, K;
      int s, p, d, g, bias, layout;
    } cv[] = {{2, 3, 9, 8, 4, 3, 1, 1, 1, 1, 1, 0},
              {2, 4, 11, 10, 6, 3, 2, 0, 1, 2, 0, 1},
              {1, 2, 12, 12, 3, 3, 1, 2, 2, 1, 1, 2},
              {3, 1, 28, 28, 8, 5, 1, 2, 1, 1, 1, 0},
              {2, 6, 7, 7, 6, 1, 1, 0, 1, 6, 1, 0}};
    for (size_t k = 0; k < sizeof cv / sizeof cv[0]; k++) {
      int64_t Cg = cv[k].C / cv[k].g;
      CASE("conv2d", f_conv, 3,
           {rnd(SH(cv[k].N, cv[k].C, cv[k].H, cv[k].W), -1, 1),
            rnd(SH(cv[k].O, Cg, cv[k].K, cv[k].K), -1, 1),
            cv[k].bias ? rnd(SH(cv[k].O), -1, 1) : NULL},
           {cv[k].layout, 0, 0}, cv[k].bias ? 7 : 3, .atol = 1e-5, .rtol = 1e-4,
           .i = {cv[k].s, cv[k].s, cv[k].p, cv[k].p, cv[k].d, cv[k].d, cv[k].g});
    }
    CASE("conv2d float64", f_conv, 3,
         {rndd(SH(2, 2, 6, 6), -1, 1), rndd(SH(3, 2, 3, 3), -1, 1), rndd(SH(3), -1, 1)}, {0, 0, 0},
         7, .atol = 1e-12, .rtol = 1e-12, .i = {1, 1, 1, 1, 1, 1, 1});
  }

  /* pooling: ties, NaN, overlapping windows, padding, both avg divisors */
  CASE("max_pool2d 2x2", f_pool, 1, {tied(SH(2, 3, 8, 8), 4)}, {0}, 1, F32TOL, .i = {0, 2, 2, 0});
  CASE("max_pool2d overlapping NaN", f_pool, 1, {with_nans(tied(SH(2, 2, 9, 9), 5), 6)}, {1}, 1,
       F32TOL, .i = {0, 3, 2, 1});
  CASE("max_pool2d padded", f_pool, 1, {rnd(SH(1, 3, 7, 6), -1, 1)}, {2}, 1, F32TOL,
       .i = {0, 3, 1, 1});
  for (int cip = 0; cip < 2; cip++)
    CASE("avg_pool2d", f_pool, 1, {rnd(SH(2, 3, 9, 7), -1, 1)}, {1}, 1, F32TOL,
         .i = {1, 3, 2, 1, cip});
  CASE("global_avg_pool2d", f_pool, 1, {rnd(SH(3, 4, 5, 5), -1, 1)}, {0}, 1, F32TOL, .i = {2});

  /* normalisation */
  CASE("batch_norm train", f_norm, 3,
       {rnd(SH(6, 4, 5, 5), -2, 2), rnd(SH(4), 0.5, 1.5), rnd(SH(4), -1, 1)}, {1, 0, 0}, 7,
       .atol = 1e-5, .rtol = 1e-4, .i = {0});
  CASE("batch_norm train 2-D", f_norm, 3,
       {rnd(SH(32, 9), -2, 2), rnd(SH(9), 0.5, 1.5), rnd(SH(9), -1, 1)}, {0, 0, 0}, 7, .atol = 1e-5,
       .rtol = 1e-4, .i = {0});
  CASE("batch_norm eval", f_norm, 3, {rnd(SH(4, 3, 4, 4), -2, 2), rnd(SH(3), 0.5, 1.5), NULL},
       {0, 0, 0}, 3, .atol = 1e-5, .rtol = 1e-4, .i = {1});
  CASE("layer_norm", f_norm, 3,
       {rnd(SH(5, 6, 40), -2, 2), rnd(SH(40), 0.5, 1.5), rnd(SH(40), -1, 1)}, {2, 0, 0}, 7,
       .atol = 1e-5, .rtol = 1e-4, .i = {2, 1});
  CASE("layer_norm no affine", f_norm, 3, {rnd(SH(7, 3, 10), -2, 2), NULL, NULL}, {0, 0, 0}, 1,
       .atol = 1e-5, .rtol = 1e-4, .i = {2, 2});

  /* indexing; the embedding backward has many repeated indices (scatter_add collisions) */
  CASE("embedding", f_index, 2, {rnd(SH(50, 16), -1, 1), ints(SH(30, 40), 50)}, {0, 0}, 1,
       .atol = 1e-5, .rtol = 1e-5, .i = {0});
  CASE("index_select", f_index, 2, {rnd(SH(6, 9, 4), -1, 1), ints(SH(12), 9)}, {1, 0}, 1, F32TOL,
       .i = {1, 1});
  CASE("gather", f_index, 2, {rnd(SH(5, 8), -1, 1), ints(SH(5, 11), 8)}, {2, 1}, 1, F32TOL,
       .i = {2, 1});
  CASE("scatter_add", f_index, 3, {rnd(SH(7, 6), -1, 1), ints(SH(20, 6), 7), rnd(SH(20, 6), -1, 1)},
       {0, 1, 2}, 5, .atol = 1e-6, .rtol = 1e-5, .i = {3, 0});
  CASE("scatter_add int64", f_index, 3, {ints(SH(5, 4), 9), ints(SH(9, 4), 5), ints(SH(9, 4), 9)},
       {0, 0, 0}, 0, EXACT, .i = {3, 0});
  CASE("one_hot", f_index, 2, {NULL, ints(SH(4, 5), 6)}, {0, 1}, 0, EXACT, .i = {4, 6});
  CASE("concat", f_index, 2, {rnd(SH(3, 4), -1, 1), rnd(SH(3, 5), -1, 1)}, {1, 2}, 3, F32TOL,
       .i = {5, 1});
  CASE("stack", f_index, 2, {rnd(SH(3, 4), -1, 1), rnd(SH(3, 4), -1, 1)}, {0, 1}, 3, F32TOL,
       .i = {6, 1});
  CASE("split", f_index, 1, {rnd(SH(4, 6), -1, 1)}, {2}, 1, F32TOL, .i = {7, 0});
  {
    nn_tensor *bad = ints(SH(4, 3), 8);
    nn_tensor_set_flat(bad, 7, 8);
    CASE("gather index out of range", f_index, 2, {rnd(SH(4, 8), -1, 1), bad}, {0, 0}, 0, F32TOL,
         .i = {2, 1});
  }

  /* random numbers: the same draws from one seed on either device */
  for (int dt = 0; dt < 2; dt++) {
    CASE("uniform_", f_rng, 0, {NULL}, {0}, 0, EXACT, .i = {0, dt, dt});
    CASE("normal_", f_rng, 0, {NULL}, {0}, 0, .atol = 1e-12, .rtol = dt ? 1e-13 : 2.5e-7,
         .i = {1, dt, dt});
    CASE("bernoulli_", f_rng, 0, {NULL}, {0}, 0, EXACT, .i = {2, dt, dt});
  }
  CASE("categorical", f_rng, 1, {rnd(SH(5, 30), 0, 1)}, {1}, 0, EXACT, .i = {3});
  {
    nn_tensor *p = rnd(SH(4, 6), 0, 1);
    nn_tensor_set_flat(p, 15, -0.5);
    CASE("categorical negative probability", f_rng, 1, {p}, {0}, 0, EXACT, .i = {3});
  }

  /* fused optimizer steps */
  CASE("SGD momentum", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0, F32TOL,
       .i = {NN_OPTIM_SGD, 0}, .f = {0.9, 0.01});
  CASE("SGD nesterov", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0, F32TOL,
       .i = {NN_OPTIM_SGD, 1}, .f = {0.9, 0});
  CASE("SGD plain", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0, F32TOL,
       .i = {NN_OPTIM_SGD, 0});
  CASE("Adam", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0, F32TOL,
       .i = {NN_OPTIM_ADAM}, .f = {0, 0.01});
  CASE("AdamW", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0, F32TOL,
       .i = {NN_OPTIM_ADAMW}, .f = {0, 0.01});
  CASE("RMSProp centered momentum", f_optim, 2, {rnd(SH(40), -1, 1), rnd(SH(40), -1, 1)}, {0, 0}, 0,
       F32TOL, .i = {NN_OPTIM_RMSPROP, 0, 1}, .f = {0.5, 0.01});

  /* a model moved with nn_module_to, trained three steps */
  CASE("MLP moved to the device, 3 SGD steps", f_model, 2, {rnd(SH(8, 12), -1, 1), ints(SH(8), 4)},
       {0, 0}, 0, .atol = 1e-5, .rtol = 1e-4);

  /* block-wise dropout: block_linear with and without masks, G not dividing N, groups with no
   * kept block, more groups than rows, bias or not, every subset of gradients, strided inputs
   * (the front-end packs them); block_mask_expand; then a BlockSequential model */
  {
    struct {
      int64_t N, I, O, bsi, bso, Gi, Go; /* G 0: no mask */
      int bias, layout_x, layout_w;
      unsigned grad;
    } bl[] = {{16, 40, 24, 1, 1, 0, 0, 1, 0, 0, 7},   {10, 32, 24, 8, 1, 3, 0, 1, 0, 0, 7},
              {13, 24, 64, 1, 16, 0, 4, 0, 0, 0, 3},  {17, 64, 96, 16, 32, 3, 5, 1, 0, 0, 7},
              {3, 32, 32, 16, 16, 5, 4, 1, 0, 0, 7},  {24, 64, 64, 32, 16, 4, 4, 1, 1, 2, 7},
              {11, 48, 32, 16, 16, 2, 3, 1, 0, 0, 2}, {11, 48, 32, 16, 16, 2, 3, 1, 0, 0, 5},
              {9, 32, 48, 32, 16, 1, 2, 0, 0, 0, 1}};
    for (size_t k = 0; k < sizeof bl / sizeof bl[0]; k++) {
      nn_tensor *kin = bl[k].Gi ? bmask(bl[k].Gi, bl[k].I / bl[k].bsi, bl[k].Gi - 1) : NULL;
      nn_tensor *kout = bl[k].Go ? bmask(bl[k].Go, bl[k].O / bl[k].bso, 0) : NULL;
      CASE("block_linear", f_block, 5,
           {rnd(SH(bl[k].N, bl[k].I), -1, 1), rnd(SH(bl[k].O, bl[k].I), -1, 1),
            bl[k].bias ? rnd(SH(bl[k].O), -1, 1) : NULL, kin, kout},
           {bl[k].layout_x, bl[k].layout_w, 0, 0, 0}, bl[k].grad, .atol = 1e-5, .rtol = 1e-4,
           .i = {0, bl[k].bsi, bl[k].bso});
    }
    CASE("block_mask_expand", f_block, 1, {bmask(3, 4, 1)}, {0}, 0, EXACT, .i = {1, 10, 16});
    CASE("block_mask_expand more groups than rows", f_block, 1, {bmask(5, 2, -1)}, {0}, 0, EXACT,
         .i = {1, 3, 32});
    CASE("block_mask_expand one group", f_block, 1, {bmask(1, 6, -1)}, {0}, 0, EXACT,
         .i = {1, 7, 16});
  }
  CASE("BlockSequential with block and gyro dropout moved to the device, 3 SGD steps",
       f_block_model, 2, {rnd(SH(8, 12), -1, 1), ints(SH(8), 4)}, {0, 0}, 0, .atol = 1e-5,
       .rtol = 1e-4);
}

#ifdef WB_HAVE_CUDA
/* Every kernel is implemented on the device, except optional fused ones, which must then fail
 * with the dispatcher's message. */
static void coverage(const nn_backend_i *be) {
  for (int op = 0; op < NN_OP_COUNT; op++) {
    /* fused kernels whose layers fall back without them */
    bool optional = op == NN_OP_CONV2D_RELU_MAXPOOL || op == NN_OP_CONV2D_RELU_MAXPOOL_BACKWARD ||
                    op == NN_OP_MATMUL_PAIR; /* linear's backward runs two matmuls without it */
    if (be->kernels[op]) continue;
    CHECK(optional, "kernel %s is not implemented on cuda", nn_op_name(op));
    if (!optional) continue;
    nn_tensor *t = NULL;
    nn_device d = {NN_DEVICE_CUDA, 0};
    OK(nn_tensor_zeros(&t, 1, (int64_t[]){4}, NN_DTYPE_F32, d));
    nn_op_params p = {0};
    char want[128];
    snprintf(want, sizeof want, "%s is not implemented on cuda", nn_op_name(op));
    EXPECT_ERR(nn_dispatch(op, 1, &t, 1, &t, &p), NN_ERR_DEVICE, want);
    nn_tensor_free(t);
  }
}
#endif

/* The suite twice (normal, then deterministic with reruns), and TF32 where the device has it. */
static void suites(bool tf32) {
  install_wrapper(test_dev);
  th_seed(42);
  det_pass = false;
  suite();
  nn_set_deterministic(true);
  det_pass = true;
  suite();
  nn_set_deterministic(false);
  det_pass = false;
  if (!tf32) return;
  /* TF32 on: products within TF32's precision of the float32 reference */
  nn_set_allow_tf32(true);
  CASE("matmul TF32", f_matmul, 2, {rnd(SH(64, 128), -1, 1), rnd(SH(128, 32), -1, 1)}, {0, 0}, 3,
       .atol = 1e-2, .rtol = 1e-2);
  CASE("conv2d TF32", f_conv, 3, {rnd(SH(2, 8, 10, 10), -1, 1), rnd(SH(8, 8, 3, 3), -1, 1), NULL},
       {0, 0, 0}, 3, .atol = 1e-2, .rtol = 1e-2, .i = {1, 1, 1, 1, 1, 1, 1});
  nn_set_allow_tf32(false);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--self")) { /* the harness against itself, on the CPU */
    test_dev = NN_DEVICE_CPU;
    suites(false);
    printf("%d cases on cpu against cpu (harness self-check), %ld kernel outputs poisoned\n",
           n_cases, n_poisoned);
    return th_done();
  }
#ifndef WB_HAVE_CUDA
  printf("skipped: no GPU (wb was built without the CUDA backend)\n");
  return 77;
#else
  const nn_backend_i *be = nn_backend_get(NN_DEVICE_CUDA);
  if (!be) {
    printf("skipped: no GPU (cudaGetDeviceCount reports none)\n");
    return 77;
  }
  coverage(be);
  suites(true);
  printf("%d cases on cuda against cpu, %ld kernel outputs poisoned\n", n_cases, n_poisoned);
  return th_done();
#endif
}
