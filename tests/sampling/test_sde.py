"""The flow math of docs/design.md §2: time grid, Euler step, SDE step, log-probs, t = 1 guard."""
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unigrpo_jax.sampling import sde
from xla_flags import without_compile_fast


def reference_sde(x, v, t, t_next, a, t_max):
  """docs/design.md §2 in float64 numpy, written independently of the code under test."""
  dt = t_next - t
  denom = 1.0 - (t_max if t == 1.0 else t)
  sigma = a * math.sqrt(t / denom)
  mean = x * (1 + sigma**2 / (2 * t) * dt) + v * (1 + sigma**2 * (1 - t) / (2 * t)) * dt
  return mean, sigma * math.sqrt(-dt)


def test_time_grid_is_shifted_linspace():
  grid = np.asarray(sde.time_grid(10, 3.0))
  t = np.linspace(1, 0, 11)
  np.testing.assert_allclose(grid, 3 * t / (1 + 2 * t), rtol=1e-6)
  assert grid[0] == 1.0 and grid[-1] == 0.0 and np.all(np.diff(grid) < 0)
  np.testing.assert_allclose(np.asarray(sde.time_grid(4, 1.0)), [1, .75, .5, .25, 0])


def test_zero_noise_is_exactly_the_euler_step():
  kx, kv = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (4, 8, 8, 3))
  v = jax.random.normal(kv, (4, 8, 8, 3))
  grid = sde.time_grid(10)
  for j in range(10):
    nxt, logp, mean, std = sde.sde_step(x, v, grid[j], grid[j + 1], 0.0,
                                        key=jax.random.key(j), t_max=grid[1])
    euler = sde.ode_step(x, v, grid[j], grid[j + 1])
    np.testing.assert_array_equal(np.asarray(nxt), np.asarray(euler))
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(euler))
    assert float(jnp.max(std)) == 0.0
    np.testing.assert_array_equal(np.asarray(logp), 0.0)


_JITTED_EULER = """
import jax, numpy as np
from unigrpo_jax.sampling import sde
kx, kv = jax.random.split(jax.random.key(0))
x, v = jax.random.normal(kx, (4, 8, 8, 3)), jax.random.normal(kv, (4, 8, 8, 3))
grid = sde.time_grid(10)
step = jax.jit(lambda x, v, t0, t1: sde.sde_step(x, v, t0, t1, 0.0, key=jax.random.key(0),
                                                 t_max=grid[1])[0])
for j in range(10):
  np.testing.assert_array_equal(np.asarray(step(x, v, grid[j], grid[j + 1])),
                                np.asarray(jax.jit(sde.ode_step)(x, v, grid[j], grid[j + 1])))
"""


def test_zero_noise_is_exactly_the_euler_step_through_jit():
  """Where XLA is free to fuse (and contract into FMAs) differently: compiled with XLA's
  default flags, as a user runs it, not the test session's faster-compiling ones."""
  flags = without_compile_fast(os.environ.get("XLA_FLAGS", ""))
  out = subprocess.run([sys.executable, "-c", _JITTED_EULER], capture_output=True, text=True,
                       env=dict(os.environ, XLA_FLAGS=flags), timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]


def test_a_noisy_row_draws_the_keys_normal_and_a_noiseless_step_is_euler_for_every_row():
  """Per-row noise levels, jitted: a noisy row's next x is its mean plus std times `key`'s
  standard normal, a noiseless row's its Euler step; with no noisy row (the branch that draws
  nothing) every row's is the Euler step, with no density."""
  kx, kv = jax.random.split(jax.random.key(0))
  x, v = jax.random.normal(kx, (3, 4, 4, 3)), jax.random.normal(kv, (3, 4, 4, 3))
  grid, key = sde.time_grid(10), jax.random.key(5)
  step = jax.jit(lambda level: sde.sde_step(x, v, grid[2], grid[3], level, key=key,
                                            t_max=grid[1]))
  nxt, _, mean, std = step(jnp.array([0.7, 0.0, 0.7]))
  z = jax.random.normal(key, x.shape, jnp.float32)
  np.testing.assert_allclose(np.asarray(nxt), np.asarray(mean + std * z), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(nxt[1]),
                                np.asarray(sde.ode_step(x, v, grid[2], grid[3])[1]))
  nxt, logp, _, _ = step(jnp.zeros(3))
  np.testing.assert_array_equal(np.asarray(nxt), np.asarray(sde.ode_step(x, v, grid[2], grid[3])))
  np.testing.assert_array_equal(np.asarray(logp), 0.0)


