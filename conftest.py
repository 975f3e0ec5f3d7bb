"""Set-up for the whole test session (tests/ and colab/), made before JAX is imported and
passed on through the environment to every subprocess and notebook kernel the tests start:

  * one persistent JAX compilation cache in a temporary folder: a program compiled once (same
    HLO, same devices, same flags) is read back instead of compiled again — the tiny main job,
    the resume and fault runs and the notebooks compile the same steps many times over;
  * tests that share an expensive module fixture carry one `xdist_group`, so that one worker
    runs them all and builds the fixture once (a pytest with which pytest-xdist ignores the
    groups stops the session rather than build each fixture on every worker);
  * XLA's CPU back end at optimisation level 0 and without its MLIR fusion emitters: the
    tests' programs are tiny, so compiling them costs far more than running them; level 0
    compiles several times faster, and the older fusion emitters about twice as fast again
    (a GRPO update of the tests' model: 16–22 s → 8–10 s). Results may differ from the
    defaults in the last bits; every comparison a test makes is between programs of the same
    session, compiled alike.

A cache or XLA flags the caller sets are kept."""
import os
import shutil
import tempfile

import pytest

from xla_flags import COMPILE_FAST  # tests/ is on pytest's path (pytest.ini)

_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="unigrpo_jax_compile_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
for _flag in COMPILE_FAST:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()


def pytest_configure(config):
  # pytest 9 keeps node ids where pytest-xdist 3.8 cannot add the group tag.
  if (config.getoption("dist", default="no") == "loadgroup"
      and int(pytest.__version__.split(".")[0]) >= 9):
    raise pytest.UsageError(
        f"pytest {pytest.__version__} and pytest-xdist ignore xdist_group (each shared fixture "
        "would be built on every worker): install the pytest that setup.py's `test` extra names")


def pytest_unconfigure(config):
  del config
  if _CACHE is not None:
    shutil.rmtree(_CACHE, ignore_errors=True)
