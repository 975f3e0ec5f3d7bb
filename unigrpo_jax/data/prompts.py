"""ShapeWorld prompts in GenEval's six families and the how-to family, each with scorer
metadata and a target scene.

A prompt is GenEval-simple ("a photo of a red circle"); its metadata says what a correct image
must contain, as GenEval's `include` / `exclude` clauses with shapes as classes. Sampling also
returns a *target scene* that satisfies the prompt — the image and plan of supervised data —
and the plan text, which names every object's colour, shape, size and cell: the detail the
prompt leaves open and the model decides in text before it draws.
The how-to family ("how to draw a red house") asks for a figure of `FIGURES`: a recipe of
parts, each placed relative to an earlier one, all in the prompt's colour; its GenEval clauses
are the parts in recipe order, and a story builds the figure in that order (`story_order`).
The prompt space is finite and enumerated from a `shapeworld.World`; train and held-out
prompts are split per family by a hash of the prompt text, so they share none — each held-out
prompt is a composition (colour–shape, shape–shape, shape–count, relation) no training prompt
of its family asks for. In world 2 single_object has one prompt per shape and nothing to hold
out: every shape is in both splits, a check of seen shapes.
"""
import dataclasses
import functools
import hashlib
import math
import re

import numpy as np

from unigrpo_jax.data import geneval, shapeworld
from unigrpo_jax.data.detector import as_drawn

FAMILIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
HOWTO = "howto"
ALL_FAMILIES = FAMILIES + (HOWTO,)
# Figure → its recipe, one part a step: (shape, count, (relation, earlier part) or None). Shapes
# differ between parts, because GenEval matches a clause to the objects of its shape.
FIGURES = {
    "house": (("square", 1, None), ("triangle", 1, ("above", 0))),
    "flag": (("square", 1, None), ("triangle", 1, ("right of", 0))),
    "tower": (("square", 1, None), ("circle", 1, ("above", 0)), ("triangle", 1, ("above", 1))),
    "cart": (("square", 1, None), ("circle", 2, ("below", 0))),
    "robot": (("square", 1, None), ("circle", 1, ("above", 0)), ("triangle", 2, ("below", 0))),
}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
# Prefixed to a prompt, asks for the interleaved form: one object per round, each round's
# image the scene so far.
INTERLEAVED_MARKER = "stepwise"


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
  """A prompt, its GenEval clauses and the version of the world it belongs to (the detector
  looks for that world's shapes and colours)."""
  text: str
  family: str
  include: tuple[Clause, ...]
  exclude: tuple[Clause, ...] = ()
  world: int = shapeworld.LATEST.version

  def to_json(self) -> dict:
    return dict(text=self.text, family=self.family,
                include=[dataclasses.asdict(c) for c in self.include],
                exclude=[dataclasses.asdict(c) for c in self.exclude], world=self.world)

  @classmethod
  def from_json(cls, d: dict) -> "Prompt":
    """The prompt of `to_json`'s dict; one without a world (written before there were two) is
    of world 1."""
    def clauses(items):
      return tuple(Clause(c["shape"], c["count"], c.get("color"),
                          tuple(c["position"]) if c.get("position") else None) for c in items)
    return cls(d["text"], d["family"], clauses(d["include"]), clauses(d.get("exclude", ())),
               d.get("world", 1))

  @property
  def domain(self) -> shapeworld.World:
    """The World (shapes, colours, canvas) the prompt is drawn in."""
    return shapeworld.get_world(self.world)


def an(word: str) -> str:
  """The article before `word`."""
  return "an" if word[0] in "aeiou" else "a"


def _hash(text: str) -> int:
  return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


