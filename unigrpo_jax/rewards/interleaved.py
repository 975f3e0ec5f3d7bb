"""Hybrid rewards of Interleaved GRPO: a story builds the prompt's scene in K steps (K = the
objects the prompt asks for), each step a sentence `<plan> object </plan> <img>` followed by the
image of the scene so far; after step K the story ends (EOS) unless the rounds ran out.

`texts[i]` is the decoded trajectory with one line per round (`evaluation.decode_texts`);
`images` (B, R, S, S, C); `metadata[i]` the prompt's JSON and the `grid`. Every reward comes
twice: `interleaved_<name>` → (B,) for the whole trajectory, `interleaved_<name>_steps` →
(B, R) per round (0 on rounds the trajectory does not reach):

  * `structure` — structural fidelity: a step is 1 when it is a well-formed image block (one
    parseable object, tags balanced, nothing nested) and it is one of the K, or when it is the
    closing EOS right after step K; the whole story is 1 only when it is exactly K such blocks,
    then EOS (or the last round);
  * `relevance` — textual relevance: step j's credit is how much its object advances the
    prompt's scene, mini-GenEval's partial credit of the objects planned up to j minus that up
    to j − 1 (the steps sum to the whole story's credit);
  * `alignment` — visual–text alignment: image j against everything planned up to j, F1 over
    (colour, shape, cell) of the detected objects; the whole story is the mean over its images;
  * `alignment_partial` — a denser training signal for the same thing: per planned object the
    best detection's share of matching colour, shape and cell (`partial_match`);
  * `geneval` (whole only) — the final scene: mini-GenEval strict on the last drawn image;
  * `score` (whole only) — the mean of the four: the headline of the interleaved evaluation.
"""
import dataclasses
import functools

import numpy as np

from unigrpo_jax.data import geneval
from unigrpo_jax.data.detector import as_drawn
from unigrpo_jax.data.prompts import HOWTO, Prompt
from unigrpo_jax.rewards.geneval import detections
from unigrpo_jax.rewards.registry import register
from unigrpo_jax.rewards.text import cell_f1, plan_of

EOS = "[EOS]"
# Families whose prompts ask for 2–4 objects: the stories have 2–4 steps (the how-to's follow
# the figure's recipe).
STORY_FAMILIES = ("two_object", "counting", "position", "color_attr", HOWTO)


def target_steps(prompt: Prompt) -> int:
  """K: how many objects (steps) the prompt asks for."""
  return sum(c.count for c in prompt.include)


@dataclasses.dataclass(frozen=True)
class Story:
  """One trajectory cut into rounds. segments[r]: round r's text; objects[r]: the one object
  round r plans (None if malformed); drawn[r]: round r drew an image (its text did not end the
  story)."""
  segments: tuple[str, ...]
  objects: tuple
  drawn: tuple[bool, ...]
  k: int

  @property
  def images(self) -> list[int]:
    return [r for r, d in enumerate(self.drawn) if d]

  def step_structure(self, r: int) -> float:
    if r < self.k:
      return float(self.drawn[r] and self.objects[r] is not None)
    return float(r == self.k and self.segments[r].strip() == EOS)

  def planned(self, upto: int) -> list:
    """The well-formed objects planned in rounds 0..upto, without repeats."""
    seen = []
    for obj in self.objects[:upto + 1]:
      if obj is not None and obj not in seen:
        seen.append(obj)
    return seen


def segment(text: str, meta: dict) -> Story:
  """Cuts a decoded trajectory (one line per round) into its steps."""
  segments = tuple(text.split("\n")) if text else ()
  objects, drawn = [], []
  for seg in segments:
    plan = plan_of(seg, meta)
    objects.append(plan[0] if plan is not None and len(plan) == 1 else None)
    drawn.append(EOS not in seg)
  return Story(segments, tuple(objects), tuple(drawn), target_steps(Prompt.from_json(
      meta["prompt"])))


