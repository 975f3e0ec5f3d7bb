"""Interleaved GRPO's hybrid rewards on hand-built stories: segmentation into steps, per-step and
whole-story scores, and the structural reward on malformed sequences."""
import numpy as np
import pytest

from unigrpo_jax.data import shapeworld
from unigrpo_jax.data.prompts import Clause, Prompt
from unigrpo_jax.rewards import score_batch
from unigrpo_jax.rewards.interleaved import segment

O = shapeworld.Object
PROMPT = Prompt("a photo of a red circle and a blue square", "color_attr",
                (Clause("circle", color="red"), Clause("square", color="blue")))
META = {"prompt": PROMPT.to_json(), "grid": 4}
CIRCLE, SQUARE = O("circle", "red", 0, 0), O("square", "blue", 2, 2)
STEP_CIRCLE = "<plan> red circle at 0 0 </plan> <img>"
STEP_SQUARE = "<plan> blue square at 2 2 </plan> <img>"
ROUNDS = 4
NAMES = ("structure", "relevance", "alignment")


def images(*scenes):
  """(1, R, S, S, 3): the given scenes in the first rounds, blank after."""
  out = np.full((1, ROUNDS, 64, 64, 3), -1.0, np.float32)
  for r, objects in enumerate(scenes):
    out[0, r] = shapeworld.render(shapeworld.Scene(tuple(objects)))
  return out


def score(rounds, imgs):
  text = "\n".join(rounds)
  whole = {f"interleaved_{n}": 1.0 for n in NAMES + ("geneval",)}
  steps = {f"interleaved_{n}_steps": 1.0 for n in NAMES}
  _, w = score_batch(whole, imgs, [text], [META])
  _, s = score_batch(steps, imgs, [text], [META], per_step=True)
  return ({n: float(w[f"interleaved_{n}"][0]) for n in NAMES + ("geneval",)},
          {n: s[f"interleaved_{n}_steps"][0].tolist() for n in NAMES})


def test_a_perfect_story_scores_one_everywhere_and_splits_credit_by_step():
  whole, steps = score([STEP_CIRCLE, STEP_SQUARE, "[EOS]"],
                       images([CIRCLE], [CIRCLE, SQUARE]))
  assert whole == {"structure": 1.0, "relevance": 1.0, "alignment": 1.0, "geneval": 1.0}
  assert steps["structure"] == [1, 1, 1, 0]
  assert steps["relevance"] == [0.5, 0.5, 0, 0]  # each object is half of the scene
  assert steps["alignment"] == [1, 1, 0, 0]  # the EOS round draws nothing


def test_how_to_story_credits_the_recipe_step_by_step():
  house = Prompt("how to draw a red house", "howto", (
      Clause("square", color="red"), Clause("triangle", color="red", position=("above", 0))))
  meta = {"prompt": house.to_json(), "grid": 4}
  base, roof = O("square", "red", 2, 1), O("triangle", "red", 1, 1)
  steps_text = ["<plan> red square at 2 1 </plan> <img>", "<plan> red triangle at 1 1 </plan> <img>"]

  def run(order):
    text = "\n".join([steps_text[i] for i in order] + ["[EOS]"])
    objects = [[base, roof][i] for i in order]
    imgs = images(objects[:1], objects)
    _, w = score_batch({"interleaved_score": 1.0}, imgs, [text], [meta])
    _, s = score_batch({"interleaved_relevance_steps": 1.0}, imgs, [text], [meta], per_step=True)
    return float(w["interleaved_score"][0]), s["interleaved_relevance_steps"][0].tolist()

  assert run([0, 1]) == (1.0, [0.5, 0.5, 0, 0])
  # Roof first: it earns its shape and colour but not "above" a base that is not there yet.
  score_reversed, relevance = run([1, 0])
  assert score_reversed == 1.0 and np.allclose(relevance, [1 / 3, 2 / 3, 0, 0])


def test_segmentation_follows_rounds():
  story = segment("\n".join([STEP_CIRCLE, "<plan> blue square at 2 2", "[EOS]"]), META)
  assert story.k == 2 and story.objects == (CIRCLE, None, None)
  assert story.drawn == (True, True, False) and story.images == [0, 1]
  assert [len(segment(t, META).segments) for t in ("a\nb\nc", "a", "")] == [3, 1, 0]


