/* nn/tests/test_rng.c: Philox-4x32-10 against the Random123 known-answer vectors, the draw rules
 * of rng.h element by element, reproducibility (same seed, streams, thread counts), the offset
 * advance of every draw, statistics with tolerances derived from the sample size, and the error
 * messages of bad arguments. */
#include "harness.h"

#include <math.h>
#include <string.h>

/* Allowed deviation of a sample estimate: 5 standard errors (a false alarm about 1 in 10^6). */
#define Z 5.0

static double u_rule(const nn_rng *r, uint64_t block, int w) {
  return ((double)(nn_rng_word(r, block, w) >> 8) + 0.5) / 16777216.0;
}

/* ---- Philox ---- */

static void test_kat(void) {
  /* Random123 tests/kat_vectors, the three "philox4x32 10" lines: ctr[4], key[2] -> out[4] */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    nn_philox4x32(kat[k], kat[k] + 4, out);
    for (int w = 0; w < 4; w++)
      CHECK(out[w] == kat[k][6 + w], "philox KAT %d word %d: %08x, want %08x", k, w, out[w],
            kat[k][6 + w]);
  }
  /* the generator's counter layout: block in words 0-1, stream in 2-3, seed as the key */
  nn_rng r;
  nn_rng_init(&r, 0x299f31d0a4093822ull, 0x0370734413198a2eull);
  CHECK(nn_rng_word(&r, 0x85a308d3243f6a88ull, 0) == 0xd16cfe09 &&
            nn_rng_word(&r, 0x85a308d3243f6a88ull, 3) == 0x24126ea1,
        "nn_rng_word counter layout");
  CHECK(r.offset == 0, "nn_rng_word does not advance");
}

/* ---- draw rules, element by element ---- */

static void test_rules(void) {
  nn_rng r;
  nn_rng_init(&r, 42, 7);
  r.offset = 5;
  nn_rng r0 = r;
  /* uniform, float64: exact */
  nn_tensor *t = NULL;
  OK(nn_tensor_empty(&t, 2, (int64_t[]){3, 5}, NN_DTYPE_F64, nn_cpu));
  OK(nn_uniform_(t, -2, 3, &r));
  CHECK(r.offset == 5 + 4, "uniform of 15 advances 4 blocks, got %llu",
        (unsigned long long)(r.offset - 5));
  int ok = 1;
  for (int i = 0; i < 15; i++)
    if (nn_tensor_get_flat(t, i) != -2 + 5 * u_rule(&r0, 5 + i / 4, i % 4)) ok = 0;
  CHECK(ok, "uniform float64 follows the rule");
  nn_tensor_free(t);
  /* uniform, float32: the rule rounded once */
  r = r0;
  OK(nn_tensor_empty(&t, 1, (int64_t[]){13}, NN_DTYPE_F32, nn_cpu));
  OK(nn_uniform_(t, 0.5, 1.5, &r));
  ok = 1;
  for (int i = 0; i < 13; i++)
    if (nn_tensor_get_flat(t, i) != (float)(0.5 + u_rule(&r0, 5 + i / 4, i % 4))) ok = 0;
  CHECK(ok, "uniform float32 follows the rule");
  nn_tensor_free(t);
  /* normal: block o + i/2, words (0,1) for even i, (2,3) for odd i */
  r = r0;
  OK(nn_tensor_empty(&t, 1, (int64_t[]){7}, NN_DTYPE_F64, nn_cpu));
  OK(nn_normal_(t, 1, 2, &r));
  CHECK(r.offset == 5 + 4, "normal of 7 advances 4 blocks");
  ok = 1;
  for (int i = 0; i < 7; i++) {
    uint64_t b = 5 + i / 2;
    int w = 2 * (i % 2);
    double z = sqrt(-2 * log(u_rule(&r0, b, w))) * cos(2 * M_PI * u_rule(&r0, b, w + 1));
    if (fabs(nn_tensor_get_flat(t, i) - (1 + 2 * z)) > 1e-12) ok = 0;
  }
  CHECK(ok, "normal follows the rule");
  nn_tensor_free(t);
  /* bernoulli */
  r = r0;
  OK(nn_tensor_empty(&t, 1, (int64_t[]){9}, NN_DTYPE_F32, nn_cpu));
  OK(nn_bernoulli_(t, 0.3, &r));
  CHECK(r.offset == 5 + 3, "bernoulli of 9 advances 3 blocks");
  ok = 1;
  for (int i = 0; i < 9; i++)
    if (nn_tensor_get_flat(t, i) != (u_rule(&r0, 5 + i / 4, i % 4) < 0.3 ? 1.0 : 0.0)) ok = 0;
  CHECK(ok, "bernoulli follows the rule");
  nn_tensor_free(t);
  /* categorical: smallest k with cdf[k] > u * total, u of element r*S + j */
  r = r0;
  nn_tensor *p = NULL, *o = NULL;
  double pv[6] = {1, 0, 2, 0.5, 0.5, 3};
  OK(nn_tensor_from_data(&p, 2, (int64_t[]){2, 3}, NN_DTYPE_F64, pv));
  OK(nn_categorical(&o, p, 5, &r));
  CHECK(r.offset == 5 + 3, "categorical of 2x5 advances 3 blocks");
  ok = o != NULL;
  for (int i = 0; ok && i < 10; i++) {
    const double *row = pv + (i / 5) * 3;
    double tot = row[0] + row[1] + row[2], tgt = u_rule(&r0, 5 + i / 4, i % 4) * tot, c = 0;
    int k = 0;
    for (; k < 3; k++)
      if ((c += row[k]) > tgt) break;
    if (nn_tensor_get_flat(o, i) != k) ok = 0;
  }
  CHECK(ok, "categorical follows the rule");
  nn_tensor_free(o);
  nn_tensor_free(p);
  /* randperm: Fisher-Yates with nn_rng_below */
  r = r0;
  nn_rng r1 = r0;
  OK(nn_randperm(&o, 6, &r));
  CHECK(r.offset == 5 + 5, "randperm of 6 advances 5 blocks");
  int64_t a[6] = {0, 1, 2, 3, 4, 5};
  for (int i = 5; i > 0; i--) {
    int64_t j = (int64_t)nn_rng_below(&r1, (uint64_t)i + 1), s = a[i];
    a[i] = a[j];
    a[j] = s;
  }
  ok = o != NULL;
  for (int i = 0; ok && i < 6; i++)
    if (nn_tensor_get_flat(o, i) != a[i]) ok = 0;
  CHECK(ok, "randperm follows the rule");
  nn_tensor_free(o);
}

