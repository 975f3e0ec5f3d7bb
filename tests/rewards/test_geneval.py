"""Mini-GenEval: GenEval's position rule, strict verdicts and partial credit on hand-built
scenes, prompts with target scenes, and the registered rewards."""
import numpy as np
import pytest

from unigrpo_jax.data import geneval, prompts, shapeworld
from unigrpo_jax.data.detector import detect
from unigrpo_jax.data.prompts import Clause, Prompt
from unigrpo_jax.rewards import REWARDS, score_batch

O = shapeworld.Object


def _score(objects, prompt):
  dets = detect(shapeworld.render(shapeworld.Scene(tuple(objects))))
  return geneval.strict(dets, prompt), geneval.partial(dets, prompt)


def test_relative_position_rule():
  # Same row, one cell apart: clearly left of; diagonal one cell: both relations.
  assert geneval.relative_position((1, 1, 6, 6), (9, 1, 14, 6)) == {"left of"}
  assert geneval.relative_position((9, 9, 14, 14), (1, 1, 6, 6)) == {"right of", "below"}
  # Two rows down, one column right: dx = (8 − 0.1·10) / |(8, 16)| = 0.39 < 0.5: "below" only.
  assert geneval.relative_position((9, 17, 14, 22), (1, 1, 6, 6)) == {"below"}
  # Overlapping centres within the 0.1 × size shrink: no relation.
  assert geneval.relative_position((0, 0, 10, 10), (0.5, 0, 10.5, 10)) == set()


def test_strict_and_partial_on_hand_built_scenes():
  two_circles = Prompt("a photo of two circles", "counting", (Clause("circle", 2),),
                       (Clause("circle", 3),))
  assert _score([O("circle", "red", 0, 0), O("circle", "blue", 2, 2)], two_circles) == (True, 1.0)
  strict, part = _score([O("circle", "red", 0, 0)], two_circles)
  assert not strict and part == pytest.approx(0.5)
  strict, part = _score([O("circle", "red", 0, 0), O("circle", "red", 0, 2),
                         O("circle", "red", 2, 2)], two_circles)
  assert not strict and part == pytest.approx(0.5)  # three is one too many

  red_square = Prompt("a photo of a red square", "colors", (Clause("square", color="red"),))
  assert _score([O("square", "red", 1, 1)], red_square) == (True, 1.0)
  strict, part = _score([O("square", "blue", 1, 1)], red_square)
  assert not strict and part == pytest.approx(0.5)  # the square is there, the colour is not
  assert _score([O("circle", "red", 1, 1)], red_square) == (False, 0.0)

  left = Prompt("a photo of a circle left of a square", "position",
                (Clause("square"), Clause("circle", position=("left of", 0))))
  assert _score([O("circle", "red", 1, 0), O("square", "blue", 1, 2)], left) == (True, 1.0)
  strict, part = _score([O("circle", "red", 1, 3), O("square", "blue", 1, 0)], left)
  assert not strict and part == pytest.approx(0.75)  # both present, relation wrong
  # At-least semantics outside counting: an extra object does not cost credit.
  single = Prompt("a photo of a triangle", "single_object", (Clause("triangle"),))
  assert _score([O("triangle", "red", 0, 0), O("triangle", "cyan", 3, 3)], single) == (True, 1.0)


