/* nn/tests/harness.h: the small test harness every C test of the core uses.
 *
 *   CHECK(cond, fmt, ...)       one assertion; failures print file:line and the message
 *   OK(call)                    asserts that an nn_* call returned NN_OK (prints nn_errmsg)
 *   th_rand(shape, lo, hi)      fresh random float tensor (harness RNG, independent of nn's)
 *   th_noncontig(t)             same values, laid out with a stride of 2 in the last dim
 *   th_close(t, ref, atol, rtol)  elementwise comparison against a double reference array
 *   th_gradcheck(...)           backward against central finite differences
 *   th_done()                   prints "N passed, N failed" and returns the exit code
 */
#ifndef NN_TESTS_HARNESS_H
#define NN_TESTS_HARNESS_H

#include "nn.h"

#include <stdio.h>
#include <stdlib.h>

extern int th_passed, th_failed;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (cond) {                                                                                    \
      th_passed++;                                                                                 \
    } else {                                                                                       \
      th_failed++;                                                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
    }                                                                                              \
  } while (0)

#define OK(call)                                                                                   \
  do {                                                                                             \
    int rc_ = (call);                                                                              \
    CHECK(rc_ == NN_OK, "%s returned %d: %s", #call, rc_, nn_errmsg());                            \
  } while (0)

/* Expects call to fail with code; checks that nn_errmsg() contains substring want. */
#define EXPECT_ERR(call, code, want)                                                               \
  th_expect_err((call), (code), (want), #call, __FILE__, __LINE__)
void th_expect_err(int rc, int code, const char *want, const char *expr, const char *file,
                   int line);

/* Deterministic harness RNG (xorshift64*), seeded by th_seed. */
void th_seed(uint64_t s);
double th_uniform(void);
nn_tensor *th_rand(int ndim, const int64_t *shape, double lo, double hi);
nn_tensor *th_rand_dt(int ndim, const int64_t *shape, double lo, double hi, nn_dtype dt);
/* Random int64 tensor with values in [0, n). */
nn_tensor *th_randint(int ndim, const int64_t *shape, int64_t n);
nn_tensor *th_noncontig(const nn_tensor *t);

/* All elements within atol + rtol*|ref|. Prints the first mismatch. Returns 1 if close. */
int th_close(const nn_tensor *t, const double *ref, double atol, double rtol, const char *what);
/* Copies t into a new malloc'd double array (row-major). */
double *th_to_double(const nn_tensor *t);

/* fn computes out from the inputs (grad mode may be on or off; it must not free inputs). */
typedef int (*th_fn)(void *ctx, nn_tensor **in, nn_tensor **out);
/* Checks d(sum(out * R))/d(in[i]) for every in[i] with requires_grad, against central
 * differences with step eps, to atol + rtol*|numeric|. Returns 1 when all agree. */
int th_gradcheck(th_fn fn, void *ctx, int n_in, nn_tensor **in, double eps, double atol,
                 double rtol, const char *what);

int th_done(void);

#endif
