/* nn/module_to.c: moving a module's parameters and buffers to another device (model:to("cuda")).
 *
 * Each tensor object stays: its memory is replaced by a copy on the new device
 * (nn_tensor_rebind_), so an optimizer or a script holding the parameter objects keeps working
 * on the moved values. Gradients are dropped (the next backward creates them on the new device);
 * optimizer state created before the move stays where it was, so move a model before building its
 * optimizer. */
#include "autograd.h"
#include "module.h"

#include <stdio.h>
#include <stdlib.h>

/* Moves the n tensors of list onto dev; all copies are made before anything is rebound, so a
 * failure (out of device memory) leaves the module as it was. */
static int move_list(nn_named *list, int n, nn_device dev, const char *what) {
  nn_tensor **copies = calloc((size_t)(n ? n : 1), sizeof *copies);
  if (!copies) return nn_seterr(NN_ERR_NOMEM, "module to: out of memory");
  bool prev = nn_set_grad_enabled(false);
  int rc = NN_OK;
  for (int i = 0; i < n && !rc; i++) {
    nn_tensor *t = list[i].t;
    if (t->storage->device.type == dev.type && t->storage->device.index == dev.index) continue;
    rc = nn_to_device(&copies[i], t, dev);
    if (rc) {
      char msg[384];
      snprintf(msg, sizeof msg, "%s", nn_errmsg());
      nn_seterr(rc, "module to %s: %s %s: %s", nn_device_name(dev.type), what, list[i].name, msg);
    }
  }
  nn_set_grad_enabled(prev);
  for (int i = 0; i < n && !rc; i++) {
    if (!copies[i]) continue;
    rc = nn_tensor_rebind_(list[i].t, copies[i]);
    nn_tensor_zero_grad(list[i].t, true);
  }
  for (int i = 0; i < n; i++) nn_tensor_free(copies[i]);
  free(copies);
  return rc;
}

int nn_module_to(nn_module *m, nn_device dev) {
  nn_named *ps = NULL, *bs = NULL;
  int np = 0, nb = 0;
  int rc = nn_module_parameters(m, &ps, &np);
  if (!rc) rc = nn_module_buffers(m, &bs, &nb);
  /* flat buffers (nn_module_flatten) tie the parameters to one storage that this move would
   * split: refuse rather than leave the flat vectors stale */
  for (int i = 0; !rc && i < np; i++)
    for (int j = i + 1; j < np; j++)
      if (ps[i].t != ps[j].t && ps[i].t->storage == ps[j].t->storage &&
          ps[i].t->storage->device.type != dev.type) {
        rc = nn_seterr(NN_ERR_STATE,
                       "module to %s: parameters %s and %s share one flat buffer "
                       "(nn_module_flatten); move the module before flattening it",
                       nn_device_name(dev.type), ps[i].name, ps[j].name);
        break;
      }
  if (!rc) rc = move_list(ps, np, dev, "parameter");
  if (!rc) rc = move_list(bs, nb, dev, "buffer");
  nn_named_list_free(ps, np);
  nn_named_list_free(bs, nb);
  return rc;
}
