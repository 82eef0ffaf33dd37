/* nn/module.c: the generic module machinery: reference counts, named parameters, buffers and
 * children, flat parameter/gradient buffers, shape/FLOP statistics, the layer registry and
 * initialisation schemes. The built-in layer types are in nn/layers.c. */
#include "module.h"
#include "autograd.h"
#include "ops_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Flat buffers kept by a module after nn_module_flatten (stored as the buffer-less extra). */
typedef struct flat_state {
  nn_tensor *params, *grads;
} flat_state;

/* We keep flat buffers in a side table keyed by module pointer (modules are few). */
typedef struct flat_entry {
  nn_module *m;
  flat_state f;
  struct flat_entry *next;
} flat_entry;
static flat_entry *flat_list;

static flat_entry *flat_find(const nn_module *m) {
  for (flat_entry *e = flat_list; e; e = e->next)
    if (e->m == m) return e;
  return NULL;
}

int nn_module_new(nn_module **out, const nn_module_i *vt, void *state) {
  *out = NULL;
  nn_module *m = calloc(1, sizeof *m);
  if (!m) return nn_seterr(NN_ERR_NOMEM, "%s: out of memory", vt->type);
  m->refcount = 1;
  m->vt = vt;
  m->training = true;
  m->state = state;
  *out = m;
  return NN_OK;
}

nn_module *nn_module_retain(nn_module *m) {
  if (m) m->refcount++;
  return m;
}

void nn_module_free(nn_module *m) {
  if (!m || --m->refcount > 0) return;
  for (int i = 0; i < m->n_params; i++) {
    free(m->params[i].name);
    nn_tensor_free(m->params[i].t);
  }
  for (int i = 0; i < m->n_buffers; i++) {
    free(m->buffers[i].name);
    nn_tensor_free(m->buffers[i].t);
  }
  for (int i = 0; i < m->n_children; i++) {
    free(m->child_names[i]);
    nn_module_free(m->children[i]);
  }
  free(m->params);
  free(m->buffers);
  free(m->children);
  free(m->child_names);
  if (m->vt->free_state)
    m->vt->free_state(m);
  else
    free(m->state);
  for (flat_entry **pe = &flat_list; *pe; pe = &(*pe)->next)
    if ((*pe)->m == m) {
      flat_entry *e = *pe;
      *pe = e->next;
      nn_tensor_free(e->f.params);
      nn_tensor_free(e->f.grads);
      free(e);
      break;
    }
  free(m);
}

int nn_module_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  *out = NULL;
  return m->vt->forward(m, x, out);
}

void nn_module_train(nn_module *m, bool on) {
  m->training = on;
  for (int i = 0; i < m->n_children; i++) nn_module_train(m->children[i], on);
}

static int add_named(nn_named **list, int *n, const char *name, nn_tensor *t) {
  nn_named *p = realloc(*list, (size_t)(*n + 1) * sizeof *p);
  if (!p) return nn_seterr(NN_ERR_NOMEM, "module: out of memory");
  *list = p;
  p[*n].name = strdup(name);
  p[*n].t = t;
  if (!p[*n].name) return nn_seterr(NN_ERR_NOMEM, "module: out of memory");
  (*n)++;
  return NN_OK;
}

int nn_module_add_param(nn_module *m, const char *name, nn_tensor *t) {
  int rc = nn_tensor_set_requires_grad(t, true);
  if (!rc) rc = add_named(&m->params, &m->n_params, name, t);
  return rc;
}

int nn_module_add_buffer(nn_module *m, const char *name, nn_tensor *t) {
  return add_named(&m->buffers, &m->n_buffers, name, t);
}

int nn_module_add_child(nn_module *m, const char *name, nn_module *child) {
  nn_module **c = realloc(m->children, (size_t)(m->n_children + 1) * sizeof *c);
  if (!c) return nn_seterr(NN_ERR_NOMEM, "module: out of memory");
  m->children = c;
  char **nm = realloc(m->child_names, (size_t)(m->n_children + 1) * sizeof *nm);
  if (!nm) return nn_seterr(NN_ERR_NOMEM, "module: out of memory");
  m->child_names = nm;
  nm[m->n_children] = strdup(name);
  c[m->n_children] = nn_module_retain(child);
  m->n_children++;
  return NN_OK;
}

static int collect(nn_module *m, const char *prefix, bool params, nn_named **out, int *n) {
  char name[256];
  int cnt = params ? m->n_params : m->n_buffers;
  nn_named *src = params ? m->params : m->buffers;
  for (int i = 0; i < cnt; i++) {
    snprintf(name, sizeof name, "%s%s", prefix, src[i].name);
    int rc = add_named(out, n, name, src[i].t);
    if (rc) return rc;
  }
  for (int i = 0; i < m->n_children; i++) {
    snprintf(name, sizeof name, "%s%s.", prefix, m->child_names[i]);
    int rc = collect(m->children[i], name, params, out, n);
    if (rc) return rc;
  }
  return NN_OK;
}

