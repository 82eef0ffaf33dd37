/* nn/backend/cuda/cuda_backend.cu: the CUDA backend: device memory, host-device copies, the one
 * stream, error messages and registration (nn_cuda_backend_init, called by nn/dispatch.c at the
 * first use of the cuda device).
 *
 * Memory: cudaMalloc/cudaFree behind the core's caching allocator (nn/tensor.c), so a training
 * loop calls cudaMalloc during its first step only. Copies: host to device is asynchronous
 * (cudaMemcpyAsync from pageable memory returns once the source has been staged, so the caller
 * may free or reuse it at once); device to host waits for the stream, so the caller reads
 * finished values. One device (index 0) and one stream per process. */
#include "cuda.h"

#include <stdio.h>
#include <stdlib.h>

static cudaStream_t stream;
static int sm_count = 1, cc_major = 0;

cudaStream_t cu_stream(void) { return stream; }
int cu_sm_count(void) { return sm_count; }
int cu_cc_major(void) { return cc_major; }

int cu_check(cudaError_t e, const char *op) {
  if (e == cudaSuccess) return NN_OK;
  return nn_seterr(e == cudaErrorMemoryAllocation ? NN_ERR_NOMEM : NN_ERR_DEVICE,
                   "%s: CUDA error %s: %s", op, cudaGetErrorName(e), cudaGetErrorString(e));
}

int cu_scratch(nn_tensor **t, void **p, size_t nbytes) {
  int64_t n = (int64_t)((nbytes + 7) / 8);
  if (n < 1) n = 1;
  nn_device dev = {NN_DEVICE_CUDA, 0};
  int rc = nn_tensor_empty(t, 1, &n, NN_DTYPE_F64, dev);
  *p = rc ? NULL : nn_tensor_data(*t);
  return rc;
}

int cu_read_i64(int64_t *host, const void *dev, int64_t n) {
  int rc = cu_check(cudaMemcpyAsync(host, dev, (size_t)n * 8, cudaMemcpyDeviceToHost, stream),
                    "cuda read");
  if (!rc) rc = cu_check(cudaStreamSynchronize(stream), "cuda read");
  return rc;
}

static void *cuda_alloc(size_t nbytes) {
  void *p = NULL;
  if (cudaMalloc(&p, nbytes) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky-free error state of a failed allocation */
    return NULL;
  }
  return p;
}

static void cuda_free(void *p) { cudaFree(p); }

static int cuda_to_host(void *dst, const void *src, size_t nbytes) {
  if (!nbytes) return NN_OK;
  int rc = cu_check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream), "to_host");
  if (!rc) rc = cu_check(cudaStreamSynchronize(stream), "to_host");
  return rc;
}

static int cuda_from_host(void *dst, const void *src, size_t nbytes) {
  if (!nbytes) return NN_OK;
  return cu_check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream), "from_host");
}

static nn_backend_i cuda_backend;

extern "C" const nn_backend_i *nn_cuda_backend_init(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    cudaGetLastError(); /* no driver or no device: the CPU-only behaviour */
    return NULL;
  }
  if (cudaSetDevice(0) != cudaSuccess) return NULL;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    cc_major = prop.major;
  }
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) return NULL;
  cuda_backend.name = "cuda";
  cuda_backend.alloc = cuda_alloc;
  cuda_backend.free = cuda_free;
  cuda_backend.to_host = cuda_to_host;
  cuda_backend.from_host = cuda_from_host;
  nn_cuda_register_core(&cuda_backend);
  nn_cuda_register_elementwise(&cuda_backend);
  nn_cuda_register_reduce(&cuda_backend);
  nn_cuda_register_nnet(&cuda_backend);
  nn_cuda_register_index(&cuda_backend);
  nn_cuda_register_optim(&cuda_backend);
  nn_cuda_register_block(&cuda_backend);
  return &cuda_backend;
}
