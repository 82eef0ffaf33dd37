/* nn/backend/cpu/cpu_nnet.c: CPU kernels of convolution, pooling and normalisation.
 *
 * N batch, C channels, H, W input, O output channels, KH, KW kernel, OH, OW output, G groups,
 * Cg = C/G and Og = O/G channels per group, K = C*KH*KW and Kg = Cg*KH*KW rows of a column
 * matrix, L = OH*OW output positions.
 *
 * Convolution is im2col + GEMM (Chellapilla et al. 2006): per sample, col (K, L) holds the
 * receptive fields and out_g (Og, L) = w_g (Og, Kg) @ col_g (Kg, L). The backward passes are
 * dw_g += dout_g (Og, L) @ col_g^T and dcol_g = w_g^T @ dout_g followed by col2im.
 * The batch is cut into contiguous chunks of samples that OpenMP threads take in turn, with BLAS
 * running single-threaded inside the parallel region (the OpenMP build of OpenBLAS does so by
 * itself).
 * Measured on the LeNet conv2 GEMM (64x800 @ 800x196 per sample, batch 128, 2 cores) this gave
 * ~250 GFLOPS against ~185 for one batch-wide GEMM (N = 128*196) on BLAS threads, which would
 * also need a (K, N*L) buffer and a transpose of the output. Columns are recomputed in the
 * weight backward rather than saved by the forward: for conv2 on one thread, im2col + GEMM per
 * sample took 26 ms per batch against 27 ms for the GEMM alone reading saved columns from an
 * 80 MB buffer, and writing that buffer cost the forward 11 ms more than the L2-resident
 * per-thread one.
 * im2col reads a zero-padded copy of each sample's planes, so its inner loops have no bounds
 * checks; col2im accumulates into such a padded plane and copies the interior out.
 *
 * Determinism: each sample's forward and input gradient is computed by one thread; the weight
 * gradient sums one partial per chunk in chunk order, the chunks being fixed by the batch size
 * (conv_chunks), so conv results do not depend on the thread count (up to CONV_CHUNKS threads).
 * Every other reduction runs in a fixed order in double. */
#include "cpu.h"
#include "cpu_sums.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
/* AVX-512 versions of a few float32 row kernels, chosen at run time (the build targets baseline
 * x86-64). Each does the same IEEE operations in the same order as its portable twin (adds,
 * selects and compares only: no FMA contraction), so results do not depend on which runs. */
#define WB_AVX512 1
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define WB_AVX512 0
#endif

/* ---------------------------------------------------------------- helpers */

/* A contiguous copy of t, or t retained when it already is. */
static int packed(nn_tensor **out, nn_tensor *t) {
  *out = NULL;
  if (nn_tensor_is_contiguous(t)) {
    *out = nn_tensor_retain(t);
    return NN_OK;
  }
  int rc = nn_tensor_empty(out, t->ndim, t->shape, t->dtype, nn_cpu);
  if (!rc) rc = nn_copy_(*out, t);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

/* ---------------------------------------------------------------- convolution */

typedef struct conv_geom {
  int64_t N, C, H, W, O, KH, KW, OH, OW, G, Cg, Og, K, Kg, L;
  int64_t sh, sw, ph, pw, dh, dw;
  /* the 1x1, stride 1, unpadded case: col is x itself (when x's planes are contiguous) */
  bool pointwise;
} conv_geom;

static void geom_init(conv_geom *g, const int64_t *xs, const int64_t *ws, const int64_t *os,
                      const nn_op_params *p) {
  g->N = xs[0], g->C = xs[1], g->H = xs[2], g->W = xs[3];
  g->O = ws[0], g->KH = ws[2], g->KW = ws[3];
  g->OH = os[2], g->OW = os[3];
  g->sh = p->i[0], g->sw = p->i[1], g->ph = p->i[2], g->pw = p->i[3];
  g->dh = p->i[4], g->dw = p->i[5], g->G = p->i[6];
  g->Cg = g->C / g->G, g->Og = g->O / g->G;
  g->Kg = g->Cg * g->KH * g->KW, g->K = g->C * g->KH * g->KW;
  g->L = g->OH * g->OW;
  g->pointwise = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* x's planes are (C, H*W) row-major, so a pointwise conv can read x as its column matrix. */
static bool planes_contiguous(const nn_tensor *x) {
  return (x->stride[3] == 1 || x->shape[3] == 1) &&
         (x->stride[2] == x->shape[3] || x->shape[2] == 1) &&
         (x->stride[1] == x->shape[2] * x->shape[3] || x->shape[1] == 1);
}

/* Rows of n contiguous values moved in 16-byte blocks through GCC vector types (SSE2 width,
 * the x86-64 baseline). The rows of im2col are short (OW values): a plain loop would become a
 * memmove call per row (GCC's loop distribution) or stay scalar (-O2 does not vectorize loops
 * of unknown length). copy_row may write an element twice (overlapping blocks). */
typedef float v4f __attribute__((vector_size(16), aligned(4), may_alias));
typedef double v2d __attribute__((vector_size(16), aligned(8), may_alias));

#define DEF_ROWS(SUF, T, V, E)                                                                     \
  static inline void copy_row_##SUF(T *restrict d, const T *restrict s, int64_t n) {               \
    if (n >= E && n <= 4 * E) { /* four blocks, branch-free, covering [0, n) */                    \
      int64_t last = n - E, b1 = E < last ? E : last, b2 = 2 * E < last ? 2 * E : last;            \
      V v0 = *(const V *)s, v1 = *(const V *)(s + b1), v2 = *(const V *)(s + b2);                  \
      V v3 = *(const V *)(s + last);                                                               \
      *(V *)d = v0;                                                                                \
      *(V *)(d + b1) = v1;                                                                         \
      *(V *)(d + b2) = v2;                                                                         \
      *(V *)(d + last) = v3;                                                                       \
    } else if (n > 4 * E) { /* long rows: the memcpy call is amortised */                          \
      memcpy(d, s, sizeof(T) * (size_t)n);                                                         \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) d[i] = s[i];                                                 \
    }                                                                                              \
  }                                                                                                \
  static inline void add_row_##SUF(T *restrict d, const T *restrict s, int64_t n) {                \
    int64_t i = 0;                                                                                 \
    for (; i + E <= n; i += E) *(V *)(d + i) += *(const V *)(s + i);                               \
    for (; i < n; i++) d[i] += s[i];                                                               \
  }
DEF_ROWS(f, float, v4f, 4)
DEF_ROWS(d, double, v2d, 2)

/* The input as im2col reads it: a padded copy (C, Hp, Wp) when there is padding, else x itself.
 * pad_##SUF writes the copy; im2col_##SUF then needs no bounds checks:
 *   col[(c*KH + kh)*KW + kw][oh*OW + ow] = src[c][oh*sh + kh*dh][ow*sw + kw*dw]
 * col2im_##SUF is its transpose, accumulating into dst laid out like src. */