@functools.lru_cache(maxsize=None)
def all_prompts(family: str, world: shapeworld.World = shapeworld.LATEST) -> tuple[Prompt, ...]:
  """Every prompt of a family in `world` (the space is finite: 3 to 3,136 prompts a family)."""
  shapes, colors, v = world.shapes, world.colors, world.version
  pairs = [(a, b) for a in shapes for b in shapes if a != b]
  if family == "single_object":
    return tuple(Prompt(f"a photo of {an(s)} {s}", family, (Clause(s),), world=v)
                 for s in shapes)
  if family == "two_object":
    return tuple(Prompt(f"a photo of {an(a)} {a} and {an(b)} {b}", family,
                        (Clause(a), Clause(b)), world=v)
                 for a, b in pairs)
  if family == "counting":
    return tuple(Prompt(f"a photo of {NUMBERS[n]} {shapeworld.plural(s)}", family,
                        (Clause(s, n),), (Clause(s, n + 1),), world=v)
                 for s in shapes for n in world.counts)
  if family == "colors":
    return tuple(Prompt(f"a photo of {an(c)} {c} {s}", family, (Clause(s, color=c),), world=v)
                 for s in shapes for c in colors)
  if family == "position":
    return tuple(Prompt(f"a photo of {an(a)} {a} {rel} {an(b)} {b}", family,
                        (Clause(b), Clause(a, position=(rel, 0))), world=v)
                 for a, b in pairs for rel in geneval.RELATIONS)
  if family == "color_attr":
    return tuple(Prompt(f"a photo of {an(c1)} {c1} {a} and {an(c2)} {c2} {b}", family,
                        (Clause(a, color=c1), Clause(b, color=c2)), world=v)
                 for a, b in pairs for c1 in colors for c2 in colors if c1 != c2)
  if family == HOWTO:
    return tuple(Prompt(f"how to draw {an(c)} {c} {name}", family,
                        tuple(Clause(shape, n, c, rel) for shape, n, rel in recipe), world=v)
                 for name, recipe in FIGURES.items() for c in colors)
  raise ValueError(f"unknown prompt family {family!r}; known: {ALL_FAMILIES}")


@functools.lru_cache(maxsize=None)
def split_prompts(family: str, split: str, heldout_fraction: float,
                  world: shapeworld.World = shapeworld.LATEST) -> tuple[Prompt, ...]:
  """The family's prompts in `split` ("train" or "heldout"). Per family, the
  max(world.min_heldout, ceil(fraction × n)) prompts with the smallest text hash are held
  out: stable across runs, and the splits share no prompt — except single_object in a world
  that holds out no shape (`world.every_shape_heldout`), where both splits have every
  prompt."""
  if split not in ("train", "heldout"):
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
  if family == "single_object" and world.every_shape_heldout:
    return all_prompts(family, world)
  ranked = sorted(all_prompts(family, world), key=lambda p: _hash(p.text))
  cut = max(world.min_heldout, math.ceil(heldout_fraction * len(ranked)))
  chosen = set(p.text for p in (ranked[:cut] if split == "heldout" else ranked[cut:]))
  return tuple(p for p in all_prompts(family, world) if p.text in chosen)


def sample_prompt(rng: np.random.Generator, family: str, split: str | None = None,
                  heldout_fraction: float = 0.2,
                  world: shapeworld.World = shapeworld.LATEST) -> Prompt:
  """A uniformly random prompt of `family` in `world` (within `split` if given)."""
  pool = (all_prompts(family, world) if split is None
          else split_prompts(family, split, heldout_fraction, world))
  return pool[rng.integers(len(pool))]


