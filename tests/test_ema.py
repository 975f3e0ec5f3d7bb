"""The policy's moving average: its formula, its schedule (start, every), and bad settings."""
import jax.numpy as jnp
import numpy as np
import pytest

from unigrpo_jax.ema import EMASpec, ema_update


def test_average_follows_then_moves_every_k_steps_from_start():
  spec = EMASpec(decay=0.75, every=2, start=3)
  params = {"w": jnp.arange(4.0), "b": {"c": jnp.ones((2,), jnp.bfloat16)}}
  ema = {"w": jnp.zeros(4), "b": {"c": jnp.zeros((2,), jnp.bfloat16)}}
  want = np.zeros(4)
  for step in range(1, 10):
    p = np.arange(4.0) * step
    params = {"w": jnp.asarray(p, jnp.float32), "b": {"c": jnp.full((2,), step, jnp.bfloat16)}}
    ema = ema_update(ema, params, step, spec)
    if step <= 3:
      want = p  # through `start`: the parameters themselves
    elif (step - 3) % 2 == 0:
      want = 0.75 * want + 0.25 * p
    np.testing.assert_allclose(np.asarray(ema["w"]), want, rtol=1e-6, err_msg=f"step {step}")
  assert ema["b"]["c"].dtype == jnp.bfloat16  # kept in the parameter's dtype
  # Steps 5, 7 and 9 moved it from step 3's parameters; 4, 6 and 8 did not.
  np.testing.assert_allclose(
      np.asarray(ema["w"]),
      np.arange(4.0) * (0.75**3 * 3 + 0.75**2 * 0.25 * 5 + 0.75 * 0.25 * 7 + 0.25 * 9), rtol=1e-6)


@pytest.mark.parametrize("fields,message", [
    (dict(decay=1.0), "ema.decay must be in \\(0, 1\\)"),
    (dict(decay=-0.1), "ema.decay must be in \\(0, 1\\)"),
    (dict(decay=0.9, every=0), "ema.every must be a positive integer"),
    (dict(decay=0.9, start=-1), "ema.start must be a non-negative integer")])
def test_bad_settings_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    EMASpec(**fields)


def test_off_by_default():
  assert not EMASpec().enabled and EMASpec(decay=0.99).enabled
