"""ShapeWorld scenes: coloured shapes on a grid-aligned canvas, sampled and rendered exactly.

A canvas of `size`×`size` RGB pixels is cut into a `grid`×`grid` board of cells; an object is a
shape of one palette colour that covers a square block of `extent` cells (1 = small, 2 =
large) at cell (row, col), drawn with a one-pixel margin. Aligning objects to cells lets an
image token cover an object's cell (docs/design.md §7; free placement proved unlearnable at
this model's scale). Images are float32 in [−1, 1].

A `World` is one version of the domain: which shapes, colours and counts exist and the canvas
they are drawn on. Version 1 (3 shapes, 6 colours, 8-pixel cells) is kept so that results
measured on it can be reproduced; version 2 (8 shapes, 8 colours, counts to five, 16-pixel
cells) is the one whose shapes stay distinguishable under the blur and noise a generator adds.
"""
import dataclasses

import numpy as np
from scipy import ndimage

BACKGROUND = (30, 30, 30)  # a dark grey: every palette colour is bright and saturated


@dataclasses.dataclass(frozen=True)
class World:
  """One version of the domain.

  Attributes:
    version: the data version (prompts and TFDS examples record it).
    shapes: the shape names (classes of the detector and of GenEval's clauses).
    palette: (colour name, (R, G, B) in 0..255) pairs.
    counts: the counts the counting family asks for.
    size, grid: the canvas (pixels per side) and cells per side its shapes are drawn for.
    min_heldout: held-out prompts per family at least (`prompts.split_prompts`).
    every_shape_heldout: single_object holds out no shape: all its prompts are in both
      splits, so every shape is evaluated.
    heldout_listed: the held-out split lists every held-out prompt once, families in turn
      (else it draws prompts at random, repeats and all).
  """
  version: int
  shapes: tuple[str, ...]
  palette: tuple[tuple[str, tuple[int, int, int]], ...]
  counts: tuple[int, ...]
  size: int
  grid: int
  min_heldout: int
  every_shape_heldout: bool
  heldout_listed: bool

  @property
  def colors(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.palette)

  def rgb(self, color: str) -> tuple[int, int, int]:
    return dict(self.palette)[color]


WORLDS = {
    1: World(1, ("circle", "square", "triangle"),
             (("red", (230, 40, 40)), ("green", (40, 200, 60)), ("blue", (50, 90, 240)),
              ("yellow", (240, 220, 40)), ("purple", (190, 60, 230)),
              ("cyan", (40, 210, 220))),
             counts=(2, 3, 4), size=32, grid=4, min_heldout=1,
             every_shape_heldout=False, heldout_listed=False),
    # Hues about 30–60° apart, all saturated: the detector names a colour by its hue, which
    # blur into the grey background and darkening leave unchanged.
    2: World(2, ("circle", "square", "triangle", "diamond", "ring", "heart", "star",
                 "cross"),
             (("red", (235, 45, 45)), ("orange", (245, 135, 25)), ("yellow", (230, 230, 40)),
              ("green", (45, 205, 65)), ("cyan", (40, 215, 215)), ("blue", (55, 95, 245)),
              ("purple", (165, 70, 235)), ("pink", (240, 70, 175))),
             counts=(2, 3, 4, 5), size=64, grid=4, min_heldout=8,
             every_shape_heldout=True, heldout_listed=True),
}
LATEST = WORLDS[max(WORLDS)]


def plural(shape: str) -> str:
  return shape + ("es" if shape.endswith("s") else "s")


def get_world(version: int) -> World:
  """The World of a data version; an unknown version is a clear error."""
  if version not in WORLDS:
    raise ValueError(f"unknown ShapeWorld version {version!r}; known: {tuple(WORLDS)}")
  return WORLDS[version]


@dataclasses.dataclass(frozen=True)
class Object:
  shape: str
  color: str
  row: int  # top cell
  col: int  # left cell
  extent: int = 1  # cells per side

  def cells(self):
    return {(self.row + i, self.col + j) for i in range(self.extent) for j in range(self.extent)}


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[Object, ...]
  size: int = LATEST.size
  grid: int = LATEST.grid
  world: World = LATEST

  def __post_init__(self):
    if self.size % self.grid:
      raise ValueError(f"shapeworld.size ({self.size}) is not divisible by shapeworld.grid "
                       f"({self.grid})")
    taken = set()
    for obj in self.objects:
      if obj.shape not in self.world.shapes or obj.color not in self.world.colors:
        raise ValueError(f"unknown shape or colour in {obj}; ShapeWorld version "
                         f"{self.world.version} has shapes {self.world.shapes}, colours "
                         f"{self.world.colors}")
      if not (0 <= obj.row and obj.row + obj.extent <= self.grid and 0 <= obj.col
              and obj.col + obj.extent <= self.grid):
        raise ValueError(f"{obj} does not fit a {self.grid}×{self.grid} grid")
      if taken & obj.cells():
        raise ValueError(f"{obj} overlaps another object")
      taken |= obj.cells()


def free_blocks(taken: set, grid: int, extent: int) -> list[tuple[int, int]]:
  """Top-left cells (row, col) where an `extent`×`extent` block misses every `taken` cell."""
  span, block = range(grid - extent + 1), range(extent)
  return [(r, c) for r in span for c in span
          if all((r + i, c + j) not in taken for i in block for j in block)]


