"""The main job end to end on the smallest variant: SFT then GRPO, with everything it writes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, checkpoint_steps
from unigrpo_jax import metric_writer

pytestmark = pytest.mark.slow  # runs of `main` in subprocesses


@pytest.mark.xdist_group("tiny_main_job")
def test_main_job_runs_sft_then_grpo_and_writes_its_outputs(tiny_main_job):
  tmp_path, out = tiny_main_job
  assert out.returncode == 0, out.stderr[-4000:]
  results = json.loads((tmp_path / "results.json").read_text())
  grpo = results["grpo"]
  assert set(grpo["before"]["per_family"]) == set(grpo["after"]["per_family"])
  assert grpo["geneval_gain"] == (grpo["after"]["overall"]["geneval_strict"]
                                  - grpo["before"]["overall"]["geneval_strict"])
  assert grpo["geneval_gain_train_prompts"] == (
      grpo["after_train_prompts"]["overall"]["geneval_strict"]
      - grpo["before_train_prompts"]["overall"]["geneval_strict"])
  # The held-out prompts again with sampled plans, before and after, and their gain.
  assert grpo["gain_sampled_plans"] == (grpo["after_sampled_plans"]["overall"]["geneval_strict"]
                                        - grpo["before_sampled_plans"]["overall"]["geneval_strict"])
  assert grpo["after_sampled_plans"]["n"] == grpo["after"]["n"]
  low, high = grpo["gain_sampled_plans_interval"]
  assert low <= grpo["gain_sampled_plans"] <= high
  assert set(results["sft"]["heldout_teacher_forced"]) == {"t2i", "understanding", "interleaved"}
  reliance = results["sft"]["heldout_text_reliance"]
  assert set(reliance) == {"0.5", "0.8", "0.95"}
  assert all(np.isfinite(e["matched"]) and np.isfinite(e["mismatched"])
             for e in reliance.values())
  for stage, steps in (("sft", 12), ("grpo", 4)):
    stage_dir = tmp_path / stage
    assert steps in checkpoint_steps(tmp_path, stage)
    assert any(p.name.startswith("events.out.tfevents") for p in stage_dir.iterdir())
  assert (tmp_path / "sft" / "params").is_dir()
  assert (tmp_path / "grpo" / "samples_4.png").stat().st_size > 0
  records = metric_writer.read(str(tmp_path / "grpo"))
  steps = [r for r in records if "reward/combined" in r]
  assert [r["step"] for r in steps] == [1, 2, 3, 4]
  assert all("update/text/ratio_mean" in r for r in steps if r["step"] in (1, 2, 4))
  assert "eval/geneval_strict" in records[0] and records[0]["step"] == 0


def test_interleaved_grpo_runs_on_the_smallest_variant(tmp_path):
  """configs/interleaved.py:tiny, GRPO only (from fresh parameters): multi-round rollouts,
  hybrid outcome + process rewards, step-wise advantages, the story evaluation per step and
  its PNG strips."""
  out = subprocess.run(
      [sys.executable, "-m", "unigrpo_jax.main", "--config=configs/interleaved.py:tiny",
       f"--workdir={tmp_path}", f"--config.data.data_dir={tmp_path / 'tfds'}",
       "--config.stages=('grpo',)", "--config.rl.init_params=none",
       "--config.model.depth=1"],  # one block: the interleaved run, not the stack, is tested
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  grpo = json.loads((tmp_path / "results.json").read_text())["grpo"]
  assert grpo["headline"] == "interleaved_score"
  assert set(grpo["after"]["per_family"]) == {"two_object", "counting", "position",
                                              "color_attr", "howto"}
  assert len(grpo["after"]["per_step"]["interleaved_alignment_steps"]) == 4
  assert (tmp_path / "grpo" / "samples_4.png").stat().st_size > 0
  steps = [r for r in metric_writer.read(str(tmp_path / "grpo")) if "reward/combined" in r]
  assert [r["step"] for r in steps] == [1, 2, 3, 4]
  assert all("reward/interleaved_relevance_steps" in r for r in steps)
