"""Timing helpers for benchmarks: median wall time of a jitted call and the machine's measured
float32 matmul peak (what MFU is a fraction of)."""
import statistics
import time

import jax
import jax.numpy as jnp


def timed(fn, *args, repeats: int):
  """Median wall time of fn(*args) over `repeats` runs (after one warm-up run)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def matmul_peak_gflops(n: int, repeats: int = 10) -> float:
  """GFLOP/s of a jitted n×n float32 matmul (median of `repeats`, at least 10)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  return 2 * n**3 / timed(jax.jit(jnp.matmul), a, b, repeats=max(repeats, 10)) / 1e9
