"""GenEval's scoring rules (Ghosh et al. 2023, `evaluation/evaluate_images.py`) over any detector:
which detections count, and whether an image satisfies a prompt's GenEval metadata.

The detector and the colour classifier are plugged in — GenEval's own are a Mask2Former
(mmdetection) and CLIP ViT-L/14 on each object's masked crop — so the rules run, and are
tested, without them; a module that builds the real ones registers the reward
(`make_reward`) and serves it with `python -m unigrpo_jax.rewards.serve --reward=geneval
--reward_modules=that.module` (docs/rewards.md).

  detector(image) → {class name: (N, 5) array of [x0, y0, x1, y1, score]} (the masks, when the
    colour classifier wants them, are its own business);
  classify_colors(image, kept detections of one class, class name) → one colour name each.

Rules, as GenEval's: a detection counts above `threshold` (0.3), or `counting_threshold` (0.9)
for prompts tagged "counting"; per class, the `max_objects` (16) most confident, after
non-maximum suppression at `nms_threshold` (1.0: none). An `include` clause {class, count,
color?, position?} needs `count` objects of the class (its most confident ones); with `color`,
that many of them classified that colour; with `position` = (relation, index of an earlier
clause), each of them in that relation to every object matched by that clause (centres
offset beyond `position_threshold` (0.1) × the summed box sizes, direction within 60° of the
axis). An `exclude` clause {class, count} fails when `count` or more are detected. The image is
correct when every clause holds; the reward is 1.0 or 0.0.
"""
import dataclasses
from typing import Callable

import numpy as np

from unigrpo_jax.data import geneval

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")


@dataclasses.dataclass(frozen=True)
class Rules:
  """GenEval's constants."""
  threshold: float = 0.3
  counting_threshold: float = 0.9
  max_objects: int = 16
  nms_threshold: float = 1.0
  position_threshold: float = 0.1


def iou(a, b) -> float:
  """Intersection over union of two [x0, y0, x1, y1, …] boxes."""
  x0, y0 = max(a[0], b[0]), max(a[1], b[1])
  x1, y1 = min(a[2], b[2]), min(a[3], b[3])
  inter = max(x1 - x0, 0) * max(y1 - y0, 0)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


def kept(boxes: dict, tag: str, rules: Rules = Rules()) -> dict[str, list[np.ndarray]]:
  """The detections that count, per class, most confident first.

  Args:
    boxes: class → (N, 5) [x0, y0, x1, y1, score].
    tag: the prompt's GenEval tag ("counting" raises the threshold).
  Returns:
    class → list of (5,) boxes; classes with none are left out.
  """
  threshold = rules.counting_threshold if tag == "counting" else rules.threshold
  out = {}
  for name, found in boxes.items():
    found = np.asarray(found, np.float64).reshape(-1, 5)
    order = np.argsort(found[:, 4], kind="stable")[::-1]
    order = [int(i) for i in order if found[i, 4] > threshold][:rules.max_objects]
    chosen = []
    while order:
      best = order.pop(0)
      chosen.append(found[best])
      if rules.nms_threshold < 1:
        order = [i for i in order if iou(found[best], found[i]) < rules.nms_threshold]
    if chosen:
      out[name] = chosen
  return out


def relative_position(a, b, rules: Rules = Rules()) -> set[str]:
  """Where box `a` lies relative to box `b` (boxes [x0, y0, x1, y1, …]): a subset of {left
  of, right of, above, below}, image coordinates (y down) — GenEval's rule, which mini-GenEval
  uses too."""
  return geneval.relative_position(np.asarray(a)[:4], np.asarray(b)[:4],
                                   rules.position_threshold)


def evaluate(image, objects: dict, metadata: dict, classify_colors: Callable,
             rules: Rules = Rules()) -> tuple[bool, str]:
  """Whether `image` with detections `objects` (`kept`) satisfies GenEval `metadata`
  ({"include": [...], "exclude": [...]}); returns (correct, the reasons it is not)."""
  correct, reasons, matched_groups = True, [], []
  for req in metadata.get("include", []):
    name, count = req["class"], req["count"]
    found, matched = objects.get(name, [])[:count], True
    if len(found) < count:
      correct = matched = False
      reasons.append(f"expected {name}>={count}, found {len(found)}")
    else:
      if req.get("color"):
        colors = list(classify_colors(image, found, name))
        if colors.count(req["color"]) < count:
          correct = matched = False
          reasons.append(f"expected {req['color']} {name}>={count}, found "
                         f"{colors.count(req['color'])} {req['color']}; and "
                         + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors))
      if req.get("position") and matched:
        relation, target = req["position"]
        if matched_groups[target] is None:
          correct = matched = False
          reasons.append(f"no target for {name} to be {relation}")
        else:
          for obj in found:
            for other in matched_groups[target]:
              seen = relative_position(obj, other, rules)
              if relation not in seen:
                correct = matched = False
                reasons.append(f"expected {name} {relation} target, found "
                               f"{' and '.join(sorted(seen))} target")
                break
            if not matched:
              break
    matched_groups.append(found if matched else None)
  for req in metadata.get("exclude", []):
    name = req["class"]
    if len(objects.get(name, [])) >= req["count"]:
      correct = False
      reasons.append(f"expected {name}<{req['count']}, found {len(objects[name])}")
  return correct, "\n".join(reasons)


def make_reward(detector: Callable, classify_colors: Callable, rules: Rules = Rules()):
  """GenEval as a reward: fn(images, texts, metadata) → (B,) 1.0 / 0.0. Each row's last image
  ((B, R, H, W, C) in [−1, 1], given to the detector as uint8 RGB) is judged against
  `metadata[i]["geneval"]`, GenEval's own metadata of the prompt (its `tag`, `include`,
  `exclude`)."""
  def geneval(images, texts, metadata):
    del texts
    pixels = np.round((np.clip(np.asarray(images)[:, -1], -1, 1) + 1) * 127.5).astype(np.uint8)
    scores = []
    for image, meta in zip(pixels, metadata):
      spec = meta["geneval"]
      objects = kept(detector(image), spec.get("tag", ""), rules)
      scores.append(float(evaluate(image, objects, spec, classify_colors, rules)[0]))
    return np.asarray(scores, np.float32)
  return geneval