#define DEF_IM2COL(SUF, T)                                                                         \
  static void pad_##SUF(T *restrict xp, const T *restrict x, const int64_t *xs,                    \
                        const conv_geom *g) {                                                      \
    int64_t Hp = g->H + 2 * g->ph, Wp = g->W + 2 * g->pw;                                          \
    memset(xp, 0, sizeof(T) * (size_t)(g->C * Hp * Wp));                                           \
    for (int64_t c = 0; c < g->C; c++)                                                             \
      for (int64_t h = 0; h < g->H; h++) {                                                         \
        T *d = xp + (c * Hp + h + g->ph) * Wp + g->pw;                                             \
        const T *s = x + c * xs[0] + h * xs[1];                                                    \
        if (xs[2] == 1)                                                                            \
          copy_row_##SUF(d, s, g->W);                                                              \
        else                                                                                       \
          for (int64_t w = 0; w < g->W; w++) d[w] = s[w * xs[2]];                                  \
      }                                                                                            \
  }                                                                                                \
  static void im2col_##SUF(T *restrict col, const T *restrict src, const int64_t *ss,              \
                           const conv_geom *g) {                                                   \
    /* geometry in locals: the stores through col would otherwise force reloads */                 \
    const int64_t C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW;                        \
    const int64_t cs = ss[0], rs = g->sh * ss[1], step = g->sw * ss[2];                            \
    const int64_t hs = g->dh * ss[1], ws = g->dw * ss[2];                                          \
    T *dst = col;                                                                                  \
    for (int64_t c = 0; c < C; c++)                                                                \
      for (int64_t kh = 0; kh < KH; kh++)                                                          \
        for (int64_t kw = 0; kw < KW; kw++) {                                                      \
          const T *s = src + c * cs + kh * hs + kw * ws;                                           \
          if (step == 1) {                                                                         \
            for (int64_t oh = 0; oh < OH; oh++, dst += OW, s += rs) copy_row_##SUF(dst, s, OW);    \
          } else {                                                                                 \
            for (int64_t oh = 0; oh < OH; oh++, dst += OW, s += rs)                                \
              for (int64_t ow = 0; ow < OW; ow++) dst[ow] = s[ow * step];                          \
          }                                                                                        \
        }                                                                                          \
  }                                                                                                \
  /* dst contiguous (C, Hd, Wd) with Hd, Wd the padded (or plain) sizes. kh runs inside kw so      \
   * that consecutive row updates do not overlap (a row shifted by one element right after         \
   * its neighbour defeats store-to-load forwarding). */                                           \
  static void col2im_##SUF(T *restrict dst, const T *restrict col, int64_t Hd, int64_t Wd,         \
                           const conv_geom *g) {                                                   \
    const int64_t C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW, L = g->L;              \
    const int64_t sh = g->sh, sw = g->sw, dh = g->dh, dw = g->dw;                                  \
    for (int64_t c = 0; c < C; c++)                                                                \
      for (int64_t kw = 0; kw < KW; kw++)                                                          \
        for (int64_t kh = 0; kh < KH; kh++) {                                                      \
          const T *s = col + ((c * KH + kh) * KW + kw) * L;                                        \
          T *d = dst + (c * Hd + kh * dh) * Wd + kw * dw;                                          \
          for (int64_t oh = 0; oh < OH; oh++, s += OW, d += sh * Wd) {                             \
            if (sw == 1)                                                                           \
              add_row_##SUF(d, s, OW);                                                             \
            else                                                                                   \
              for (int64_t ow = 0; ow < OW; ow++) d[ow * sw] += s[ow];                             \
          }                                                                                        \
        }                                                                                          \
  }                                                                                                \
  /* dx (C, H, W) = the interior of the padded accumulator dp (C, Hp, Wp) */                       \
  static void unpad_##SUF(T *restrict dx, const T *restrict dp, const conv_geom *g) {              \
    int64_t Hp = g->H + 2 * g->ph, Wp = g->W + 2 * g->pw;                                          \
    for (int64_t c = 0; c < g->C; c++)                                                             \
      for (int64_t h = 0; h < g->H; h++)                                                           \
        copy_row_##SUF(dx + (c * g->H + h) * g->W, dp + (c * Hp + h + g->ph) * Wp + g->pw, g->W);  \
  }
DEF_IM2COL(f, float)
DEF_IM2COL(d, double)

#if WB_AVX512
/* im2col_f and col2im_f for unit column steps (stride and dilation 1 along W), a row of OW
 * floats per masked 16-wide load and store (the rows are short: OW = 14 or 28 in LeNet). The
 * same copies and the same adds in the same order as the portable versions. */
AVX512_FN static inline void copy_row_avx512(float *d, const float *s, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
  }
}
AVX512_FN static inline void add_row_avx512(float *d, const float *s, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + i), _mm512_maskz_loadu_ps(m, s + i));
    _mm512_mask_storeu_ps(d + i, m, v);
  }
}
AVX512_FN static void im2col_f_avx512(float *restrict col, const float *restrict src,
                                      const int64_t *ss, const conv_geom *g) {
  const int64_t C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW;
  const int64_t cs = ss[0], rs = g->sh * ss[1], hs = g->dh * ss[1], ws = g->dw * ss[2];
  float *dst = col;
  for (int64_t c = 0; c < C; c++)
    for (int64_t kh = 0; kh < KH; kh++)
      for (int64_t kw = 0; kw < KW; kw++) {
        const float *s = src + c * cs + kh * hs + kw * ws;
        for (int64_t oh = 0; oh < OH; oh++, dst += OW, s += rs) copy_row_avx512(dst, s, OW);
      }
}
AVX512_FN static void col2im_f_avx512(float *restrict dst, const float *restrict col, int64_t Hd,
                                      int64_t Wd, const conv_geom *g) {
  const int64_t C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW, L = g->L;
  const int64_t sh = g->sh, dh = g->dh, dw = g->dw;
  for (int64_t c = 0; c < C; c++)
    for (int64_t kw = 0; kw < KW; kw++)
      for (int64_t kh = 0; kh < KH; kh++) {
        const float *s = col + ((c * KH + kh) * KW + kw) * L;
        float *d = dst + (c * Hd + kh * dh) * Wd + kw * dw;
        for (int64_t oh = 0; oh < OH; oh++, s += OW, d += sh * Wd) add_row_avx512(d, s, OW);
      }
}
#endif

/* im2col_f / col2im_f, or their AVX-512 twins where they apply */
static void im2col_fx(float *col, const float *src, const int64_t *ss, const conv_geom *g) {
#if WB_AVX512
  if (g->sw * ss[2] == 1 && cpu_have_avx512()) {
    im2col_f_avx512(col, src, ss, g);
    return;
  }
#endif
  im2col_f(col, src, ss, g);
}
static void col2im_fx(float *dst, const float *col, int64_t Hd, int64_t Wd, const conv_geom *g) {
#if WB_AVX512
  if (g->sw == 1 && cpu_have_avx512()) {
    col2im_f_avx512(dst, col, Hd, Wd, g);
    return;
  }
#endif
  col2im_f(dst, col, Hd, Wd, g);
}

/* C (M, N) = op(A) op(B) + beta C, row-major, in the dtype dt. */
static void gemm(nn_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                 int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
  CBLAS_TRANSPOSE a = ta ? CblasTrans : CblasNoTrans, b = tb ? CblasTrans : CblasNoTrans;
  if (dt == NN_DTYPE_F32)
    cblas_sgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                (float)beta, C, (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, beta, C,
                (int)ldc);
}

typedef struct conv_ctx {
  conv_geom g;
  nn_dtype dt;
  size_t es;        /* element size */
  const char *x;    /* forward and weight backward: the input */
  int64_t xs[4];    /* its strides (n, c, h, w) */
  const char *w;    /* contiguous (O, Kg) */
  const char *bias; /* forward bias or NULL */
  int64_t bias_stride;
  const char *dout;  /* contiguous (N, O, L) */
  char *out;         /* forward out / dx (contiguous) */
  char *scratch;     /* per thread: col (K, L), then the padded plane (C, Hp, Wp) */
  int64_t scratch_n; /* elements per thread; 0 when col is x itself */
  int n_chunks;      /* the batch in contiguous sample ranges (conv_chunks) */
  char *dw;          /* out dw (O, Kg): chunk 0's partial */
  char *dw_part;     /* partials of chunks 1.. */
  double *db_part;   /* per-chunk (O) bias sums or NULL */
  const float *wu;   /* Winograd filters of the forward (36, C, O), or NULL: im2col + GEMM */
  const float *wud;  /* Winograd filters of the input gradient (36, O, C), or NULL */
  float *wdu;        /* Winograd weight-gradient partials, (36, C, O) per chunk, or NULL */
} conv_ctx;

/* The batch is cut into n_chunks contiguous sample ranges fixed by N alone (CONV_CHUNKS, fewer
 * for a smaller batch, more only with more threads than that). Threads take chunks as they
 * finish the previous one, which keeps both cores busy on a shared machine; the weight gradient
 * sums one partial per chunk in chunk order, so its bits do not depend on which thread ran what,
 * nor on the thread count up to CONV_CHUNKS threads. */
#define CONV_CHUNKS 8

static int conv_chunks(const conv_geom *g, int nt) {
  int64_t k = nt > CONV_CHUNKS ? nt : CONV_CHUNKS;
  return (int)(g->N < k ? (g->N > 0 ? g->N : 1) : k);
}

