/* nn/backend/cpu/cpu_winograd.c: float32 5x5 stride-1 convolution by Winograd's minimal
 * filtering F(2x2, 5x5) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
 * 2016), on AVX-512.
 *
 * Each 2x2 block ("tile") of outputs is computed from the 6x6 input patch under it:
 *   Y = A^T [ U . V ] A,   U = G g G^T (filter),   V = B^T d B (patch),
 * with . the element-wise product over the 36 positions xi of the 6x6 transform domain. Summed
 * over input channels, the 36 products become 36 matrix products, one per xi:
 *   M[xi] (T, Co) = V[xi] (T, Ci) @ U[xi] (Ci, Co)
 * over the T tiles of one sample; they take 36 multiplications per tile and channel pair where
 * direct convolution (im2col + GEMM) takes 4 * 25 = 100. The transforms are those of the
 * interpolation points 0, 1, -1, 2, -2 and infinity, with B^T scaled to small integers and G
 * carrying the reciprocal scales (computed in double). The rounding differs from direct
 * convolution by a few units in the last place of the outputs' magnitude (tests/test_nnet.c
 * bounds it); every output is computed by one thread in a fixed order, so the bits depend on
 * neither the thread count nor the thread that ran it.
 *
 * The input transform reads a zero-padded channels-last copy of the sample (16 channels to a
 * vector), the output transform writes the (Co, OH, OW) planes by scatter. */
#include "cpu.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int wino_state = -1; /* -1: read WB_WINOGRAD at first use; 0 off; 1 on */

void nn_set_winograd(bool on) { atomic_store(&wino_state, on ? 1 : 0); }

bool nn_get_winograd(void) {
  int s = atomic_load(&wino_state);
  if (s < 0) {
    s = nn_env_flag("WB_WINOGRAD", true);
    atomic_store(&wino_state, s);
  }
  return s == 1;
}

/* G (6x5) of F(2, 5), rows scaled by the reciprocals of B^T's row scales (4, 6, 6, 24, 24, 1) */
static const double WG[6][5] = {
    {1.0 / 4, 0, 0, 0, 0},
    {1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6},
    {1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6},
    {1.0 / 24, 2.0 / 24, 4.0 / 24, 8.0 / 24, 16.0 / 24},
    {1.0 / 24, -2.0 / 24, 4.0 / 24, -8.0 / 24, 16.0 / 24},
    {0, 0, 0, 0, 1},
};

void cpu_wino_filters(float *U, const float *w, int64_t O, int64_t C, bool dgrad) {
  int64_t Ci = dgrad ? O : C, Co = dgrad ? C : O;
#pragma omp parallel for schedule(static) if (O * C >= 256)
  for (int64_t f = 0; f < O * C; f++) {
    int64_t o = f / C, c = f % C;
    const float *g = w + f * 25; /* w[o][c] (5x5) */
    double gk[5][5], t[6][5];
    for (int ky = 0; ky < 5; ky++)
      for (int kx = 0; kx < 5; kx++)
        gk[ky][kx] = dgrad ? g[(4 - ky) * 5 + (4 - kx)] : g[ky * 5 + kx];
    for (int i = 0; i < 6; i++)
      for (int kx = 0; kx < 5; kx++) {
        double s = 0;
        for (int ky = 0; ky < 5; ky++) s += WG[i][ky] * gk[ky][kx];
        t[i][kx] = s;
      }
    int64_t ci = dgrad ? o : c, co = dgrad ? c : o;
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 6; j++) {
        double s = 0;
        for (int kx = 0; kx < 5; kx++) s += t[i][kx] * WG[j][kx];
        U[((int64_t)(i * 6 + j) * Ci + ci) * Co + co] = (float)s;
      }
  }
}

