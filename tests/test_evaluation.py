"""Intervals of the evaluation: a bootstrap over prompts within each family, and a paired one
for a gain between two evaluations of the same prompts."""
import numpy as np
import pytest

from unigrpo_jax import evaluation


def _per_prompt(seed=0, shift=0.0):
  rng = np.random.default_rng(seed)
  return {"counting": {"geneval_strict": list(np.clip(rng.uniform(0, 1, 20) + shift, 0, 1))},
          "colors": {"geneval_strict": [1.0] * 8}}


def test_bootstrap_intervals_hold_the_mean_and_vanish_without_spread():
  per_prompt = _per_prompt()
  out = evaluation.bootstrap_intervals(per_prompt, resamples=2000)
  mean = np.mean(per_prompt["counting"]["geneval_strict"])
  low, high = out["per_family"]["counting"]["geneval_strict"]
  assert low < mean < high and high - low > 0.1
  assert out["per_family"]["colors"]["geneval_strict"] == [1.0, 1.0]
  # The overall score is the mean of family means: its interval is the counting one, halved.
  o_low, o_high = out["overall"]["geneval_strict"]
  np.testing.assert_allclose([o_low, o_high], [(low + 1) / 2, (high + 1) / 2], atol=0.01)


def test_gain_interval_is_paired_prompt_by_prompt():
  before = dict(per_prompt=_per_prompt())
  same = evaluation.gain_interval(before, before, "geneval_strict")
  assert same == [0.0, 0.0]
  # Every prompt moved by +0.1 (none clipped): the gain is 0.05 overall, whichever prompts
  # are drawn, though the prompts' own spread is far wider.
  shifted = {"counting": {"geneval_strict": [s + 0.1 for s in
                                             before["per_prompt"]["counting"]["geneval_strict"]]},
             "colors": before["per_prompt"]["colors"]}
  low, high = evaluation.gain_interval(before, dict(per_prompt=shifted), "geneval_strict")
  np.testing.assert_allclose([low, high], [0.05, 0.05], atol=1e-9)
  with pytest.raises(ValueError, match="same prompts"):
    evaluation.gain_interval(before, dict(per_prompt={"colors": {}}), "geneval_strict")


def test_layout_diversity_is_the_entropy_of_cells_and_open_colours():
  from unigrpo_jax.data.prompts import Clause, Prompt
  open_colour = Prompt("a photo of a square", "single_object", (Clause("square", 1),))
  named = Prompt("a photo of a red square", "colors", (Clause("square", 1, "red"),))
  same = [((0, 3), "red")] * 4
  assert evaluation.layout_diversity(same, open_colour, 4) == dict(cells=0.0, colors=0.0)
  spread = [((r, c), colour) for (r, c), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)],
                                                       ["red", "blue", "red", "blue"])]
  out = evaluation.layout_diversity(spread, open_colour, 4)
  np.testing.assert_allclose(out["cells"], np.log(4) / np.log(16))  # 4 of 16 cells, evenly
  assert 0 < out["colors"] < 1
  assert evaluation.layout_diversity(spread, named, 4)["colors"] is None


def test_eval_spec_names_a_field_that_is_not_a_flag():
  settings = dict(num_prompts=8, train_prompts=8, batch_size=8, every=2, grid_prompts=8)
  assert evaluation.EvalSpec(**settings, sampled_plans=True).sampled_plans
  with pytest.raises(ValueError, match=r"config\.eval\.sampled_plans must be True or False, "
                     r"got 1"):
    evaluation.EvalSpec(**settings, sampled_plans=1)