/* A float32 draw that rounds to hi is moved just below it: find a word whose top 24 bits are all
 * ones (u = 1 - 2^-25, which float32 rounds to 1) and draw over it. */
static void test_uniform_top(void) {
  nn_rng r;
  nn_rng_init(&r, 1, 0);
  uint64_t blk = 0;
  int w = -1;
  for (uint64_t b = 0; b < (1ull << 26) && w < 0; b++)
    for (int k = 0; k < 4; k++)
      if (nn_rng_word(&r, b, k) >> 8 == 0xffffff) {
        blk = b;
        w = k;
        break;
      }
  CHECK(w >= 0, "found a top word");
  if (w < 0) return;
  r.offset = blk;
  nn_tensor *t = NULL, *t64 = NULL;
  OK(nn_tensor_empty(&t, 1, (int64_t[]){4}, NN_DTYPE_F32, nn_cpu));
  OK(nn_uniform_(t, 0, 1, &r));
  float v = (float)nn_tensor_get_flat(t, w);
  CHECK(v < 1.0f && v == nextafterf(1.0f, 0.0f),
        "float32 uniform at the top is %.9g, want 1 - 2^-24", v);
  r.offset = blk;
  OK(nn_tensor_empty(&t64, 1, (int64_t[]){4}, NN_DTYPE_F64, nn_cpu));
  OK(nn_uniform_(t64, 0, 1, &r));
  CHECK(nn_tensor_get_flat(t64, w) == 1.0 - ldexp(1.0, -25),
        "float64 uniform at the top is 1 - 2^-25");
  nn_tensor_free(t);
  nn_tensor_free(t64);
}

/* ---- reproducibility ---- */

static int same_bits(const nn_tensor *a, const nn_tensor *b) {
  return nn_tensor_numel(a) == nn_tensor_numel(b) &&
         memcmp(nn_tensor_data(a), nn_tensor_data(b),
                (size_t)nn_tensor_numel(a) * nn_dtype_size(a->dtype)) == 0;
}