def target_scene(rng: np.random.Generator, prompt: Prompt, *, size: int | None = None,
                 grid: int | None = None, large_prob: float = 0.0,
                 max_tries: int = 1000) -> shapeworld.Scene:
  """A scene of the prompt's world that satisfies it (on the world's canvas unless `size` /
  `grid` are given): random placements until the objects, as drawn (`detector.as_drawn`),
  pass the strict GenEval check (a test checks that the real detector agrees on rendered
  targets, so supervised targets score exactly 1)."""
  world = prompt.domain
  size, grid = size or world.size, grid or world.grid
  for _ in range(max_tries):
    objects, taken = [], set()
    for clause in prompt.include:
      for _ in range(clause.count):
        extent = 2 if rng.random() < large_prob else 1
        free = shapeworld.free_blocks(taken, grid, extent)
        if not free:
          break
        row, col = free[rng.integers(len(free))]
        color = clause.color or str(rng.choice(world.colors))
        obj = shapeworld.Object(clause.shape, color, int(row), int(col), extent)
        objects.append(obj)
        taken |= obj.cells()
    if geneval.strict([as_drawn(o, size // grid) for o in objects], prompt):
      return shapeworld.Scene(tuple(objects), size, grid, world)
  raise ValueError(f"no scene satisfying {prompt.text!r} found in {max_tries} tries")


# The orders a plan may list its objects in: the canvas's raster order, or the order of the
# prompt's clauses (raster within a clause), which makes writing the plan a copy of the prompt's
# bindings (colour to shape) in the order the prompt states them.
PLAN_ORDERS = ("raster", "prompt")
# The order of an object's two words: colour first ("blue heart"), or shape first ("heart
# blue"), which writes each colour after the shape it is bound to.
PLAN_WORDS = ("color_shape", "shape_color")
# The data knob of each choice → its values; the first is the default, the form plans had
# before there was a choice.
PLAN_FORMS = {"plan_order": PLAN_ORDERS, "plan_words": PLAN_WORDS}


def raster_order(objects) -> list[shapeworld.Object]:
  """`objects` by their top-left cell, row by row."""
  return sorted(objects, key=lambda o: (o.row, o.col))


def clause_order(objects, prompt: Prompt) -> list[shapeworld.Object]:
  """`objects` by the prompt clause each answers (the first whose shape, and colour if it names
  one, it has), raster order within a clause; objects that answer no clause come last."""
  def clause(o):
    return next((i for i, c in enumerate(prompt.include)
                 if c.shape == o.shape and c.color in (None, o.color)), len(prompt.include))
  return sorted(objects, key=lambda o: (clause(o), o.row, o.col))


def plan_text(scene: shapeworld.Scene, prompt: Prompt | None = None, order: str = "raster",
              words: str = "color_shape") -> str:
  """The plan the model writes before drawing: every object, in `order` (PLAN_ORDERS; "prompt"
  needs the `prompt` the scene answers), each object's words in `words` order (PLAN_WORDS)."""
  if order not in PLAN_ORDERS:
    raise ValueError(f"plan order must be one of {PLAN_ORDERS}, got {order!r}")
  if words not in PLAN_WORDS:
    raise ValueError(f"plan words must be one of {PLAN_WORDS}, got {words!r}")
  if order == "prompt" and prompt is None:
    raise ValueError("a plan in prompt order needs the prompt")
  objects = (clause_order(scene.objects, prompt) if order == "prompt"
             else raster_order(scene.objects))
  parts = []
  for o in objects:
    size = "large " if o.extent > 1 else ""
    pair = f"{o.color} {o.shape}" if words == "color_shape" else f"{o.shape} {o.color}"
    parts.append(f"{size}{pair} at {o.row} {o.col}")
  return " ; ".join(parts)


def story_order(objects, prompt: Prompt) -> list[shapeworld.Object]:
  """The order a story adds `objects` in: a how-to prompt's recipe order (`clause_order`),
  every other prompt's raster order."""
  if prompt.family == HOWTO:
    return clause_order(objects, prompt)
  return raster_order(objects)


def interleaved_rounds(scene: shapeworld.Scene, prompt: Prompt):
  """The scene built up one object per round in `story_order`: [(plan of that object, the
  scene so far)] — the interleaved form of a text-to-image example."""
  objects = story_order(scene.objects, prompt)
  return [(plan_text(shapeworld.Scene((o,), scene.size, scene.grid, scene.world)),
           shapeworld.Scene(tuple(objects[:k + 1]), scene.size, scene.grid, scene.world))
          for k, o in enumerate(objects)]


def caption(scene: shapeworld.Scene) -> str:
  """What an image shows, for understanding data (image → text): every object, raster order."""
  parts = []
  for o in raster_order(scene.objects):
    size = "large " if o.extent > 1 else ""
    parts.append(f"{an(size or o.color)} {size}{o.color} {o.shape} at {o.row} {o.col}")
  return "there is " + " and ".join(parts) if parts else "there is nothing"


_PLAN_OBJECT = re.compile(r"^(large )?(\w+) (\w+) at (\d+) (\d+)$")


def parse_plan(text: str, grid: int = 4,
               world: shapeworld.World = shapeworld.LATEST) -> list[shapeworld.Object] | None:
  """Objects of a plan written as `plan_text` writes them (either `PLAN_WORDS` order), or None
  if any part is malformed (a word not of `world`, cell off the grid, overlapping objects)."""
  objects = []
  for part in text.split(";"):
    m = _PLAN_OBJECT.match(part.strip())
    if not m:
      return None
    large, color, shape, row, col = m.groups()
    if color in world.shapes and shape in world.colors:  # shape first
      color, shape = shape, color
    obj = shapeworld.Object(shape, color, int(row), int(col), 2 if large else 1)
    objects.append(obj)
  try:
    shapeworld.Scene(tuple(objects), size=grid, grid=grid, world=world)  # cells, overlaps
  except ValueError:
    return None
  return objects
