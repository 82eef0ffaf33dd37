/* nn/checkpoint.c: the checkpoint container, its file format (see checkpoint.h) and the
 * model/optimizer/RNG save and load. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "WBCKPT\r\n"
#define TRAILER "WBCKEND\n"
#define VERSION 1u

enum { K_TENSOR = 0, K_INT = 1, K_FLOAT = 2, K_STR = 3 };

typedef struct entry {
  char *name;
  int kind;
  nn_tensor *t;
  int64_t i;
  double f;
  char *s;
} entry;

struct nn_ckpt {
  int n, cap;
  entry *e;
};

int nn_ckpt_new(nn_ckpt **out) {
  *out = calloc(1, sizeof **out);
  return *out ? NN_OK : nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
}

void nn_ckpt_free(nn_ckpt *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    free(c->e[i].name);
    nn_tensor_free(c->e[i].t);
    free(c->e[i].s);
  }
  free(c->e);
  free(c);
}

static const entry *find(const nn_ckpt *c, const char *name) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->e[i].name, name)) return &c->e[i];
  return NULL;
}

static entry *add(nn_ckpt *c, const char *name, int kind) {
  if (find(c, name)) {
    nn_seterr(NN_ERR_ARG, "checkpoint: duplicate entry \"%s\"", name);
    return NULL;
  }
  if (strlen(name) > 65535) {
    nn_seterr(NN_ERR_ARG, "checkpoint: entry name too long");
    return NULL;
  }
  if (c->n == c->cap) {
    int cap = c->cap ? 2 * c->cap : 16;
    entry *e = realloc(c->e, (size_t)cap * sizeof *e);
    if (!e) {
      nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
      return NULL;
    }
    c->e = e;
    c->cap = cap;
  }
  entry *e = &c->e[c->n];
  memset(e, 0, sizeof *e);
  e->name = strdup(name);
  if (!e->name) {
    nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
    return NULL;
  }
  e->kind = kind;
  c->n++;
  return e;
}

int nn_ckpt_put_tensor(nn_ckpt *c, const char *name, const nn_tensor *t) {
  nn_tensor *h = NULL;
  int rc = nn_tensor_empty(&h, t->ndim, t->shape, t->dtype, nn_cpu);
  if (!rc) rc = nn_tensor_to_host(t, t->dtype, nn_tensor_data(h));
  if (rc) {
    nn_tensor_free(h);
    return rc;
  }
  entry *e = add(c, name, K_TENSOR);
  if (!e) {
    nn_tensor_free(h);
    return nn_errcode();
  }
  e->t = h;
  return NN_OK;
}

int nn_ckpt_put_int(nn_ckpt *c, const char *name, int64_t v) {
  entry *e = add(c, name, K_INT);
  if (!e) return nn_errcode();
  e->i = v;
  return NN_OK;
}

int nn_ckpt_put_float(nn_ckpt *c, const char *name, double v) {
  entry *e = add(c, name, K_FLOAT);
  if (!e) return nn_errcode();
  e->f = v;
  return NN_OK;
}

int nn_ckpt_put_str(nn_ckpt *c, const char *name, const char *s) {
  char *d = strdup(s);
  if (!d) return nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
  entry *e = add(c, name, K_STR);
  if (!e) {
    free(d);
    return nn_errcode();
  }
  e->s = d;
  return NN_OK;
}

nn_tensor *nn_ckpt_tensor(const nn_ckpt *c, const char *name) {
  const entry *e = find(c, name);
  return e && e->kind == K_TENSOR ? e->t : NULL;
}

int nn_ckpt_int(const nn_ckpt *c, const char *name, int64_t *v) {
  const entry *e = find(c, name);
  if (!e || e->kind != K_INT)
    return nn_seterr(NN_ERR_ARG, "checkpoint: no integer entry \"%s\"", name);
  *v = e->i;
  return NN_OK;
}

int nn_ckpt_float(const nn_ckpt *c, const char *name, double *v) {
  const entry *e = find(c, name);
  if (!e || e->kind != K_FLOAT)
    return nn_seterr(NN_ERR_ARG, "checkpoint: no float entry \"%s\"", name);
  *v = e->f;
  return NN_OK;
}

const char *nn_ckpt_str(const nn_ckpt *c, const char *name) {
  const entry *e = find(c, name);
  return e && e->kind == K_STR ? e->s : NULL;
}

int nn_ckpt_count(const nn_ckpt *c) { return c->n; }
const char *nn_ckpt_name(const nn_ckpt *c, int i) {
  return i >= 0 && i < c->n ? c->e[i].name : NULL;
}

/* ---- serialisation into a memory buffer ---- */

