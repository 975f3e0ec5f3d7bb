"""Fixtures of the end-to-end tests: runs of the entry point, made once per session."""
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.fixture(scope="session")
def tiny_main_job(tmp_path_factory):
  """The main job's tiny variant (SFT then GRPO) run once by `main`, the held-out prompts also
  drawn with sampled plans: (workdir, the finished process). Its data (workdir/tfds) and SFT
  checkpoint serve the experiment scripts' tests."""
  workdir = tmp_path_factory.mktemp("main_tiny")
  out = subprocess.run(
      [sys.executable, "-m", "unigrpo_jax.main", "--config=configs/shapeworld.py:tiny",
       f"--workdir={workdir}", f"--config.data.data_dir={workdir / 'tfds'}",
       "--config.eval.sampled_plans=True"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  return workdir, out
