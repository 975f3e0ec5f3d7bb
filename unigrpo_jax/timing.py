"""Timing helpers for benchmarks: median wall time of a jitted call, the machine's measured
matmul peak (what MFU is a fraction of): float32, or a lower operand dtype accumulated in
float32 (`model.matmul_dtype`), and the CPU model a figure was measured on."""
import platform
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


def matmul_peak_gflops(n: int, repeats: int = 10, dtype="float32") -> float:
  """GFLOP/s of a jitted n×n matmul of `dtype` operands accumulated in float32 (median of
  `repeats`, at least 10)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  return 2 * n**3 / timed(matmul, a, b, repeats=max(repeats, 10)) / 1e9


def mixed_precision_figures(spec, gflops: float, n: int, repeats: int) -> dict:
  """A benchmark's extra figures under `model.matmul_dtype`: that dtype, its n×n matmul peak
  (measured now) and the MFU against it (`mfu` stays against the float32 peak). Empty
  without one."""
  if not spec.matmul_dtype:
    return {}
  peak = matmul_peak_gflops(n, repeats, spec.matmul_dtype)
  return dict(matmul_dtype=spec.matmul_dtype, matmul_peak_gflops_mixed=peak,
              mfu_mixed=gflops / peak)


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"
