/* nn/dispatch.c: backend registry, op names, kernel dispatch and the thread setting. */
#include "backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *op_names[NN_OP_COUNT] = {
#define NN_OP(id, name) name,
#include "ops.def"
#undef NN_OP
};

const char *nn_op_name(int op) { return op >= 0 && op < NN_OP_COUNT ? op_names[op] : "?"; }

bool nn_env_flag(const char *name, bool dflt) {
  const char *e = getenv(name);
  if (!e || !*e) return dflt;
  static const char *const off[] = {"0", "off", "false", "no"};
  for (size_t i = 0; i < sizeof off / sizeof *off; i++)
    if (!strcasecmp(e, off[i])) return false;
  return true;
}

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

/* ---- WB_OP_PROFILE=1: wall time per op and output shape, printed to stderr at exit ----
 * Only calls made outside another kernel are timed (a kernel's own nested ops count in its
 * time). On an asynchronous device (CUDA) the times are launch times, not kernel times. */

#define PROF_SLOTS 512
typedef struct prof_slot {
  char key[96];
  double seconds;
  long calls;
} prof_slot;
static prof_slot prof[PROF_SLOTS];
static int prof_n;
static atomic_int prof_state = -1; /* -1 unknown, 0 off, 1 on */
static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int prof_depth;

static int prof_cmp(const void *a, const void *b) {
  double x = ((const prof_slot *)a)->seconds, y = ((const prof_slot *)b)->seconds;
  return (x < y) - (x > y);
}

static void prof_print(void) {
  double total = 0;
  for (int i = 0; i < prof_n; i++) total += prof[i].seconds;
  qsort(prof, (size_t)prof_n, sizeof *prof, prof_cmp);
  fprintf(stderr, "# WB_OP_PROFILE: %.3f s in ops (top-level calls)\n%9s %6s %9s %10s  %s\n", total,
          "seconds", "share", "calls", "us/call", "op [output shape]");
  for (int i = 0; i < prof_n; i++)
    fprintf(stderr, "%9.3f %5.1f%% %9ld %10.1f  %s\n", prof[i].seconds,
            total > 0 ? 100 * prof[i].seconds / total : 0.0, prof[i].calls,
            1e6 * prof[i].seconds / (double)prof[i].calls, prof[i].key);
}

static bool profile_on(void) {
  if (prof_state < 0) {
    pthread_mutex_lock(&prof_mu);
    if (prof_state < 0) {
      prof_state = nn_env_flag("WB_OP_PROFILE", false) ? 1 : 0;
      if (prof_state) atexit(prof_print);
    }
    pthread_mutex_unlock(&prof_mu);
  }
  return prof_state == 1;
}

static int profiled(const nn_backend_i *be, int op, int n_out, nn_tensor *const *out, int n_in,
                    nn_tensor *const *in, const nn_op_params *p) {
  if (prof_depth > 0) return be->kernels[op](out, in, p);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  prof_depth++;
  int rc = be->kernels[op](out, in, p);
  prof_depth--;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const nn_tensor *t = n_out ? out[0] : in[0];
  (void)n_in;
  char key[96];
  int k = snprintf(key, sizeof key, "%s [", op_names[op]);
  for (int i = 0; i < t->ndim && k < (int)sizeof key - 24; i++)
    k += snprintf(key + k, sizeof key - (size_t)k, "%s%lld", i ? "," : "", (long long)t->shape[i]);
  snprintf(key + k, sizeof key - (size_t)k, "]");
  pthread_mutex_lock(&prof_mu);
  int i = 0;
  while (i < prof_n && strcmp(prof[i].key, key)) i++;
  if (i == prof_n && prof_n < PROF_SLOTS) snprintf(prof[prof_n++].key, sizeof prof->key, "%s", key);
  if (i < prof_n) {
    prof[i].seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    prof[i].calls++;
  }
  pthread_mutex_unlock(&prof_mu);
  return rc;
}

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
  if (profile_on()) return profiled(be, op, n_out, out, n_in, in, p);
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
