"""Weight matmuls with a chosen operand dtype and float32 accumulation (`model.matmul_dtype`).

With `matmul_dtype="bfloat16"` every weight matmul (q/k/v, o, SwiGLU, LM head, patch embedding,
velocity head) reads its activation and its kernel in bfloat16 and accumulates in float32 —
mixed precision as on TPUs, and on CPUs with AMX/AVX-512-BF16 several times the float32 matmul
rate. Parameters, optimizer state, norms, softmax and log-probs stay float32.

The backward pass is written out (`jax.custom_vjp`) so that it too multiplies bfloat16 by
bfloat16 into float32: JAX's own transpose of a float32-accumulating dot would pair the float32
cotangent with the bfloat16 operand (a slow mixed-dtype dot) and round the weight gradient to
bfloat16. Here the cotangent is rounded to bfloat16 once and both gradients come out float32.
With no `matmul_dtype` (None) nothing changes: plain dots in the activation dtype.
"""
import functools
import math

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_2d(x, w, dtype):
  """(M, K) @ (K, N) with operands in `dtype`, float32 accumulation; result in x's dtype."""
  return _matmul_2d_fwd(x, w, dtype)[0]


def _matmul_2d_fwd(x, w, dtype):
  xc, wc = x.astype(dtype), w.astype(dtype)
  y = jax.lax.dot(xc, wc, preferred_element_type=jnp.float32).astype(x.dtype)
  # Empty arrays carry the input dtypes to the backward pass (residuals must be arrays).
  return y, (xc, wc, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _matmul_2d_bwd(dtype, res, g):
  xc, wc, x_like, w_like = res
  g = g.astype(dtype)
  dx = jax.lax.dot_general(g, wc, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  dw = jax.lax.dot_general(xc, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


_matmul_2d.defvjp(_matmul_2d_fwd, _matmul_2d_bwd)


def matmul(x, w, dtype, contract: int = 1):
  """Contracts x's last `contract` axes with w's first ones: (…, *C) × (*C, *N) → (…, *N).

  In `dtype` with float32 accumulation (see the module docstring); a plain dot for None.
  """
  lead, out = x.shape[:x.ndim - contract], w.shape[contract:]
  k = math.prod(w.shape[:contract])
  if dtype is None:
    return jnp.tensordot(x, w, contract)
  y = _matmul_2d(x.reshape(-1, k), w.reshape(k, -1), dtype)
  return y.reshape(lead + out)


def dense_dot_general(dtype):
  """A `dot_general` for `flax.linen.Dense`/`DenseGeneral` that runs `matmul`, or None (Flax's
  own) when `dtype` is None. Accepts only what those layers pass: x's trailing axes against the
  kernel's leading axes, no batch axes."""
  if dtype is None:
    return None

  def dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None):
    del precision, preferred_element_type
    (x_contract, w_contract), (x_batch, w_batch) = dimension_numbers
    n = len(x_contract)
    if (x_batch or w_batch or tuple(x_contract) != tuple(range(x.ndim - n, x.ndim))
        or tuple(w_contract) != tuple(range(n))):
      raise ValueError(f"mixed-precision dense: unsupported dimension numbers "
                       f"{dimension_numbers}")
    return matmul(x, w, dtype, n)

  return dot_general


def cast_kernels(params, dtype):
  """`params` with every matmul kernel (a leaf named "kernel") in `dtype`; unchanged for None.

  For loops that reuse the weights many times without gradients (decoding, denoising): the
  cast is paid once per rollout instead of once per matmul call.
  """
  if dtype is None:
    return params
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.astype(dtype) if getattr(path[-1], "key", None) == "kernel" else x,
      params)
