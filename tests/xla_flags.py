"""The XLA flags the test session adds for compile speed (set by the root conftest.py before JAX
starts; why: its docstring). A test of XLA's default behaviour runs without them."""

COMPILE_FAST = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def without_compile_fast(flags: str) -> str:
  """`flags` (an XLA_FLAGS string) less any setting of the flags COMPILE_FAST names."""
  names = {flag.split("=")[0] for flag in COMPILE_FAST}
  return " ".join(f for f in flags.split() if f.split("=")[0] not in names)
