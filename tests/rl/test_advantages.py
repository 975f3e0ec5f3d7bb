"""Advantages on hand-computed cases, and clear errors for bad rewards."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from unigrpo_jax.rewards import score_batch
from unigrpo_jax.rewards.registry import RewardError
from unigrpo_jax.rl import advantages as adv


def test_group_advantages_by_hand():
  rewards = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
  std = math.sqrt(5.0 / 3.0)  # n − 1 over (−1.5, −.5, .5, 1.5)
  want = [-1.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 1.5 / (std + 1e-4),
          0, 0, 0, 0]
  np.testing.assert_allclose(np.asarray(adv.group_advantages(rewards, 4)), want, rtol=1e-6)
  centred = [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0]
  np.testing.assert_allclose(np.asarray(adv.group_advantages(rewards, 4, scale="none")),
                             centred, atol=1e-7)
  batch_std = float(np.std(np.asarray(rewards), ddof=1))
  np.testing.assert_allclose(np.asarray(adv.group_advantages(rewards, 4, scale="batch")),
                             np.asarray(centred) / (batch_std + 1e-4), rtol=1e-6)
  clipped = adv.group_advantages(jnp.array([0.0, 0.0, 0.0, 1.0]), 4, clip=1.0)
  # mean .25, std (n − 1) .5: −.25/.5 for the zeros, .75/.5 = 1.5 clipped to 1
  np.testing.assert_allclose(np.asarray(clipped), [-0.25 / (0.5 + 1e-4)] * 3 + [1.0], rtol=1e-6)


def test_dapo_filter_marks_uniform_groups():
  keep = adv.informative_groups(jnp.array([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2)
  np.testing.assert_array_equal(np.asarray(keep), [False, False, True, True, False, False])


def test_combined_rewards():
  rewards = {"a": jnp.array([1.0, 3.0, 0.0, 0.0]), "b": jnp.array([10.0, 10.0, 20.0, 0.0])}
  weights = {"a": 2.0, "b": 0.5}
  np.testing.assert_allclose(np.asarray(adv.combine_rewards(rewards, weights)),
                             [7.0, 11.0, 10.0, 0.0])
  per_group = adv.combine_rewards(rewards, weights, group_size=2, normalize_each=True)
  s = math.sqrt(2.0) + 1e-4  # std (n − 1) of a pair differing by 2 is √2; of 20 vs 0, 10√2
  want = [2 * (-1 / s) + 0.0, 2 * (1 / s) + 0.0, 0.0 + 0.5 * (10 / (10 * math.sqrt(2) + 1e-4)),
          0.5 * (-10 / (10 * math.sqrt(2) + 1e-4))]
  np.testing.assert_allclose(np.asarray(per_group), want, rtol=1e-5)
  with pytest.raises(ValueError, match=r"weights name \['a'\] but the rewards are \['a', 'b'\]"):
    adv.combine_rewards(rewards, {"a": 1.0})


def test_process_advantages_by_hand():
  r = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  s = math.sqrt(1.0 / 3.0) + 1e-4  # all four step rewards of the group: mean .5, var 1/3
  n = 0.5 / s
  np.testing.assert_allclose(np.asarray(adv.process_advantages(r, 2)),
                             [[0.0, -n], [0.0, n]], atol=1e-6)
  out = adv.process_advantages(r, 2, outcome=jnp.array([1.0, -1.0]))
  np.testing.assert_allclose(np.asarray(out), [[1.0, 1 - n], [-1.0, -1 + n]], atol=1e-6)
  # A missing step takes no part in the statistics and gets no advantage.
  masked = adv.process_advantages(jnp.array([[1.0, 5.0], [0.0, 1.0]]), 2,
                                  step_mask=jnp.array([[True, False], [True, True]]))
  vals = np.array([1.0, 0.0, 1.0])
  s = vals.std(ddof=1) + 1e-4
  z = (vals - vals.mean()) / s
  np.testing.assert_allclose(np.asarray(masked), [[z[0], 0.0], [z[1] + z[2], z[2]]], atol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda: adv.group_advantages(jnp.array([1.0, jnp.nan, 0.0, 1.0]), 2),
     r"rewards has non-finite values"),
    (lambda: adv.group_advantages(jnp.ones((4, 2)), 2), r"rewards must have shape \(batch,\)"),
    (lambda: adv.group_advantages(jnp.ones((6,)), 4), r"groups of group_size = 4"),
    (lambda: adv.process_advantages(jnp.array([[1.0, jnp.inf]] * 2), 2),
     r"step_rewards has non-finite"),
    (lambda: adv.combine_rewards({"clip": jnp.array([jnp.nan])}, {"clip": 1.0}),
     r"reward 'clip' has non-finite"),
])
def test_bad_advantage_inputs_are_named(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_reward_functions_are_checked_and_named():
  texts = ["a", "b", "c"]
  images = np.zeros((3, 1, 4, 4, 3))
  good = lambda images, texts, meta: np.arange(3.0)  # noqa: E731
  fns = {"good": good, "nan": lambda *a: np.array([0.0, np.nan, 1.0]),
         "short": lambda *a: np.zeros(2), "boom": lambda *a: 1 / 0}
  total, scores = score_batch({"good": 2.0}, images, texts, [{}] * 3, functions=fns)
  np.testing.assert_allclose(total, [0.0, 2.0, 4.0])
  for name, message in (("nan", r"reward 'nan' returned non-finite values at \[\[1\]\]"),
                        ("short", r"reward 'short' returned shape \(2,\), expected \(batch,\)"),
                        ("boom", r"reward 'boom' raised ZeroDivisionError"),
                        ("missing", r"unknown rewards \['missing'\]")):
    with pytest.raises(RewardError, match=message):
      score_batch({name: 1.0}, images, texts, [{}] * 3, functions=fns)
