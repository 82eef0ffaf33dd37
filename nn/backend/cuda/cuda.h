/* nn/backend/cuda/cuda.h: shared helpers of the CUDA kernels (internal, CUDA C++).
 *
 * Every kernel here computes what its CPU reference in nn/backend/cpu computes (same NaN rules,
 * same tie rules, same Philox draws), llm.c's rule: a plain reference beside each device kernel.
 * Entry points have the kernel signature of nn/backend.h and are registered per group file
 * (nn_cuda_register_<group>); only nn/backend/cuda includes cuBLAS and cuDNN headers.
 *
 * cu_geo is the device twin of cpu_iter: up to four same-shaped strided operands (inputs
 * expanded to the output's shape, stride 0 on broadcast dims), size-1 dims dropped and dims
 * that are contiguous in every operand merged. cu_map runs a functor once per element with the
 * element's offset in each operand; elements are independent, so the results do not depend on
 * the launch geometry.
 *
 * Streams and memory: all work runs on one stream (cu_stream) of device 0, so kernels, cuBLAS,
 * cuDNN and the copies are ordered among themselves and device memory handed back to the core's
 * caching allocator may be reused by the next op without a synchronisation. Scratch memory comes
 * from that allocator too (cu_scratch), never from cudaMalloc per call.
 */
#ifndef NN_CUDA_H
#define NN_CUDA_H

extern "C" {
#include "../../autograd.h"
}

#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- runtime */

cudaStream_t cu_stream(void);
/* NN_OK, or NN_ERR_DEVICE "op: CUDA error <name>: <text>" for a failed CUDA call. */
int cu_check(cudaError_t e, const char *op);
/* After a launch: the launch error, if any. */
#define CU_LAUNCHED(op) cu_check(cudaGetLastError(), op)
/* The device's SM count (grid sizes) and compute capability major (TF32 needs 8+). */
int cu_sm_count(void);
int cu_cc_major(void);

/* Device scratch of at least nbytes from the caching allocator (a 1-D float64 tensor on cuda,
 * 8-byte aligned); *p is its data. Free with nn_tensor_free. */
int cu_scratch(nn_tensor **t, void **p, size_t nbytes);
/* Copies n int64 values from device to host and waits for them (error flags, counts). */
int cu_read_i64(int64_t *host, const void *dev, int64_t n);

/* Grid size for n elements at `threads` per block, grid-stride loops beyond it. */
static inline unsigned cu_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads, cap = (int64_t)cu_sm_count() * 32;
  if (b > cap) b = cap;
  return (unsigned)(b < 1 ? 1 : b);
}

#define CU_THREADS 256

/* ---------------------------------------------------------------- strided geometry */

template <int K> struct cu_geo {
  int ndim;
  int64_t n;
  int64_t shape[NN_MAX_DIMS];
  int64_t st[K][NN_MAX_DIMS];
};

/* Host: the merged geometry of K operands shaped like ops[0] (cpu_iter_init's rule). */
template <int K> static cu_geo<K> cu_geo_make(nn_tensor *const *ops) {
  cu_geo<K> g;
  memset(&g, 0, sizeof g);
  const nn_tensor *t0 = ops[0];
  g.n = nn_tensor_numel(t0);
  int nd = 0;
  for (int d = 0; d < t0->ndim; d++) {
    if (t0->shape[d] == 1) continue;
    g.shape[nd] = t0->shape[d];
    for (int k = 0; k < K; k++) g.st[k][nd] = ops[k]->stride[d];
    nd++;
  }
  if (nd == 0) {
    g.ndim = 1;
    g.shape[0] = g.n;
    return g;
  }
  int m = 0;
  for (int d = 1; d < nd; d++) {
    bool ok = true;
    for (int k = 0; k < K; k++)
      if (g.st[k][m] != g.st[k][d] * g.shape[d]) ok = false;
    if (ok) {
      g.shape[m] *= g.shape[d];
      for (int k = 0; k < K; k++) g.st[k][m] = g.st[k][d];
    } else {
      m++;
      g.shape[m] = g.shape[d];
      for (int k = 0; k < K; k++) g.st[k][m] = g.st[k][d];
    }
  }
  g.ndim = m + 1;
  return g;
}

template <int K>
static __device__ __forceinline__ void cu_offsets(const cu_geo<K> &g, int64_t i, int64_t *off) {
  if (g.ndim == 1) {
#pragma unroll
    for (int k = 0; k < K; k++) off[k] = i * g.st[k][0];
    return;
  }
#pragma unroll
  for (int k = 0; k < K; k++) off[k] = 0;
  for (int d = g.ndim - 1; d >= 0; d--) {
    int64_t s = g.shape[d], idx = i % s;
    i /= s;
#pragma unroll
    for (int k = 0; k < K; k++) off[k] += idx * g.st[k][d];
  }
}

template <int K, class F> static __global__ void cu_map_kernel(cu_geo<K> g, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < g.n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[K];
    cu_offsets<K>(g, i, off);
    f(off);
  }
}

/* Runs f(off) for every element of ops[0]'s shape; off[k] is the element offset in operand k
 * (the functor holds the typed data pointers). */
template <int K, class F> static int cu_map(const char *op, nn_tensor *const *ops, const F &f) {
  cu_geo<K> g = cu_geo_make<K>(ops);
  if (g.n == 0) return NN_OK;
  cu_map_kernel<K, F><<<cu_blocks(g.n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(g, f);
  return CU_LAUNCHED(op);
}

/* Element offset of flat (row-major) index i in a tensor of nd dims. */
static __device__ __forceinline__ int64_t cu_flat_offset(int64_t i, int nd, const int64_t *shape,
                                                         const int64_t *stride) {
  int64_t off = 0;
  for (int d = nd - 1; d >= 0; d--) {
    int64_t s = shape[d];
    off += (i % s) * stride[d];
    i /= s;
  }
  return off;
}

/* ---------------------------------------------------------------- deterministic reductions */

/* Sum over a warp in a fixed butterfly order: every lane gets the same bits, run to run. */
static __device__ __forceinline__ double cu_warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Sum over a block (blockDim.x a multiple of 32, at most 1024), fixed order; all threads get
 * the result. sh: 32 doubles of shared memory. */
static __device__ __forceinline__ double cu_block_sum(double v, double *sh) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = cu_warp_sum(v);
  __syncthreads(); /* sh may still be read by a previous call */
  if (lane == 0) sh[w] = v;
  __syncthreads();
  double t = lane < nw ? sh[lane] : 0.0;
  return cu_warp_sum(t);
}

/* Typed data pointer of a tensor (device memory: pointer arithmetic only). */
template <class T> static inline T *cu_ptr(const nn_tensor *t) { return (T *)nn_tensor_data(t); }

/* ---------------------------------------------------------------- per-group registration */

void nn_cuda_register_core(nn_backend_i *be);
void nn_cuda_register_elementwise(nn_backend_i *be);
void nn_cuda_register_reduce(nn_backend_i *be);
void nn_cuda_register_nnet(nn_backend_i *be);
void nn_cuda_register_index(nn_backend_i *be);
void nn_cuda_register_optim(nn_backend_i *be);
void nn_cuda_register_block(nn_backend_i *be);

/* cuBLAS handle on cu_stream, math mode set from nn_get_allow_tf32() (cuda_core.cu). */
struct cublasContext;
struct cublasContext *cu_cublas(void);

#endif