static int thread_num(void) {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* fn(ctx, chunk, thread, n0, n1) for every chunk; on the calling thread alone (BLAS may then
 * thread itself) when nt is 1. */
typedef void (*batch_fn)(conv_ctx *c, int k, int t, int64_t n0, int64_t n1);

static void run_batch(conv_ctx *c, int nt, batch_fn fn) {
  int64_t N = c->g.N;
  int nch = c->n_chunks;
  if (nt <= 1) {
    for (int k = 0; k < nch; k++) fn(c, k, 0, N * k / nch, N * (k + 1) / nch);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int k = 0; k < nch; k++) fn(c, k, thread_num(), N * k / nch, N * (k + 1) / nch);
}

/* 1 with a pthreads OpenBLAS, which would start its own threads inside ours: it threads the
 * GEMMs then */
static int batch_threads(const conv_geom *g) {
  int nt = cpu_blas_threads();
  if (nt > g->N) nt = (int)g->N;
  /* below ~1 MFLOP per call the fork costs more than it saves */
  if ((double)g->N * g->O * g->Kg * g->L < 5e5) nt = 1;
  return nt < 1 ? 1 : nt;
}

static bool padded(const conv_geom *g) { return g->ph || g->pw; }
static int64_t padded_n(const conv_geom *g) {
  return padded(g) ? g->C * (g->H + 2 * g->ph) * (g->W + 2 * g->pw) : 0;
}

/* Allocates nt per-thread scratch areas of c->scratch_n elements. */
static int scratch_alloc(nn_tensor **t, conv_ctx *c, int nt) {
  *t = NULL;
  if (!c->scratch_n) return NN_OK;
  int rc = nn_tensor_empty(t, 1, (int64_t[]){nt * c->scratch_n}, c->dt, nn_cpu);
  if (!rc) c->scratch = nn_tensor_data(*t);
  return rc;
}

static char *scratch_of(const conv_ctx *c, int t) {
  return c->scratch_n ? c->scratch + (size_t)(t * c->scratch_n) * c->es : NULL;
}

/* Winograd F(2x2, 5x5) (cpu_winograd.c) applies to float32 5x5 stride-1 undilated convolutions
 * of one group with channel counts that are multiples of 16 (and padding the input gradient's
 * correlation can express). */
static bool wino_ok(const conv_geom *g, nn_dtype dt) {
  return dt == NN_DTYPE_F32 && g->G == 1 && g->KH == 5 && g->KW == 5 && g->sh == 1 && g->sw == 1 &&
         g->dh == 1 && g->dw == 1 && g->C % 16 == 0 && g->O % 16 == 0 && g->ph <= 4 && g->pw <= 4 &&
         g->OH > 0 && g->OW > 0 && cpu_wino_usable();
}

/* When Winograd applies: transforms c->w (O, C, 5, 5) into *ut and points c->wu (forward) or
 * c->wud (dgrad: the input gradient) at it, and grows c->scratch_n to what it needs. */
static int wino_prepare(nn_tensor **ut, conv_ctx *c, bool dgrad) {
  const conv_geom *g = &c->g;
  *ut = NULL;
  if (!wino_ok(g, c->dt)) return NN_OK;
  int rc = nn_tensor_empty(ut, 1, (int64_t[]){36 * g->C * g->O}, NN_DTYPE_F32, nn_cpu);
  if (rc) return rc;
  cpu_wino_filters(F32(*ut), (const float *)c->w, g->O, g->C, dgrad);
  int64_t need =
      dgrad ? cpu_wino_scratch(g->O, g->C, g->H, g->W) : cpu_wino_scratch(g->C, g->O, g->OH, g->OW);
  if (need > c->scratch_n) c->scratch_n = need;
  if (dgrad)
    c->wud = F32(*ut);
  else
    c->wu = F32(*ut);
  return NN_OK;
}

/* When Winograd applies to the weight gradient: one (36, C, O) partial per chunk in *t (c->wdu),
 * and c->scratch_n grown to what it needs. */
static int wino_dw_prepare(nn_tensor **t, conv_ctx *c, int nch) {
  const conv_geom *g = &c->g;
  *t = NULL;
  if (!wino_ok(g, c->dt)) return NN_OK;
  int rc = nn_tensor_empty(t, 1, (int64_t[]){nch * 36 * g->C * g->O}, NN_DTYPE_F32, nn_cpu);
  if (rc) return rc;
  c->wdu = F32(*t);
  int64_t need = cpu_wino_scratch(g->C, g->O, g->OH, g->OW);
  if (need > c->scratch_n) c->scratch_n = need;
  return NN_OK;
}

/* col (K, L) of sample xn; pad is the thread's padded-plane area. */
static void im2col(const conv_ctx *c, char *col, const char *xn) {
  const conv_geom *g = &c->g;
  char *pad = col + (size_t)(g->K * g->L) * c->es;
  int64_t ps[3] = {(g->H + 2 * g->ph) * (g->W + 2 * g->pw), g->W + 2 * g->pw, 1};
  bool p = padded(g);
  if (c->dt == NN_DTYPE_F32) {
    if (p) pad_f((float *)pad, (const float *)xn, c->xs + 1, g);
    im2col_fx((float *)col, p ? (const float *)pad : (const float *)xn, p ? ps : c->xs + 1, g);
  } else {
    if (p) pad_d((double *)pad, (const double *)xn, c->xs + 1, g);
    im2col_d((double *)col, p ? (const double *)pad : (const double *)xn, p ? ps : c->xs + 1, g);
  }
}

/* Adds bias[o] to row o of out (O, L) of one sample. The GEMM writes the product first and the
 * bias is added here while the rows are in cache: fl(AB + b), the same bits the fused
 * conv2d_relu_max_pool2d computes. */
/* r[i] = r[i] + b (when bias), then r[i] = r[i] < 0 ? 0 : r[i] (when relu; NaN passes, -0 stays:
 * cpu_elementwise.c's NN_UN_RELU), for n contiguous floats. */
#if WB_AVX512
AVX512_FN static void bias_relu_row_avx512(float *r, int64_t n, float b, bool bias, bool relu) {
  const __m512 bv = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(m, r + i);
    if (bias) v = _mm512_add_ps(v, bv);
    if (relu) v = _mm512_max_ps(zero, v); /* (0 > v) ? 0 : v */
    _mm512_mask_storeu_ps(r + i, m, v);
  }
}
#endif
static void bias_relu_row_f(float *r, int64_t n, float b, bool bias, bool relu) {
#if WB_AVX512
  if (cpu_have_avx512()) {
    bias_relu_row_avx512(r, n, b, bias, relu);
    return;
  }
#endif
  if (bias) FOR8(i, n, r[i] += b);
  if (relu) FOR8(i, n, r[i] = r[i] < 0 ? 0.0f : r[i]);
}
static void bias_relu_row_d(double *r, int64_t n, double b, bool bias, bool relu) {
  if (bias) FOR8(i, n, r[i] += b);
  if (relu) FOR8(i, n, r[i] = r[i] < 0 ? 0.0 : r[i]);
}

/* Row o of out (O, L) of one sample: += bias[o] (when the conv has a bias), then relu (when
 * relu). The GEMM writes the product first and the bias is added here while the rows are in
 * cache: fl(AB + b), the same bits the fused conv2d_relu_max_pool2d computes. */
static void conv_epilogue(const conv_ctx *c, char *on, bool relu) {
  const conv_geom *g = &c->g;
  bool bias = c->bias != NULL;
  if (!bias && !relu) return;
  for (int64_t o = 0; o < g->O; o++) {
    if (c->dt == NN_DTYPE_F32)
      bias_relu_row_f((float *)on + o * g->L, g->L,
                      bias ? ((const float *)c->bias)[o * c->bias_stride] : 0.0f, bias, relu);
    else
      bias_relu_row_d((double *)on + o * g->L, g->L,
                      bias ? ((const double *)c->bias)[o * c->bias_stride] : 0.0, bias, relu);
  }
}

/* on (O, L) = w @ col(xn) (+ bias) (then relu) for one sample; col is the thread's scratch. */
static void conv_fwd_sample(const conv_ctx *c, char *col, const char *xn, char *on, bool relu) {
  const conv_geom *g = &c->g;
  size_t es = c->es;
  const char *B = xn;
  if (c->wu) {
    cpu_wino_conv((float *)on, (const float *)xn, c->xs + 1, g->C, g->O, g->H, g->W, g->ph, g->pw,
                  g->OH, g->OW, c->wu, (float *)col);
    conv_epilogue(c, on, relu);
    return;
  }
  if (col) {
    im2col(c, col, xn);
    B = col;
  }
  for (int64_t gi = 0; gi < g->G; gi++)
    gemm(c->dt, false, false, g->Og, g->L, g->Kg, c->w + (size_t)(gi * g->Og * g->Kg) * es, g->Kg,
         B + (size_t)(gi * g->Kg * g->L) * es, g->L, 0.0, on + (size_t)(gi * g->Og * g->L) * es,
         g->L);
  conv_epilogue(c, on, relu);
}

static void conv_fwd_range(conv_ctx *c, int k, int t, int64_t n0, int64_t n1) {
  (void)k;
  char *col = scratch_of(c, t);
  for (int64_t n = n0; n < n1; n++)
    conv_fwd_sample(c, col, c->x + (size_t)(n * c->xs[0]) * c->es,
                    c->out + (size_t)(n * c->g.O * c->g.L) * c->es, false);
}

