"""The notebooks run under the tests (nbmake) with their smallest setting, in a fresh workdir
(a run in an old one would resume instead of training); each is marked slow."""
import os
import tempfile

import pytest

os.environ.setdefault("UNIGRPO_NOTEBOOK_VARIANT", "tiny")
os.environ.setdefault("UNIGRPO_NOTEBOOK_WORKDIR", tempfile.mkdtemp(prefix="quickstart_"))


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.suffix == ".ipynb":
      item.add_marker(pytest.mark.slow)