def sample_scene(rng: np.random.Generator, *, num_objects: int, world: World = LATEST,
                 size: int | None = None, grid: int | None = None,
                 large_prob: float = 0.0) -> Scene:
  """A scene of `num_objects` random objects of `world` in distinct cells (large ones where
  they fit); the canvas is the world's unless `size` / `grid` are given."""
  size, grid = size or world.size, grid or world.grid
  if num_objects > grid * grid:
    raise ValueError(f"{num_objects} objects do not fit a {grid}×{grid} grid")
  objects, taken = [], set()
  for i in range(num_objects):
    # A large object only where the objects still to come keep a free cell each.
    room = grid * grid - len(taken) - (num_objects - i - 1)
    extent = 2 if room >= 4 and rng.random() < large_prob else 1
    free = free_blocks(taken, grid, extent)
    if not free:
      extent = 1
      free = free_blocks(taken, grid, 1)
    row, col = free[rng.integers(len(free))]
    obj = Object(str(rng.choice(world.shapes)), str(rng.choice(world.colors)), int(row),
                 int(col), extent)
    objects.append(obj)
    taken |= obj.cells()
  return Scene(tuple(objects), size, grid, world)


def _inside_polygon(x, y, corners) -> np.ndarray:
  """Even-odd rule: which points (x, y) lie inside the polygon through `corners`."""
  inside = np.zeros(np.shape(x), bool)
  for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
    crosses = (y0 > y) != (y1 > y)
    at = x0 + (y - y0) * (x1 - x0) / ((y1 - y0) if y1 != y0 else 1.0)
    inside ^= crosses & (x < at)
  return inside


def _star_corners(points: int = 5, inner: float = 0.5):
  """The star's corners, scaled and shifted so that its bounding box spans [−1, 1] in y."""
  angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
  radii = np.where(np.arange(2 * points) % 2, inner, 1.0)
  xs, ys = radii * np.cos(angles), radii * np.sin(angles)
  scale = 2.0 / (ys.max() - ys.min())
  ys = (ys - (ys.max() + ys.min()) / 2) * scale
  return list(zip(xs * scale, ys))


def shape_mask(shape: str, side: int) -> np.ndarray:
  """(side, side) bool mask of a shape filling a block of `side` pixels with a 1-pixel margin."""
  centre = (side - 1) / 2.0
  y, x = np.mgrid[0:side, 0:side].astype(np.float64)
  half = side / 2.0 - 1.0  # inside the margin
  if shape == "square":
    return (np.abs(x - centre) <= half - 0.5) & (np.abs(y - centre) <= half - 0.5)
  if shape == "circle":
    return (x - centre) ** 2 + (y - centre) ** 2 <= half**2
  if shape == "triangle":  # apex up, base on the bottom row inside the margin
    top, bottom = 1.0, side - 2.0
    rel = (y - top + 0.5) / (bottom - top + 1.0)
    return (y >= top) & (y <= bottom) & (np.abs(x - centre) <= rel * half + 0.25)
  # The shapes added with version 2, in coordinates u, v ∈ [−1, 1] across the margin's inside.
  u, v = (x - centre) / half, (y - centre) / half
  r2 = u * u + v * v
  if shape == "diamond":
    return np.abs(u) + np.abs(v) <= 1.0 + 0.5 / half
  if shape == "ring":
    return (r2 <= 1.0) & (r2 >= 0.5**2)
  if shape == "heart":  # two lobes on top, the point down
    lobes = ((u + 0.45) ** 2 + (v + 0.4) ** 2 <= 0.52**2) | (
        (u - 0.45) ** 2 + (v + 0.4) ** 2 <= 0.52**2)
    return lobes | ((v >= -0.4) & (v <= 1.0) & (np.abs(u) <= 0.97 * (1.0 - v) / 1.4))
  if shape == "star":  # five points, one up
    return _inside_polygon(u, v, _star_corners())
  if shape == "cross":  # a plus sign, arms a third of the width
    arm = 1.0 / 3.0 + 0.5 / half
    return ((np.abs(u) <= arm) | (np.abs(v) <= arm)) & (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
  raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene) -> np.ndarray:
  """(size, size, 3) float32 image in [−1, 1]."""
  cell = scene.size // scene.grid
  pixels = np.empty((scene.size, scene.size, 3), np.float32)
  pixels[:] = BACKGROUND
  for obj in scene.objects:
    side = cell * obj.extent
    mask = shape_mask(obj.shape, side)
    block = pixels[obj.row * cell:obj.row * cell + side, obj.col * cell:obj.col * cell + side]
    block[mask] = scene.world.rgb(obj.color)
  return pixels / 127.5 - 1.0


def degrade(image, rng: np.random.Generator, *, blur: float = 0.0, noise: float = 0.0,
            dark: float = 1.0) -> np.ndarray:
  """An image as a generator might draw it: a Gaussian blur of `blur` pixels, the colours
  pulled towards the background by `dark`, and Gaussian pixel noise of std `noise` (in
  [−1, 1] units). (S, S, 3) in [−1, 1] → the same, float64."""
  rgb = (np.asarray(image, np.float64) + 1.0) * 127.5
  if blur:
    rgb = ndimage.gaussian_filter(rgb, (blur, blur, 0))
  background = np.array(BACKGROUND, np.float64)
  rgb = background + (rgb - background) * dark + rng.normal(0.0, noise * 127.5, rgb.shape)
  return np.clip(rgb / 127.5 - 1.0, -1.0, 1.0)