void cpu_wino_dw_finish(float *dw, const float *dU, int64_t O, int64_t C) {
#pragma omp parallel for schedule(static) if (O * C >= 256)
  for (int64_t f = 0; f < O * C; f++) {
    int64_t o = f / C, c = f % C;
    double t[6][5]; /* (dU G)[i][kx] */
    for (int i = 0; i < 6; i++)
      for (int kx = 0; kx < 5; kx++) {
        double s = 0;
        for (int j = 0; j < 6; j++)
          s += (double)dU[((int64_t)(i * 6 + j) * C + c) * O + o] * WG[j][kx];
        t[i][kx] = s;
      }
    for (int ky = 0; ky < 5; ky++)
      for (int kx = 0; kx < 5; kx++) {
        double s = 0;
        for (int i = 0; i < 6; i++) s += WG[i][ky] * t[i][kx];
        dw[f * 25 + ky * 5 + kx] = (float)s;
      }
  }
}

static int64_t tiles(int64_t n) { return (n + 1) / 2; }

int64_t cpu_wino_scratch(int64_t Ci, int64_t Co, int64_t OH, int64_t OW) {
  int64_t T = tiles(OH) * tiles(OW);
  return (2 * tiles(OH) + 4) * (2 * tiles(OW) + 4) * Ci + 36 * T * (Ci + Co) + 16;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

bool cpu_wino_usable(void) { return cpu_have_avx512() && nn_get_winograd(); }

/* r = B^T d over six vectors: B^T = [4 0 -5 0 1 0; 0 4 4 -1 -1 0; 0 -4 4 1 -1 0;
 * 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
AVX512_FN static inline void bt6(__m512 r[6], const __m512 d[6]) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  __m512 s12 = _mm512_add_ps(d[1], d[2]), s34 = _mm512_add_ps(d[3], d[4]);
  __m512 d21 = _mm512_sub_ps(d[2], d[1]), d34 = _mm512_sub_ps(d[3], d[4]);
  __m512 d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
  r[0] = _mm512_add_ps(_mm512_fmsub_ps(four, d[0], _mm512_mul_ps(five, d[2])), d[4]);
  r[1] = _mm512_fmsub_ps(four, s12, s34);
  r[2] = _mm512_fmadd_ps(four, d21, d34);
  r[3] = _mm512_fmadd_ps(two, d31, d42);
  r[4] = _mm512_fnmadd_ps(two, d31, d42);
  r[5] = _mm512_add_ps(_mm512_fmsub_ps(four, d[1], _mm512_mul_ps(five, d[3])), d[5]);
}

/* y = A^T m over six vectors: A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 1] */
AVX512_FN static inline void at6(__m512 *y0, __m512 *y1, const __m512 m[6]) {
  const __m512 two = _mm512_set1_ps(2.0f);
  __m512 s12 = _mm512_add_ps(m[1], m[2]), s34 = _mm512_add_ps(m[3], m[4]);
  *y0 = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  *y1 = _mm512_add_ps(_mm512_fmadd_ps(two, _mm512_sub_ps(m[3], m[4]), _mm512_sub_ps(m[1], m[2])),
                      m[5]);
}

/* V[xi][t][c] = (B^T d B)[xi] for the 6x6 patch d of tile t of x (Ci, H, W) (strides xs)
 * zero-padded by ph, pw, 16 channels at a time, through P, the padded sample laid out channels
 * last. */
AVX512_FN static void wino_input(float *V, float *P, const float *x, const int64_t *xs, int64_t Ci,
                                 int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t TH,
                                 int64_t TW) {
  const int64_t T = TH * TW, PH = 2 * TH + 4, PW = 2 * TW + 4, nb = Ci / 16;
  memset(P, 0, sizeof(float) * (size_t)(PH * PW * Ci));
  for (int64_t c = 0; c < Ci; c++)
    for (int64_t h = 0; h < H; h++) {
      const float *s = x + c * xs[0] + h * xs[1];
      float *d = P + ((h + ph) * PW + pw) * Ci + c;
      for (int64_t w = 0; w < W; w++) d[w * Ci] = s[w * xs[2]];
    }
  for (int64_t th = 0; th < TH; th++)
    for (int64_t tw = 0; tw < TW; tw++)
      for (int64_t b = 0; b < nb; b++) {
        const float *p0 = P + ((2 * th) * PW + 2 * tw) * Ci + b * 16;
        __m512 r[6][6]; /* r[i][l] = (B^T d)[i][l] */
        for (int l = 0; l < 6; l++) {
          __m512 d[6], t[6];
          for (int k = 0; k < 6; k++) d[k] = _mm512_loadu_ps(p0 + (k * PW + l) * Ci);
          bt6(t, d);
          for (int i = 0; i < 6; i++) r[i][l] = t[i];
        }
        float *v = V + (th * TW + tw) * Ci + b * 16;
        for (int i = 0; i < 6; i++) {
          __m512 t[6];
          bt6(t, r[i]);
          for (int j = 0; j < 6; j++) _mm512_storeu_ps(v + (i * 6 + j) * T * Ci, t[j]);
        }
      }
}

/* e = A u over two vectors: A = (A^T)^T = [1 0; 1 1; 1 -1; 1 2; 1 -2; 0 1] */
AVX512_FN static inline void a6(__m512 e[6], __m512 u0, __m512 u1) {
  const __m512 two = _mm512_set1_ps(2.0f);
  e[0] = u0;
  e[1] = _mm512_add_ps(u0, u1);
  e[2] = _mm512_sub_ps(u0, u1);
  e[3] = _mm512_fmadd_ps(two, u1, u0);
  e[4] = _mm512_fnmadd_ps(two, u1, u0);
  e[5] = u1;
}

/* lane k of the result: k * stride, for scatters and gathers over 16 channel planes */
AVX512_FN static inline __m512i plane_offsets(int64_t stride) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32((int)stride));
}

