"""Flow-matching time grid, Euler ODE step, and the stochastic steps with their log-probabilities:
Flow-GRPO's SDE step and the coefficients-preserving step (Flow-CPS).

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


SDE_TYPES = ("sde", "cps")


def _gaussian_step(mean, std, key, prev_sample, caller: str):
  """x' ~ N(mean, std²) with `key`, or `prev_sample` scored; returns (x', log_prob (B,)): the
  mean over non-batch elements of the Gaussian log-density, 0 where std is 0."""
  if prev_sample is None:
    if key is None:
      raise ValueError(f"{caller} needs a PRNG key to sample (or prev_sample to score)")
    # A step no row takes stochastically (an ODE step) draws no noise: on a CPU the draw
    # costs more than the step's arithmetic, and std · 0 leaves the same next_x.
    noise = jax.lax.cond(jnp.any(std > 0),
                         lambda: jax.random.normal(key, mean.shape, jnp.float32),
                         lambda: jnp.zeros(mean.shape, jnp.float32))
    next_x = mean + std * noise
  else:
    next_x = prev_sample.astype(jnp.float32)
  stochastic = std > 0
  safe_std = jnp.where(stochastic, std, 1.0)
  elem = -((next_x - mean) ** 2) / (2.0 * safe_std**2) - jnp.log(safe_std) - _HALF_LOG_2PI
  elem = jnp.where(stochastic, elem, 0.0)
  return next_x, jnp.mean(elem, axis=tuple(range(1, mean.ndim)))


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
  next_x, log_prob = _gaussian_step(mean, std, key, prev_sample, "sde_step")
  return next_x, log_prob, mean, std


def cps_step(x, v, t, t_next, noise_level, *, key=None, prev_sample=None):
  """One coefficients-preserving SDE step (Flow-CPS, Wang & Yu 2025).

  With x̂_0 = x − t·v and x̂_1 = x + (1 − t)·v, the step keeps x' a combination of data and
  noise with the ODE's coefficients: x' = (1 − t')·x̂_0 + sqrt(t'² − s²)·x̂_1 + s·ε, where
  s = t'·sin(a·π/2) (t' = t_next, a = noise_level in [0, 1]).
  Arguments as `sde_step` (no t_max: nothing diverges at t = 1). Returns (next_x, log_prob
  (B,), mean, std) like `sde_step`, std = s broadcastable against x; log_prob is the Gaussian
  log-density's mean over non-batch elements (Flow-GRPO's implementation drops its constants
  and the 1/2s² factor; here it is the density itself), 0 where s is 0.
  """
  x32, v32 = x.astype(jnp.float32), v.astype(jnp.float32)
  t_next = _per_example(t_next, x32)
  s = t_next * jnp.sin(_per_example(noise_level, x32) * (math.pi / 2.0))
  noise_estimate = x32 + (1.0 - _per_example(t, x32)) * v32
  # (1 − t')·x̂_0 + t'·x̂_1 is the Euler step, so μ is written as it plus a correction that is
  # 0 exactly when s = 0 (sqrt(t'²) == t' in IEEE arithmetic): a = 0 gives Euler bit for bit.
  mean = (ode_step(x32, v32, t, t_next)
          + noise_estimate * (jnp.sqrt(jnp.maximum(t_next**2 - s**2, 0.0)) - t_next))
  next_x, log_prob = _gaussian_step(mean, s, key, prev_sample, "cps_step")
  return next_x, log_prob, mean, s


def step(sde_type: str, x, v, t, t_next, noise_level, *, key=None, prev_sample=None,
         t_max=None):
  """The stochastic step `sde_type` names (`SDE_TYPES`): "sde" (`sde_step`) or "cps"
  (`cps_step`, which ignores t_max). Same arguments and returns as `sde_step`."""
  if sde_type == "sde":
    return sde_step(x, v, t, t_next, noise_level, key=key, prev_sample=prev_sample,
                    t_max=t_max)
  if sde_type == "cps":
    return cps_step(x, v, t, t_next, noise_level, key=key, prev_sample=prev_sample)
  raise ValueError(f"sde type {sde_type!r} is not one of {SDE_TYPES}")