@pytest.mark.parametrize("j", [0, 3, 8])
def test_sampled_step_has_stated_mean_and_std(j):
  grid = np.asarray(sde.time_grid(10, 3.0), np.float64)
  a = 0.7
  x = np.array([0.5, -1.0, 2.0], np.float32)
  v = np.array([1.0, 0.3, -0.5], np.float32)
  draws = 40_000
  xb = jnp.broadcast_to(x, (draws, 3))
  vb = jnp.broadcast_to(v, (draws, 3))
  nxt, _, mean, std = sde.sde_step(xb, vb, grid[j], grid[j + 1], a, key=jax.random.key(j),
                                   t_max=grid[1])
  want_mean, want_std = reference_sde(x.astype(np.float64), v.astype(np.float64), grid[j],
                                      grid[j + 1], a, grid[1])
  np.testing.assert_allclose(np.asarray(mean[0]), want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(np.asarray(std).max()), want_std, rtol=1e-5)
  sample = np.asarray(nxt, np.float64)
  # 40k draws: the standard error of the mean is std/200, of the std about std/280.
  np.testing.assert_allclose(sample.mean(0), want_mean, atol=5 * want_std / 200)
  np.testing.assert_allclose(sample.std(0), want_std, rtol=0.02)


def test_log_prob_is_mean_over_elements_of_the_gaussian_density():
  grid = np.asarray(sde.time_grid(6, 3.0), np.float64)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  v = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  prev = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  j, a = 2, 0.9
  _, logp, _, _ = sde.sde_step(x, v, grid[j], grid[j + 1], a, prev_sample=prev, t_max=grid[1])
  mean, std = reference_sde(x.astype(np.float64), v.astype(np.float64), grid[j], grid[j + 1],
                            a, grid[1])
  dens = -(prev - mean) ** 2 / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
  np.testing.assert_allclose(np.asarray(logp), dens.reshape(2, -1).mean(1), rtol=1e-5)
  assert logp.dtype == jnp.float32


def test_t_equal_one_guard():
  grid = sde.time_grid(10, 3.0)
  x = jnp.ones((1, 3))
  v = jnp.zeros((1, 3))
  _, _, _, std = sde.sde_step(x, v, grid[0], grid[1], 0.7, key=jax.random.key(0),
                              t_max=grid[1])
  t1 = float(grid[1])
  want = 0.7 * math.sqrt(1.0 / (1.0 - t1)) * math.sqrt(1.0 - t1)
  np.testing.assert_allclose(float(np.max(std)), want, rtol=1e-5)
  # Interior times are untouched by the guard.
  _, _, _, std2 = sde.sde_step(x, v, grid[2], grid[3], 0.7, key=jax.random.key(0),
                               t_max=grid[1])
  t2, t3 = float(grid[2]), float(grid[3])
  np.testing.assert_allclose(float(np.max(std2)),
                             0.7 * math.sqrt(t2 / (1 - t2)) * math.sqrt(t2 - t3), rtol=1e-5)
  # Without the guard, t = 1 divides by zero.
  _, _, _, std3 = sde.sde_step(x, v, grid[0], grid[1], 0.7, key=jax.random.key(0))
  assert not np.isfinite(float(np.max(std3)))