static void test_reproducible(void) {
  int64_t n = 1000;
  nn_rng a, b, c, d;
  nn_rng_init(&a, 9, 0);
  nn_rng_init(&b, 9, 0);
  nn_rng_init(&c, 9, 1);
  nn_rng_init(&d, 10, 0);
  nn_tensor *ta = NULL, *tb = NULL, *tc = NULL, *td = NULL;
  OK(nn_randn(&ta, 1, &n, &a));
  OK(nn_randn(&tb, 1, &n, &b));
  OK(nn_randn(&tc, 1, &n, &c));
  OK(nn_randn(&td, 1, &n, &d));
  CHECK(same_bits(ta, tb), "same seed and stream give the same bits");
  int eq_c = 0, eq_d = 0;
  for (int64_t i = 0; i < n; i++) {
    eq_c += nn_tensor_get_flat(ta, i) == nn_tensor_get_flat(tc, i);
    eq_d += nn_tensor_get_flat(ta, i) == nn_tensor_get_flat(td, i);
  }
  CHECK(eq_c == 0 && eq_d == 0, "other stream / other seed share %d / %d values", eq_c, eq_d);
  nn_tensor_free(ta);
  nn_tensor_free(tb);
  nn_tensor_free(tc);
  nn_tensor_free(td);
  /* two draws of 8 are one draw of 16 (whole blocks) */
  nn_rng_init(&a, 3, 2);
  nn_rng_init(&b, 3, 2);
  nn_tensor *h1 = NULL, *h2 = NULL, *whole = NULL;
  OK(nn_rand(&h1, 1, (int64_t[]){8}, &a));
  OK(nn_rand(&h2, 1, (int64_t[]){8}, &a));
  OK(nn_rand(&whole, 1, (int64_t[]){16}, &b));
  CHECK(memcmp(nn_tensor_data(h1), nn_tensor_data(whole), 32) == 0 &&
            memcmp(nn_tensor_data(h2), (float *)nn_tensor_data(whole) + 8, 32) == 0,
        "consecutive draws continue the sequence");
  nn_tensor_free(h1);
  nn_tensor_free(h2);
  nn_tensor_free(whole);
  /* a strided target gets the values of a contiguous draw, in row-major order */
  nn_rng_init(&a, 4, 0);
  nn_rng_init(&b, 4, 0);
  nn_tensor *base = th_rand(2, (int64_t[]){3, 5}, 0, 1), *nc = th_noncontig(base), *ct = NULL;
  OK(nn_normal_(nc, 0, 1, &a));
  OK(nn_tensor_empty(&ct, 2, (int64_t[]){3, 5}, NN_DTYPE_F32, nn_cpu));
  OK(nn_normal_(ct, 0, 1, &b));
  double *ref = th_to_double(ct);
  th_close(nc, ref, 0, 0, "normal_ into a strided view");
  CHECK(a.offset == b.offset, "strided draw advances like a contiguous one");
  free(ref);
  nn_tensor_free(base);
  nn_tensor_free(nc);
  nn_tensor_free(ct);
  /* the default generator */
  nn_manual_seed(77);
  nn_tensor *d1 = NULL, *d2 = NULL;
  OK(nn_rand(&d1, 1, (int64_t[]){10}, NULL));
  CHECK(nn_default_rng()->offset == 3 && nn_default_rng()->seed == 77, "default rng advanced");
  nn_manual_seed(77);
  OK(nn_rand(&d2, 1, (int64_t[]){10}, NULL));
  CHECK(same_bits(d1, d2), "nn_manual_seed restarts the default generator");
  nn_tensor_free(d1);
  nn_tensor_free(d2);
}