def _per_round(texts, metadata, rounds: int, fn) -> np.ndarray:
  out = np.zeros((len(texts), rounds), np.float32)
  for i, (text, meta) in enumerate(zip(texts, metadata)):
    story = segment(text, meta)
    for r in range(min(rounds, len(story.segments))):
      out[i, r] = fn(i, story, r)
  return out


def _partial(objects, size: int, meta: dict) -> float:
  return geneval.partial([as_drawn(o, size // meta["grid"]) for o in objects],
                         Prompt.from_json(meta["prompt"]))


@register("interleaved_structure_steps")
def structure_steps(images, texts, metadata):
  return _per_round(texts, metadata, np.shape(images)[1],
                    lambda i, story, r: story.step_structure(r))


@register("interleaved_structure")
def structure(images, texts, metadata):
  rounds = np.shape(images)[1]
  scores = []
  for text, meta in zip(texts, metadata):
    story = segment(text, meta)
    n = len(story.segments)
    ends = n == story.k + 1 or (n == story.k == rounds)
    scores.append(float(ends and all(story.step_structure(r) for r in range(n))))
  return np.array(scores, np.float32)


@register("interleaved_relevance_steps")
def relevance_steps(images, texts, metadata):
  size = np.shape(images)[2]

  def step(i, story, r):
    before = _partial(story.planned(r - 1), size, metadata[i]) if r else 0.0
    return _partial(story.planned(r), size, metadata[i]) - before
  return _per_round(texts, metadata, np.shape(images)[1], step)


@register("interleaved_relevance")
def relevance(images, texts, metadata):
  return relevance_steps(images, texts, metadata).sum(axis=1)


def partial_match(planned, detections, cell: int) -> float:
  """A denser alignment: for each planned object, the best detection's share of matching
  colour, shape and cell; the mean over the plan, scaled by planned / max(planned, detected)
  so that extra objects cost."""
  if not planned:
    return 0.0
  credit = [max((np.mean([d.color == o.color, d.shape == o.shape,
                          (d.box[1] // cell, d.box[0] // cell) == (o.row, o.col)])
                 for d in detections), default=0.0) for o in planned]
  return float(np.mean(credit)) * len(planned) / max(len(planned), len(detections))


def _alignment_steps(images, texts, metadata, match):
  images = np.asarray(images)

  def step(i, story, r):
    if not story.drawn[r]:
      return 0.0
    return match(story.planned(r), detections(images[i, r], metadata[i]),
                 images.shape[2] // metadata[i]["grid"])
  return _per_round(texts, metadata, images.shape[1], step)


def _alignment(images, texts, metadata, match):
  """The whole story's alignment: the mean over the images it drew."""
  per_step = _alignment_steps(images, texts, metadata, match)
  drawn = [segment(t, m).images for t, m in zip(texts, metadata)]
  return np.array([per_step[i, d].mean() if d else 0.0 for i, d in enumerate(drawn)],
                  np.float32)


# interleaved_alignment[_steps] (strict F1) and interleaved_alignment_partial[_steps].
for _suffix, _match in (("", cell_f1), ("_partial", partial_match)):
  register(f"interleaved_alignment{_suffix}_steps")(
      functools.partial(_alignment_steps, match=_match))
  register(f"interleaved_alignment{_suffix}")(functools.partial(_alignment, match=_match))


@register("interleaved_geneval")
def final_geneval(images, texts, metadata):
  images = np.asarray(images)
  scores = []
  for i, (text, meta) in enumerate(zip(texts, metadata)):
    drawn = segment(text, meta).images
    scores.append(float(bool(drawn) and geneval.strict(detections(images[i, drawn[-1]], meta),
                                                       Prompt.from_json(meta["prompt"]))))
  return np.array(scores, np.float32)


@register("interleaved_score")
def score(images, texts, metadata):
  return np.mean([structure(images, texts, metadata), relevance(images, texts, metadata),
                  _alignment(images, texts, metadata, cell_f1),
                  final_geneval(images, texts, metadata)], axis=0)