static int cpu_conv2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *x = in[0], *b = in[2], *wc = NULL, *scr = NULL, *ut = NULL;
  conv_ctx c = {0};
  geom_init(&c.g, x->shape, in[1]->shape, o->shape, p);
  c.dt = o->dtype;
  c.es = nn_dtype_size(c.dt);
  int nt = batch_threads(&c.g);
  c.n_chunks = conv_chunks(&c.g, nt);
  if (!(c.g.pointwise && planes_contiguous(x))) c.scratch_n = c.g.K * c.g.L + padded_n(&c.g);
  int rc = packed(&wc, in[1]);
  if (rc) goto done;
  c.w = nn_tensor_data(wc);
  rc = wino_prepare(&ut, &c, false);
  if (!rc) rc = scratch_alloc(&scr, &c, nt);
  if (rc) goto done;
  c.x = nn_tensor_data(x);
  memcpy(c.xs, x->stride, sizeof c.xs);
  c.bias = b ? nn_tensor_data(b) : NULL;
  c.bias_stride = b ? b->stride[0] : 0;
  c.out = nn_tensor_data(o);
  run_batch(&c, nt, conv_fwd_range);
done:
  nn_tensor_free(wc);
  nn_tensor_free(scr);
  nn_tensor_free(ut);
  return rc;
}

/* dxn (C, H, W) of one sample from its dout dn (O, L): dcol_g = w_g^T @ dout_g, then col2im
 * (through the padded plane); col is the thread's scratch, or NULL for a pointwise conv. */
static void conv_dx_sample(const conv_ctx *c, char *col, const char *dn, char *dxn) {
  const conv_geom *g = &c->g;
  size_t es = c->es;
  char *dp = col ? col + (size_t)(g->K * g->L) * es : NULL;
  int64_t plane = g->C * g->H * g->W, Hp = g->H + 2 * g->ph, Wp = g->W + 2 * g->pw;
  bool p = padded(g), f32 = c->dt == NN_DTYPE_F32;
  if (c->wud) { /* the correlation of dout, padded by 4 - pad, with the flipped filters */
    const int64_t ds[3] = {g->L, g->OW, 1};
    cpu_wino_conv((float *)dxn, (const float *)dn, ds, g->O, g->C, g->OH, g->OW, 4 - g->ph,
                  4 - g->pw, g->H, g->W, c->wud, (float *)col);
    return;
  }
  char *D = col ? col : dxn;
  for (int64_t gi = 0; gi < g->G; gi++)
    gemm(c->dt, true, false, g->Kg, g->L, g->Og, c->w + (size_t)(gi * g->Og * g->Kg) * es, g->Kg,
         dn + (size_t)(gi * g->Og * g->L) * es, g->L, 0.0, D + (size_t)(gi * g->Kg * g->L) * es,
         g->L);
  if (!col) return;
  char *acc = p ? dp : dxn;
  memset(acc, 0, (size_t)(p ? padded_n(g) : plane) * es);
  if (f32)
    col2im_fx((float *)acc, (const float *)col, p ? Hp : g->H, p ? Wp : g->W, g);
  else
    col2im_d((double *)acc, (const double *)col, p ? Hp : g->H, p ? Wp : g->W, g);
  if (p && f32)
    unpad_f((float *)dxn, (const float *)dp, g);
  else if (p)
    unpad_d((double *)dxn, (const double *)dp, g);
}

static void conv_bwd_input_range(conv_ctx *c, int k, int t, int64_t n0, int64_t n1) {
  (void)k;
  char *col = scratch_of(c, t);
  int64_t plane = c->g.C * c->g.H * c->g.W;
  for (int64_t n = n0; n < n1; n++)
    conv_dx_sample(c, col, c->dout + (size_t)(n * c->g.O * c->g.L) * c->es,
                   c->out + (size_t)(n * plane) * c->es);
}

static int cpu_conv2d_backward_input(nn_tensor *const *out, nn_tensor *const *in,
                                     const nn_op_params *p) {
  nn_tensor *dx = out[0], *dc = NULL, *wc = NULL, *scr = NULL, *ut = NULL;
  conv_ctx c = {0};
  geom_init(&c.g, dx->shape, in[1]->shape, in[0]->shape, p);
  c.dt = dx->dtype;
  c.es = nn_dtype_size(c.dt);
  int nt = batch_threads(&c.g);
  c.n_chunks = conv_chunks(&c.g, nt);
  if (!c.g.pointwise) c.scratch_n = c.g.K * c.g.L + padded_n(&c.g);
  int rc = packed(&dc, in[0]);
  if (!rc) rc = packed(&wc, in[1]);
  if (rc) goto done;
  c.w = nn_tensor_data(wc);
  rc = wino_prepare(&ut, &c, true);
  if (!rc) rc = scratch_alloc(&scr, &c, nt);
  if (rc) goto done;
  c.dout = nn_tensor_data(dc);
  c.out = nn_tensor_data(dx);
  run_batch(&c, nt, conv_bwd_input_range);
done:
  nn_tensor_free(dc);
  nn_tensor_free(wc);
  nn_tensor_free(scr);
  nn_tensor_free(ut);
  return rc;
}

/* One sample's share of a chunk's weight gradient: dw_g (+)= dout_g @ col_g(xn)^T (beta 0 for the
 * chunk's first sample, else 1), and db[o] += the sum of dout's row o (in double) when db. */
static void conv_dw_sample(const conv_ctx *c, char *col, const char *dn, const char *xn, char *dw,
                           bool first, double *db) {
  const conv_geom *g = &c->g;
  size_t es = c->es;
  const char *B = xn;
  if (c->wdu) { /* dw is the chunk's transform-domain partial */
    cpu_wino_dw_sample((float *)dw, (const float *)xn, c->xs + 1, (const float *)dn, g->C, g->O,
                       g->H, g->W, g->ph, g->pw, g->OH, g->OW, (float *)col, first);
  } else {
    if (col) {
      im2col(c, col, xn);
      B = col;
    }
    for (int64_t gi = 0; gi < g->G; gi++)
      gemm(c->dt, false, true, g->Og, g->Kg, g->L, dn + (size_t)(gi * g->Og * g->L) * es, g->L,
           B + (size_t)(gi * g->Kg * g->L) * es, g->L, first ? 0.0 : 1.0,
           dw + (size_t)(gi * g->Og * g->Kg) * es, g->Kg);
  }
  if (db)
    for (int64_t o = 0; o < g->O; o++)
      db[o] += c->dt == NN_DTYPE_F32 ? sum_f((const float *)dn + o * g->L, g->L)
                                     : sum_d((const double *)dn + o * g->L, g->L);
}

/* elements of one chunk's dw partial */
static int64_t dw_part_n(const conv_ctx *c) {
  return c->wdu ? 36 * c->g.C * c->g.O : c->g.O * c->g.Kg;
}

/* chunk k's dw partial: in c->dw for chunk 0, else in c->dw_part; with Winograd, in c->wdu */
static char *dw_of_chunk(const conv_ctx *c, int k) {
  int64_t wn = dw_part_n(c);
  if (c->wdu) return (char *)(c->wdu + k * wn);
  return k == 0 ? c->dw : c->dw_part + (size_t)((k - 1) * wn) * c->es;
}

/* dw partial of chunk k over samples [n0, n1): dw_g += dout_g @ col_g^T; and the bias sums. */
static void conv_bwd_weight_range(conv_ctx *c, int k, int t, int64_t n0, int64_t n1) {
  const conv_geom *g = &c->g;
  char *col = scratch_of(c, t), *dw = dw_of_chunk(c, k);
  double *db = c->db_part ? c->db_part + k * g->O : NULL;
  if (db)
    for (int64_t o = 0; o < g->O; o++) db[o] = 0;
  if (n0 == n1) memset(dw, 0, (size_t)dw_part_n(c) * c->es);
  for (int64_t n = n0; n < n1; n++)
    conv_dw_sample(c, col, c->dout + (size_t)(n * g->O * g->L) * c->es,
                   c->x + (size_t)(n * c->xs[0]) * c->es, dw, n == n0, db);
}

/* Adds the chunks' dw partials into chunk 0's (c->dw) in chunk order, each element independently,
 * and writes dbt (O) (when non-NULL) from the per-chunk bias sums. */
