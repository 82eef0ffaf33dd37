/* nn/tensor.h: wb's n-dimensional strided tensor, its storage, errors and threads.
 *
 * Ownership: every nn_tensor is reference counted. A function that returns a tensor through an
 * out-parameter hands the caller one reference, released with nn_tensor_free(). Views (reshape of
 * a contiguous tensor, transpose, narrow, expand, ...) share the storage of their base and keep
 * it alive; they never own a separate copy of the data.
 *
 * Errors: functions that can fail return NN_OK (0) or a negative NN_ERR_* code and leave a
 * message naming the op and the shapes in a thread-local buffer read by nn_errmsg(). Their
 * out-parameters are NULL unless the call succeeded. The core never aborts on user input and
 * never calls back into Lua.
 */
#ifndef NN_TENSOR_H
#define NN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_MAX_DIMS 8

/* Result codes. */
enum {
  NN_OK = 0,
  NN_ERR_SHAPE = -1,  /* shapes do not fit the op */
  NN_ERR_DTYPE = -2,  /* dtype not accepted by the op */
  NN_ERR_INDEX = -3,  /* index or dimension out of range */
  NN_ERR_DEVICE = -4, /* op not implemented on the device, or devices mixed */
  NN_ERR_NOMEM = -5,  /* allocation failed */
  NN_ERR_ARG = -6,    /* other invalid argument (negative size, bad option) */
  NN_ERR_STATE = -7,  /* invalid state (backward twice through a freed graph, ...) */
  NN_ERR_IO = -8,     /* file missing, truncated or corrupt */
};

typedef enum { NN_DTYPE_F32 = 0, NN_DTYPE_F64 = 1, NN_DTYPE_I64 = 2 } nn_dtype;
typedef enum { NN_DEVICE_CPU = 0, NN_DEVICE_CUDA = 1, NN_DEVICE_COUNT } nn_device_type;

typedef struct nn_device {
  nn_device_type type;
  int index;
} nn_device;

typedef struct nn_storage nn_storage;
typedef struct nn_node nn_node;
typedef struct nn_tensor nn_tensor;

/* Reference-counted buffer on one device. Allocated through the device's caching allocator. */
struct nn_storage {
  int refcount;
  nn_device device;
  size_t nbytes;
  void *data;
};

/* A strided view of a storage. shape/stride count elements; offset is in elements. */
struct nn_tensor {
  int refcount;
  nn_dtype dtype;
  int ndim;
  int64_t shape[NN_MAX_DIMS];
  int64_t stride[NN_MAX_DIMS];
  int64_t offset;
  nn_storage *storage;
  bool requires_grad; /* leaf: accumulate into grad; non-leaf: has grad_fn */
  nn_tensor *grad;    /* accumulated gradient of a leaf (owned), NULL until backward */
  nn_node *grad_fn;   /* node that produced this tensor (owned reference), NULL for leaves */
};

/* ---- errors ---- */
const char *nn_errmsg(void); /* message of the last failed call on this thread */
int nn_errcode(void);        /* code of the last failed call on this thread */
int nn_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nn_clearerr(void);
/* Writes "(2, 3, 4)" into buf; returns buf. For error messages. */
const char *nn_shape_str(const nn_tensor *t, char *buf, size_t n);
const char *nn_dtype_name(nn_dtype dt);
const char *nn_device_name(nn_device_type d);
size_t nn_dtype_size(nn_dtype dt);

/* Always-on assert for broken invariants (never for user input). */
#define NN_ASSERT(c)                                                                               \
  do {                                                                                             \
    if (!(c)) nn_assert_fail(__FILE__, __LINE__, #c);                                              \
  } while (0)
void nn_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));