/* Every kernel gives the same bits on 1 and 2 threads, on sizes above CPU_PAR_MIN. */
static void test_threads(void) {
  int64_t n = 3 * 32768 + 3; /* CPU_PAR_MIN is 32768; not a multiple of 4 */
  nn_tensor *o[4][2] = {{NULL}};
  nn_tensor *probs = th_rand(2, (int64_t[]){64, 700}, 0, 1),
            *p1 = th_rand(1, (int64_t[]){50}, 0, 1);
  int threads[2] = {1, 2};
  for (int k = 0; k < 2; k++) {
    nn_set_num_threads(threads[k]);
    nn_rng r;
    nn_rng_init(&r, 123, 4);
    OK(nn_rand(&o[0][k], 1, &n, &r));
    OK(nn_randn(&o[1][k], 1, &n, &r));
    OK(nn_tensor_empty(&o[2][k], 1, &n, NN_DTYPE_F64, nn_cpu));
    OK(nn_bernoulli_(o[2][k], 0.25, &r));
    nn_tensor *c1 = NULL, *c2 = NULL;
    OK(nn_categorical(&c1, probs, 600, &r)); /* many rows */
    OK(nn_categorical(&c2, p1, n, &r));      /* one row, many samples */
    nn_tensor *cs[2] = {c1, nn_tensor_retain(c2)};
    nn_tensor *c1f = NULL;
    OK(nn_reshape(&c1f, c1, 1, (int64_t[]){-1}));
    nn_tensor_free(cs[0]);
    cs[0] = c1f;
    OK(nn_concat(&o[3][k], 2, cs, 0));
    nn_tensor_free(cs[0]);
    nn_tensor_free(cs[1]);
    nn_tensor_free(c2);
  }
  nn_set_num_threads(0);
  const char *names[4] = {"uniform", "normal", "bernoulli", "categorical"};
  for (int i = 0; i < 4; i++) {
    CHECK(o[i][0] && o[i][1] && same_bits(o[i][0], o[i][1]), "%s: 1 and 2 threads differ",
          names[i]);
    nn_tensor_free(o[i][0]);
    nn_tensor_free(o[i][1]);
  }
  nn_tensor_free(probs);
  nn_tensor_free(p1);
  /* categorical shares out rows, or a row's samples when there are fewer rows than threads:
   * 3 rows on 1 thread and on 4 threads take the two schedules */
  nn_tensor *p3 = th_rand(2, (int64_t[]){3, 40}, 0, 1), *c[2] = {NULL, NULL};
  int th2[2] = {1, 4};
  for (int k = 0; k < 2; k++) {
    nn_set_num_threads(th2[k]);
    nn_rng r;
    nn_rng_init(&r, 5, 5);
    OK(nn_categorical(&c[k], p3, 20000, &r));
  }
  nn_set_num_threads(0);
  CHECK(c[0] && c[1] && same_bits(c[0], c[1]), "categorical: row and sample schedules differ");
  nn_tensor_free(c[0]);
  nn_tensor_free(c[1]);
  nn_tensor_free(p3);
}

/* ---- statistics ---- */

static void moments(const nn_tensor *t, double *mean, double *var) {
  int64_t n = nn_tensor_numel(t);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) s += nn_tensor_get_flat(t, i);
  *mean = s / n;
  for (int64_t i = 0; i < n; i++) {
    double d = nn_tensor_get_flat(t, i) - *mean;
    s2 += d * d;
  }
  *var = s2 / n;
}

