"""The notebooks run under the tests (nbmake) with their smallest setting, in a fresh workdir
(a run in an old one would resume instead of training)."""
import os
import tempfile

os.environ.setdefault("UNIGRPO_NOTEBOOK_VARIANT", "tiny")
os.environ.setdefault("UNIGRPO_NOTEBOOK_WORKDIR", tempfile.mkdtemp(prefix="quickstart_"))
