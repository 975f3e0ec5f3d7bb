"""Flow-matching time grid, Euler ODE step, and the Flow-GRPO SDE step with its log-probability.

Convention (Bagel, Flow-GRPO): x_0 is data, x_1 is noise, x_t = (1−t)·x_0 + t·x_1, the velocity
target is x_1 − x_0, and sampling runs t from 1 to 0 (so every Δ = t_next − t is negative).
The equations are docs/design.md §2, verbatim; log-probs are float32 means over latent elements.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def time_grid(num_steps: int, shift: float = 3.0):
  """(N+1,) float32 times from 1 to 0: linspace, then t ← s·t / (1 + (s−1)·t)."""
  if num_steps <= 0:
    raise ValueError(f"num_steps must be positive, got {num_steps}")
  t = np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float64)
  return jnp.asarray(shift * t / (1.0 + (shift - 1.0) * t), jnp.float32)


def window_mask(num_steps: int, window=None) -> np.ndarray:
  """(N,) bool: which steps are stochastic (and trained). `window` = (start, stop) or None (all).

  Outside the window the sampler takes plain ODE steps (Flow-GRPO-Fast / MixGRPO).
  """
  mask = np.zeros((num_steps,), bool)
  if window is None:
    mask[:] = True
    return mask
  start, stop = window
  if not 0 <= start < stop <= num_steps:
    raise ValueError(f"sde window {tuple(window)} must satisfy 0 <= start < stop <= "
                     f"num_steps ({num_steps})")
  mask[start:stop] = True
  return mask


def _per_example(t, x):
  """Scalar or (B,) time → broadcastable against x (B, …), float32."""
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)) if t.ndim else t


def ode_step(x, v, t, t_next):
  """Euler step of dx = v dt: x + v·(t_next − t)."""
  x32, v32 = x.astype(jnp.float32), v.astype(jnp.float32)
  return x32 + v32 * (_per_example(t_next, x32) - _per_example(t, x32))


def sde_step(x, v, t, t_next, noise_level, *, key=None, prev_sample=None, t_max=None):
  """One Flow-GRPO SDE step with the same marginals as the ODE.

  x, v: (B, …) state and predicted velocity at time t; t, t_next: scalars or (B,);
  noise_level: the `a` of σ = a·sqrt(t / (1 − t)), scalar or (B,) (0 gives the Euler step
  exactly).
  Samples x' with `key` when `prev_sample` is None, else scores `prev_sample`.
  t_max: the grid's first interior time, used in place of t in the 1 − t denominator where
  t == 1 (otherwise σ is infinite there); None applies no guard.
  Returns (next_x, log_prob (B,), mean, std), all float32; std = σ·sqrt(−Δ) broadcastable
  against x; log_prob is the mean over non-batch elements, and 0 where std is 0 (a
  deterministic step has no density).
  """
  x32, v32 = x.astype(jnp.float32), v.astype(jnp.float32)
  t = _per_example(t, x32)
  dt = _per_example(t_next, x32) - t
  t_den = t if t_max is None else jnp.where(t == 1.0, jnp.asarray(t_max, jnp.float32), t)
  sigma = _per_example(noise_level, x32) * jnp.sqrt(t / (1.0 - t_den))
  # μ = x(1 + σ²Δ/2t) + v(1 + σ²(1−t)/2t)Δ, regrouped as the Euler step plus a σ² term so that
  # σ = 0 gives the Euler step bit for bit, also after XLA fuses it (FMA contraction).
  mean = ode_step(x32, v32, t, t_next) + sigma**2 * dt / (2.0 * t) * (x32 + (1.0 - t) * v32)
  std = sigma * jnp.sqrt(-dt)
  if prev_sample is None:
    if key is None:
      raise ValueError("sde_step needs a PRNG key to sample (or prev_sample to score)")
    next_x = mean + std * jax.random.normal(key, x32.shape, jnp.float32)
  else:
    next_x = prev_sample.astype(jnp.float32)
  stochastic = std > 0
  safe_std = jnp.where(stochastic, std, 1.0)
  elem = -((next_x - mean) ** 2) / (2.0 * safe_std**2) - jnp.log(safe_std) - _HALF_LOG_2PI
  elem = jnp.where(stochastic, elem, 0.0)
  log_prob = jnp.mean(elem, axis=tuple(range(1, x32.ndim)))
  return next_x, log_prob, mean, std
