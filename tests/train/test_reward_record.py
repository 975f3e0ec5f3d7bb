"""The GRPO step's reward figures: overall and per prompt family of the step's rows."""
import numpy as np

from unigrpo_jax.train import grpo_stage


def test_each_family_is_the_mean_of_its_own_rows():
  scores = dict(geneval_strict=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
                object_precision=np.array([0.5, 0.5, 1.0, 0.0, 0.25, 0.75]))
  families = np.array(["counting", "counting", "position", "position", None, "counting"],
                      dtype=object)
  record, nonfinite = grpo_stage._reward_record(
      scores, {}, np.ones((6, 1), bool), np.full(6, 4.0), families, 0.5)
  assert nonfinite == []
  assert record["reward/geneval_strict"] == 0.5
  assert record["reward/counting/geneval_strict"] == 2 / 3
  assert record["reward/counting/object_precision"] == 1.75 / 3
  assert record["reward/position/geneval_strict"] == 0.0
  assert record["reward/position/object_precision"] == 0.5
  # A row without a family counts in the overall figure only.
  assert not [k for k in record if k.count("/") == 2 and "counting" not in k
              and "position" not in k]
