/* nn/backend/cpu/cpu_backend.c: the CPU backend: host memory, the row iterator, registration. */
#include "cpu.h"

#include <cblas.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void *cpu_alloc(size_t nbytes) {
  /* 64-byte alignment for AVX-512 loads */
  return aligned_alloc(64, (nbytes + 63) & ~(size_t)63);
}

static void cpu_free(void *p) { free(p); }

static nn_backend_i cpu_backend;

void nn_cpu_backend_init(void) {
  if (cpu_backend.name) return;
  cpu_backend.name = "cpu";
  cpu_backend.alloc = cpu_alloc;
  cpu_backend.free = cpu_free;
  nn_cpu_register_core(&cpu_backend);
  nn_cpu_register_elementwise(&cpu_backend);
  nn_cpu_register_reduce(&cpu_backend);
  nn_cpu_register_nnet(&cpu_backend);
  nn_cpu_register_index(&cpu_backend);
  nn_cpu_register_optim(&cpu_backend);
  nn_cpu_register_block(&cpu_backend);
  nn_backend_register(NN_DEVICE_CPU, &cpu_backend);
  nn_blas_init(NULL); /* OpenBLAS's fast kernels on CPUs it does not recognise (in-process) */
}

void cpu_iter_init(cpu_iter *it, int n_ops, nn_tensor *const *ops) {
  memset(it, 0, sizeof *it);
  it->n_ops = n_ops;
  const nn_tensor *t0 = ops[0];
  for (int k = 0; k < n_ops; k++) {
    it->base[k] = nn_tensor_data(ops[k]);
    it->esize[k] = (int)nn_dtype_size(ops[k]->dtype);
  }
  /* drop size-1 dims, then merge d into d+1 where every operand is contiguous across them */
  int nd = 0;
  for (int d = 0; d < t0->ndim; d++) {
    if (t0->shape[d] == 1) continue;
    it->shape[nd] = t0->shape[d];
    for (int k = 0; k < n_ops; k++) it->stride[k][nd] = ops[k]->stride[d];
    nd++;
  }
  if (nd == 0) {
    it->ndim = 1;
    it->shape[0] = nn_tensor_numel(t0); /* 1, or 0 for an empty tensor */
    return;
  }
  int m = 0;
  for (int d = 1; d < nd; d++) {
    bool ok = true;
    for (int k = 0; k < n_ops; k++)
      if (it->stride[k][m] != it->stride[k][d] * it->shape[d]) ok = false;
    if (ok) {
      it->shape[m] *= it->shape[d];
      for (int k = 0; k < n_ops; k++) it->stride[k][m] = it->stride[k][d];
    } else {
      m++;
      it->shape[m] = it->shape[d];
      for (int k = 0; k < n_ops; k++) it->stride[k][m] = it->stride[k][d];
    }
  }
  it->ndim = m + 1;
  for (int d = 0; d < it->ndim; d++)
    if (it->shape[d] == 0) {
      it->ndim = 1;
      it->shape[0] = 0;
    }
}

/* Runs rows [r0, r1) of the outer index space (all dims but the last) over inner range [i0, i1). */
static void run_rows(const cpu_iter *it, int64_t r0, int64_t r1, int64_t i0, int64_t i1,
                     cpu_row_fn fn, const void *ctx) {
  int nd = it->ndim, last = nd - 1;
  int64_t s[CPU_MAX_OPS];
  for (int k = 0; k < it->n_ops; k++) s[k] = it->stride[k][last];
  for (int64_t r = r0; r < r1; r++) {
    char *p[CPU_MAX_OPS];
    int64_t rem = r;
    int64_t off[CPU_MAX_OPS] = {0};
    for (int d = last - 1; d >= 0; d--) {
      int64_t idx = rem % it->shape[d];
      rem /= it->shape[d];
      for (int k = 0; k < it->n_ops; k++) off[k] += idx * it->stride[k][d];
    }
    for (int k = 0; k < it->n_ops; k++) p[k] = it->base[k] + (off[k] + i0 * s[k]) * it->esize[k];
    fn(i1 - i0, p, s, ctx);
  }
}

void cpu_iter_run(const cpu_iter *it, cpu_row_fn fn, const void *ctx, bool parallel) {
  int last = it->ndim - 1;
  int64_t inner = it->shape[last], outer = 1;
  for (int d = 0; d < last; d++) outer *= it->shape[d];
  int64_t total = inner * outer;
  if (total == 0) return;
  if (!parallel || total < CPU_PAR_MIN) {
    run_rows(it, 0, outer, 0, inner, fn, ctx);
    return;
  }
  if (outer == 1) { /* one long row: split it into fixed chunks */
    const int64_t CH = 16384;
    int64_t nch = (inner + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nch; c++) {
      int64_t i0 = c * CH, i1 = i0 + CH < inner ? i0 + CH : inner;
      run_rows(it, 0, 1, i0, i1, fn, ctx);
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < outer; r++) run_rows(it, r, r + 1, 0, inner, fn, ctx);
}

bool cpu_have_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  static int v = -1; /* a benign race: every thread computes the same value */
  if (v < 0)
    v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return v;
#else
  return false;
#endif
}

const char *nn_blas_core(void) {
  nn_cpu_backend_init(); /* runs nn_blas_init once */
  return openblas_get_corename();
}

/* DYNAMIC_ARCH builds of OpenBLAS (Debian's) export these; weak so that other builds link. */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

/* With the pthreads build of OpenBLAS, its threads and wb's OpenMP threads are two pools: idle
 * OpenMP workers spin (libgomp's default wait policy) on the cores OpenBLAS's threads need, and
 * with as many threads as cores a training step ran 4-30x slower (bench/README.md). A passive
 * wait policy removes that; libgomp reads it when it loads, so it takes a re-exec. */
static bool wants_passive_wait(void) {
#if defined(_OPENMP) && defined(OPENBLAS_THREAD)
  return openblas_get_parallel() == OPENBLAS_THREAD && !getenv("OMP_WAIT_POLICY") &&
         !getenv("GOMP_SPINCOUNT");
#else
  return false;
#endif
}

void nn_blas_init(char **argv) {
  if (nn_env_flag("WB_NO_BLAS_TUNE", false)) return;
  bool reexec = false;
  if (argv && argv[0] && wants_passive_wait()) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    reexec = true;
  }
  const char *core = openblas_get_corename(), *want = NULL;
  if (!getenv("OPENBLAS_CORETYPE") && core && !strcasecmp(core, "prescott")) {
    /* OpenBLAS did not recognise the CPU */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      want = "Haswell";
  }
  if (want) {
    setenv("OPENBLAS_CORETYPE", want, 1);
    if (!reexec && gotoblas_dynamic_init && gotoblas_dynamic_quit) {
      /* re-run OpenBLAS's kernel selection in this process, now that the core type is set */
      gotoblas_dynamic_quit();
      gotoblas_dynamic_init();
      if (!strcasecmp(openblas_get_corename(), want)) return;
    }
    reexec = true;
  }
  if (reexec && argv && argv[0]) execv("/proc/self/exe", argv); /* returns only on failure */
  if (want) unsetenv("OPENBLAS_CORETYPE");
}
