/* nn/backend/cpu/cpu_sums.h: loop helpers shared by cpu_nnet.c and cpu_norm.c (internal). */
#ifndef NN_CPU_SUMS_H
#define NN_CPU_SUMS_H

#include <stdint.h>

/* Runs BODY for i in [0, n): blocks of 8 (a loop GCC vectorizes even at -O2, where loops of
 * unknown length stay scalar), then the tail. */
#define FOR8(i, n, BODY)                                                                           \
  do {                                                                                             \
    int64_t i8_ = 0, n8_ = (n);                                                                    \
    for (; i8_ + 8 <= n8_; i8_ += 8)                                                               \
      for (int64_t i = i8_; i < i8_ + 8; i++) BODY;                                                \
    for (int64_t i = i8_; i < n8_; i++) BODY;                                                      \
  } while (0)

/* Sums of n values in double with 8 interleaved accumulators: vectorizable, and the order is
 * fixed by n alone. */
#define DEF_SUMS(SUF, T)                                                                           \
  static inline double sum_##SUF(const T *restrict a, int64_t n) {                                 \
    double acc[8] = {0};                                                                           \
    int64_t i = 0;                                                                                 \
    for (; i + 8 <= n; i += 8)                                                                     \
      for (int j = 0; j < 8; j++) acc[j] += a[i + j];                                              \
    for (; i < n; i++) acc[0] += a[i];                                                             \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }                                                                                                \
  /* sum (a - m)^2 */                                                                              \
  static inline double sqdev_##SUF(const T *restrict a, int64_t n, double m) {                     \
    double acc[8] = {0};                                                                           \
    int64_t i = 0;                                                                                 \
    for (; i + 8 <= n; i += 8)                                                                     \
      for (int j = 0; j < 8; j++) {                                                                \
        double d = a[i + j] - m;                                                                   \
        acc[j] += d * d;                                                                           \
      }                                                                                            \
    for (; i < n; i++) {                                                                           \
      double d = a[i] - m;                                                                         \
      acc[0] += d * d;                                                                             \
    }                                                                                              \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }                                                                                                \
  /* sum g and sum g * (a - m) */                                                                  \
  static inline void dotdev_##SUF(const T *restrict g, const T *restrict a, int64_t n, double m,   \
                                  double *sg, double *sga) {                                       \
    double s1[8] = {0}, s2[8] = {0};                                                               \
    int64_t i = 0;                                                                                 \
    for (; i + 8 <= n; i += 8)                                                                     \
      for (int j = 0; j < 8; j++) {                                                                \
        s1[j] += g[i + j];                                                                         \
        s2[j] += g[i + j] * (a[i + j] - m);                                                        \
      }                                                                                            \
    for (; i < n; i++) {                                                                           \
      s1[0] += g[i];                                                                               \
      s2[0] += g[i] * (a[i] - m);                                                                  \
    }                                                                                              \
    *sg = ((s1[0] + s1[1]) + (s1[2] + s1[3])) + ((s1[4] + s1[5]) + (s1[6] + s1[7]));               \
    *sga = ((s2[0] + s2[1]) + (s2[2] + s2[3])) + ((s2[4] + s2[5]) + (s2[6] + s2[7]));              \
  }
DEF_SUMS(f, float)
DEF_SUMS(d, double)

#endif
