/* nn/backend/cuda/cuda_optim.cu: fused optimizer updates on the GPU (reference: cpu_optim.c;
 * equations in nn/optim.h). One thread per element, in place on contiguous float32 tensors, in
 * float arithmetic as the CPU's; nvcc may fuse a multiply and an add, so results agree with the
 * CPU to float32 rounding, and are the same run to run. */
#include "cuda.h"

#include <math.h>

static __global__ void sgd_kernel(float *w, const float *g, float *buf, int64_t n, float lr,
                                  float mu, float damp, float wd, int mom, int nest, int first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    if (!mom) {
      w[i] -= wd == 0 ? lr * g[i] : lr * (g[i] + wd * w[i]);
      continue;
    }
    /* the CPU's loops: g itself (not g + 0 * w) in the plain momentum loop */
    float d = wd == 0 && !nest && !first ? g[i] : g[i] + wd * w[i];
    if (first) {
      buf[i] = d;
      w[i] -= lr * (nest ? d + mu * d : d);
      continue;
    }
    float b = mu * buf[i] + (1 - damp) * d;
    buf[i] = b;
    w[i] -= lr * (nest ? d + mu * b : b);
  }
}

static int cuda_sgd_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  int64_t n = nn_tensor_numel(in[0]);
  if (!n) return NN_OK;
  sgd_kernel<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
      cu_ptr<float>(in[0]), cu_ptr<float>(in[1]), cu_ptr<float>(in[2]), n, (float)p->f[0],
      (float)p->f[1], (float)p->f[2], (float)p->f[3], (int)p->i[0], (int)p->i[1], (int)p->i[2]);
  return CU_LAUNCHED("sgd_step");
}

static __global__ void adam_kernel(float *w, const float *g, float *m, float *v, int64_t n,
                                   float lr, float b1, float b2, float eps, float wd,
                                   float step_size, float bc2_sqrt, int decoupled) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float d = g[i];
    if (decoupled)
      w[i] *= 1 - lr * wd;
    else if (wd != 0)
      d += wd * w[i];
    m[i] = b1 * m[i] + (1 - b1) * d;
    v[i] = b2 * v[i] + (1 - b2) * d * d;
    w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

static int cuda_adam_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  int64_t n = nn_tensor_numel(in[0]);
  if (!n) return NN_OK;
  adam_kernel<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
      cu_ptr<float>(in[0]), cu_ptr<float>(in[1]), cu_ptr<float>(in[2]), cu_ptr<float>(in[3]), n,
      (float)p->f[0], (float)p->f[1], (float)p->f[2], (float)p->f[3], (float)p->f[4],
      (float)(p->f[0] / p->f[5]), (float)sqrt(p->f[6]), (int)p->i[0]);
  return CU_LAUNCHED("adam_step");
}

static __global__ void rmsprop_kernel(float *w, const float *g, float *sq, float *buf, float *ga,
                                      int64_t n, float lr, float a, float eps, float wd, float mu,
                                      int mom, int centered) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
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
}

static int cuda_rmsprop_step(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)out;
  int64_t n = nn_tensor_numel(in[0]);
  if (!n) return NN_OK;
  rmsprop_kernel<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
      cu_ptr<float>(in[0]), cu_ptr<float>(in[1]), cu_ptr<float>(in[2]), cu_ptr<float>(in[3]),
      cu_ptr<float>(in[4]), n, (float)p->f[0], (float)p->f[1], (float)p->f[2], (float)p->f[3],
      (float)p->f[4], (int)p->i[0], (int)p->i[1]);
  return CU_LAUNCHED("rmsprop_step");
}

void nn_cuda_register_optim(nn_backend_i *be) {
  be->kernels[NN_OP_SGD_STEP] = cuda_sgd_step;
  be->kernels[NN_OP_ADAM_STEP] = cuda_adam_step;
  be->kernels[NN_OP_RMSPROP_STEP] = cuda_rmsprop_step;
}
