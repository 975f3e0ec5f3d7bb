"""Rewards on the text the model writes: is its plan well formed, does it answer the prompt,
does the image show it. `texts[i]` is the decoded generation with its special tokens, e.g.
"<plan> red circle at 1 2 ; blue square at 3 0 </plan> <img>"; images (B, R, S, S, C);
`metadata[i]` holds the prompt's JSON and the scene `grid` (cells per side).

  * `structure` — the segment is exactly `<plan> PLAN </plan> <img>` with a parseable,
    non-empty plan: 1, else 0;
  * `text_relevance` — the plan, read as a scene, scored against the prompt by mini-GenEval's
    partial credit (the plan states what the prompt asks);
  * `visual_text_alignment` — F1 between the plan's objects and the final image's detected
    objects, matched on (colour, shape, cell).
"""
import re

import numpy as np

from unigrpo_jax.data import geneval
from unigrpo_jax.data.detector import as_drawn
from unigrpo_jax.data.prompts import Prompt, parse_plan
from unigrpo_jax.rewards.geneval import final_detections
from unigrpo_jax.rewards.registry import register

_SEGMENT = re.compile(r"^\s*<plan>(.*)</plan>\s*<img>\s*$")


def plan_of(text: str, meta: dict):
  """The plan's objects, or None when the segment is malformed (read on the sample's grid,
  with the words of its prompt's world)."""
  m = _SEGMENT.match(text)
  if not m or any(tag in m.group(1) for tag in ("<plan>", "</plan>", "<img>", "</img>")):
    return None
  world = Prompt.from_json(meta["prompt"]).domain
  return parse_plan(m.group(1), meta["grid"], world) if m.group(1).strip() else None


@register("structure")
def structure(images, texts, metadata):
  del images
  return np.array([plan_of(t, m) is not None for t, m in zip(texts, metadata)],
                  np.float32)


@register("text_relevance")
def text_relevance(images, texts, metadata):
  size = np.shape(images)[2]
  scores = []
  for text, meta in zip(texts, metadata):
    plan = plan_of(text, meta)
    scores.append(0.0 if plan is None else geneval.partial(
        [as_drawn(o, size // meta["grid"]) for o in plan], Prompt.from_json(meta["prompt"])))
  return np.array(scores, np.float32)


def cell_f1(planned, detections, cell: int) -> float:
  """F1 between planned objects and detections, matched on (colour, shape, top-left cell)."""
  want = {(o.color, o.shape, o.row, o.col) for o in planned}
  got = {(d.color, d.shape, d.box[1] // cell, d.box[0] // cell) for d in detections}
  return 2.0 * len(want & got) / (len(want) + len(got)) if want or got else 0.0


@register("visual_text_alignment")
def visual_text_alignment(images, texts, metadata):
  images = np.asarray(images)
  scores = []
  for text, meta, found in zip(texts, metadata, final_detections(images, metadata)):
    plan = plan_of(text, meta)
    scores.append(cell_f1(plan, found, images.shape[2] // meta["grid"]) if plan else 0.0)
  return np.array(scores, np.float32)