typedef struct {
  unsigned char *p;
  size_t n, cap;
  int failed;
} wbuf;

static void put(wbuf *b, const void *src, size_t n) {
  if (b->failed) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
      b->failed = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}
#define PUTV(b, T, v)                                                                              \
  do {                                                                                             \
    T v_ = (T)(v);                                                                                 \
    put(b, &v_, sizeof v_);                                                                        \
  } while (0)

int nn_ckpt_save(const nn_ckpt *c, const char *path) {
  wbuf b = {0};
  put(&b, MAGIC, 8);
  PUTV(&b, uint32_t, VERSION);
  PUTV(&b, uint32_t, c->n);
  for (int i = 0; i < c->n; i++) {
    const entry *e = &c->e[i];
    size_t len = strlen(e->name);
    PUTV(&b, uint16_t, len);
    put(&b, e->name, len);
    PUTV(&b, uint8_t, e->kind);
    switch (e->kind) {
    case K_TENSOR: {
      PUTV(&b, uint8_t, e->t->dtype);
      PUTV(&b, uint8_t, e->t->ndim);
      for (int d = 0; d < e->t->ndim; d++) PUTV(&b, int64_t, e->t->shape[d]);
      uint64_t nb = (uint64_t)nn_tensor_numel(e->t) * nn_dtype_size(e->t->dtype);
      PUTV(&b, uint64_t, nb);
      put(&b, nn_tensor_data(e->t), nb); /* host copies are contiguous */
    } break;
    case K_INT:
      PUTV(&b, int64_t, e->i);
      break;
    case K_FLOAT:
      PUTV(&b, double, e->f);
      break;
    case K_STR: {
      size_t sl = strlen(e->s);
      PUTV(&b, uint32_t, sl);
      put(&b, e->s, sl);
    } break;
    }
  }
  uint32_t crc = (uint32_t)crc32(0L, b.p, (uInt)b.n);
  PUTV(&b, uint32_t, crc);
  put(&b, TRAILER, 8);
  if (b.failed) {
    free(b.p);
    return nn_seterr(NN_ERR_NOMEM, "checkpoint save %s: out of memory", path);
  }
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 8);
  if (!tmp) {
    free(b.p);
    return nn_seterr(NN_ERR_NOMEM, "checkpoint save %s: out of memory", path);
  }
  snprintf(tmp, plen + 8, "%s.tmp", path);
  int rc = NN_OK;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    rc = nn_seterr(NN_ERR_IO, "checkpoint save: cannot create %s: %s", tmp, strerror(errno));
  } else {
    size_t off = 0;
    while (off < b.n) {
      ssize_t w = write(fd, b.p + off, b.n - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        rc = nn_seterr(NN_ERR_IO, "checkpoint save: writing %s: %s", tmp, strerror(errno));
        break;
      }
      off += (size_t)w;
    }
    if (!rc && fsync(fd) != 0)
      rc = nn_seterr(NN_ERR_IO, "checkpoint save: fsync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !rc)
      rc = nn_seterr(NN_ERR_IO, "checkpoint save: closing %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
      rc = nn_seterr(NN_ERR_IO, "checkpoint save: renaming %s to %s: %s", tmp, path,
                     strerror(errno));
    if (rc) unlink(tmp);
  }
  free(tmp);
  free(b.p);
  return rc;
}

/* ---- parsing ---- */

typedef struct {
  const unsigned char *p;
  size_t n, off;
  const char *path;
} rbuf;

static int need(rbuf *r, size_t k, const char *what) {
  if (r->n - r->off < k)
    return nn_seterr(NN_ERR_IO,
                     "checkpoint %s is truncated or corrupt: %s at byte %zu needs %zu "
                     "bytes, %zu left",
                     r->path, what, r->off, k, r->n - r->off);
  return NN_OK;
}

static int get(rbuf *r, void *dst, size_t k, const char *what) {
  int rc = need(r, k, what);
  if (rc) return rc;
  memcpy(dst, r->p + r->off, k);
  r->off += k;
  return NN_OK;
}

int nn_ckpt_load(nn_ckpt **out, const char *path) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return nn_seterr(NN_ERR_IO, "checkpoint %s: cannot open: %s", path, strerror(errno));
  unsigned char *data = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      unsigned char *p = realloc(data, cap);
      if (!p) {
        free(data);
        fclose(f);
        return nn_seterr(NN_ERR_NOMEM, "checkpoint %s: out of memory", path);
      }
      data = p;
    }
    size_t r = fread(data + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int ferr = ferror(f);
  fclose(f);
  if (ferr) {
    free(data);
    return nn_seterr(NN_ERR_IO, "checkpoint %s: read error", path);
  }
  int rc = NN_OK;
  nn_ckpt *c = NULL;
  if (n < 8 + 8 + 4 + 8 || memcmp(data, MAGIC, 8)) {
    rc = nn_seterr(NN_ERR_IO, "checkpoint %s: not a wb checkpoint (bad magic or only %zu bytes)",
                   path, n);
    goto done;
  }
  if (memcmp(data + n - 8, TRAILER, 8)) {
    rc = nn_seterr(NN_ERR_IO,
                   "checkpoint %s is truncated or corrupt: the end marker is missing "
                   "(file has %zu bytes)",
                   path, n);
    goto done;
  }
  uint32_t crc_file;
  memcpy(&crc_file, data + n - 12, 4);
  uint32_t crc = (uint32_t)crc32(0L, data, (uInt)(n - 12));
  if (crc != crc_file) {
    rc = nn_seterr(NN_ERR_IO,
                   "checkpoint %s is corrupt: CRC-32 mismatch (stored %08x, computed %08x)", path,
                   crc_file, crc);
    goto done;
  }
  rbuf r = {data, n - 12, 8, path};
  uint32_t version, count;
  if ((rc = get(&r, &version, 4, "version")) || (rc = get(&r, &count, 4, "entry count"))) goto done;
  if (version != VERSION) {
    rc = nn_seterr(NN_ERR_IO, "checkpoint %s: format version %u, this wb reads version %u", path,
                   version, VERSION);
    goto done;
  }
  if ((rc = nn_ckpt_new(&c))) goto done;
  for (uint32_t i = 0; i < count && !rc; i++) {
    uint16_t len;
    uint8_t kind;
    char name[65536];
    if ((rc = get(&r, &len, 2, "entry name length")) || (rc = get(&r, name, len, "entry name")) ||
        (rc = get(&r, &kind, 1, "entry kind")))
      break;
    name[len] = 0;
    switch (kind) {
    case K_TENSOR: {
      uint8_t dt, nd;
      int64_t sh[NN_MAX_DIMS];
      uint64_t nb;
      if ((rc = get(&r, &dt, 1, "dtype")) || (rc = get(&r, &nd, 1, "ndim"))) break;
      if (dt > NN_DTYPE_I64 || nd > NN_MAX_DIMS) {
        rc = nn_seterr(NN_ERR_IO, "checkpoint %s: entry %s has invalid dtype %u or rank %u", path,
                       name, dt, nd);
        break;
      }
      if ((rc = get(&r, sh, (size_t)nd * 8, "shape")) || (rc = get(&r, &nb, 8, "data size"))) break;
      int64_t numel = 1;
      for (int d = 0; d < nd; d++) {
        if (sh[d] < 0) numel = -1;
        if (numel >= 0) numel *= sh[d];
      }
      if (numel < 0 || nb != (uint64_t)numel * nn_dtype_size((nn_dtype)dt)) {
        rc = nn_seterr(NN_ERR_IO, "checkpoint %s: entry %s declares %llu bytes for its shape", path,
                       name, (unsigned long long)nb);
        break;
      }
      if ((rc = need(&r, nb, name))) break;
      nn_tensor *t = NULL;
      if ((rc = nn_tensor_from_data(&t, nd, sh, (nn_dtype)dt, r.p + r.off))) break;
      r.off += nb;
      entry *e = add(c, name, K_TENSOR);
      if (!e) {
        nn_tensor_free(t);
        rc = nn_errcode();
      } else {
        e->t = t;
      }
    } break;
    case K_INT: {
      int64_t v;
      if (!(rc = get(&r, &v, 8, name))) rc = nn_ckpt_put_int(c, name, v);
    } break;
    case K_FLOAT: {
      double v;
      if (!(rc = get(&r, &v, 8, name))) rc = nn_ckpt_put_float(c, name, v);
    } break;
    case K_STR: {
      uint32_t sl;
      if ((rc = get(&r, &sl, 4, name)) || (rc = need(&r, sl, name))) break;
      char *s = malloc((size_t)sl + 1);
      if (!s) {
        rc = nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
        break;
      }
      memcpy(s, r.p + r.off, sl);
      s[sl] = 0;
      r.off += sl;
      rc = nn_ckpt_put_str(c, name, s);
      free(s);
    } break;
    default:
      rc = nn_seterr(NN_ERR_IO, "checkpoint %s: entry %s has unknown kind %u", path, name, kind);
    }
  }
  if (!rc && r.off != r.n)
    rc = nn_seterr(NN_ERR_IO, "checkpoint %s is corrupt: %zu unexpected bytes after the entries",
                   path, r.n - r.off);
done:
  free(data);
  if (rc) {
    nn_ckpt_free(c);
    return rc;
  }
  *out = c;
  return NN_OK;
}

