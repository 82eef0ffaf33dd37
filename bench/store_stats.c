/* bench/store_stats.c: summary statistics for comparison tables: mean, sample standard
 * deviation, and the 95% confidence interval of the mean, mean +/- t(0.975, n-1) s / sqrt(n)
 * (Student 1908). */
#include "store.h"

#include <math.h>

/* t(0.975, df) for df = 1..30, to 9 decimals (checked against numerical integration of the
 * t density). */
static const double T975[31] = {
    NAN,         12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
    2.364624252, 2.306004135,  2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656,
    2.144786688, 2.131449546,  2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
    2.079613845, 2.073873068,  2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516,
    2.048407142, 2.045229642,  2.042272456,
};

double wb_stats_t975(int64_t df) {
  if (df < 1) return NAN;
  if (df <= 30) return T975[df];
  /* Cornish-Fisher expansion of the t quantile around the normal quantile z (Abramowitz &
   * Stegun 26.7.5); four terms are within 1e-7 of the exact value for df > 30 and tend to z */
  const double z = 1.959963984540054, z2 = z * z;
  const double v = (double)df;
  double g1 = z * (z2 + 1) / 4;
  double g2 = z * ((5 * z2 + 16) * z2 + 3) / 96;
  double g3 = z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384;
  double g4 = z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160;
  return z + (g1 + (g2 + (g3 + g4 / v) / v) / v) / v;
}

void wb_stats_compute(wb_stats *out, const double *x, int64_t n) {
  out->n = n > 0 ? n : 0;
  out->mean = out->std = out->ci95 = out->min = out->max = NAN;
  if (n <= 0 || !x) return;
  double sum = 0, lo = x[0], hi = x[0];
  for (int64_t i = 0; i < n; i++) {
    sum += x[i];
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  double mean = sum / (double)n;
  out->mean = mean;
  out->min = lo;
  out->max = hi;
  if (n < 2) return;
  /* two passes: sum of squared deviations from the mean, not E[x^2] - mean^2, which loses
   * every digit when the spread is small next to the mean (accuracies near 0.9) */
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
  out->std = sqrt(ss / (double)(n - 1));
  out->ci95 = wb_stats_t975(n - 1) * out->std / sqrt((double)n);
}