def test_window_mask():
  np.testing.assert_array_equal(sde.window_mask(5), [True] * 5)
  np.testing.assert_array_equal(sde.window_mask(5, (1, 3)), [False, True, True, False, False])
  with pytest.raises(ValueError, match="sde window"):
    sde.window_mask(5, (3, 7))


def test_sampling_needs_a_key():
  with pytest.raises(ValueError, match="PRNG key"):
    sde.sde_step(jnp.ones((1, 2)), jnp.ones((1, 2)), 0.5, 0.4, 0.7)


def reference_cps(x, v, t, t_next, a):
  """Flow-CPS's step in float64 numpy, as its paper writes it: x̂_0 = x − t·v, x̂_1 = x +
  (1 − t)·v, s = t'·sin(aπ/2), μ = (1 − t')·x̂_0 + sqrt(t'² − s²)·x̂_1."""
  s = t_next * math.sin(a * math.pi / 2)
  return (x - t * v) * (1 - t_next) + (x + (1 - t) * v) * math.sqrt(t_next**2 - s**2), s


@pytest.mark.parametrize("j", [0, 4, 8])
def test_cps_step_has_stated_mean_std_and_gaussian_log_prob(j):
  grid = np.asarray(sde.time_grid(10, 3.0), np.float64)
  a = 0.8
  rng = np.random.default_rng(j)
  x, v, prev = (rng.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(3))
  _, logp, mean, std = sde.cps_step(x, v, grid[j], grid[j + 1], a, prev_sample=prev)
  want_mean, want_std = reference_cps(x.astype(np.float64), v.astype(np.float64), grid[j],
                                      grid[j + 1], a)
  np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(np.asarray(std).max()), want_std, rtol=1e-6)
  dens = (-(prev - want_mean) ** 2 / (2 * want_std**2) - math.log(want_std)
          - 0.5 * math.log(2 * math.pi))
  np.testing.assert_allclose(np.asarray(logp), dens.reshape(3, -1).mean(1), rtol=1e-5)
  # Sampling draws around the same mean with the same spread; the dispatcher is the same step.
  xb, vb = jnp.broadcast_to(x[0], (20_000,) + x.shape[1:]), jnp.broadcast_to(v[0], (20_000,)
                                                                              + x.shape[1:])
  nxt, _, _, _ = sde.step("cps", xb, vb, grid[j], grid[j + 1], a, key=jax.random.key(j))
  sample = np.asarray(nxt, np.float64)
  np.testing.assert_allclose(sample.mean(0), want_mean[0], atol=5 * want_std / 141)
  np.testing.assert_allclose(sample.std(0), want_std, rtol=0.05)


def test_cps_zero_noise_is_exactly_euler_and_last_step_is_deterministic():
  grid = sde.time_grid(10)
  kx, kv = jax.random.split(jax.random.key(1))
  x, v = jax.random.normal(kx, (2, 4, 4, 3)), jax.random.normal(kv, (2, 4, 4, 3))
  for j in range(10):
    nxt, logp, _, _ = sde.cps_step(x, v, grid[j], grid[j + 1], 0.0, key=jax.random.key(j))
    np.testing.assert_array_equal(np.asarray(nxt),
                                  np.asarray(sde.ode_step(x, v, grid[j], grid[j + 1])))
    np.testing.assert_array_equal(np.asarray(logp), 0.0)
  # t' = 0: s = 0, x' = x̂_0 with no density, whatever the noise level.
  nxt, logp, _, std = sde.cps_step(x, v, grid[9], grid[10], 0.8, key=jax.random.key(0))
  np.testing.assert_allclose(np.asarray(nxt), np.asarray(x - grid[9] * v), rtol=1e-6, atol=1e-6)
  assert float(jnp.max(std)) == 0.0 and not np.any(np.asarray(logp))


def test_step_names_its_types():
  with pytest.raises(ValueError, match="sde type 'ddim'"):
    sde.step("ddim", jnp.ones((1, 2)), jnp.ones((1, 2)), 0.5, 0.4, 0.7, key=jax.random.key(0))