/* ---- model / optimizer / RNG ---- */

int nn_checkpoint_save(const char *path, nn_module *m, nn_optim *opt, const nn_rng *rng,
                       const nn_ckpt *extra) {
  nn_ckpt *c = NULL;
  nn_named *l = NULL;
  int n = 0;
  char name[512];
  int rc = nn_ckpt_new(&c);
  if (!rc) rc = nn_module_parameters(m, &l, &n);
  for (int i = 0; !rc && i < n; i++) {
    snprintf(name, sizeof name, "model.%s", l[i].name);
    rc = nn_ckpt_put_tensor(c, name, l[i].t);
  }
  nn_named_list_free(l, n);
  l = NULL;
  n = 0;
  if (!rc) rc = nn_module_buffers(m, &l, &n);
  for (int i = 0; !rc && i < n; i++) {
    snprintf(name, sizeof name, "buffer.%s", l[i].name);
    rc = nn_ckpt_put_tensor(c, name, l[i].t);
  }
  nn_named_list_free(l, n);
  l = NULL;
  n = 0;
  if (!rc && opt) {
    rc = nn_ckpt_put_str(c, "optim.kind", nn_optim_kind_name(nn_optim_kind_of(opt)));
    if (!rc) rc = nn_ckpt_put_int(c, "optim.step", nn_optim_steps(opt));
    if (!rc) rc = nn_optim_state(opt, &l, &n);
    for (int i = 0; !rc && i < n; i++) {
      snprintf(name, sizeof name, "optim.%s", l[i].name);
      rc = nn_ckpt_put_tensor(c, name, l[i].t);
    }
    nn_named_list_free(l, n);
    for (int g = 0; !rc && g < nn_optim_num_groups(opt); g++) {
      snprintf(name, sizeof name, "optim.group%d.lr", g);
      rc = nn_ckpt_put_float(c, name, nn_optim_get_lr(opt, g));
    }
  }
  if (!rc && rng) {
    rc = nn_ckpt_put_int(c, "rng.seed", (int64_t)rng->seed);
    if (!rc) rc = nn_ckpt_put_int(c, "rng.stream", (int64_t)rng->stream);
    if (!rc) rc = nn_ckpt_put_int(c, "rng.offset", (int64_t)rng->offset);
  }
  for (int i = 0; !rc && extra && i < extra->n; i++) {
    const entry *e = &extra->e[i];
    snprintf(name, sizeof name, "extra.%s", e->name);
    switch (e->kind) {
    case K_TENSOR:
      rc = nn_ckpt_put_tensor(c, name, e->t);
      break;
    case K_INT:
      rc = nn_ckpt_put_int(c, name, e->i);
      break;
    case K_FLOAT:
      rc = nn_ckpt_put_float(c, name, e->f);
      break;
    case K_STR:
      rc = nn_ckpt_put_str(c, name, e->s);
      break;
    }
  }
  if (!rc) rc = nn_ckpt_save(c, path);
  nn_ckpt_free(c);
  return rc;
}

