"""Mixed-precision weight matmuls: bfloat16 operands, float32 accumulation, float32 gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import lively_params, tiny_spec
from unigrpo_jax.model import UnifiedTransformer
from unigrpo_jax.model.matmul import dense_dot_general, matmul

BF16 = jnp.dtype(jnp.bfloat16)


def _rounded(x):
  return np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("x_shape,w_shape,contract", [((2, 3, 48), (48, 4, 8), 1),
                                                       ((2, 3, 4, 8), (4, 8, 16), 2)])
def test_forward_and_gradients_are_bfloat16_products_summed_in_float32(x_shape, w_shape,
                                                                       contract):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
  out_shape = x_shape[:len(x_shape) - contract] + w_shape[contract:]
  g = jax.random.normal(kg, out_shape)
  y, vjp = jax.vjp(lambda a, b: matmul(a, b, BF16, contract), x, w)
  dx, dw = vjp(g)
  assert y.dtype == dx.dtype == dw.dtype == jnp.float32
  # The same sums in float64 over the bfloat16-rounded operands (and cotangent).
  xr, wr, gr = _rounded(x), _rounded(w), _rounded(g)
  lead = list(range(len(x_shape) - contract))
  np.testing.assert_allclose(y, np.tensordot(xr, wr, contract), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, np.tensordot(gr, wr, (list(range(len(lead), gr.ndim)),
                                                       list(range(contract, wr.ndim)))),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, np.tensordot(xr, gr, (lead, lead)),
                             rtol=1e-5, atol=1e-5)
  # Without a matmul dtype: the plain float32 product.
  np.testing.assert_allclose(matmul(x, w, None, contract), np.tensordot(
      np.asarray(x, np.float64), np.asarray(w, np.float64), contract), rtol=1e-4, atol=1e-4)


def test_dense_layers_take_the_mixed_dot_and_refuse_batch_axes():
  x = jax.random.normal(jax.random.key(1), (3, 16))
  dense = nn.Dense(8, dot_general=dense_dot_general(BF16))
  params = dense.init(jax.random.key(2), x)
  kernel = params["params"]["kernel"]
  np.testing.assert_allclose(dense.apply(params, x), np.asarray(matmul(x, kernel, BF16))
                             + np.asarray(params["params"]["bias"]), rtol=1e-6, atol=1e-6)
  assert dense_dot_general(None) is None
  with pytest.raises(ValueError, match="dimension numbers"):
    dense_dot_general(BF16)(jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5)),
                            (((2,), (1,)), ((0,), (0,))))


def test_mixed_precision_logits_stay_within_bfloat16_rounding_of_float32():
  """(That rollout and rescoring agree under mixed precision is test_rollout's on-policy test.)"""
  spec = tiny_spec(matmul_dtype="bfloat16")
  model, full = UnifiedTransformer(spec), UnifiedTransformer(tiny_spec())
  params = lively_params(spec)
  h = jax.random.normal(jax.random.key(3), (2, 4, spec.width))
  mixed_logits = model.apply({"params": params}, h, method=model.logits)
  full_logits = full.apply({"params": params}, h, method=full.logits)
  assert not np.array_equal(mixed_logits, full_logits)
  np.testing.assert_allclose(mixed_logits, full_logits, atol=2e-2, rtol=2e-2)