/* ---- threads ---- */
/* One setting for both wb's own OpenMP loops and OpenBLAS. n <= 0 means all cores. */
void nn_set_num_threads(int n);
int nn_get_num_threads(void);
/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent Intel CPUs and falls back to its slow
 * SSE3 kernels ("Prescott"), a 5x loss on matrix products. Programs call this first in main():
 * when OPENBLAS_CORETYPE is unset and OpenBLAS chose Prescott on a CPU with AVX-512 (AVX2), it
 * sets OPENBLAS_CORETYPE=SkylakeX (Haswell) and re-runs OpenBLAS's kernel selection in-process
 * (gotoblas_dynamic_init of DYNAMIC_ARCH builds), or, where that is unavailable, re-executes the
 * program (argv) so that OpenBLAS reads the setting when it loads. With the pthreads build of
 * OpenBLAS (whose threads compete with wb's OpenMP threads) and OMP_WAIT_POLICY and
 * GOMP_SPINCOUNT unset, it also sets OMP_WAIT_POLICY=passive and re-executes the program (with
 * argv only). WB_NO_BLAS_TUNE=1 turns both off. The CPU backend calls it (without argv:
 * in-process only) when it initialises, at the first tensor operation; programs may call it
 * first thing in main() to allow the re-exec. */
void nn_blas_init(char **argv);
/* The OpenBLAS kernel set in use ("SkylakeX", "Prescott", ...). */
const char *nn_blas_core(void);

/* ---- determinism and TF32 (process-wide; read by the device backends at each kernel call) ----
 * Deterministic mode (off by default): device kernels avoid reductions whose result depends on
 * the order of atomic operations (scatter_add, embedding backward, ...) and use deterministic
 * cuDNN algorithms only, so that two runs of one program give the same bits on one GPU. The CPU
 * backend is deterministic either way (see nn/README.md). */
void nn_set_deterministic(bool on);
bool nn_get_deterministic(void);
/* Winograd convolution on the CPU: float32 convolutions with 5x5 filters, stride 1, no dilation,
 * one group and channel counts that are multiples of 16 run their forward, input gradient and
 * weight gradient as Winograd F(2x2, 5x5) on AVX-512 CPUs (2.8x fewer multiplications than im2col +
 * GEMM; results differ from direct convolution by rounding, ~1e-6 relative, and a NaN or infinity
 * in the input reaches all four outputs of each 2x2 output tile whose 6x6 input patch holds it). On
 * by default; off with nn_set_winograd(false) or WB_WINOGRAD=0 in the environment, for direct
 * convolution's bits. */
void nn_set_winograd(bool on);
bool nn_get_winograd(void);
/* TF32 tensor-core math for float32 matrix products and convolutions on GPUs that have it
 * (Ampere and later). Off by default, so that device results match the CPU reference within
 * float32 rounding; on, they carry TF32's 10-bit mantissa products (about 1e-3 relative). */
void nn_set_allow_tf32(bool on);
bool nn_get_allow_tf32(void);

/* ---- creation ---- */
/* New contiguous tensor with uninitialised contents. */
int nn_tensor_empty(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt, nn_device dev);
int nn_tensor_zeros(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt, nn_device dev);
int nn_tensor_full(nn_tensor **out, int ndim, const int64_t *shape, double v, nn_dtype dt,
                   nn_device dev);
/* Copies n = prod(shape) values from host memory of type dt. */
int nn_tensor_from_data(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt,
                        const void *data);
/* 0, 1, ..., n-1 */
int nn_tensor_arange(nn_tensor **out, int64_t n, nn_dtype dt);
/* New contiguous tensor shaped like t, uninitialised / zero. */
int nn_tensor_empty_like(nn_tensor **out, const nn_tensor *t);
int nn_tensor_zeros_like(nn_tensor **out, const nn_tensor *t);

extern const nn_device nn_cpu;

/* ---- reference counting ---- */
nn_tensor *nn_tensor_retain(nn_tensor *t); /* returns t */
void nn_tensor_free(nn_tensor *t);         /* drop one reference; NULL is a no-op */

/* ---- inspection ---- */
int64_t nn_tensor_numel(const nn_tensor *t);
bool nn_tensor_is_contiguous(const nn_tensor *t);
bool nn_tensor_same_shape(const nn_tensor *a, const nn_tensor *b);
/* Pointer to the first element (storage data + offset). CPU tensors only. */
void *nn_tensor_data(const nn_tensor *t);
/* Element at a flat row-major index (any strides), as double. CPU only; for tests and Lua. */
double nn_tensor_get_flat(const nn_tensor *t, int64_t i);
void nn_tensor_set_flat(nn_tensor *t, int64_t i, double v);
/* Scalar value of a one-element tensor. */
int nn_tensor_item(const nn_tensor *t, double *v);
/* Copies all elements, row-major, into a host buffer of dtype dt. */
int nn_tensor_to_host(const nn_tensor *t, nn_dtype dt, void *dst);

/* ---- views (share storage, differentiable) ---- */
/* Negative dims count from the end. A reshape of a non-contiguous tensor copies. */
int nn_reshape(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape); /* -1 infers */
int nn_view(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape);    /* never copies */
int nn_transpose(nn_tensor **out, nn_tensor *t, int d0, int d1);
int nn_permute(nn_tensor **out, nn_tensor *t, const int *perm);
int nn_narrow(nn_tensor **out, nn_tensor *t, int dim, int64_t start, int64_t len);
/* Python-style slice along dim: start <= i < stop, step > 0; negative start/stop from the end. */
int nn_slice(nn_tensor **out, nn_tensor *t, int dim, int64_t start, int64_t stop, int64_t step);
/* Broadcast to shape without copying (stride 0 on expanded dims). */
int nn_expand(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape);
int nn_unsqueeze(nn_tensor **out, nn_tensor *t, int dim);
int nn_squeeze(nn_tensor **out, nn_tensor *t, int dim); /* dim must have size 1 */
int nn_flatten(nn_tensor **out, nn_tensor *t, int start_dim, int end_dim);
/* t itself (retained) when contiguous, otherwise a contiguous copy. Differentiable. */
int nn_contiguous(nn_tensor **out, nn_tensor *t);
/* A copy with new storage. Differentiable. */
int nn_clone(nn_tensor **out, nn_tensor *t);
/* Converted copy (or t retained when dt matches). Differentiable between float dtypes. */
int nn_to_dtype(nn_tensor **out, nn_tensor *t, nn_dtype dt);
/* Shares storage, no grad_fn, requires_grad false. */
int nn_detach(nn_tensor **out, nn_tensor *t);
/* A contiguous copy of t on device dev (t itself, retained, when it is already there).
 * Differentiable: the gradient is copied back to t's device. NN_ERR_DEVICE when dev is not
 * built in or has no such index. */
int nn_to_device(nn_tensor **out, nn_tensor *t, nn_device dev);
/* Parses "cpu", "cuda", "cuda:1"; NN_ERR_ARG naming the valid forms otherwise. */
int nn_device_parse(nn_device *out, const char *s);

/* ---- in-place (not recorded by autograd; for optimizers and initialisation) ---- */
/* src broadcast to dst, dtype converted; a src on another device is moved to dst's first. */
int nn_copy_(nn_tensor *dst, const nn_tensor *src);
int nn_fill_(nn_tensor *t, double v);
/* Makes t a view of the same memory as v (same shape and dtype required): t's old storage is
 * released. For flat parameter buffers: the parameter object stays, its memory moves. */
int nn_tensor_rebind_(nn_tensor *t, const nn_tensor *v);

/* Normalises a possibly negative dim against ndim; returns -1 when out of range. */
int nn_wrap_dim(int dim, int ndim);

/* Compute the broadcast shape of a and b; NN_ERR_SHAPE with a message naming op on failure. */
int nn_broadcast_shape(const char *op, const nn_tensor *a, const nn_tensor *b, int *ndim,
                       int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