/* Checks that the prefix entries of c match the list exactly (names, shapes, dtypes). */
static int match_list(const nn_ckpt *c, const char *path, const char *prefix, const char *what,
                      const nn_named *l, int n) {
  char name[512], b1[128], b2[128];
  size_t pl = strlen(prefix);
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "%s%s", prefix, l[i].name);
    nn_tensor *t = nn_ckpt_tensor(c, name);
    if (!t)
      return nn_seterr(NN_ERR_SHAPE, "checkpoint %s does not match the model: it has no %s \"%s\"",
                       path, what, l[i].name);
    if (!nn_tensor_same_shape(t, l[i].t) || t->dtype != l[i].t->dtype)
      return nn_seterr(NN_ERR_SHAPE,
                       "checkpoint %s does not match the model: %s \"%s\" is %s %s in "
                       "the file and %s %s in the model",
                       path, what, l[i].name, nn_dtype_name(t->dtype),
                       nn_shape_str(t, b1, sizeof b1), nn_dtype_name(l[i].t->dtype),
                       nn_shape_str(l[i].t, b2, sizeof b2));
  }
  for (int j = 0; j < c->n; j++) {
    if (strncmp(c->e[j].name, prefix, pl)) continue;
    int found = 0;
    for (int i = 0; i < n && !found; i++) found = !strcmp(c->e[j].name + pl, l[i].name);
    if (!found)
      return nn_seterr(NN_ERR_SHAPE,
                       "checkpoint %s does not match the model: the file has %s \"%s\" "
                       "that the model lacks",
                       path, what, c->e[j].name + pl);
  }
  return NN_OK;
}