static void test_stats(void) {
  const int64_t n = 1 << 20;
  nn_rng r;
  nn_rng_init(&r, 2024, 0);
  double m, v;
  /* uniform on [lo, hi): mean (lo+hi)/2, var w^2/12; se of the var from E(x-m)^4 = w^4/80 */
  nn_tensor *t = NULL;
  OK(nn_tensor_empty(&t, 1, &n, NN_DTYPE_F32, nn_cpu));
  OK(nn_uniform_(t, -1, 3, &r));
  moments(t, &m, &v);
  double w = 4, se_m = sqrt(w * w / 12 / n),
         se_v = sqrt((w * w * w * w / 80 - w * w * w * w / 144) / n);
  CHECK(fabs(m - 1) < Z * se_m, "uniform mean %g (se %g)", m, se_m);
  CHECK(fabs(v - w * w / 12) < Z * se_v, "uniform var %g (se %g)", v, se_v);
  int inside = 1;
  for (int64_t i = 0; i < n; i++) {
    double x = nn_tensor_get_flat(t, i);
    if (!(x >= -1 && x < 3)) inside = 0;
  }
  CHECK(inside, "uniform values in [lo, hi)");
  /* normal(mean 2, std 3): se of the mean std/sqrt(n), of the var std^2 sqrt(2/n) */
  OK(nn_normal_(t, 2, 3, &r));
  moments(t, &m, &v);
  CHECK(fabs(m - 2) < Z * 3 / sqrt(n), "normal mean %g", m);
  CHECK(fabs(v - 9) < Z * 9 * sqrt(2.0 / n), "normal var %g", v);
  int64_t within = 0;
  for (int64_t i = 0; i < n; i++) within += fabs(nn_tensor_get_flat(t, i) - 2) < 3;
  double q = 0.682689492137, fq = (double)within / n;
  CHECK(fabs(fq - q) < Z * sqrt(q * (1 - q) / n), "normal: %g within one std, want %g", fq, q);
  /* bernoulli rate */
  OK(nn_bernoulli_(t, 0.3, &r));
  moments(t, &m, &v);
  CHECK(fabs(m - 0.3) < Z * sqrt(0.3 * 0.7 / n), "bernoulli rate %g", m);
  nn_tensor_free(t);
  /* categorical, unnormalised, a zero class, and a strided (transposed) 2-D probs */
  const int64_t S = 200000;
  double pv[8] = {1, 0, 3, 6, 5, 5, 0, 0};
  nn_tensor *pt = NULL, *p = NULL, *o = NULL;
  OK(nn_tensor_from_data(&pt, 2, (int64_t[]){4, 2}, NN_DTYPE_F64,
                         (double[]){pv[0], pv[4], pv[1], pv[5], pv[2], pv[6], pv[3], pv[7]}));
  OK(nn_transpose(&p, pt, 0, 1)); /* (2, 4), strided */
  OK(nn_categorical(&o, p, S, &r));
  if (o) {
    CHECK(o->ndim == 2 && o->shape[0] == 2 && o->shape[1] == S && o->dtype == NN_DTYPE_I64,
          "categorical shape");
    for (int row = 0; row < 2; row++) {
      int64_t cnt[4] = {0};
      int bad = 0;
      for (int64_t j = 0; j < S; j++) {
        int64_t k = (int64_t)nn_tensor_get_flat(o, row * S + j);
        if (k < 0 || k > 3)
          bad = 1;
        else
          cnt[k]++;
      }
      CHECK(!bad, "categorical values in range");
      double tot = 0;
      for (int k = 0; k < 4; k++) tot += pv[row * 4 + k];
      for (int k = 0; k < 4; k++) {
        double pk = pv[row * 4 + k] / tot, f = (double)cnt[k] / S;
        if (pk == 0)
          CHECK(cnt[k] == 0, "class %d of probability 0 drawn %lld times", k, (long long)cnt[k]);
        else
          CHECK(fabs(f - pk) < Z * sqrt(pk * (1 - pk) / S), "row %d class %d: %g, want %g", row, k,
                f, pk);
      }
    }
  }
  nn_tensor_free(o);
  nn_tensor_free(p);
  nn_tensor_free(pt);
  /* randperm is a permutation; the 24 orders of 4 are equally likely */
  OK(nn_randperm(&o, 1000, &r));
  if (o) {
    char seen[1000] = {0};
    int okp = o->dtype == NN_DTYPE_I64 && o->shape[0] == 1000;
    for (int i = 0; i < 1000; i++) {
      int64_t x = (int64_t)nn_tensor_get_flat(o, i);
      if (x < 0 || x >= 1000 || seen[x])
        okp = 0;
      else
        seen[x] = 1;
    }
    CHECK(okp, "randperm(1000) is a permutation");
  }
  nn_tensor_free(o);
  const int reps = 24000;
  int cnt[256] = {0};
  int fails = 0;
  for (int k = 0; k < reps; k++) {
    if (nn_randperm(&o, 4, &r)) {
      fails++;
      continue;
    }
    int code = 0;
    for (int i = 0; i < 4; i++) code = code * 4 + (int)nn_tensor_get_flat(o, i);
    cnt[code]++;
    nn_tensor_free(o);
  }
  int orders = 0, fair = 1;
  for (int c = 0; c < 256; c++)
    if (cnt[c]) {
      orders++;
      if (fabs(cnt[c] - reps / 24.0) > Z * sqrt(reps / 24.0 * (23.0 / 24))) fair = 0;
    }
  CHECK(!fails && orders == 24 && fair,
        "randperm(4): %d failures, %d orders seen, frequencies fair %d", fails, orders, fair);
  OK(nn_randperm(&o, 0, &r));
  CHECK(o && o->shape[0] == 0, "randperm(0)");
  nn_tensor_free(o);
}

/* ---- errors: a clean message, NULL out, and the generator untouched ---- */

