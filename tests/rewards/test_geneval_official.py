"""GenEval's scoring rules (`rewards/geneval_official.py`) checked with a stub detector that
returns fixed boxes (tests/e2e/reward_plugins.py): thresholds, counting, exclusion, colour,
position, and the reward over them, in process and served."""
import os
import sys

import numpy as np
import pytest

from helpers import ROOT
from unigrpo_jax.rewards import client, geneval_official as ge

sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import reward_plugins  # noqa: E402
from test_serving import server  # noqa: E402

pytestmark = pytest.mark.xdist_group("serving")
IMAGE = np.zeros((100, 100, 3), np.uint8)


def clause(name, count=1, color=None, position=None):
  out = {"class": name, "count": count}
  if color:
    out["color"] = color
  if position:
    out["position"] = position
  return out


def judge(include, exclude=(), tag="two_object"):
  objects = ge.kept(reward_plugins.STUB_BOXES, tag)
  return ge.evaluate(IMAGE, objects, {"tag": tag, "include": list(include),
                                      "exclude": list(exclude)}, reward_plugins.stub_colors)


def test_detections_are_thresholded_per_tag_sorted_and_capped():
  kept = ge.kept(reward_plugins.STUB_BOXES, "two_object")
  assert [b[4] for b in kept["dog"]] == [0.95, 0.92, 0.5] and [b[4] for b in kept["cat"]] == [0.35]
  counting = ge.kept(reward_plugins.STUB_BOXES, "counting")
  assert [b[4] for b in counting["dog"]] == [0.95, 0.92] and "cat" not in counting
  assert len(ge.kept({"dog": np.tile([0, 0, 1, 1, 0.9], (20, 1))}, "x")["dog"]) == 16
  # NMS only when asked: the default threshold 1.0 keeps overlapping boxes.
  twins = {"dog": np.array([[0, 0, 10, 10, 0.9], [1, 0, 11, 10, 0.8]])}
  assert len(ge.kept(twins, "x")["dog"]) == 2
  assert len(ge.kept(twins, "x", ge.Rules(nms_threshold=0.5))["dog"]) == 1


def test_counting_and_exclusion():
  assert judge([clause("dog", 3)])[0]
  assert not judge([clause("dog", 4)])[0]
  assert judge([clause("dog", 2)], [clause("dog", 3)], tag="counting")[0]  # exactly two
  correct, reason = judge([clause("dog", 2)], [clause("dog", 3)])
  assert not correct and reason == "expected dog<3, found 3"
  assert judge([clause("dog"), clause("cat")])[0]
  assert judge([clause("dog")], [clause("horse")])[0]
  assert not judge([clause("horse")])[0]


def test_colour_uses_the_most_confident_objects():
  assert judge([clause("dog", 1, "red")])[0]
  correct, reason = judge([clause("dog", 2, "red")])
  assert not correct and reason == "expected red dog>=2, found 1 red; and 1 red, 1 blue"
  assert judge([clause("cat", 1, "white")])[0]


def test_position_against_every_object_of_the_target_clause():
  # Dogs at y 40..60, the cat below at y 70..90; the two most confident dogs left and right.
  assert ge.relative_position([10, 40, 30, 60], [70, 40, 90, 60]) == {"left of"}
  assert ge.relative_position([40, 70, 60, 90], [40, 5, 60, 25]) == {"below"}
  assert ge.relative_position([0, 0, 10, 10], [1, 1, 11, 11]) == set()  # within the margin
  assert ge.relative_position([0, 0, 10, 10], [20, 20, 30, 30]) == {"left of", "above"}
  assert judge([clause("dog"), clause("cat", 1, position=("below", 0))])[0]
  correct, reason = judge([clause("dog", 2), clause("cat", 1, position=("below", 0))])
  assert correct, reason  # below both dogs
  correct, reason = judge([clause("cat"), clause("dog", 2, position=("left of", 0))])
  assert not correct and reason == "expected dog left of target, found above and right of target"
  correct, reason = judge([clause("horse"), clause("dog", position=("above", 0))])
  assert not correct and reason.endswith("no target for dog to be above")


def test_the_reward_in_process_and_served_alike():
  metadata = [{"geneval": {"tag": "counting", "include": [clause("dog", 2)],
                           "exclude": [clause("dog", 3)]}},
              {"geneval": {"tag": "two_object", "include": [clause("dog", 2)],
                           "exclude": [clause("dog", 3)]}},
              {"geneval": {"tag": "colors", "include": [clause("cat", 1, "white")]}},
              {"geneval": {"tag": "position",
                           "include": [clause("dog"), clause("cat", position=("above", 0))]}}]
  images = np.zeros((4, 1, 100, 100, 3), np.float32)
  texts = [""] * 4
  fn = reward_plugins.rewards.REWARDS["geneval_stub"]
  want = np.array([1, 0, 1, 0], np.float32)
  np.testing.assert_array_equal(fn(images, texts, metadata), want)
  with server("geneval_stub") as (url, _):
    np.testing.assert_array_equal(
        client.ServedReward("geneval_stub", url)(images, texts, metadata), want)
