"""Mini-GenEval: GenEval's rules applied to ShapeWorld detections (shapes are the classes).

`strict` is GenEval's binary verdict: for every `include` clause, the `count` most confident
objects of its class must exist, have the clause's colour, and stand in its relation to every
object matched by the target clause; no `exclude` clause may be met (that is how counting is
exact). Confidence here is area (larger first). Positions use GenEval's rule: the centre offset
is shrunk by 0.1 × (sum of the boxes' sizes) per axis, normalised by the offset's length, and a
relation holds past 0.5. `partial` gives the per-clause partial credit Flow-GRPO trains on:
1 − |N_req − N_det| / N_req for counts (N_det capped at N_req unless the count is exact), the
fraction of right colours and of right relations; clauses averaged. An image that passes
`strict` scores 1 on `partial`.
`precision` is what GenEval does not check: the share of detected objects the prompt asks for.
GenEval's object and two-object clauses let extra objects pass, so an image crowded with every
shape passes them — a policy trained on the rules alone learns that (README, "The main job").
"""
import numpy as np

RELATIONS = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1


def relative_position(box_a, box_b, threshold: float = POSITION_THRESHOLD) -> set:
  """Relations of box A to box B, boxes (x0, y0, x1, y1) with y down (GenEval's rule)."""
  a, b = np.asarray(box_a, np.float64), np.asarray(box_b, np.float64)
  offset = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2
  dims = (a[2:] - a[:2]) + (b[2:] - b[:2])
  revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
  if np.all(np.abs(revised) < 1e-3):
    return set()
  dx, dy = revised / np.linalg.norm(offset)
  relations = set()
  if dx < -0.5:
    relations.add("left of")
  if dx > 0.5:
    relations.add("right of")
  if dy < -0.5:
    relations.add("above")
  if dy > 0.5:
    relations.add("below")
  return relations


def _by_shape(detections):
  out = {}
  for d in sorted(detections, key=lambda d: -d.area):  # stable: raster order among equals
    out.setdefault(d.shape, []).append(d)
  return out


def _exact_shapes(prompt):
  return {c.shape for c in prompt.exclude}


def strict(detections, prompt) -> bool:
  """GenEval's verdict for one image's detections against a prompt's clauses."""
  objects = _by_shape(detections)
  matched = []
  for clause in prompt.include:
    found = objects.get(clause.shape, [])[:clause.count]
    ok = len(found) >= clause.count
    if ok and clause.color:
      ok = sum(d.color == clause.color for d in found) >= clause.count
    if ok and clause.position:
      relation, target = clause.position
      ok = matched[target] is not None and all(
          relation in relative_position(d.box, t.box) for d in found for t in matched[target])
    matched.append(found if ok else None)
  if any(m is None for m in matched):
    return False
  return all(len(objects.get(c.shape, [])) < c.count for c in prompt.exclude)


def partial(detections, prompt) -> float:
  """Partial credit in [0, 1] (see the module docstring)."""
  objects = _by_shape(detections)
  exact = _exact_shapes(prompt)
  matched, scores = [], []
  for clause in prompt.include:
    all_found = objects.get(clause.shape, [])
    found = all_found[:clause.count]
    n_det = len(all_found) if clause.shape in exact else min(len(all_found), clause.count)
    credits = [max(0.0, 1.0 - abs(clause.count - n_det) / clause.count)]
    if clause.color:
      credits.append(sum(d.color == clause.color for d in found) / clause.count)
    if clause.position:
      relation, target = clause.position
      pairs = [(d, t) for d in found for t in matched[target]]
      credits.append(sum(relation in relative_position(d.box, t.box) for d, t in pairs)
                     / max(len(pairs), 1) if pairs else 0.0)
    matched.append(found)
    scores.append(float(np.mean(credits)))
  return float(np.mean(scores))


def precision(detections, prompt) -> float:
  """Share of the detections that some include clause asks for, in [0, 1] (0 for an empty
  image): each clause claims up to `count` objects of its shape (and colour, if it names one),
  largest first; whatever no clause claims is an extra object."""
  if not detections:
    return 0.0
  left = sorted(detections, key=lambda d: -d.area)
  claimed = 0
  for clause in prompt.include:
    mine = [d for d in left if d.shape == clause.shape
            and (clause.color is None or d.color == clause.color)][:clause.count]
    claimed += len(mine)
    left = [d for d in left if all(d is not m for m in mine)]
  return claimed / len(detections)