static void test_errors(void) {
  nn_rng r;
  nn_rng_init(&r, 1, 1);
  nn_tensor *t = NULL, *o = NULL, *l = NULL;
  OK(nn_tensor_empty(&t, 1, (int64_t[]){4}, NN_DTYPE_F32, nn_cpu));
  OK(nn_tensor_zeros(&l, 1, (int64_t[]){4}, NN_DTYPE_I64, nn_cpu));
  EXPECT_ERR(nn_uniform_(l, 0, 1, &r), NN_ERR_DTYPE,
             "uniform_: tensor must be float32 or float64, got int64");
  EXPECT_ERR(nn_uniform_(t, 1, 0, &r), NN_ERR_ARG, "uniform_: needs finite lo <= hi, got [1, 0)");
  EXPECT_ERR(nn_uniform_(t, 0, INFINITY, &r), NN_ERR_ARG, "uniform_: needs finite lo <= hi");
  EXPECT_ERR(nn_normal_(t, 0, -1, &r), NN_ERR_ARG,
             "normal_: needs a finite mean and a finite std >= 0, got mean 0, std -1");
  EXPECT_ERR(nn_bernoulli_(t, 1.5, &r), NN_ERR_ARG, "bernoulli_: p must be in [0, 1], got 1.5");
  EXPECT_ERR(nn_bernoulli_(t, NAN, &r), NN_ERR_ARG, "bernoulli_: p must be in [0, 1]");
  EXPECT_ERR(nn_randperm(&o, -2, &r), NN_ERR_ARG, "randperm: n must be >= 0, got -2");
  nn_tensor *p = NULL;
  OK(nn_tensor_from_data(&p, 2, (int64_t[]){2, 3}, NN_DTYPE_F32, (float[]){1, 2, 3, 0, 0, 0}));
  EXPECT_ERR(nn_categorical(&o, p, 4, &r), NN_ERR_ARG,
             "categorical: row 1 of probs has zero total mass");
  nn_tensor_set_flat(p, 3, 1);
  nn_tensor_set_flat(p, 2, -1);
  EXPECT_ERR(nn_categorical(&o, p, 4, &r), NN_ERR_ARG,
             "categorical: probs[0, 2] is -1; probabilities must be finite and >= 0");
  nn_tensor_set_flat(p, 2, NAN);
  EXPECT_ERR(nn_categorical(&o, p, 4, &r), NN_ERR_ARG, "categorical: probs[0, 2] is nan");
  nn_tensor_set_flat(p, 2, INFINITY);
  EXPECT_ERR(nn_categorical(&o, p, 4, &r), NN_ERR_ARG, "categorical: probs[0, 2] is inf");
  nn_tensor_set_flat(p, 2, 1);
  EXPECT_ERR(nn_categorical(&o, p, -1, &r), NN_ERR_ARG,
             "categorical: n_samples must be >= 0, got -1");
  EXPECT_ERR(nn_categorical(&o, l, 2, &r), NN_ERR_DTYPE,
             "categorical: probs must be float32 or float64, got int64");
  nn_tensor *p3 = th_rand(3, (int64_t[]){2, 2, 2}, 0, 1), *p0 = NULL;
  EXPECT_ERR(nn_categorical(&o, p3, 2, &r), NN_ERR_SHAPE,
             "categorical: probs must be (C) or (N, C), got shape (2, 2, 2)");
  OK(nn_tensor_empty(&p0, 1, (int64_t[]){0}, NN_DTYPE_F32, nn_cpu));
  EXPECT_ERR(nn_categorical(&o, p0, 2, &r), NN_ERR_ARG, "no classes");
  CHECK(o == NULL, "out NULL on error");
  CHECK(r.offset == 0, "failed draws leave the generator alone (offset %llu)",
        (unsigned long long)r.offset);
  /* a valid 1-D draw */
  nn_tensor *p1 = NULL;
  OK(nn_narrow(&p1, p, 0, 1, 1));
  nn_tensor *p1f = NULL;
  OK(nn_reshape(&p1f, p1, 1, (int64_t[]){3}));
  OK(nn_categorical(&o, p1f, 9, &r));
  CHECK(o && o->ndim == 1 && o->shape[0] == 9 && nn_tensor_get_flat(o, 4) == 0,
        "1-D categorical: (9), only class 0 has mass");
  CHECK(r.offset == 3, "1-D categorical of 9 advances 3 blocks");
  nn_tensor_free(o);
  nn_tensor_free(p1);
  nn_tensor_free(p1f);
  nn_tensor_free(p0);
  nn_tensor_free(p3);
  nn_tensor_free(p);
  nn_tensor_free(t);
  nn_tensor_free(l);
}

int main(void) {
  th_seed(5);
  test_kat();
  test_rules();
  test_uniform_top();
  test_reproducible();
  test_threads();
  test_stats();
  test_errors();
  return th_done();
}