AVX512_FN void cpu_wino_conv(float *y, const float *x, const int64_t *xs, int64_t Ci, int64_t Co,
                             int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t OH, int64_t OW,
                             const float *U, float *scratch) {
  const int64_t TH = tiles(OH), TW = tiles(OW), T = TH * TW, ob = Co / 16;
  float *P = scratch, *V = P + (2 * TH + 4) * (2 * TW + 4) * Ci, *M = V + 36 * T * Ci;
  wino_input(V, P, x, xs, Ci, H, W, ph, pw, TH, TW);
  /* M[xi] (T, Co) = V[xi] (T, Ci) @ U[xi] (Ci, Co) */
  for (int xi = 0; xi < 36; xi++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Co, (int)Ci, 1.0f,
                V + xi * T * Ci, (int)Ci, U + xi * Ci * Co, (int)Co, 0.0f, M + xi * T * Co,
                (int)Co);
  /* each tile's 2x2 outputs A^T m A, 16 output channels at a time, scattered into y */
  const __m512i lane = plane_offsets(OH * OW);
  for (int64_t th = 0; th < TH; th++)
    for (int64_t tw = 0; tw < TW; tw++)
      for (int64_t b = 0; b < ob; b++) {
        const float *m0 = M + (th * TW + tw) * Co + b * 16;
        __m512 s0[6], s1[6]; /* (A^T m)[a][j] */
        for (int j = 0; j < 6; j++) {
          __m512 m[6];
          for (int i = 0; i < 6; i++) m[i] = _mm512_loadu_ps(m0 + (i * 6 + j) * T * Co);
          at6(&s0[j], &s1[j], m);
        }
        __m512 o[2][2];
        at6(&o[0][0], &o[0][1], s0);
        at6(&o[1][0], &o[1][1], s1);
        float *yb = y + b * 16 * OH * OW;
        for (int a = 0; a < 2; a++) {
          int64_t oy = 2 * th + a;
          if (oy >= OH) break;
          for (int c = 0; c < 2; c++) {
            int64_t ox = 2 * tw + c;
            if (ox >= OW) break;
            _mm512_i32scatter_ps(yb + oy * OW + ox, lane, o[a][c], 4);
          }
        }
      }
}

