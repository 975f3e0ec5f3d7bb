"""Fixtures shared by the tests (the helpers themselves live in helpers.py)."""
import pytest

from helpers import lively_params, tiny_spec
from unigrpo_jax.model import UnifiedTransformer


@pytest.fixture(scope="session")
def tiny():
  spec = tiny_spec()
  return UnifiedTransformer(spec), lively_params(spec)