void nn_named_list_free(nn_named *list, int n) {
  for (int i = 0; i < n; i++) free(list[i].name);
  free(list);
}

int nn_module_parameters(nn_module *m, nn_named **out, int *n) {
  *out = NULL;
  *n = 0;
  int rc = collect(m, "", true, out, n);
  if (rc) {
    nn_named_list_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return rc;
}

int nn_module_buffers(nn_module *m, nn_named **out, int *n) {
  *out = NULL;
  *n = 0;
  int rc = collect(m, "", false, out, n);
  if (rc) {
    nn_named_list_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return rc;
}

nn_tensor *nn_module_param(nn_module *m, const char *name) {
  nn_named *l;
  int n;
  if (nn_module_parameters(m, &l, &n)) return NULL;
  nn_tensor *t = NULL;
  for (int i = 0; i < n; i++)
    if (!strcmp(l[i].name, name)) t = l[i].t;
  nn_named_list_free(l, n);
  return t;
}

int64_t nn_module_num_params(nn_module *m) {
  nn_named *l;
  int n;
  if (nn_module_parameters(m, &l, &n)) return -1;
  int64_t s = 0;
  for (int i = 0; i < n; i++) s += nn_tensor_numel(l[i].t);
  nn_named_list_free(l, n);
  return s;
}

void nn_module_zero_grad(nn_module *m, bool set_to_none) {
  nn_named *l;
  int n;
  if (nn_module_parameters(m, &l, &n)) return;
  bool flat = flat_find(m) != NULL;
  for (int i = 0; i < n; i++) nn_tensor_zero_grad(l[i].t, set_to_none && !flat);
  nn_named_list_free(l, n);
}

int nn_module_flatten(nn_module *m, nn_tensor **params, nn_tensor **grads) {
  if (params) *params = NULL;
  if (grads) *grads = NULL;
  flat_entry *e = flat_find(m);
  if (!e) {
    nn_named *l;
    int n;
    int rc = nn_module_parameters(m, &l, &n);
    if (rc) return rc;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
      if (l[i].t->dtype != NN_DTYPE_F32) {
        nn_named_list_free(l, n);
        return nn_seterr(NN_ERR_DTYPE, "flatten: parameter %s is %s; flat buffers hold float32",
                         l[i].name, nn_dtype_name(l[i].t->dtype));
      }
      total += nn_tensor_numel(l[i].t);
    }
    e = calloc(1, sizeof *e);
    if (!e) {
      nn_named_list_free(l, n);
      return nn_seterr(NN_ERR_NOMEM, "flatten: out of memory");
    }
    nn_device dev = n ? l[0].t->storage->device : nn_cpu;
    rc = nn_tensor_empty(&e->f.params, 1, &total, NN_DTYPE_F32, dev);
    if (!rc) rc = nn_tensor_zeros(&e->f.grads, 1, &total, NN_DTYPE_F32, dev);
    int64_t off = 0;
    for (int i = 0; !rc && i < n; i++) {
      nn_tensor *t = l[i].t, *dst = NULL, *dv = NULL;
      int64_t k = nn_tensor_numel(t);
      rc = nn_narrow(&dst, e->f.params, 0, off, k);
      if (!rc) rc = nn_view(&dv, dst, t->ndim, t->shape);
      if (!rc) rc = nn_copy_(dv, t);
      nn_tensor_free(dst);
      nn_tensor_free(dv);
      dst = dv = NULL;
      if (rc) break;
      /* the parameter tensor object now views the flat buffer */
      rc = nn_narrow(&dst, e->f.params, 0, off, k);
      if (!rc) rc = nn_view(&dv, dst, t->ndim, t->shape);
      if (!rc) rc = nn_tensor_rebind_(t, dv);
      nn_tensor_free(dst);
      nn_tensor_free(dv);
      if (rc) break;
      /* the gradient is a view of the flat gradient buffer */
      nn_tensor *g = NULL, *gv = NULL;
      rc = nn_narrow(&g, e->f.grads, 0, off, k);
      if (!rc) rc = nn_view(&gv, g, t->ndim, t->shape);
      nn_tensor_free(g);
      if (!rc && t->grad) rc = nn_copy_(gv, t->grad);
      if (!rc) {
        nn_tensor_free(t->grad);
        t->grad = gv;
      } else {
        nn_tensor_free(gv);
      }
      off += k;
    }
    nn_named_list_free(l, n);
    if (rc) {
      nn_tensor_free(e->f.params);
      nn_tensor_free(e->f.grads);
      free(e);
      return rc;
    }
    e->m = m;
    e->next = flat_list;
    flat_list = e;
  }
  if (params) *params = nn_tensor_retain(e->f.params);
  if (grads) *grads = nn_tensor_retain(e->f.grads);
  return NN_OK;
}

/* ---- statistics ----
 * A stats walk keeps a thread-local context; container layers compute their shape by calling
 * nn_module_child_shape for each child, which records a row per leaf while a walk is active. */

typedef struct stat_ctx {
  nn_layer_stat **rows;
  int *n;
  char prefix[256];
} stat_ctx;
static _Thread_local stat_ctx *stat_active;

static int leaf_shape(nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  if (m->vt->shape) return m->vt->shape(m, in, out);
  *out = *in;
  out->flops = 0;
  return NN_OK;
}

static int add_row(stat_ctx *c, nn_module *m, const char *name, const nn_shape_info *out) {
  nn_layer_stat *r = realloc(*c->rows, (size_t)(*c->n + 1) * sizeof *r);
  if (!r) return nn_seterr(NN_ERR_NOMEM, "stats: out of memory");
  *c->rows = r;
  nn_layer_stat *s = &r[(*c->n)++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  snprintf(s->type, sizeof s->type, "%s", m->vt->type);
  s->out = *out;
  for (int i = 0; i < m->n_params; i++) s->params += nn_tensor_numel(m->params[i].t);
  return NN_OK;
}

int nn_module_child_shape(nn_module *m, int i, const nn_shape_info *in, nn_shape_info *out) {
  nn_module *c = m->children[i];
  stat_ctx *ctx = stat_active;
  if (!ctx) return leaf_shape(c, in, out);
  char name[256], saved[256];
  snprintf(name, sizeof name, "%s%s", ctx->prefix, m->child_names[i]);
  if (c->n_children == 0) {
    int rc = leaf_shape(c, in, out);
    return rc ? rc : add_row(ctx, c, name, out);
  }
  snprintf(saved, sizeof saved, "%s", ctx->prefix);
  size_t k = strlen(name);
  if (k + 2 > sizeof ctx->prefix) k = sizeof ctx->prefix - 2;
  memcpy(ctx->prefix, name, k);
  ctx->prefix[k] = '.';
  ctx->prefix[k + 1] = 0;
  int rc = leaf_shape(c, in, out);
  snprintf(ctx->prefix, sizeof ctx->prefix, "%s", saved);
  return rc;
}

int nn_module_stats(nn_module *m, int ndim, const int64_t *in_shape, nn_layer_stat **rows,
                    int *n_rows, nn_layer_stat *total) {
  *rows = NULL;
  *n_rows = 0;
  memset(total, 0, sizeof *total);
  if (ndim < 0 || ndim > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_SHAPE, "stats: bad input rank %d", ndim);
  nn_shape_info in = {0}, out = {0};
  in.ndim = ndim;
  memcpy(in.shape, in_shape, (size_t)ndim * sizeof *in_shape);
  stat_ctx ctx = {rows, n_rows, ""};
  stat_active = &ctx;
  int rc = leaf_shape(m, &in, &out);
  if (!rc && m->n_children == 0) rc = add_row(&ctx, m, m->vt->type, &out);
  stat_active = NULL;
  if (rc) {
    free(*rows);
    *rows = NULL;
    *n_rows = 0;
    return rc;
  }
  snprintf(total->name, sizeof total->name, "total");
  snprintf(total->type, sizeof total->type, "%s", m->vt->type);
  total->out = out;
  total->params = nn_module_num_params(m);
  return NN_OK;
}

/* ---- registry ---- */

typedef struct reg_entry {
  const char *name;
  nn_layer_ctor ctor;
  const char *doc;
} reg_entry;

#define MAX_LAYER_TYPES 128
static reg_entry registry[MAX_LAYER_TYPES];
static const char *reg_names[MAX_LAYER_TYPES + 1];
static int n_registered;

void nn_layers_register_builtin(void); /* layers.c */

static void ensure_builtin(void) {
  static int done;
  if (!done) {
    done = 1;
    nn_layers_register_builtin();
  }
}

int nn_layer_register(const char *name, nn_layer_ctor ctor, const char *doc) {
  ensure_builtin();
  for (int i = 0; i < n_registered; i++)
    if (!strcmp(registry[i].name, name))
      return nn_seterr(NN_ERR_ARG, "layer_register: a layer named %s is already registered", name);
  if (n_registered == MAX_LAYER_TYPES)
    return nn_seterr(NN_ERR_ARG, "layer_register: registry full (%d types)", MAX_LAYER_TYPES);
  registry[n_registered] = (reg_entry){name, ctor, doc};
  reg_names[n_registered] = name;
  n_registered++;
  return NN_OK;
}

const char *const *nn_layer_names(int *n) {
  ensure_builtin();
  *n = n_registered;
  return reg_names;
}

int nn_layer_new(nn_module **out, const char *name, int n_opts, const nn_opt *opts) {
  *out = NULL;
  ensure_builtin();
  for (int i = 0; i < n_registered; i++)
    if (!strcmp(registry[i].name, name)) return registry[i].ctor(out, n_opts, opts);
  char list[1024];
  size_t k = 0;
  list[0] = 0;
  for (int i = 0; i < n_registered && k < sizeof list; i++)
    k += (size_t)snprintf(list + k, sizeof list - k, i ? ", %s" : "%s", registry[i].name);
  return nn_seterr(NN_ERR_ARG, "unknown layer type \"%s\"; known types: %s", name, list);
}

double nn_opt_num(int n, const nn_opt *opts, const char *key, double def) {
  for (int i = 0; i < n; i++)
    if (!strcmp(opts[i].key, key) && !opts[i].str) return opts[i].num;
  return def;
}

const char *nn_opt_str(int n, const nn_opt *opts, const char *key, const char *def) {
  for (int i = 0; i < n; i++)
    if (!strcmp(opts[i].key, key) && opts[i].str) return opts[i].str;
  return def;
}

int nn_opts_check(const char *layer, int n, const nn_opt *opts, const char *const *known) {
  for (int i = 0; i < n; i++) {
    int ok = 0;
    for (int j = 0; known[j]; j++)
      if (!strcmp(known[j], opts[i].key)) ok = 1;
    if (!ok) {
      char list[512];
      size_t k = 0;
      list[0] = 0;
      for (int j = 0; known[j] && k < sizeof list; j++)
        k += (size_t)snprintf(list + k, sizeof list - k, j ? ", %s" : "%s", known[j]);
      return nn_seterr(NN_ERR_ARG, "%s: unknown option \"%s\"; known options: %s", layer,
                       opts[i].key, list);
    }
  }
  return NN_OK;
}

/* ---- initialisation ---- */

int nn_init_(nn_tensor *t, nn_init kind, double param, nn_rng *rng) {
  int64_t rf = 1;
  for (int d = 2; d < t->ndim; d++) rf *= t->shape[d];
  int64_t fan_in = t->ndim >= 2 ? t->shape[1] * rf : (t->ndim == 1 ? t->shape[0] : 1);
  int64_t fan_out = t->ndim >= 2 ? t->shape[0] * rf : (t->ndim == 1 ? t->shape[0] : 1);
  if (fan_in <= 0) fan_in = 1;
  if (fan_out <= 0) fan_out = 1;
  double gain = param > 0 ? param : sqrt(2.0);
  switch (kind) {
  case NN_INIT_KAIMING_NORMAL:
    return nn_normal_(t, 0.0, gain / sqrt((double)fan_in), rng);
  case NN_INIT_KAIMING_UNIFORM: {
    double b = gain * sqrt(3.0 / (double)fan_in);
    return nn_uniform_(t, -b, b, rng);
  }
  case NN_INIT_XAVIER_NORMAL:
    return nn_normal_(t, 0.0, sqrt(2.0 / (double)(fan_in + fan_out)), rng);
  case NN_INIT_XAVIER_UNIFORM: {
    double b = sqrt(6.0 / (double)(fan_in + fan_out));
    return nn_uniform_(t, -b, b, rng);
  }
  case NN_INIT_NORMAL:
    return nn_normal_(t, 0.0, param, rng);
  case NN_INIT_UNIFORM:
    return nn_uniform_(t, -param, param, rng);
  case NN_INIT_ZEROS:
    return nn_fill_(t, 0.0);
  case NN_INIT_PYTORCH_DEFAULT: {
    double b = 1.0 / sqrt((double)fan_in);
    return nn_uniform_(t, -b, b, rng);
  }
  }
  return nn_seterr(NN_ERR_ARG, "init: unknown scheme %d", (int)kind);
}

int nn_module_chain_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  nn_shape_info cur = *in;
  int64_t flops = 0;
  for (int i = 0; i < m->n_children; i++) {
    nn_shape_info next;
    int rc = nn_module_child_shape((nn_module *)m, i, &cur, &next);
    if (rc) return rc;
    flops += next.flops;
    cur = next;
  }
  *out = cur;
  out->flops = flops;
  return NN_OK;
}

int nn_module_new_chain(nn_module **out, const nn_module_i *vt, int n, nn_module *const *children) {
  *out = NULL;
  nn_module *m = NULL;
  int rc = nn_module_new(&m, vt, NULL);
  for (int i = 0; !rc && i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "%d", i);
    rc = nn_module_add_child(m, name, children[i]);
  }
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}
