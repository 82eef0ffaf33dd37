/* nn/dispatch.c: backend registry, op names, kernel dispatch and the thread setting. */
#include "backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *op_names[NN_OP_COUNT] = {
#define NN_OP(id, name) name,
#include "ops.def"
#undef NN_OP
};

const char *nn_op_name(int op) { return op >= 0 && op < NN_OP_COUNT ? op_names[op] : "?"; }

static const nn_backend_i *backends[NN_DEVICE_COUNT];

void nn_cpu_backend_init(void); /* backend/cpu/cpu_backend.c */
#ifdef WB_HAVE_CUDA
/* backend/cuda/cuda_backend.cu: the CUDA backend, or NULL when no device is present (no driver,
 * or cudaGetDeviceCount reports none). */
const nn_backend_i *nn_cuda_backend_init(void);

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static void cuda_probe(void) {
  const nn_backend_i *be = nn_cuda_backend_init();
  if (be) nn_backend_register(NN_DEVICE_CUDA, be);
}
#endif

void nn_backend_register(nn_device_type d, const nn_backend_i *be) { backends[d] = be; }

/* The CUDA backend registers itself at its first use, so that a CPU-only program never
 * initialises the CUDA runtime; without a device it stays NULL and nn_tensor_empty on cuda
 * reports "device cuda is not available". */
const nn_backend_i *nn_backend_get(nn_device_type d) {
  if (!backends[NN_DEVICE_CPU]) nn_cpu_backend_init();
#ifdef WB_HAVE_CUDA
  if (d == NN_DEVICE_CUDA) pthread_once(&cuda_once, cuda_probe);
#endif
  return (d >= 0 && d < NN_DEVICE_COUNT) ? backends[d] : NULL;
}

/* ---- deterministic mode and TF32 (tensor.h) ---- */

static atomic_bool deterministic, allow_tf32;

void nn_set_deterministic(bool on) { atomic_store(&deterministic, on); }
bool nn_get_deterministic(void) { return atomic_load(&deterministic); }
void nn_set_allow_tf32(bool on) { atomic_store(&allow_tf32, on); }
bool nn_get_allow_tf32(void) { return atomic_load(&allow_tf32); }

int nn_dispatch(int op, int n_out, nn_tensor *const *out, int n_in, nn_tensor *const *in,
                const nn_op_params *p) {
  nn_tensor *first = n_out ? out[0] : in[0];
  nn_device_type d = first->storage->device.type;
  for (int i = 0; i < n_out; i++)
    if (out[i] && out[i]->storage->device.type != d) goto mixed;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->storage->device.type != d) goto mixed;
  const nn_backend_i *be = nn_backend_get(d);
  if (!be)
    return nn_seterr(NN_ERR_DEVICE, "%s: device %s is not available in this build", op_names[op],
                     nn_device_name(d));
  if (!be->kernels[op])
    return nn_seterr(NN_ERR_DEVICE, "%s is not implemented on %s", op_names[op], nn_device_name(d));
  return be->kernels[op](out, in, p);
mixed:
  return nn_seterr(NN_ERR_DEVICE, "%s: tensors on different devices (expected all on %s)",
                   op_names[op], nn_device_name(d));
}

/* ---- threads: one setting for OpenMP loops and OpenBLAS ---- */

extern void openblas_set_num_threads(int n);
static int n_threads;

void nn_set_num_threads(int n) {
#ifdef _OPENMP
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
#else
  if (n <= 0) n = 1;
#endif
  openblas_set_num_threads(n);
  n_threads = n;
}

int nn_get_num_threads(void) {
#ifdef _OPENMP
  return n_threads ? n_threads : omp_get_max_threads();
#else
  return n_threads ? n_threads : 1;
#endif
}
