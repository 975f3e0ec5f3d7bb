"""Set-up for the whole test session (tests/ and colab/), made before JAX is imported and
passed on through the environment to every subprocess and notebook kernel the tests start:

  * one persistent JAX compilation cache in a temporary folder: a program compiled once (same
    HLO, same devices, same flags) is read back instead of compiled again — the tiny main job,
    the resume and fault runs and the notebooks compile the same steps many times over;
  * XLA's CPU back end at optimisation level 0: the tests' programs are tiny, so compiling
    them costs far more than running them, and level 0 compiles several times faster. Results
    may differ from level 2 in the last bits; every comparison a test makes is between
    programs of the same session, compiled alike.

A cache or XLA flags the caller sets are kept."""
import os
import shutil
import tempfile

_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="unigrpo_jax_compile_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()


def pytest_unconfigure(config):
  del config
  if _CACHE is not None:
    shutil.rmtree(_CACHE, ignore_errors=True)