def test_precision_counts_the_objects_nobody_asked_for():
  def precision(objects, prompt):
    return geneval.precision(detect(shapeworld.render(shapeworld.Scene(tuple(objects)))), prompt)
  single = Prompt("a photo of a triangle", "single_object", (Clause("triangle"),))
  assert precision([O("triangle", "red", 0, 0)], single) == 1.0
  # GenEval passes these; precision sees the extras.
  assert precision([O("triangle", "red", 0, 0), O("triangle", "cyan", 3, 3)], single) == 0.5
  assert precision([O("triangle", "red", 0, 0), O("circle", "red", 0, 2), O("square", "red", 2, 2),
                    O("square", "blue", 3, 3)], single) == 0.25
  assert precision([], single) == 0.0
  two_circles = Prompt("a photo of two circles", "counting", (Clause("circle", 2),),
                       (Clause("circle", 3),))
  assert precision([O("circle", "red", 0, 0), O("circle", "red", 0, 2), O("circle", "red", 2, 2)],
                   two_circles) == pytest.approx(2 / 3)
  # A clause with a colour claims only objects of that colour.
  red_square = Prompt("a photo of a red square", "colors", (Clause("square", color="red"),))
  assert precision([O("square", "blue", 1, 1)], red_square) == 0.0
  pair = Prompt("a photo of a red square and a blue circle", "color_attr",
                (Clause("square", color="red"), Clause("circle", color="blue")))
  assert precision([O("square", "red", 0, 0), O("circle", "blue", 2, 2), O("circle", "red", 3, 0)],
                   pair) == pytest.approx(2 / 3)


@pytest.mark.parametrize("family", prompts.ALL_FAMILIES)
def test_target_scenes_satisfy_their_prompts(family):
  rng = np.random.default_rng(0)
  for _ in range(30):
    prompt = prompts.sample_prompt(rng, family)
    assert Prompt.from_json(prompt.to_json()) == prompt
    scene = prompts.target_scene(rng, prompt, large_prob=0.2)
    dets = detect(shapeworld.render(scene))
    assert geneval.strict(dets, prompt) and geneval.partial(dets, prompt) == 1.0
    assert geneval.precision(dets, prompt) == 1.0
    plan = prompts.plan_text(scene)
    assert plan.count(";") == len(scene.objects) - 1
    for obj in scene.objects:
      assert f"{obj.color} {obj.shape} at {obj.row} {obj.col}" in plan


def test_plans_in_prompt_order_list_the_clauses_in_turn():
  prompt = Prompt("a photo of a blue heart and an orange circle", "color_attr",
                  (Clause("heart", color="blue"), Clause("circle", color="orange")), world=2)
  scene = shapeworld.Scene((O("circle", "orange", 0, 1), O("heart", "blue", 2, 3)))
  assert prompts.plan_text(scene) == "orange circle at 0 1 ; blue heart at 2 3"
  assert prompts.plan_text(scene, prompt, "prompt") == "blue heart at 2 3 ; orange circle at 0 1"
  # Within a clause, raster order; what answers no clause comes last.
  count = Prompt("a photo of two rings", "counting", (Clause("ring", 2),), (Clause("ring", 3),),
                 world=2)
  scene = shapeworld.Scene((O("star", "red", 0, 0), O("ring", "red", 3, 3),
                            O("ring", "blue", 1, 2)))
  assert (prompts.plan_text(scene, count, "prompt")
          == "blue ring at 1 2 ; red ring at 3 3 ; red star at 0 0")
  with pytest.raises(ValueError, match="needs the prompt"):
    prompts.plan_text(scene, order="prompt")
  with pytest.raises(ValueError, match="plan order must be one of"):
    prompts.plan_text(scene, count, "shuffled")


def test_plans_with_the_shape_first_parse_to_the_same_objects():
  world = shapeworld.WORLDS[2]
  scene = shapeworld.Scene((O("heart", "blue", 2, 3), O("circle", "orange", 0, 1, 2)))
  text = prompts.plan_text(scene, words="shape_color")
  assert text == "large circle orange at 0 1 ; heart blue at 2 3"
  assert prompts.parse_plan(text, 4, world) == prompts.parse_plan(prompts.plan_text(scene), 4,
                                                                   world)
  assert set(prompts.parse_plan(text, 4, world)) == set(scene.objects)
  # Two colours or two shapes are no object.
  assert prompts.parse_plan("blue orange at 0 0", 4, world) is None
  assert prompts.parse_plan("heart circle at 0 0", 4, world) is None
  with pytest.raises(ValueError, match="plan words must be one of"):
    prompts.plan_text(scene, words="shape_first")


