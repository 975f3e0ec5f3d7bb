"""ShapeWorld scenes: coloured shapes on a grid-aligned canvas, sampled and rendered exactly.

A canvas of `size`×`size` RGB pixels is cut into a `grid`×`grid` board of cells; an object is a
shape (circle, square, triangle) of one palette colour that covers a square block of `extent`
cells (1 = small, 2 = large) at cell (row, col), drawn with a one-pixel margin. Aligning
objects to cells lets an image token cover an object's cell (docs/design.md §7; free
placement proved unlearnable at this model's scale). Images are float32 in [−1, 1].
"""
import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle")
# Saturated, well separated colours (RGB 0..255); the background is a dark grey.
PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (190, 60, 230),
    "cyan": (40, 210, 220),
}
BACKGROUND = (30, 30, 30)


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
  size: int = 32
  grid: int = 4

  def __post_init__(self):
    if self.size % self.grid:
      raise ValueError(f"shapeworld.size ({self.size}) is not divisible by shapeworld.grid "
                       f"({self.grid})")
    taken = set()
    for obj in self.objects:
      if obj.shape not in SHAPES or obj.color not in PALETTE:
        raise ValueError(f"unknown shape or colour in {obj}; shapes {SHAPES}, colours "
                         f"{tuple(PALETTE)}")
      if not (0 <= obj.row and obj.row + obj.extent <= self.grid and 0 <= obj.col
              and obj.col + obj.extent <= self.grid):
        raise ValueError(f"{obj} does not fit a {self.grid}×{self.grid} grid")
      if taken & obj.cells():
        raise ValueError(f"{obj} overlaps another object")
      taken |= obj.cells()


def sample_scene(rng: np.random.Generator, *, num_objects: int, size: int = 32, grid: int = 4,
                 large_prob: float = 0.0, shapes=SHAPES, colors=tuple(PALETTE)) -> Scene:
  """A scene of `num_objects` random objects in distinct cells (large ones where they fit)."""
  if num_objects > grid * grid:
    raise ValueError(f"{num_objects} objects do not fit a {grid}×{grid} grid")
  objects, taken = [], set()
  for i in range(num_objects):
    # A large object only where the objects still to come keep a free cell each.
    room = grid * grid - len(taken) - (num_objects - i - 1)
    extent = 2 if room >= 4 and rng.random() < large_prob else 1
    free = [(r, c) for r in range(grid - extent + 1) for c in range(grid - extent + 1)
            if not taken & {(r + i, c + j) for i in range(extent) for j in range(extent)}]
    if not free:
      extent = 1
      free = [(r, c) for r in range(grid) for c in range(grid) if (r, c) not in taken]
    row, col = free[rng.integers(len(free))]
    obj = Object(str(rng.choice(shapes)), str(rng.choice(colors)), int(row), int(col), extent)
    objects.append(obj)
    taken |= obj.cells()
  return Scene(tuple(objects), size, grid)


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
    block[mask] = PALETTE[obj.color]
  return pixels / 127.5 - 1.0