/* The weight gradient: Y = A^T [U . V] A is linear in U, so dU[xi] = sum over tiles of
 * V[xi]^T (A dY A^T)[xi], and dg = G^T dU G for each filter (cpu_wino_dw_finish). */
AVX512_FN void cpu_wino_dw_sample(float *dU, const float *x, const int64_t *xs, const float *dy,
                                  int64_t Ci, int64_t Co, int64_t H, int64_t W, int64_t ph,
                                  int64_t pw, int64_t OH, int64_t OW, float *scratch, bool first) {
  const int64_t TH = tiles(OH), TW = tiles(OW), T = TH * TW, ob = Co / 16;
  float *P = scratch, *V = P + (2 * TH + 4) * (2 * TW + 4) * Ci, *D = V + 36 * T * Ci;
  wino_input(V, P, x, xs, Ci, H, W, ph, pw, TH, TW);
  /* D[xi][t][o] = (A dY A^T)[xi] for tile t's 2x2 output gradient dY (0 outside the output),
   * 16 channels at a time; A = [1 0; 1 1; 1 -1; 1 2; 1 -2; 0 1] */
  const __m512i lane = plane_offsets(OH * OW);
  for (int64_t th = 0; th < TH; th++)
    for (int64_t tw = 0; tw < TW; tw++)
      for (int64_t b = 0; b < ob; b++) {
        const float *yb = dy + b * 16 * OH * OW;
        __m512 g[2][2];
        for (int a = 0; a < 2; a++)
          for (int c = 0; c < 2; c++) {
            int64_t oy = 2 * th + a, ox = 2 * tw + c;
            g[a][c] = oy < OH && ox < OW ? _mm512_i32gather_ps(lane, yb + oy * OW + ox, 4)
                                         : _mm512_setzero_ps();
          }
        __m512 r0[6], r1[6]; /* (A dY)[i][0], (A dY)[i][1] */
        a6(r0, g[0][0], g[1][0]);
        a6(r1, g[0][1], g[1][1]);
        float *d = D + (th * TW + tw) * Co + b * 16;
        for (int i = 0; i < 6; i++) {
          __m512 e[6]; /* row i of (A dY) A^T */
          a6(e, r0[i], r1[i]);
          for (int j = 0; j < 6; j++) _mm512_storeu_ps(d + (i * 6 + j) * T * Co, e[j]);
        }
      }
  /* dU[xi] (Ci, Co) (+)= V[xi]^T (Ci, T) @ D[xi] (T, Co) */
  for (int xi = 0; xi < 36; xi++)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Ci, (int)Co, (int)T, 1.0f,
                V + xi * T * Ci, (int)Ci, D + xi * T * Co, (int)Co, first ? 0.0f : 1.0f,
                dU + xi * Ci * Co, (int)Co);
}
#else
bool cpu_wino_usable(void) { return false; }
void cpu_wino_conv(float *y, const float *x, const int64_t *xs, int64_t Ci, int64_t Co, int64_t H,
                   int64_t W, int64_t ph, int64_t pw, int64_t OH, int64_t OW, const float *U,
                   float *scratch) {
  (void)y, (void)x, (void)xs, (void)Ci, (void)Co, (void)H, (void)W, (void)ph, (void)pw, (void)OH;
  (void)OW, (void)U, (void)scratch;
  abort(); /* cpu_wino_usable() is false: never called */
}
void cpu_wino_dw_sample(float *dU, const float *x, const int64_t *xs, const float *dy, int64_t Ci,
                        int64_t Co, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t OH,
                        int64_t OW, float *scratch, bool first) {
  (void)dU, (void)x, (void)xs, (void)dy, (void)Ci, (void)Co, (void)H, (void)W, (void)ph, (void)pw;
  (void)OH, (void)OW, (void)scratch, (void)first;
  abort();
}
#endif