def test_prompt_space_and_splits():
  v1, v2 = shapeworld.WORLDS[1], shapeworld.WORLDS[2]
  sizes = {f: len(prompts.all_prompts(f, v1)) for f in prompts.ALL_FAMILIES}
  assert sizes == dict(single_object=3, two_object=6, counting=9, colors=18, position=24,
                       color_attr=180, howto=30)
  sizes = {f: len(prompts.all_prompts(f, v2)) for f in prompts.ALL_FAMILIES}
  assert sizes == dict(single_object=8, two_object=56, counting=32, colors=64, position=224,
                       color_attr=3136, howto=40)
  heldout_total = 0
  for world in (v1, v2):
    for family in prompts.ALL_FAMILIES:
      train = {p.text for p in prompts.split_prompts(family, "train", 0.2, world)}
      heldout = {p.text for p in prompts.split_prompts(family, "heldout", 0.2, world)}
      assert train | heldout == {p.text for p in prompts.all_prompts(family, world)}
      rng = np.random.default_rng(0)
      assert all(prompts.sample_prompt(rng, family, "heldout", world=world).text in heldout
                 for _ in range(20))
      if family == "single_object" and world is v2:
        assert train == heldout  # every shape evaluated, as a check of seen shapes
        continue
      assert heldout and not train & heldout  # every family evaluated, no prompt shared
      if world is v2:
        assert len(heldout) >= 8
        heldout_total += len(heldout) * (family in prompts.FAMILIES)
  assert heldout_total + 8 >= 150


def test_registered_geneval_rewards():
  rng = np.random.default_rng(3)
  batch = [prompts.sample_prompt(rng, f) for f in prompts.FAMILIES]
  scenes = [prompts.target_scene(rng, p) for p in batch]
  images = np.stack([shapeworld.render(s) for s in scenes])[:, None]  # (B, R=1, S, S, C)
  images[0, 0] = shapeworld.render(shapeworld.Scene(()))  # an empty image fails its prompt
  meta = [{"prompt": p.to_json()} for p in batch]
  total, scores = score_batch({"geneval_strict": 1.0, "geneval_partial": 0.5}, images,
                              [""] * len(batch), meta)
  np.testing.assert_array_equal(scores["geneval_strict"], [0] + [1] * (len(batch) - 1))
  assert scores["geneval_partial"][0] == 0.0 and (scores["geneval_partial"][1:] == 1).all()
  np.testing.assert_allclose(total, scores["geneval_strict"] + 0.5 * scores["geneval_partial"])
  assert {"geneval_strict", "geneval_partial", "object_precision"} <= set(REWARDS)
  _, scores = score_batch({"object_precision": 1.0}, images, [""] * len(batch), meta)
  np.testing.assert_array_equal(scores["object_precision"], [0] + [1] * (len(batch) - 1))


def test_how_to_prompts_are_recipes_built_in_order():
  robot = next(p for p in prompts.all_prompts(prompts.HOWTO) if p.text == "how to draw a red robot")
  assert robot.include == (Clause("square", 1, "red"), Clause("circle", 1, "red", ("above", 0)),
                           Clause("triangle", 2, "red", ("below", 0)))
  scene = prompts.target_scene(np.random.default_rng(1), robot)
  steps = prompts.interleaved_rounds(scene, robot)
  assert [plan.split()[1] for plan, _ in steps] == ["square", "circle", "triangle", "triangle"]
  assert [len(s.objects) for _, s in steps] == [1, 2, 3, 4]
  assert set(steps[-1][1].objects) == set(scene.objects)
  # Every other family builds its scene in raster order.
  pair = Prompt("a photo of a circle above a square", "position",
                (Clause("square"), Clause("circle", position=("above", 0))))
  objects = [O("square", "red", 3, 0), O("circle", "red", 0, 0)]
  assert prompts.story_order(objects, pair) == objects[::-1]