static void conv_dw_finish(const conv_ctx *c, nn_tensor *dw, nn_tensor *dbt) {
  int nch = c->n_chunks;
  int64_t wn = c->g.O * c->g.Kg;
  if (c->wdu) { /* the chunks' transform-domain partials in chunk order, then back to dw */
    int64_t un = dw_part_n(c);
    float *d = c->wdu;
#pragma omp parallel for schedule(static) if (un >= CPU_PAR_MIN)
    for (int64_t i = 0; i < un; i++)
      for (int k = 1; k < nch; k++) d[i] += d[k * un + i];
    cpu_wino_dw_finish(F32(dw), d, c->g.O, c->g.C);
  } else if (nch > 1) {
    if (c->dt == NN_DTYPE_F32) {
      float *d = F32(dw);
      const float *q = (const float *)c->dw_part;
#pragma omp parallel for schedule(static) if (wn >= CPU_PAR_MIN)
      for (int64_t i = 0; i < wn; i++)
        for (int k = 1; k < nch; k++) d[i] += q[(k - 1) * wn + i];
    } else {
      double *d = F64(dw);
      const double *q = (const double *)c->dw_part;
#pragma omp parallel for schedule(static) if (wn >= CPU_PAR_MIN)
      for (int64_t i = 0; i < wn; i++)
        for (int k = 1; k < nch; k++) d[i] += q[(k - 1) * wn + i];
    }
  }
  if (dbt)
    for (int64_t o = 0; o < c->g.O; o++) {
      double s = 0;
      for (int k = 0; k < nch; k++) s += c->db_part[k * c->g.O + o];
      nn_tensor_set_flat(dbt, o, s);
    }
}

static int cpu_conv2d_backward_weight(nn_tensor *const *out, nn_tensor *const *in,
                                      const nn_op_params *p) {
  nn_tensor *dw = out[0], *dbt = p->i[7] ? out[1] : NULL, *x = in[1];
  nn_tensor *dc = NULL, *scr = NULL, *part = NULL, *dbp = NULL, *wdu = NULL;
  conv_ctx c = {0};
  geom_init(&c.g, x->shape, dw->shape, in[0]->shape, p);
  c.dt = dw->dtype;
  c.es = nn_dtype_size(c.dt);
  int nt = batch_threads(&c.g);
  int64_t wn = c.g.O * c.g.Kg;
  if (!(c.g.pointwise && planes_contiguous(x))) c.scratch_n = c.g.K * c.g.L + padded_n(&c.g);
  int nch = c.n_chunks = conv_chunks(&c.g, nt);
  int rc = packed(&dc, in[0]);
  if (!rc) rc = wino_dw_prepare(&wdu, &c, nch);
  if (!rc) rc = scratch_alloc(&scr, &c, nt);
  if (!rc && nch > 1 && !c.wdu)
    rc = nn_tensor_empty(&part, 1, (int64_t[]){(nch - 1) * wn}, c.dt, nn_cpu);
  if (!rc && dbt) rc = nn_tensor_empty(&dbp, 1, (int64_t[]){nch * c.g.O}, NN_DTYPE_F64, nn_cpu);
  if (rc) goto done;
  c.dout = nn_tensor_data(dc);
  c.x = nn_tensor_data(x);
  memcpy(c.xs, x->stride, sizeof c.xs);
  c.dw = nn_tensor_data(dw);
  c.dw_part = part ? nn_tensor_data(part) : NULL;
  c.db_part = dbp ? F64(dbp) : NULL;
  run_batch(&c, nt, conv_bwd_weight_range);
  conv_dw_finish(&c, dw, dbt);
done:
  nn_tensor_free(dc);
  nn_tensor_free(scr);
  nn_tensor_free(part);
  nn_tensor_free(dbp);
  nn_tensor_free(wdu);
  return rc;
}

/* dbias (O) = sum of dout over N and the output positions, per channel in double. */
static int cpu_conv2d_backward_bias(nn_tensor *const *out, nn_tensor *const *in,
                                    const nn_op_params *p) {
  (void)p;
  nn_tensor *db = out[0], *dc = NULL;
  int rc = packed(&dc, in[0]);
  if (rc) return rc;
  int64_t N = dc->shape[0], O = dc->shape[1], L = dc->shape[2] * dc->shape[3];
  for (int64_t o = 0; o < O; o++) {
    double s = 0;
    for (int64_t n = 0; n < N; n++)
      s += dc->dtype == NN_DTYPE_F32 ? sum_f(F32(dc) + (n * O + o) * L, L)
                                     : sum_d(F64(dc) + (n * O + o) * L, L);
    nn_tensor_set_flat(db, o, s);
  }
  nn_tensor_free(dc);
  return NN_OK;
}

/* ---------------------------------------------------------------- pooling */

typedef struct pool_geom {
  int64_t N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw;
  bool include_pad;
} pool_geom;

static void pool_geom_init(pool_geom *g, const int64_t *xs, const int64_t *os,
                           const nn_op_params *p) {
  g->N = xs[0], g->C = xs[1], g->H = xs[2], g->W = xs[3], g->OH = os[2], g->OW = os[3];
  g->kh = p->i[0], g->kw = p->i[1], g->sh = p->i[2], g->sw = p->i[3];
  g->ph = p->i[4], g->pw = p->i[5], g->include_pad = p->i[6];
}

/* Planes (n, c) are independent: parallel over them, each handled by one thread. */
#define PLANES_PAR(g) if ((g)->N * (g)->C * (g)->H * (g)->W >= CPU_PAR_MIN)

/* The vector part of a row of 2x2/2 max pooling: outputs [0, returned count). Per window the
 * running max takes a value when it is greater or NaN (PyTorch's rule) with branch-free selects;
 * on random data the scalar comparisons mispredict about half the time. */
static int64_t maxpool2_simd_f(float *o, int64_t *idx, const float *r0, const float *r1, int64_t OW,
                               int64_t base, int64_t W) {
  int64_t ow = 0;
#if defined(__SSE2__)
  if (base + 2 * OW + W + 8 >= INT32_MAX) return 0; /* positions are computed in int32 lanes */
  const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi32(1), eight = _mm_set1_epi32(8);
  const __m128i wv = _mm_set1_epi32((int)W), w1 = _mm_set1_epi32((int)W + 1);
  __m128i pos = _mm_setr_epi32((int)base, (int)base + 2, (int)base + 4, (int)base + 6);
  for (; ow + 4 <= OW; ow += 4, pos = _mm_add_epi32(pos, eight)) {
    __m128 a0 = _mm_loadu_ps(r0 + 2 * ow), a1 = _mm_loadu_ps(r0 + 2 * ow + 4);
    __m128 b0 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
    __m128 v[3] = {_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)),
                   _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)),
                   _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1))};
    const __m128i offs[3] = {one, wv, w1};
    __m128 best = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i off = zero;
    for (int k = 0; k < 3; k++) {
      __m128 m = _mm_or_ps(_mm_cmpgt_ps(v[k], best), _mm_cmpunord_ps(v[k], v[k]));
      __m128i mi = _mm_castps_si128(m);
      best = _mm_or_ps(_mm_and_ps(m, v[k]), _mm_andnot_ps(m, best));
      off = _mm_or_si128(_mm_and_si128(mi, offs[k]), _mm_andnot_si128(mi, off));
    }
    __m128i p = _mm_add_epi32(pos, off); /* >= 0, so zero-extension is the int64 value */
    _mm_storeu_ps(o + ow, best);
    _mm_storeu_si128((__m128i *)(idx + ow), _mm_unpacklo_epi32(p, zero));
    _mm_storeu_si128((__m128i *)(idx + ow + 2), _mm_unpackhi_epi32(p, zero));
  }
#else
  (void)o, (void)idx, (void)r0, (void)r1, (void)OW, (void)base, (void)W;
#endif
  return ow;
}

/* float64 rows take the scalar loop */
static int64_t maxpool2_simd_d(double *o, int64_t *idx, const double *r0, const double *r1,
                               int64_t OW, int64_t base, int64_t W) {
  (void)o, (void)idx, (void)r0, (void)r1, (void)OW, (void)base, (void)W;
  return 0;
}

