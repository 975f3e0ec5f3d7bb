"""Mini-GenEval: GenEval's rules applied to ShapeWorld detections (shapes are the classes).

`strict` is GenEval's binary verdict: every `include` clause is met by `count` distinct objects
of its class (and colour), each standing in the clause's relation to the objects that met the
target clause; no `exclude` clause may be met (that is how counting is exact). Any objects that
fit will do — a search over the choices, not GenEval's most-confident-first pick, so a
distractor of the same shape drawn first does not fail the image. Objects without a shape or
colour (`detector.detect`) meet no clause. Positions use GenEval's rule: the centre offset is
shrunk by 0.1 × (sum of the boxes' sizes) per axis, normalised by the offset's length, and a
relation holds past 0.5 (a diagonal neighbour is both beside and above or below).
`partial` gives the per-clause partial credit Flow-GRPO trains on: 1 − |N_req − N_det| / N_req
for counts (N_det capped at N_req unless the count is exact), the share of the count met in the
clause's colour and of objects standing right of some object of the target clause; clauses
averaged. An image that passes `strict` scores 1 on `partial`.
`precision` is what GenEval does not check: the share of detected objects the prompt asks for.
GenEval's object and two-object clauses let extra objects pass, so an image crowded with every
shape passes them — a policy trained on the rules alone learns that (README, "The main job").
"""
import itertools

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


def _candidates(detections, clause) -> list:
  """The objects a clause could claim: of its shape (and colour, if it names one), largest
  first (GenEval's confidence order; stable: raster order among equals)."""
  return sorted((d for d in detections if d.shape == clause.shape
                 and (clause.color is None or d.color == clause.color)), key=lambda d: -d.area)


def _holds(relation, objects, targets) -> bool:
  return all(relation in relative_position(d.box, t.box) for d in objects for t in targets)


def strict(detections, prompt) -> bool:
  """GenEval's verdict for one image's detections against a prompt's clauses: some choice of
  distinct objects satisfies every include clause (any objects that fit, in any order), and
  no exclude clause is met."""
  include = prompt.include
  targets = {c.position[1] for c in include if c.position}

  def assign(i, used, chosen):
    if i == len(include):
      return True
    clause = include[i]
    pool = [d for d in _candidates(detections, clause) if id(d) not in used]
    # Which objects a clause takes matters only to a relation or a later clause of its shape.
    matters = bool(clause.position) or i in targets or any(
        c.shape == clause.shape for c in include[i + 1:])
    for group in itertools.combinations(pool, clause.count):
      if clause.position and not _holds(clause.position[0], group, chosen[clause.position[1]]):
        continue
      if assign(i + 1, used | {id(d) for d in group}, chosen + [group]):
        return True
      if not matters:
        return False
    return False

  if not assign(0, frozenset(), []):
    return False
  return all(sum(d.shape == c.shape for d in detections) < c.count for c in prompt.exclude)


def partial(detections, prompt) -> float:
  """Partial credit in [0, 1] (see the module docstring)."""
  exact = {c.shape for c in prompt.exclude}
  claimable, scores = [], []
  for clause in prompt.include:
    shaped = [d for d in detections if d.shape == clause.shape]
    named = _candidates(detections, clause)
    n_det = len(shaped) if clause.shape in exact else min(len(shaped), clause.count)
    credits = [max(0.0, 1.0 - abs(clause.count - n_det) / clause.count)]
    if clause.color:
      credits.append(min(len(named), clause.count) / clause.count)
    if clause.position:
      relation, target = clause.position

      def placed(d, targets=claimable[target], relation=relation):
        return any(relation in relative_position(d.box, t.box) for t in targets)

      credits.append(min(sum(map(placed, named)), clause.count) / clause.count)
    claimable.append(named)
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
