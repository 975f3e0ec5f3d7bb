"""Rewards on the written plan: structure, relevance to the prompt, agreement with the image."""
import numpy as np
import pytest

from unigrpo_jax.data import shapeworld
from unigrpo_jax.data.prompts import Clause, Prompt, parse_plan
from unigrpo_jax.rewards import score_batch

O = shapeworld.Object
PROMPT = Prompt("a photo of a red circle left of a square", "position",
                (Clause("square"), Clause("circle", color="red", position=("left of", 0))))
GOOD = "<plan> red circle at 1 0 ; blue square at 1 2 </plan> <img>"


def _image(*objects):
  return shapeworld.render(shapeworld.Scene(tuple(objects)))[None]


def _scores(texts, images):
  meta = [{"prompt": PROMPT.to_json(), "grid": 4}] * len(texts)
  weights = {"structure": 1.0, "text_relevance": 1.0, "visual_text_alignment": 1.0}
  return score_batch(weights, np.stack(images), texts, meta)[1]


def test_plan_parsing():
  assert parse_plan("red circle at 1 0 ; large blue square at 2 2") == [
      O("circle", "red", 1, 0), O("square", "blue", 2, 2, 2)]
  assert parse_plan("pink star at 0 0") == [O("star", "pink", 0, 0)]
  assert parse_plan("pink star at 0 0", 4, shapeworld.WORLDS[1]) is None  # not a word of world 1
  for bad in ("red circle at 1", "brown circle at 0 0", "red circle at 4 0",
              "red circle at 0 0 ; blue square at 0 0", "large red circle at 3 3", ""):
    assert parse_plan(bad) is None, bad


@pytest.mark.parametrize("text", [
    "red circle at 1 0 </plan> <img>", "<plan> red circle at 1 0 </plan>",
    "<plan> </plan> <img>", "<plan> <plan> red circle at 1 0 </plan> </plan> <img>",
    "<plan> red hexagon at 1 0 </plan> <img>", "<plan> red circle at 1 0 </plan> <img> <img>"])
def test_malformed_segments_score_zero(text):
  scores = _scores([text], [_image(O("circle", "red", 1, 0))])
  assert scores["structure"][0] == 0 and scores["text_relevance"][0] == 0
  assert scores["visual_text_alignment"][0] == 0


def test_relevance_and_alignment_credit():
  right = _image(O("circle", "red", 1, 0), O("square", "blue", 1, 2))
  half = _image(O("circle", "red", 1, 0))
  texts = [GOOD, GOOD, "<plan> blue circle at 1 3 ; blue square at 1 2 </plan> <img>"]
  scores = _scores(texts, [right, half, right])
  np.testing.assert_allclose(scores["structure"], [1, 1, 1])
  # Plan 3 has the square and a circle, but the circle is blue and on the wrong side:
  # square clause 1; circle clause mean(count 1, colour 0, position 0) = 1/3.
  np.testing.assert_allclose(scores["text_relevance"], [1, 1, (1 + 1 / 3) / 2], rtol=1e-6)
  # Image 2 shows one of the two planned objects: F1 = 2·1/(2 + 1).
  np.testing.assert_allclose(scores["visual_text_alignment"], [1, 2 / 3, 0.5], rtol=1e-6)