/* x plane strides xs (h, w); outputs contiguous planes. */
#define DEF_MAXPOOL(SUF, T)                                                                        \
  static void maxpool_plane_##SUF(T *restrict o, int64_t *restrict idx, const T *restrict x,       \
                                  const int64_t *xs, const pool_geom *g) {                         \
    for (int64_t oh = 0; oh < g->OH; oh++) {                                                       \
      int64_t h0 = oh * g->sh - g->ph, h1 = h0 + g->kh < g->H ? h0 + g->kh : g->H;                 \
      if (h0 < 0) h0 = 0;                                                                          \
      for (int64_t ow = 0; ow < g->OW; ow++) {                                                     \
        int64_t w0 = ow * g->sw - g->pw, w1 = w0 + g->kw < g->W ? w0 + g->kw : g->W;               \
        if (w0 < 0) w0 = 0;                                                                        \
        T best = -INFINITY;                                                                        \
        int64_t bi = h0 * g->W + w0;                                                               \
        for (int64_t ih = h0; ih < h1; ih++)                                                       \
          for (int64_t iw = w0; iw < w1; iw++) {                                                   \
            T v = x[ih * xs[0] + iw * xs[1]];                                                      \
            if (v > best || isnan(v)) {                                                            \
              best = v;                                                                            \
              bi = ih * g->W + iw;                                                                 \
            }                                                                                      \
          }                                                                                        \
        o[oh * g->OW + ow] = best;                                                                 \
        idx[oh * g->OW + ow] = bi;                                                                 \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* 2x2 windows, stride 2, no padding, contiguous rows: the common CNN case. Columns from ow0     \
   * on (the float version does the first ones with SSE2). */                                      \
  static void maxpool2_plane_##SUF(T *restrict o, int64_t *restrict idx, const T *restrict x,      \
                                   const int64_t *xs, const pool_geom *g) {                        \
    for (int64_t oh = 0; oh < g->OH; oh++) {                                                       \
      const T *r0 = x + 2 * oh * xs[0], *r1 = r0 + xs[0];                                          \
      int64_t base = 2 * oh * g->W, W = g->W;                                                      \
      T *orow = o + oh * g->OW;                                                                    \
      int64_t *irow = idx + oh * g->OW;                                                            \
      int64_t ow = maxpool2_simd_##SUF(orow, irow, r0, r1, g->OW, base, W);                        \
      for (; ow < g->OW; ow++) {                                                                   \
        T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1], best = a;        \
        int64_t off = 0;                                                                           \
        if (b > best || isnan(b)) best = b, off = 1;                                               \
        if (c > best || isnan(c)) best = c, off = W;                                               \
        if (d > best || isnan(d)) best = d, off = W + 1;                                           \
        orow[ow] = best;                                                                           \
        irow[ow] = base + 2 * ow + off;                                                            \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
  /* dx plane (contiguous, zeroed here) += dout at the argmax; dout plane strides ds (h, w) */     \
  static void maxpool_bwd_plane_##SUF(T *restrict dx, const T *restrict dout, const int64_t *ds,   \
                                      const int64_t *restrict idx, const pool_geom *g) {           \
    for (int64_t i = 0; i < g->H * g->W; i++) dx[i] = 0;                                           \
    for (int64_t oh = 0; oh < g->OH; oh++)                                                         \
      for (int64_t ow = 0; ow < g->OW; ow++)                                                       \
        dx[idx[oh * g->OW + ow]] += dout[oh * ds[0] + ow * ds[1]];                                 \
  }
DEF_MAXPOOL(f, float)
DEF_MAXPOOL(d, double)

static int cpu_maxpool2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *idx = out[1], *x = in[0];
  pool_geom g;
  pool_geom_init(&g, x->shape, o->shape, p);
  bool two = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 &&
             x->stride[3] == 1;
  int64_t P = g.N * g.C, L = g.OH * g.OW;
  const int64_t *xs = x->stride + 2;
  bool f32 = o->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) PLANES_PAR(&g)
  for (int64_t pl = 0; pl < P; pl++) {
    int64_t n = pl / g.C, c = pl % g.C, xo = n * x->stride[0] + c * x->stride[1];
    int64_t *ip = I64(idx) + pl * L;
    if (f32) {
      if (two)
        maxpool2_plane_f(F32(o) + pl * L, ip, F32(x) + xo, xs, &g);
      else
        maxpool_plane_f(F32(o) + pl * L, ip, F32(x) + xo, xs, &g);
    } else {
      if (two)
        maxpool2_plane_d(F64(o) + pl * L, ip, F64(x) + xo, xs, &g);
      else
        maxpool_plane_d(F64(o) + pl * L, ip, F64(x) + xo, xs, &g);
    }
  }
  return NN_OK;
}

static int cpu_maxpool2d_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  nn_tensor *dx = out[0], *dout = in[0], *idx = in[1];
  pool_geom g;
  pool_geom_init(&g, dx->shape, dout->shape, p);
  int64_t P = g.N * g.C, L = g.OH * g.OW, HW = g.H * g.W;
  const int64_t *ds = dout->stride + 2;
  bool f32 = dx->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) PLANES_PAR(&g)
  for (int64_t pl = 0; pl < P; pl++) {
    int64_t n = pl / g.C, c = pl % g.C, d0 = n * dout->stride[0] + c * dout->stride[1];
    const int64_t *ip = I64(idx) + pl * L;
    if (f32)
      maxpool_bwd_plane_f(F32(dx) + pl * HW, F32(dout) + d0, ds, ip, &g);
    else
      maxpool_bwd_plane_d(F64(dx) + pl * HW, F64(dout) + d0, ds, ip, &g);
  }
  return NN_OK;
}

/* Window [h0, h1) x [w0, w1) clipped to the input, and its divisor (PyTorch's avg_pool2d). */
static void avg_window(const pool_geom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1,
                       int64_t *w0, int64_t *w1, double *div) {
  int64_t a = oh * g->sh - g->ph, b = ow * g->sw - g->pw;
  int64_t ae = a + g->kh < g->H + g->ph ? a + g->kh : g->H + g->ph;
  int64_t be = b + g->kw < g->W + g->pw ? b + g->kw : g->W + g->pw;
  int64_t padded = (ae - a) * (be - b);
  *h0 = a < 0 ? 0 : a;
  *w0 = b < 0 ? 0 : b;
  *h1 = ae < g->H ? ae : g->H;
  *w1 = be < g->W ? be : g->W;
  *div = (double)(g->include_pad ? padded : (*h1 - *h0) * (*w1 - *w0));
}

#define DEF_AVGPOOL(SUF, T)                                                                        \
  static void avgpool_plane_##SUF(T *restrict o, const T *restrict x, const int64_t *xs,           \
                                  const pool_geom *g) {                                            \
    for (int64_t oh = 0; oh < g->OH; oh++)                                                         \
      for (int64_t ow = 0; ow < g->OW; ow++) {                                                     \
        int64_t h0, h1, w0, w1;                                                                    \
        double div, s = 0;                                                                         \
        avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div);                                           \
        for (int64_t ih = h0; ih < h1; ih++)                                                       \
          for (int64_t iw = w0; iw < w1; iw++) s += x[ih * xs[0] + iw * xs[1]];                    \
        o[oh * g->OW + ow] = (T)(s / div);                                                         \
      }                                                                                            \
  }                                                                                                \
  static void avgpool_bwd_plane_##SUF(T *restrict dx, const T *restrict dout, const int64_t *ds,   \
                                      const pool_geom *g) {                                        \
    for (int64_t i = 0; i < g->H * g->W; i++) dx[i] = 0;                                           \
    for (int64_t oh = 0; oh < g->OH; oh++)                                                         \
      for (int64_t ow = 0; ow < g->OW; ow++) {                                                     \
        int64_t h0, h1, w0, w1;                                                                    \
        double div;                                                                                \
        avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div);                                           \
        T v = (T)(dout[oh * ds[0] + ow * ds[1]] / div);                                            \
        for (int64_t ih = h0; ih < h1; ih++)                                                       \
          for (int64_t iw = w0; iw < w1; iw++) dx[ih * g->W + iw] += v;                            \
      }                                                                                            \
  }
DEF_AVGPOOL(f, float)
DEF_AVGPOOL(d, double)

static int cpu_avgpool2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *x = in[0];
  pool_geom g;
  pool_geom_init(&g, x->shape, o->shape, p);
  int64_t P = g.N * g.C, L = g.OH * g.OW;
  const int64_t *xs = x->stride + 2;
  bool f32 = o->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) PLANES_PAR(&g)
  for (int64_t pl = 0; pl < P; pl++) {
    int64_t xo = (pl / g.C) * x->stride[0] + (pl % g.C) * x->stride[1];
    if (f32)
      avgpool_plane_f(F32(o) + pl * L, F32(x) + xo, xs, &g);
    else
      avgpool_plane_d(F64(o) + pl * L, F64(x) + xo, xs, &g);
  }
  return NN_OK;
}