def test_image_that_misses_its_plan_loses_alignment_at_that_step_only():
  whole, steps = score([STEP_CIRCLE, STEP_SQUARE, "[EOS]"],
                       images([CIRCLE], [CIRCLE, O("square", "green", 2, 2)]))
  assert steps["alignment"][0] == 1.0 and 0 < steps["alignment"][1] < 1
  assert whole["geneval"] == 0.0 and whole["structure"] == 1.0


@pytest.mark.parametrize("rounds, step_structure", [
    # Stops after one step (EOS too early).
    ([STEP_CIRCLE, "[EOS]"], [1, 0, 0, 0]),
    # A third image block where the prompt asks for two; no EOS.
    ([STEP_CIRCLE, STEP_SQUARE, "<plan> red circle at 3 3 </plan> <img>", "[EOS]"],
     [1, 1, 0, 0]),
    # Two objects in one step.
    (["<plan> red circle at 0 0 ; blue square at 2 2 </plan> <img>", STEP_SQUARE, "[EOS]"],
     [0, 1, 1, 0]),
    # Nested and unbalanced tags, an empty plan.
    (["<plan> <plan> red circle at 0 0 </plan> <img>", STEP_SQUARE, "[EOS]"], [0, 1, 1, 0]),
    (["red circle at 0 0 </plan> <img>", STEP_SQUARE, "[EOS]"], [0, 1, 1, 0]),
    (["<plan> </plan> <img>", STEP_SQUARE, "[EOS]"], [0, 1, 1, 0]),
    # Ran out of text slots before `<img>` (the image is drawn anyway).
    (["<plan> red circle at 0 0", STEP_SQUARE, "[EOS]"], [0, 1, 1, 0]),
    # Never ends.
    ([STEP_CIRCLE, STEP_SQUARE, STEP_SQUARE, STEP_SQUARE], [1, 1, 0, 0]),
])
def test_malformed_stories_score_zero_structure(rounds, step_structure):
  whole, steps = score(rounds, images([CIRCLE], [CIRCLE, SQUARE], [CIRCLE, SQUARE],
                                      [CIRCLE, SQUARE]))
  assert whole["structure"] == 0.0
  assert steps["structure"] == step_structure


def test_story_that_uses_every_round_needs_no_eos():
  prompt = Prompt("a photo of four circles", "counting", (Clause("circle", 4),),
                  (Clause("circle", 5),))
  meta = {"prompt": prompt.to_json(), "grid": 4}
  circles = [O("circle", "red", r, 0) for r in range(4)]
  text = "\n".join(f"<plan> red circle at {r} 0 </plan> <img>" for r in range(4))
  imgs = np.stack([shapeworld.render(shapeworld.Scene(tuple(circles[:r + 1])))
                   for r in range(4)])[None]
  _, w = score_batch({"interleaved_structure": 1.0, "interleaved_relevance": 1.0,
                   "interleaved_geneval": 1.0}, imgs, [text], [meta])
  assert {k: float(v[0]) for k, v in w.items()} == {
      "interleaved_structure": 1.0, "interleaved_relevance": 1.0, "interleaved_geneval": 1.0}


def test_repeated_object_earns_no_more_relevance():
  _, steps = score([STEP_CIRCLE, STEP_CIRCLE, "[EOS]"], images([CIRCLE], [CIRCLE]))
  assert steps["relevance"][:2] == [0.5, 0.0]


def test_partial_alignment_credits_partly_right_images():
  text = "\n".join([STEP_CIRCLE, STEP_SQUARE, "[EOS]"])
  weights = {"interleaved_alignment_partial_steps": 1.0}
  right = images([CIRCLE], [CIRCLE, SQUARE])
  wrong_colour = images([O("circle", "green", 0, 0)], [CIRCLE, O("square", "green", 2, 2)])
  _, good = score_batch(weights, right, [text], [META], per_step=True)
  _, part = score_batch(weights, wrong_colour, [text], [META], per_step=True)
  good, part = good["interleaved_alignment_partial_steps"][0], part[
      "interleaved_alignment_partial_steps"][0]
  np.testing.assert_allclose(good, [1, 1, 0, 0])
  np.testing.assert_allclose(part, [2 / 3, (1 + 2 / 3) / 2, 0, 0], rtol=1e-6)
