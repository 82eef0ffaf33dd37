/* nn/checkpoint.h: one-file checkpoints of model, optimizer and RNG state, saved atomically and
 * loaded back bit-exactly.
 *
 * File format (version 1, little-endian; every field fixed-size unless noted):
 *   "WBCKPT\r\n"                   8-byte magic (the \r\n catches text-mode corruption)
 *   u32 version = 1, u32 n_entries
 *   n_entries x entry:
 *     u16 name_len, name (UTF-8, no NUL), u8 kind
 *     kind 0 tensor: u8 dtype (0 f32, 1 f64, 2 i64), u8 ndim, i64 shape[ndim], u64 nbytes,
 *                    nbytes of row-major data
 *     kind 1 int:    i64      kind 2 float: f64      kind 3 string: u32 len, bytes
 *   u32 CRC-32 (zlib) of every byte before it, then the 8-byte trailer "WBCKEND\n"
 * Entry names used by nn_checkpoint_save: "model.<param>" and "buffer.<buffer>" (dotted module
 * names, e.g. "model.0.weight", "buffer.1.running_mean"), "optim.kind", "optim.step",
 * "optim.<i>.<buffer>" (nn_optim_state), "rng.seed", "rng.stream", "rng.offset", plus any
 * "extra.<name>" entries the caller adds (epoch, step, schedule state...).
 *
 * Saving writes "<path>.tmp", fsyncs it, and renames it over path, so a crash mid-save leaves
 * the previous checkpoint intact. Loading reads and verifies the whole file (magic, version,
 * sizes, CRC, trailer) and checks every entry against the model and optimizer before anything is
 * written: a truncated, corrupted or mismatched file gives NN_ERR_IO / NN_ERR_SHAPE with a message
 * naming the file and the problem, and leaves model, optimizer and RNG untouched.
 */
#ifndef NN_CHECKPOINT_H
#define NN_CHECKPOINT_H

#include "module.h"
#include "optim.h"
#include "rng.h"

/* An in-memory set of named entries (what a file holds). */
typedef struct nn_ckpt nn_ckpt;

int nn_ckpt_new(nn_ckpt **out);
void nn_ckpt_free(nn_ckpt *c);
/* Adds an entry (the tensor is copied to host memory now); a duplicate name is NN_ERR_ARG. */
int nn_ckpt_put_tensor(nn_ckpt *c, const char *name, const nn_tensor *t);
int nn_ckpt_put_int(nn_ckpt *c, const char *name, int64_t v);
int nn_ckpt_put_float(nn_ckpt *c, const char *name, double v);
int nn_ckpt_put_str(nn_ckpt *c, const char *name, const char *s);
/* Lookups: the tensor is owned by c (valid until nn_ckpt_free); NULL / NN_ERR_ARG when absent or
 * of another kind. */
nn_tensor *nn_ckpt_tensor(const nn_ckpt *c, const char *name);
int nn_ckpt_int(const nn_ckpt *c, const char *name, int64_t *v);
int nn_ckpt_float(const nn_ckpt *c, const char *name, double *v);
const char *nn_ckpt_str(const nn_ckpt *c, const char *name);
int nn_ckpt_count(const nn_ckpt *c);
const char *nn_ckpt_name(const nn_ckpt *c, int i);

/* Atomic write (tmp file, fsync, rename). */
int nn_ckpt_save(const nn_ckpt *c, const char *path);
/* Reads and verifies a whole file. */
int nn_ckpt_load(nn_ckpt **out, const char *path);

/* Model (params and buffers), optimizer state (opt may be NULL), RNG state (rng may be NULL)
 * and the caller's extra entries (may be NULL; names are prefixed "extra.") in one file. */
int nn_checkpoint_save(const char *path, nn_module *m, nn_optim *opt, const nn_rng *rng,
                       const nn_ckpt *extra);
/* Restores what nn_checkpoint_save wrote into m (and opt, rng when not NULL). The model must
 * have the same parameter and buffer names, shapes and dtypes; the optimizer the same kind and
 * parameter count. *extra (may be NULL) receives the whole file's entries for the caller's extra
 * values (free with nn_ckpt_free). Nothing is written unless every check passes. */
int nn_checkpoint_load(const char *path, nn_module *m, nn_optim *opt, nn_rng *rng, nn_ckpt **extra);

#endif
