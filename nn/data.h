/* nn/data.h: datasets for wb: Fashion-MNIST from its IDX files, subsets and splits, per-channel
 * normalisation, a minibatch iterator, training-time augmentations, robustness corruptions and
 * small synthetic datasets.
 *
 * Shape letters: N samples, B batch, C channels, H height, W width, D features, K classes.
 *
 * Ownership: an nn_dataset owns one reference to each of its tensors x and y. Every function
 * that returns a dataset or tensor through an out-parameter hands the caller a new object (free
 * it with nn_dataset_free / nn_tensor_free); inputs are never modified and never kept unless the
 * comment says so. Subsets copy the selected rows; they never alias the parent's storage.
 *
 * Randomness: nothing here calls rand() or reads the process-wide generator. Functions that
 * sample take either an explicit nn_rng (augmentations, advanced by the call) or a seed (splits,
 * k-shot, corruptions, synthetic sets, the batcher's shuffles), each on its own Philox stream so
 * that one seed used for several purposes gives independent draws. Results depend only on the
 * inputs and the seed, never on the thread count.
 *
 * Errors: NN_OK or a negative NN_ERR_* code with a message in nn_errmsg() naming the function,
 * the shapes or the file. Out-parameters are NULL unless the call succeeded. Everything runs on
 * the CPU; tensors on another device give NN_ERR_DEVICE.
 *
 * Order of a usual pipeline: load, split, build a batcher; per batch augment (inputs in [0, 1]),
 * then normalise with statistics computed on the training set. Augmentations and corruptions
 * clamp to [0, 1], so they belong before normalisation.
 */
#ifndef NN_DATA_H
#define NN_DATA_H

#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- datasets */

/* A set of N samples: inputs x (N, ...) and targets y (N) or (N, T).
 *   classification: y int64 (N) with labels in [0, n_classes)
 *   regression:     y float32/float64 (N, ...) and n_classes == 0
 * x is float32 or float64, contiguous, on the CPU. Both tensors are owned by the dataset; read
 * them freely, but do not free them or keep them past nn_dataset_free without nn_tensor_retain. */
typedef struct nn_dataset {
  nn_tensor *x; /* (N, ...) inputs, e.g. (N, 1, 28, 28) images in [0, 1] */
  nn_tensor *y; /* (N) int64 labels, or (N, ...) float targets */
  int64_t n;    /* N */
  int n_classes;
} nn_dataset;

/* Wraps x and y in a new dataset. Takes a new reference to each (a non-contiguous tensor is
 * copied into a contiguous one), so the caller keeps its own references. Checks: x has >= 1 dim
 * and is float32/float64; y's first dim equals x's; with n_classes > 0, y is int64 (N) and every
 * label is in [0, n_classes) (NN_ERR_INDEX naming the first bad label); with n_classes == 0, y is
 * float. Errors: NN_ERR_SHAPE, NN_ERR_DTYPE, NN_ERR_INDEX, NN_ERR_ARG, NN_ERR_DEVICE. */
int nn_dataset_new(nn_dataset **out, nn_tensor *x, nn_tensor *y, int n_classes);
/* Releases the dataset's references. NULL is a no-op. */
void nn_dataset_free(nn_dataset *d);

/* Samples per class: counts[c] for c < d->n_classes (counts has n_classes entries).
 * NN_ERR_ARG for a regression dataset. */
int nn_dataset_class_counts(const nn_dataset *d, int64_t *counts);

/* ---------------------------------------------------------------- Fashion-MNIST */