int nn_checkpoint_load(const char *path, nn_module *m, nn_optim *opt, nn_rng *rng,
                       nn_ckpt **extra) {
  if (extra) *extra = NULL;
  nn_ckpt *c = NULL;
  nn_named *pl = NULL, *bl = NULL, *ol = NULL;
  int np = 0, nb = 0, no = 0;
  int64_t step = 0, seed = 0, stream = 0, offset = 0;
  char name[512];
  int rc = nn_ckpt_load(&c, path);
  if (rc) return rc;
  /* 1. check everything */
  rc = nn_module_parameters(m, &pl, &np);
  if (!rc) rc = nn_module_buffers(m, &bl, &nb);
  if (!rc) rc = match_list(c, path, "model.", "parameter", pl, np);
  if (!rc) rc = match_list(c, path, "buffer.", "buffer", bl, nb);
  if (!rc && opt) {
    const char *kind = nn_ckpt_str(c, "optim.kind");
    if (!kind)
      rc = nn_seterr(NN_ERR_SHAPE, "checkpoint %s has no optimizer state", path);
    else if (strcmp(kind, nn_optim_kind_name(nn_optim_kind_of(opt))))
      rc = nn_seterr(NN_ERR_SHAPE, "checkpoint %s holds %s state, the optimizer is %s", path, kind,
                     nn_optim_kind_name(nn_optim_kind_of(opt)));
    if (!rc) rc = nn_ckpt_int(c, "optim.step", &step);
    /* collect "optim.<i>.<buf>" tensors */
    for (int j = 0; !rc && j < c->n; j++) {
      const char *nm = c->e[j].name;
      if (strncmp(nm, "optim.", 6) || c->e[j].kind != K_TENSOR) continue;
      nn_named *nl = realloc(ol, (size_t)(no + 1) * sizeof *nl);
      if (!nl) {
        rc = nn_seterr(NN_ERR_NOMEM, "checkpoint: out of memory");
        break;
      }
      ol = nl;
      ol[no].name = strdup(nm + 6);
      ol[no].t = c->e[j].t;
      no++;
    }
    if (!rc) rc = nn_optim_check_state(opt, no, ol);
    if (rc && rc != NN_ERR_NOMEM) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s", nn_errmsg());
      rc = nn_seterr(NN_ERR_SHAPE, "checkpoint %s does not match the optimizer: %s", path, msg);
    }
  }
  if (!rc && rng) {
    rc = nn_ckpt_int(c, "rng.seed", &seed);
    if (!rc) rc = nn_ckpt_int(c, "rng.stream", &stream);
    if (!rc) rc = nn_ckpt_int(c, "rng.offset", &offset);
    if (rc) rc = nn_seterr(NN_ERR_SHAPE, "checkpoint %s has no RNG state", path);
  }
  /* 2. write */
  for (int i = 0; !rc && i < np; i++) {
    snprintf(name, sizeof name, "model.%s", pl[i].name);
    rc = nn_copy_(pl[i].t, nn_ckpt_tensor(c, name));
  }
  for (int i = 0; !rc && i < nb; i++) {
    snprintf(name, sizeof name, "buffer.%s", bl[i].name);
    rc = nn_copy_(bl[i].t, nn_ckpt_tensor(c, name));
  }
  if (!rc && opt) {
    rc = nn_optim_load_state(opt, no, ol, step);
    for (int g = 0; !rc && g < nn_optim_num_groups(opt); g++) {
      double lr;
      snprintf(name, sizeof name, "optim.group%d.lr", g);
      if (nn_ckpt_float(c, name, &lr) == NN_OK) nn_optim_group_opts(opt, g)->lr = lr;
    }
  }
  if (!rc && rng) {
    rng->seed = (uint64_t)seed;
    rng->stream = (uint64_t)stream;
    rng->offset = (uint64_t)offset;
  }
  nn_named_list_free(pl, np);
  nn_named_list_free(bl, nb);
  nn_named_list_free(ol, no);
  if (!rc && extra) {
    *extra = c;
    c = NULL;
  }
  nn_ckpt_free(c);
  return rc;
}
