"""Mixed-precision weight matmuls: bfloat16 operands, float32 accumulation, float32 gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_rollout, tiny_spec
from unigrpo_jax.model import UnifiedTransformer, init_params
from unigrpo_jax.model.matmul import dense_dot_general, matmul
from unigrpo_jax.sampling import make_rollout, score_trajectory

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


def test_mixed_precision_model_is_on_policy_and_close_to_float32():
  """Rollout and teacher-forced rescoring run the same bfloat16 products: log-probs agree as
  tightly as in float32; the logits stay within bfloat16 rounding of the float32 model's."""
  spec = tiny_spec(matmul_dtype="bfloat16")
  model = UnifiedTransformer(spec)
  params = init_params(spec, jax.random.key(0))
  params["image_out"]["proj"]["kernel"] = 0.1 * jax.random.normal(
      jax.random.key(1), params["image_out"]["proj"]["kernel"].shape)
  rollout = tiny_rollout()
  tokens = jax.random.randint(jax.random.key(2), (4, 5), 4, 48)
  mask = jnp.ones((4, 5), bool).at[0, :2].set(False)
  traj = make_rollout(model, rollout)(params, tokens, mask, jax.random.key(7))
  score = score_trajectory(params, traj, model=model, spec=rollout)
  tm, sm = np.asarray(traj.token_mask), np.asarray(traj.step_mask)
  assert tm.sum() > 0 and sm.sum() > 0
  np.testing.assert_allclose(np.asarray(score["token_logp"])[tm], np.asarray(traj.token_logp)[tm],
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[sm], np.asarray(traj.step_logp)[sm],
                             atol=1e-5, rtol=1e-5)
  full = UnifiedTransformer(tiny_spec())
  h = jax.random.normal(jax.random.key(3), (2, 4, spec.width))
  mixed_logits = model.apply({"params": params}, h, method=model.logits)
  full_logits = full.apply({"params": params}, h, method=full.logits)
  assert not np.array_equal(mixed_logits, full_logits)
  np.testing.assert_allclose(mixed_logits, full_logits, atol=2e-2, rtol=2e-2)