/* Directory of Debian's dataset-fashion-mnist package. */
#define NN_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Loads Fashion-MNIST (Xiao et al., 2017): split "train" (60000 samples) or "test" (10000).
 * x is float32 (N, 1, 28, 28) with pixels scaled to [0, 1] (byte / 255), y int64 (N) in [0, 10),
 * n_classes = 10. The files are {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (a file without
 * the .gz suffix is read when the .gz one is absent; gzip and plain IDX both work).
 * The directory is dir when non-NULL, else $WB_FASHION_MNIST_DIR when set and non-empty, else
 * NN_FASHION_MNIST_DIR.
 * Errors (NN_ERR_IO, the message naming the file): a missing file (with the hint "install
 * Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass the directory"),
 * a bad magic number, wrong dims (images not 28 x 28), an images/labels count mismatch, a label
 * outside 0..9, a truncated file (the header promises more bytes than the file holds, or the gzip
 * stream is cut short: the message gives the expected and actual byte counts), trailing bytes
 * after the promised data. NN_ERR_ARG for an unknown split (the message lists the valid ones). */
int nn_fashion_mnist_load(nn_dataset **out, const char *dir, const char *split);

/* Loads any IDX pair of unsigned-byte images (magic 0x00000803: N x H x W) and labels (magic
 * 0x00000801: N), gzip or plain, as nn_fashion_mnist_load does: x float32 (N, 1, H, W) in [0, 1],
 * y int64 (N). Labels must lie in [0, n_classes). h and w are the required image size, or 0 to
 * accept any size up to 4096. Same errors as nn_fashion_mnist_load, without the install hint. */
int nn_idx_load(nn_dataset **out, const char *images_path, const char *labels_path, int n_classes,
                int64_t h, int64_t w);

/* English name of Fashion-MNIST class c ("T-shirt/top", ..., "Ankle boot"); "?" out of range. */
const char *nn_fashion_mnist_class_name(int c);

/* ---------------------------------------------------------------- subsets and splits */

/* The rows idx[0], idx[1], ... of d (repeats allowed), in that order, copied into a new dataset.
 * idx is an int64 1-D tensor (any strides). Errors: NN_ERR_DTYPE, NN_ERR_SHAPE, NN_ERR_INDEX
 * (an index outside [0, N), naming it and its position). */
int nn_dataset_subset(nn_dataset **out, const nn_dataset *d, const nn_tensor *idx);

/* Splits d into two disjoint datasets that together hold every sample once: *val gets n_val
 * samples chosen at random (seeded), *train the other N - n_val. Both keep the original order of
 * the samples they hold (the batcher shuffles). With stratified, each class c contributes
 * floor(n_val * N_c / N) samples to *val, and the n_val - sum of these left over go one each to
 * the classes with the largest remainders (ties to the smaller class index), so class
 * proportions match to within one sample. Same seed, same split.
 * Errors: NN_ERR_ARG (n_val outside [0, N], stratified on a regression dataset). */
int nn_dataset_split(nn_dataset **train, nn_dataset **val, const nn_dataset *d, int64_t n_val,
                     uint64_t seed, bool stratified);

/* The samples whose label is one of classes[0..k-1] (distinct, each in [0, n_classes)), in their
 * original order. With relabel, label classes[i] becomes i and n_classes becomes k; otherwise
 * labels and n_classes are kept. Errors: NN_ERR_ARG (k < 1, a repeated class, a regression
 * dataset), NN_ERR_INDEX (a class out of range). */
int nn_dataset_select_classes(nn_dataset **out, const nn_dataset *d, const int64_t *classes, int k,
                              bool relabel);

/* k samples drawn at random without replacement from every class that occurs in d (classes with
 * no samples are skipped), in their original order. Same seed, same samples.
 * Errors: NN_ERR_ARG (k < 1, regression dataset, a class with fewer than k samples: the message
 * names the class and its count). */
int nn_dataset_kshot(nn_dataset **out, const nn_dataset *d, int64_t k, uint64_t seed);

/* ---------------------------------------------------------------- normalisation */

/* Per-channel mean and standard deviation (population, divisor N * H * W) of d->x over all
 * samples and positions; channel = dim 1 (for x (N, D) every feature is a channel; for x (N)
 * there is one channel). *mean and *std are new float32 tensors (C). Sums run in double in a
 * fixed order, so the result does not depend on the thread count. NN_ERR_ARG for N == 0. */
int nn_dataset_channel_stats(nn_tensor **mean, nn_tensor **std, const nn_dataset *d);

/* out = (x - mean[c]) / std[c] per channel c = dim 1 of x (N, C, ...); mean and std are float
 * (C) tensors; a new float32/float64 tensor like x. Errors: NN_ERR_SHAPE (mean/std not (C)),
 * NN_ERR_ARG (a std <= 0, naming the channel), NN_ERR_DTYPE. */
int nn_data_normalize(nn_tensor **out, const nn_tensor *x, const nn_tensor *mean,
                      const nn_tensor *std);
/* The same on a dataset: a new dataset with normalised x and the same y tensor (shared, one more
 * reference; no dataset function modifies y in place). */
int nn_dataset_normalize(nn_dataset **out, const nn_dataset *d, const nn_tensor *mean,
                         const nn_tensor *std);

/* ---------------------------------------------------------------- minibatches */

typedef struct nn_batcher_opts {
  int64_t batch_size; /* B > 0 */
  bool shuffle;       /* a new seeded permutation every epoch; false: samples in order */
  bool drop_last;     /* skip the final batch when it would hold fewer than B samples */
  uint64_t seed;      /* the permutation of epoch e is drawn from Philox (seed, stream tag ^ e) */
} nn_batcher_opts;

/* Iterator over the minibatches of a dataset. The batcher takes its own references to d->x and
 * d->y (the dataset may be freed first); it never modifies them.
 *
 * Shuffling: epoch e uses the permutation of rng.h's randperm rule (Fisher-Yates, as
 * nn_randperm) drawn from nn_rng (seed, stream 0x6261746368 ^ e) (ASCII "batch", so a seed shared
 * with model initialisation gives unrelated numbers). The same (seed, epoch) always gives the
 * same order; different epochs give different orders.
 *
 * Memory: a batch is gathered with one memcpy per sample into tensors the batcher keeps and
 * reuses. The yielded tensors are new references owned by the caller and stay valid (their
 * contents untouched) for as long as the caller holds them: before each batch the batcher checks
 * whether anyone else still holds its previous batch (tensor or storage refcount above its own);
 * if so it lets go of it and allocates a fresh one (through the caching allocator), otherwise it
 * overwrites it in place. A loop that frees x and y (and the graph built on them) before asking
 * for the next batch therefore allocates nothing in steady state. */
typedef struct nn_batcher nn_batcher;

/* New batcher positioned at the start of epoch 0. Errors: NN_ERR_ARG (batch_size < 1, NULL
 * options), NN_ERR_NOMEM. */
int nn_batcher_new(nn_batcher **out, const nn_dataset *d, const nn_batcher_opts *opts);
void nn_batcher_free(nn_batcher *b); /* NULL is a no-op; yielded tensors stay valid */

/* Next batch of the current epoch: returns 1 and sets *x (B, ...) and *y (B) or (B, ...) (the
 * last batch may be smaller unless drop_last) as new references; returns 0 with *x = *y = NULL
 * when the epoch is over, after which the batcher is at the start of the next epoch (so the
 * following call begins epoch e + 1). Negative NN_ERR_* on failure (NN_ERR_NOMEM). */
int nn_batcher_next(nn_batcher *b, nn_tensor **x, nn_tensor **y);
/* Restarts at the beginning of epoch e (e.g. when resuming from a checkpoint). */
void nn_batcher_set_epoch(nn_batcher *b, int64_t epoch);
int64_t nn_batcher_epoch(const nn_batcher *b);       /* the epoch now being iterated */
int64_t nn_batcher_num_batches(const nn_batcher *b); /* batches per epoch */

/* ---------------------------------------------------------------- augmentations */

/* All take x float32 (N, C, H, W) (any strides), return a new contiguous float32 tensor of the
 * same shape clamped to [0, 1], are not recorded by autograd, and treat every sample
 * independently. Geometric transforms fill uncovered pixels with 0. The random ones draw sample
 * i's parameters from block r->offset + i of r (so they do not depend on the thread count) and
 * advance r->offset by N. Errors: NN_ERR_SHAPE (x not 4-D), NN_ERR_DTYPE (not float32),
 * NN_ERR_ARG (bad parameter), NN_ERR_DEVICE. */

/* Mirror left-right: out[n, c, i, j] = x[n, c, i, W-1-j]. */
int nn_data_hflip(nn_tensor **out, const nn_tensor *x);
/* Shift content by (dy, dx) pixels (positive: down / right): out[i, j] = x[i-dy, j-dx], 0
 * outside. */
int nn_data_translate(nn_tensor **out, const nn_tensor *x, int64_t dy, int64_t dx);
/* Rotate counter-clockwise (as displayed, row 0 at the top) by degrees about the image centre
 * ((W-1)/2, (H-1)/2), sampling bilinearly; source points outside the image read as 0. */
int nn_data_rotate(nn_tensor **out, const nn_tensor *x, double degrees);

/* Flip each sample with probability p (in [0, 1]), from word 0 of its block. */
int nn_data_random_hflip(nn_tensor **out, const nn_tensor *x, double p, nn_rng *r);
/* Zero-pad by pad (>= 0) on every side and crop back to H x W at a random offset: each sample is
 * translated by (dy, dx), each uniform in [-pad, pad] (words 0 and 1 of its block). pad = 0 is
 * the identity. */
int nn_data_random_crop(nn_tensor **out, const nn_tensor *x, int pad, nn_rng *r);
/* Rotate each sample by an angle uniform in [-max_degrees, max_degrees] (word 0). */
int nn_data_random_rotate(nn_tensor **out, const nn_tensor *x, double max_degrees, nn_rng *r);

/* ---------------------------------------------------------------- corruptions */

/* Robustness corruptions in the spirit of Hendrycks & Dietterich (ICLR 2019, ImageNet-C /
 * CIFAR-10-C) and Mu & Gilmer (2019, MNIST-C). Parameters per severity 1..5:
 *   gaussian_noise  x + N(0, s^2), s = 0.08, 0.12, 0.18, 0.26, 0.38   (ImageNet-C's values)
 *   gaussian_blur   Gaussian kernel, sigma = 0.4, 0.6, 0.7, 0.8, 1.0 pixels (CIFAR-10-C's values,
 *                   made for 32 x 32 images), separable, radius ceil(3 sigma), edge pixels
 *                   repeated at the borders (skimage's mode "nearest", as ImageNet-C)
 *   contrast        (x - m) * c + m with m the mean of the sample over C, H, W;
 *                   c = 0.4, 0.3, 0.2, 0.1, 0.05 (ImageNet-C's values)
 *   rotate          rotation by +-a degrees, a = 15, 30, 45, 60, 75, the sign drawn per sample
 *                   (MNIST-C's affine family; bilinear, zero fill as nn_data_rotate)
 *   pixelate        box-average down to round(f * H) x round(f * W) cells, then repeat each cell
 *                   back to H x W (nearest); f = 0.6, 0.5, 0.4, 0.3, 0.2 (ImageNet-C's, except
 *                   0.2 for its 0.25: on 28 x 28 images 0.3 and 0.25 give 8 and 7 cells, and
 *                   the uneven 3/4-pixel cells of 8 distort more than the even 4-pixel cells of 7)
 * Every output is clamped to [0, 1]. The random parts (noise values; rotation signs) are drawn
 * from Philox (seed, a stream per corruption): the same seed gives the same output.
 * noise: element k of x (row-major) gets the normal of the rule in rng.h (Box-Muller on words
 * 2(k%2), 2(k%2)+1 of block k/2) of stream 0x6e6f697365 ("noise"); rotate: sample n turns by +a
 * when word 0 of block n of stream 0x726f74617465 ("rotate") is odd, else by -a. */
typedef enum {
  NN_CORRUPT_GAUSSIAN_NOISE = 0,
  NN_CORRUPT_GAUSSIAN_BLUR,
  NN_CORRUPT_CONTRAST,
  NN_CORRUPT_ROTATE,
  NN_CORRUPT_PIXELATE,
  NN_CORRUPT_COUNT
} nn_corruption;

/* Corrupts x float32 (N, C, H, W) at severity 1..5 into a new tensor. Errors as the
 * augmentations, and NN_ERR_ARG for a severity outside 1..5 or an unknown corruption. */
int nn_data_corrupt(nn_tensor **out, const nn_tensor *x, nn_corruption kind, int severity,
                    uint64_t seed);
/* "gaussian_noise", "gaussian_blur", "contrast", "rotate", "pixelate"; NULL when out of range. */
const char *nn_data_corruption_name(nn_corruption kind);
/* The corruption called name; NN_ERR_ARG listing the valid names when there is none. */
int nn_data_corruption_from_name(nn_corruption *kind, const char *name);

/* ---------------------------------------------------------------- synthetic datasets */

/* 1-D regression with heteroscedastic noise: x uniform in [lo, hi), y = sin(3x) + e with
 * e ~ N(0, s(x)^2), s(x) = noise * (0.1 + |x|) (the noise grows away from 0).
 * x float32 (n, 1), y float32 (n, 1), n_classes = 0. Errors: NN_ERR_ARG (n < 0, lo >= hi,
 * noise < 0). */
int nn_data_regression1d(nn_dataset **out, int64_t n, double lo, double hi, double noise,
                         uint64_t seed);

/* k Gaussian blobs in d dims: sample i has label i % k (so classes are balanced to within one)
 * and x = centre(label) + std * N(0, I). Centres (nn_data_blob_center): for d >= 2 the k points
 * 4 * (cos(2 pi c / k), sin(2 pi c / k), 0, ..., 0) on a circle of radius 4; for d = 1, 4 * c.
 * x float32 (n, d), y int64 (n), n_classes = k. Errors: NN_ERR_ARG (n < 0, k < 1, d < 1,
 * std < 0). */
int nn_data_blobs(nn_dataset **out, int64_t n, int k, int d, double std, uint64_t seed);
/* Writes the centre of class c of nn_data_blobs(k, d) into center[0..d-1]. */
void nn_data_blob_center(double *center, int c, int k, int d);

/* Two interleaving half circles (scikit-learn's make_moons, with the angle drawn uniformly):
 * sample i has label i % 2 (so ceil(n/2) of class 0); with t uniform in [0, pi),
 * class 0: (cos t, sin t), class 1: (1 - cos t, 0.5 - sin t), plus N(0, noise^2) on each
 * coordinate. x float32 (n, 2), y int64 (n), n_classes = 2. Errors: NN_ERR_ARG (n < 0,
 * noise < 0). */
int nn_data_two_moons(nn_dataset **out, int64_t n, double noise, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
