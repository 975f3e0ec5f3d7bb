"""Set-up for the whole test session (tests/ and colab/): one persistent JAX compilation cache
in a temporary folder, made before JAX is imported and passed on through the environment to
every subprocess and notebook kernel the tests start. A program compiled once (same HLO, same
devices, same flags) is then read back instead of compiled again: the tiny main job, the
resume and fault runs and the notebooks compile the same steps many times over.
A cache named by the caller's own JAX_COMPILATION_CACHE_DIR is used as it is."""
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="unigrpo_jax_compile_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
else:
  _CACHE = None
# Every program, however quick to compile: the tests' programs are small and many.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config):
  del config
  if _CACHE is not None:
    shutil.rmtree(_CACHE, ignore_errors=True)
