/* nn/backend.h: the backend interface (ggml-backend-impl.h's idea).
 *
 * A backend owns memory on its device and implements op kernels. Front-ends (nn/ops_*.c) check
 * shapes and dtypes, allocate outputs, record autograd, and call nn_dispatch(), which picks the
 * backend of the inputs' device. A kernel left NULL in a backend's table is "not implemented":
 * nn_dispatch returns NN_ERR_DEVICE naming the op and the device, never a silent CPU fallback.
 *
 * Kernel contract: outputs first, then inputs, then parameters. Outputs are allocated by the
 * caller with their final shape and dtype (contiguous unless the op says otherwise). Inputs may
 * be arbitrary strided views unless the op's comment in its .def line says "contiguous". Kernels
 * may assume shapes and dtypes were checked by the front-end.
 */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include "tensor.h"

enum nn_op_id {
#define NN_OP(id, name) NN_OP_##id,
#include "ops.def"
#undef NN_OP
  NN_OP_COUNT
};

/* Parameters of one kernel call: integers and floats, meaning given per op in its .def line. */
typedef struct nn_op_params {
  int64_t i[16];
  double f[8];
} nn_op_params;

typedef int (*nn_kernel_fn)(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p);

typedef struct nn_backend_i {
  const char *name;
  /* Raw device memory; NULL on failure. The core's caching allocator sits above these. */
  void *(*alloc)(size_t nbytes);
  void (*free)(void *ptr);
  /* Optional: copy between this device and host memory (NULL on the CPU backend). */
  int (*to_host)(void *dst, const void *src, size_t nbytes);
  int (*from_host)(void *dst, const void *src, size_t nbytes);
  nn_kernel_fn kernels[NN_OP_COUNT];
} nn_backend_i;

/* Backend registration: the CPU backend is built in; CUDA registers itself when compiled in. */
void nn_backend_register(nn_device_type d, const nn_backend_i *be);
const nn_backend_i *nn_backend_get(nn_device_type d);
const char *nn_op_name(int op);
/* An on/off environment switch: unset or empty gives dflt; "0", "off", "false" or "no" (any case)
 * false; anything else true. */
bool nn_env_flag(const char *name, bool dflt);

/* Runs kernel op on the device of out[0]. Checks that all tensors share that device. */
int nn_dispatch(int op, int n_out, nn_tensor *const *out, int n_in, nn_tensor *const *in,
                const nn_op_params *p);

/* Binary elementwise codes for NN_OP_BINARY / NN_OP_SCALAR. */
enum {
  NN_BIN_ADD,
  NN_BIN_SUB,
  NN_BIN_MUL,
  NN_BIN_DIV,
  NN_BIN_POW,
  NN_BIN_MAX,
  NN_BIN_MIN,
  NN_BIN_COUNT
};

#endif
