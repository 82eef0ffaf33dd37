/* nn/backend/cpu/cpu_optim.c: fused optimizer updates on the CPU (equations in nn/optim.h).
 * One pass over each parameter; float32 storage, float arithmetic as PyTorch's CPU kernels. */
#include "cpu.h"

#include <math.h>

/* SGD over [i0, i1): the branches are hoisted out of the loops so that each loop vectorizes. */
static void sgd_range(float *w, const float *g, float *buf, int64_t i0, int64_t i1, float lr,
                      float mu, float damp, float wd, bool mom, bool nest, bool first) {
  if (!mom) {
    if (wd == 0) {
#pragma omp simd
      for (int64_t i = i0; i < i1; i++) w[i] -= lr * g[i];
    } else {
#pragma omp simd
      for (int64_t i = i0; i < i1; i++) w[i] -= lr * (g[i] + wd * w[i]);
    }
    return;
  }
  if (first) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      float d = g[i] + wd * w[i];
      buf[i] = d;
      w[i] -= lr * (nest ? d + mu * d : d);
    }
    return;
  }
  float c = 1 - damp;
  if (wd == 0 && !nest) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      float b = mu * buf[i] + c * g[i];
      buf[i] = b;
      w[i] -= lr * b;
    }
  } else {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      float d = g[i] + wd * w[i];
      float b = mu * buf[i] + c * d;
      buf[i] = b;
      w[i] -= lr * (nest ? d + mu * b : b);
    }
  }
}

static int cpu_sgd_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  float *w = F32(in[0]), *buf = F32(in[2]);
  const float *g = F32(in[1]);
  int64_t n = nn_tensor_numel(in[0]);
  float lr = (float)p->f[0], mu = (float)p->f[1], damp = (float)p->f[2], wd = (float)p->f[3];
  bool mom = p->i[0], nest = p->i[1], first = p->i[2];
  /* elementwise: fixed chunks give the same bits for any thread count */
  const int64_t CH = 16384;
  int64_t nch = (n + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t c = 0; c < nch; c++)
    sgd_range(w, g, buf, c * CH, c * CH + CH < n ? c * CH + CH : n, lr, mu, damp, wd, mom, nest,
              first);
  return NN_OK;
}

static int cpu_adam_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  float *w = F32(in[0]), *m = F32(in[2]), *v = F32(in[3]);
  const float *g = F32(in[1]);
  int64_t n = nn_tensor_numel(in[0]);
  float lr = (float)p->f[0], b1 = (float)p->f[1], b2 = (float)p->f[2], eps = (float)p->f[3];
  float wd = (float)p->f[4];
  float step_size = (float)(p->f[0] / p->f[5]), bc2_sqrt = (float)sqrt(p->f[6]);
  bool decoupled = p->i[0];
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    float d = g[i];
    if (decoupled)
      w[i] *= 1 - lr * wd;
    else if (wd != 0)
      d += wd * w[i];
    m[i] = b1 * m[i] + (1 - b1) * d;
    v[i] = b2 * v[i] + (1 - b2) * d * d;
    w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
  return NN_OK;
}

static int cpu_rmsprop_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  float *w = F32(in[0]), *sq = F32(in[2]), *buf = F32(in[3]), *ga = F32(in[4]);
  const float *g = F32(in[1]);
  int64_t n = nn_tensor_numel(in[0]);
  float lr = (float)p->f[0], a = (float)p->f[1], eps = (float)p->f[2], wd = (float)p->f[3];
  float mu = (float)p->f[4];
  bool mom = p->i[0], centered = p->i[1];
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    float d = g[i];
    if (wd != 0) d += wd * w[i];
    sq[i] = a * sq[i] + (1 - a) * d * d;
    float avg;
    if (centered) {
      ga[i] = a * ga[i] + (1 - a) * d;
      avg = sqrtf(sq[i] - ga[i] * ga[i]) + eps;
    } else {
      avg = sqrtf(sq[i]) + eps;
    }
    if (mom) {
      buf[i] = mu * buf[i] + d / avg;
      w[i] -= lr * buf[i];
    } else {
      w[i] -= lr * d / avg;
    }
  }
  return NN_OK;
}

void nn_cpu_register_optim(nn_backend_i *be) {
  be->kernels[NN_OP_SGD_STEP] = cpu_sgd_step;
  be->kernels[NN_OP_ADAM_STEP] = cpu_adam_step;
  be->kernels[NN_OP_RMSPROP_STEP] = cpu_rmsprop_step;
}