static int cpu_avgpool2d_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  nn_tensor *dx = out[0], *dout = in[0];
  pool_geom g;
  pool_geom_init(&g, dx->shape, dout->shape, p);
  int64_t P = g.N * g.C, HW = g.H * g.W;
  const int64_t *ds = dout->stride + 2;
  bool f32 = dx->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) PLANES_PAR(&g)
  for (int64_t pl = 0; pl < P; pl++) {
    int64_t d0 = (pl / g.C) * dout->stride[0] + (pl % g.C) * dout->stride[1];
    if (f32)
      avgpool_bwd_plane_f(F32(dx) + pl * HW, F32(dout) + d0, ds, &g);
    else
      avgpool_bwd_plane_d(F64(dx) + pl * HW, F64(dout) + d0, ds, &g);
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- conv2d + relu + max_pool2d */

/* max_pool2d(relu(conv2d(x, w, bias))) per sample, without materialising the conv output: the
 * GEMM writes one sample's (O, L) into a per-thread buffer, the bias and ReLU are applied there
 * while it is in cache, and the pooling reads it. Each step is the unfused kernel's own code
 * (conv_fwd_sample, the ReLU of cpu_elementwise.c, maxpool*_plane), so values, argmax and ties
 * are the unfused ones bit for bit. The argmax is stored as -1 where the pooled value is not > 0:
 * ReLU's backward would zero that gradient. The backward scatters dy to the argmax in a
 * per-thread (O, L) buffer (what max_pool2d_backward then relu's backward produce) and runs the
 * conv backward of that sample on it, with the chunks and order of the unfused kernels. */

typedef struct fused_ctx {
  conv_ctx c;     /* first: run_batch passes &f->c */
  pool_geom pg;   /* over one sample: C = O planes of OH x OW */
  bool two;       /* 2x2 stride 2 unpadded pooling */
  char *y;        /* forward out (N, O, PH, PW) */
  int64_t *idx;   /* (N, O, PH, PW) */
  char *buf;      /* per thread (O, L) */
  const char *dy; /* backward in, strides dys */
  int64_t dys[4];
  char *dx;     /* backward out or NULL */
  bool want_dw; /* dw (and, with db_part, dbias) */
  bool dx_col;  /* the input gradient goes through col (not pointwise) */
  bool dw_col;  /* the weight gradient goes through col */
} fused_ctx;

static void fused_init(fused_ctx *f, const int64_t *xs, const int64_t *ws, const int64_t *ys,
                       const nn_op_params *p, nn_dtype dt) {
  conv_geom *g = &f->c.g;
  int64_t os[4] = {xs[0], ws[0], 0, 0};
  for (int k = 0; k < 2; k++) { /* the conv output size, as nn_conv2d computes it */
    int64_t span = p->i[4 + k] * (ws[2 + k] - 1) + 1;
    os[2 + k] = (xs[2 + k] + 2 * p->i[2 + k] - span) / p->i[k] + 1;
  }
  geom_init(g, xs, ws, os, p);
  nn_op_params q = {0};
  for (int k = 0; k < 6; k++) q.i[k] = p->i[8 + k];
  pool_geom_init(&f->pg, (int64_t[]){1, g->O, g->OH, g->OW}, ys, &q);
  f->two = f->pg.kh == 2 && f->pg.kw == 2 && f->pg.sh == 2 && f->pg.sw == 2 && f->pg.ph == 0 &&
           f->pg.pw == 0;
  f->c.dt = dt;
  f->c.es = nn_dtype_size(dt);
}

/* Per-thread buffers: scratch (col and the padded plane) when needed, and the (O, L) plane. */
static int fused_alloc(nn_tensor **scr, nn_tensor **buf, fused_ctx *f, int nt, bool col) {
  conv_ctx *c = &f->c;
  *buf = NULL;
  int64_t need = col ? c->g.K * c->g.L + padded_n(&c->g) : 0;
  if (need > c->scratch_n) c->scratch_n = need; /* Winograd's need, if larger, stays */
  int rc = scratch_alloc(scr, c, nt);
  if (!rc) rc = nn_tensor_empty(buf, 1, (int64_t[]){nt * c->g.O * c->g.L}, c->dt, nn_cpu);
  if (!rc) f->buf = nn_tensor_data(*buf);
  return rc;
}

#if WB_AVX512
/* maxpool2_plane_f (2x2 windows, stride 2) of a contiguous (OH, OW) plane x into y (PH, PW), with
 * the argmax marked -1 where y is not > 0; 16 outputs at a time. The running max takes a value
 * when it is greater or NaN, in the order (0,0), (0,1), (1,0), (1,1): maxpool2_plane_f's rule. */
AVX512_FN static void pool2_mark_plane_avx512(float *y, int64_t *idx, const float *x, int64_t OW,
                                              int64_t PH, int64_t PW) {
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
  const __m512i lane2 = ev, one = _mm512_set1_epi32(1), wv = _mm512_set1_epi32((int)OW);
  const __m512i w1 = _mm512_set1_epi32((int)OW + 1), neg = _mm512_set1_epi32(-1);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t ph = 0; ph < PH; ph++) {
    const float *r0 = x + 2 * ph * OW, *r1 = r0 + OW;
    for (int64_t pw = 0; pw < PW; pw += 16) {
      int64_t k = PW - pw < 16 ? PW - pw : 16, n2 = 2 * k;
      __mmask16 mk = (__mmask16)(k == 16 ? 0xFFFF : (1u << k) - 1);
      __mmask16 mlo = (__mmask16)(n2 >= 16 ? 0xFFFF : (1u << n2) - 1);
      __mmask16 mhi = (__mmask16)(n2 >= 32 ? 0xFFFF : n2 > 16 ? (1u << (n2 - 16)) - 1 : 0);
      __m512 a0 = _mm512_maskz_loadu_ps(mlo, r0 + 2 * pw),
             a1 = _mm512_maskz_loadu_ps(mhi, r0 + 2 * pw + 16);
      __m512 b0 = _mm512_maskz_loadu_ps(mlo, r1 + 2 * pw),
             b1 = _mm512_maskz_loadu_ps(mhi, r1 + 2 * pw + 16);
      __m512 v[3] = {_mm512_permutex2var_ps(a0, od, a1), _mm512_permutex2var_ps(b0, ev, b1),
                     _mm512_permutex2var_ps(b0, od, b1)};
      const __m512i offs[3] = {one, wv, w1};
      __m512 best = _mm512_permutex2var_ps(a0, ev, a1);
      __m512i off = _mm512_setzero_si512();
      for (int j = 0; j < 3; j++) {
        __mmask16 m = _mm512_cmp_ps_mask(v[j], best, _CMP_GT_OQ) |
                      _mm512_cmp_ps_mask(v[j], v[j], _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, m, v[j]);
        off = _mm512_mask_mov_epi32(off, m, offs[j]);
      }
      __m512i pos = _mm512_add_epi32(_mm512_set1_epi32((int)(2 * ph * OW + 2 * pw)),
                                     _mm512_add_epi32(lane2, off));
      pos = _mm512_mask_mov_epi32(neg, _mm512_cmp_ps_mask(best, zero, _CMP_GT_OQ), pos);
      _mm512_mask_storeu_ps(y + ph * PW + pw, mk, best);
      int64_t *ir = idx + ph * PW + pw;
      _mm512_mask_storeu_epi64(ir, (__mmask8)mk,
                               _mm512_cvtepi32_epi64(_mm512_castsi512_si256(pos)));
      _mm512_mask_storeu_epi64(ir + 8, (__mmask8)(mk >> 8),
                               _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(pos, 1)));
    }
  }
}
#endif

static void fused_fwd_range(conv_ctx *cc, int k, int t, int64_t n0, int64_t n1) {
  (void)k;
  fused_ctx *f = (fused_ctx *)cc;
  const conv_geom *g = &cc->g;
  size_t es = cc->es;
  int64_t OL = g->O * g->L, PL = f->pg.OH * f->pg.OW, ps[2] = {g->OW, 1};
  char *col = scratch_of(cc, t), *cb = f->buf + (size_t)(t * OL) * es;
  bool f32 = cc->dt == NN_DTYPE_F32;
  for (int64_t n = n0; n < n1; n++) {
    conv_fwd_sample(cc, col, cc->x + (size_t)(n * cc->xs[0]) * es, cb, true);
    int64_t *ip = f->idx + n * g->O * PL;
    char *yn = f->y + (size_t)(n * g->O * PL) * es;
#if WB_AVX512
    if (f32 && f->two && cpu_have_avx512()) {
      for (int64_t o = 0; o < g->O; o++)
        pool2_mark_plane_avx512((float *)yn + o * PL, ip + o * PL, (const float *)cb + o * g->L,
                                g->OW, f->pg.OH, f->pg.OW);
      continue;
    }
#endif
    for (int64_t o = 0; o < g->O; o++) {
      char *yo = yn + (size_t)(o * PL) * es, *src = cb + (size_t)(o * g->L) * es;
      if (f32 && f->two)
        maxpool2_plane_f((float *)yo, ip + o * PL, (const float *)src, ps, &f->pg);
      else if (f32)
        maxpool_plane_f((float *)yo, ip + o * PL, (const float *)src, ps, &f->pg);
      else if (f->two)
        maxpool2_plane_d((double *)yo, ip + o * PL, (const double *)src, ps, &f->pg);
      else
        maxpool_plane_d((double *)yo, ip + o * PL, (const double *)src, ps, &f->pg);
    }
    /* relu's backward passes dy where y > 0 */
    if (f32) {
      const float *yv = (const float *)yn;
      for (int64_t i = 0; i < g->O * PL; i++) ip[i] = yv[i] > 0 ? ip[i] : -1;
    } else {
      const double *yv = (const double *)yn;
      for (int64_t i = 0; i < g->O * PL; i++) ip[i] = yv[i] > 0 ? ip[i] : -1;
    }
  }
}

