"""ShapeWorld prompts in GenEval's six families, each with scorer metadata and a target scene.

A prompt is GenEval-simple ("a photo of a red circle"); its metadata says what a correct image
must contain, as GenEval's `include` / `exclude` clauses with shapes as classes. Sampling also
returns a *target scene* that satisfies the prompt — the image and plan of supervised data —
and the plan text, which names every object's colour, shape, size and cell: the detail the
prompt leaves open and the model decides in text before it draws.
Train and held-out prompts are split by a hash of the prompt text, so they share none.
"""
import dataclasses
import hashlib

import numpy as np

from unigrpo_jax.data import geneval, shapeworld
from unigrpo_jax.data.detector import detect

FAMILIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
NUMBERS = {2: "two", 3: "three", 4: "four"}


@dataclasses.dataclass(frozen=True)
class Clause:
  """GenEval clause: at least `count` objects of `shape` (of `color`), each standing in
  `position` = (relation, index of the target clause) to every object of the target."""
  shape: str
  count: int = 1
  color: str | None = None
  position: tuple[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Prompt:
  text: str
  family: str
  include: tuple[Clause, ...]
  exclude: tuple[Clause, ...] = ()

  def to_json(self) -> dict:
    return dict(text=self.text, family=self.family,
                include=[dataclasses.asdict(c) for c in self.include],
                exclude=[dataclasses.asdict(c) for c in self.exclude])

  @classmethod
  def from_json(cls, d: dict) -> "Prompt":
    def clauses(items):
      return tuple(Clause(c["shape"], c["count"], c.get("color"),
                          tuple(c["position"]) if c.get("position") else None) for c in items)
    return cls(d["text"], d["family"], clauses(d["include"]), clauses(d.get("exclude", ())))


def split_of(text: str, heldout_fraction: float) -> str:
  """'heldout' or 'train', decided by a hash of the prompt text (stable across runs)."""
  h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
  return "heldout" if h < heldout_fraction else "train"


def _pick(rng, items, k=1):
  return [str(x) for x in rng.choice(list(items), size=k, replace=False)]


def sample_prompt(rng: np.random.Generator, family: str) -> Prompt:
  """A random prompt of `family`."""
  shapes, colors = shapeworld.SHAPES, tuple(shapeworld.PALETTE)
  if family == "single_object":
    (s,) = _pick(rng, shapes)
    return Prompt(f"a photo of a {s}", family, (Clause(s),))
  if family == "two_object":
    s1, s2 = _pick(rng, shapes, 2)
    return Prompt(f"a photo of a {s1} and a {s2}", family, (Clause(s1), Clause(s2)))
  if family == "counting":
    (s,), n = _pick(rng, shapes), int(rng.integers(2, 5))
    return Prompt(f"a photo of {NUMBERS[n]} {s}s", family, (Clause(s, n),), (Clause(s, n + 1),))
  if family == "colors":
    (s,), (c,) = _pick(rng, shapes), _pick(rng, colors)
    return Prompt(f"a photo of a {c} {s}", family, (Clause(s, color=c),))
  if family == "position":
    s1, s2 = _pick(rng, shapes, 2)
    (rel,) = _pick(rng, geneval.RELATIONS)
    return Prompt(f"a photo of a {s1} {rel} a {s2}", family,
                  (Clause(s2), Clause(s1, position=(rel, 0))))
  if family == "color_attr":
    s1, s2 = _pick(rng, shapes, 2)
    c1, c2 = _pick(rng, colors, 2)
    return Prompt(f"a photo of a {c1} {s1} and a {c2} {s2}", family,
                  (Clause(s1, color=c1), Clause(s2, color=c2)))
  raise ValueError(f"unknown prompt family {family!r}; known: {FAMILIES}")


def target_scene(rng: np.random.Generator, prompt: Prompt, *, size: int = 32, grid: int = 4,
                 large_prob: float = 0.0, max_tries: int = 1000) -> shapeworld.Scene:
  """A scene that satisfies `prompt`: random placements until the rendered scene passes the
  strict GenEval check through the real detector (so supervised targets score exactly 1)."""
  for _ in range(max_tries):
    objects, taken = [], set()
    for clause in prompt.include:
      for _ in range(clause.count):
        extent = 2 if rng.random() < large_prob else 1
        free = [(r, c) for r in range(grid - extent + 1) for c in range(grid - extent + 1)
                if not taken & {(r + i, c + j) for i in range(extent) for j in range(extent)}]
        if not free:
          break
        row, col = free[rng.integers(len(free))]
        color = clause.color or str(rng.choice(tuple(shapeworld.PALETTE)))
        obj = shapeworld.Object(clause.shape, color, int(row), int(col), extent)
        objects.append(obj)
        taken |= obj.cells()
    scene = shapeworld.Scene(tuple(objects), size, grid)
    if geneval.strict(detect(shapeworld.render(scene)), prompt):
      return scene
  raise ValueError(f"no scene satisfying {prompt.text!r} found in {max_tries} tries")


def plan_text(scene: shapeworld.Scene) -> str:
  """The plan the model writes before drawing: every object, in raster order."""
  parts = []
  for o in sorted(scene.objects, key=lambda o: (o.row, o.col)):
    size = "large " if o.extent > 1 else ""
    parts.append(f"{size}{o.color} {o.shape} at {o.row} {o.col}")
  return " ; ".join(parts)


def caption(scene: shapeworld.Scene) -> str:
  """What an image shows, for understanding data (image → text): every object, raster order."""
  parts = []
  for o in sorted(scene.objects, key=lambda o: (o.row, o.col)):
    size = "large " if o.extent > 1 else ""
    parts.append(f"a {size}{o.color} {o.shape} at {o.row} {o.col}")
  return "there is " + " and ".join(parts) if parts else "there is nothing"