static int cpu_conv2d_relu_maxpool(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  nn_tensor *y = out[0], *x = in[0], *b = in[2], *wc = NULL, *scr = NULL, *buf = NULL, *ut = NULL;
  fused_ctx f = {0};
  conv_ctx *c = &f.c;
  fused_init(&f, x->shape, in[1]->shape, y->shape, p, y->dtype);
  int nt = batch_threads(&c->g);
  c->n_chunks = conv_chunks(&c->g, nt);
  int rc = packed(&wc, in[1]);
  if (rc) goto done;
  c->w = nn_tensor_data(wc);
  rc = wino_prepare(&ut, c, false);
  if (!rc) rc = fused_alloc(&scr, &buf, &f, nt, !(c->g.pointwise && planes_contiguous(x)));
  if (rc) goto done;
  c->x = nn_tensor_data(x);
  memcpy(c->xs, x->stride, sizeof c->xs);
  c->bias = b ? nn_tensor_data(b) : NULL;
  c->bias_stride = b ? b->stride[0] : 0;
  f.y = nn_tensor_data(y);
  f.idx = I64(out[1]);
  run_batch(c, nt, fused_fwd_range);
done:
  nn_tensor_free(wc);
  nn_tensor_free(scr);
  nn_tensor_free(buf);
  nn_tensor_free(ut);
  return rc;
}

static void fused_bwd_range(conv_ctx *cc, int k, int t, int64_t n0, int64_t n1) {
  fused_ctx *f = (fused_ctx *)cc;
  const conv_geom *g = &cc->g;
  size_t es = cc->es;
  int64_t OL = g->O * g->L, PH = f->pg.OH, PW = f->pg.OW, PL = PH * PW;
  char *col = scratch_of(cc, t), *db_ = f->buf + (size_t)(t * OL) * es;
  char *dw = f->want_dw ? dw_of_chunk(cc, k) : NULL;
  double *db = cc->db_part ? cc->db_part + k * g->O : NULL;
  bool f32 = cc->dt == NN_DTYPE_F32;
  if (db)
    for (int64_t o = 0; o < g->O; o++) db[o] = 0;
  if (dw && n0 == n1) memset(dw, 0, (size_t)dw_part_n(cc) * es);
  for (int64_t n = n0; n < n1; n++) {
    /* dconv (O, L): dy scattered to the argmax (max_pool2d_backward), kept where y > 0 (relu) */
    memset(db_, 0, (size_t)OL * es);
    const int64_t *ip = f->idx + n * g->O * PL;
    for (int64_t o = 0; o < g->O; o++) {
      const char *d = f->dy + (size_t)(n * f->dys[0] + o * f->dys[1]) * es;
      const int64_t *io = ip + o * PL;
      for (int64_t ph = 0; ph < PH; ph++)
        for (int64_t pw = 0; pw < PW; pw++) {
          int64_t i = io[ph * PW + pw], off = ph * f->dys[2] + pw * f->dys[3];
          if (i < 0) continue;
          if (f32)
            ((float *)db_)[o * g->L + i] += ((const float *)d)[off];
          else
            ((double *)db_)[o * g->L + i] += ((const double *)d)[off];
        }
    }
    if (dw || db) {
      const char *xn = cc->x + (size_t)(n * cc->xs[0]) * es;
      if (dw)
        conv_dw_sample(cc, f->dw_col ? col : NULL, db_, xn, dw, n == n0, db);
      else /* the bias alone: conv2d_backward_bias's sums, in sample order (one chunk) */
        for (int64_t o = 0; o < g->O; o++)
          db[o] += f32 ? sum_f((const float *)db_ + o * g->L, g->L)
                       : sum_d((const double *)db_ + o * g->L, g->L);
    }
    if (f->dx)
      conv_dx_sample(cc, f->dx_col ? col : NULL, db_,
                     f->dx + (size_t)(n * g->C * g->H * g->W) * es);
  }
}

/* out: dx, dw, dbias, those present (p->i[14] bits 1, 2, 4) in that order. */
static int cpu_conv2d_relu_maxpool_backward(nn_tensor *const *out, nn_tensor *const *in,
                                            const nn_op_params *p) {
  nn_tensor *dyt = in[0], *x = in[1], *dxt = NULL, *dwt = NULL, *dbt = NULL;
  nn_tensor *wc = NULL, *ic = NULL, *scr = NULL, *buf = NULL, *part = NULL, *dbp = NULL, *ut = NULL;
  nn_tensor *wdu = NULL;
  int m = (int)p->i[14], j = 0;
  if (m & 1) dxt = out[j++];
  if (m & 2) dwt = out[j++];
  if (m & 4) dbt = out[j++];
  fused_ctx f = {0};
  conv_ctx *c = &f.c;
  fused_init(&f, x->shape, in[2]->shape, dyt->shape, p, dyt->dtype);
  int nt = batch_threads(&c->g);
  /* the bias alone is summed in sample order, as conv2d_backward_bias does: one chunk */
  int nch = c->n_chunks = dwt || !dbt ? conv_chunks(&c->g, nt) : 1;
  int64_t wn = c->g.O * c->g.Kg;
  f.dx_col = dxt && !c->g.pointwise;
  f.dw_col = dwt && !(c->g.pointwise && planes_contiguous(x));
  f.want_dw = dwt != NULL;
  int rc = packed(&wc, in[2]);
  if (!rc) rc = packed(&ic, in[3]);
  if (rc) goto done;
  c->w = nn_tensor_data(wc);
  if (dxt) rc = wino_prepare(&ut, c, true);
  if (!rc && dwt) rc = wino_dw_prepare(&wdu, c, nch);
  if (!rc) rc = fused_alloc(&scr, &buf, &f, nt, f.dx_col || f.dw_col);
  if (!rc && dwt && nch > 1 && !c->wdu)
    rc = nn_tensor_empty(&part, 1, (int64_t[]){(nch - 1) * wn}, c->dt, nn_cpu);
  if (!rc && dbt) rc = nn_tensor_empty(&dbp, 1, (int64_t[]){nch * c->g.O}, NN_DTYPE_F64, nn_cpu);
  if (rc) goto done;
  c->x = nn_tensor_data(x);
  memcpy(c->xs, x->stride, sizeof c->xs);
  c->dw = dwt ? nn_tensor_data(dwt) : NULL;
  c->dw_part = part ? nn_tensor_data(part) : NULL;
  c->db_part = dbp ? F64(dbp) : NULL;
  f.idx = I64(ic);
  f.dy = nn_tensor_data(dyt);
  memcpy(f.dys, dyt->stride, sizeof f.dys);
  f.dx = dxt ? nn_tensor_data(dxt) : NULL;
  run_batch(c, nt, fused_bwd_range);
  if (dwt)
    conv_dw_finish(c, dwt, dbt);
  else if (dbt)
    for (int64_t o = 0; o < c->g.O; o++) nn_tensor_set_flat(dbt, o, c->db_part[o]);
done:
  nn_tensor_free(wc);
  nn_tensor_free(ic);
  nn_tensor_free(scr);
  nn_tensor_free(buf);
  nn_tensor_free(part);
  nn_tensor_free(dbp);
  nn_tensor_free(ut);
  nn_tensor_free(wdu);
  return rc;
}

void nn_cpu_register_nnet(nn_backend_i *be) {
  be->kernels[NN_OP_CONV2D] = cpu_conv2d;
  be->kernels[NN_OP_CONV2D_BACKWARD_INPUT] = cpu_conv2d_backward_input;
  be->kernels[NN_OP_CONV2D_BACKWARD_WEIGHT] = cpu_conv2d_backward_weight;
  be->kernels[NN_OP_CONV2D_BACKWARD_BIAS] = cpu_conv2d_backward_bias;
  be->kernels[NN_OP_CONV2D_RELU_MAXPOOL] = cpu_conv2d_relu_maxpool;
  be->kernels[NN_OP_CONV2D_RELU_MAXPOOL_BACKWARD] = cpu_conv2d_relu_maxpool_backward;
  be->kernels[NN_OP_MAXPOOL2D] = cpu_maxpool2d;
  be->kernels[NN_OP_MAXPOOL2D_BACKWARD] = cpu_maxpool2d_backward;
  be->kernels[NN_OP_AVGPOOL2D] = cpu_avgpool2d;
  be->kernels[NN_OP_AVGPOOL2D_BACKWARD] = cpu_avgpool2d_backward;
  nn_cpu_register_norm(be); /* batch norm and layer norm: cpu_norm.c */
}
