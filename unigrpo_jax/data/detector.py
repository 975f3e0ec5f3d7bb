"""The exact, rule-based ShapeWorld detector: objects by colour and connected component.

It scores *generated* images, which are never clean, so every step tolerates noise:
  1. a pixel is foreground when it is bright and saturated enough (the background is a dark
     grey), and takes the nearest palette colour;
  2. 4-connected components of one colour are objects; components smaller than `min_area`
     pixels are specks and are dropped;
  3. the shape comes from how the component's width grows from top to bottom (a triangle's
     does), how it fills its bounding box, and whether it fills the box's corners (a square
     does, a circle does not);
  4. each object reports its centroid, bounding box (x0, y0, x1, y1, inclusive) and the grid
     cell of its centroid.
"""
import dataclasses

import numpy as np

from unigrpo_jax.data.shapeworld import BACKGROUND, PALETTE

_COLORS = tuple(PALETTE)
_RGB = np.array([PALETTE[c] for c in _COLORS], np.float32)


@dataclasses.dataclass(frozen=True)
class Detection:
  color: str
  shape: str
  centroid: tuple[float, float]  # (x, y) in pixels
  box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
  area: int

  def cell(self, size: int, grid: int) -> tuple[int, int]:
    """(row, col) of the grid cell holding the centroid."""
    cell = size / grid
    return (min(int(self.centroid[1] // cell), grid - 1),
            min(int(self.centroid[0] // cell), grid - 1))


def classify_pixels(image, *, min_brightness: float = 90.0, min_saturation: float = 70.0):
  """(S, S, 3) image in [−1, 1] → (S, S) int labels: palette index, or −1 for background."""
  rgb = (np.asarray(image, np.float32) + 1.0) * 127.5
  bright = rgb.max(axis=-1)
  saturation = bright - rgb.min(axis=-1)
  nearest = np.argmin(((rgb[..., None, :] - _RGB) ** 2).sum(-1), axis=-1)
  background = ((rgb - np.array(BACKGROUND, np.float32)) ** 2).sum(-1)
  palette = ((rgb - _RGB[nearest]) ** 2).sum(-1)
  foreground = (bright >= min_brightness) & (saturation >= min_saturation) & (palette < background)
  return np.where(foreground, nearest, -1)


def _components(mask: np.ndarray):
  """4-connected components of a boolean mask, as lists of (y, x) pixel arrays, in raster
  order of their first pixel. (Python lists: indexing them is several times faster than
  indexing NumPy scalars, and the images are small.)"""
  h, w = mask.shape
  todo = mask.tolist()
  out = []
  for y0, x0 in zip(*np.nonzero(mask)):
    y0, x0 = int(y0), int(x0)
    if not todo[y0][x0]:
      continue
    stack, pixels = [(y0, x0)], []
    todo[y0][x0] = False
    while stack:
      y, x = stack.pop()
      pixels.append((y, x))
      for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
        if 0 <= ny < h and 0 <= nx < w and todo[ny][nx]:
          todo[ny][nx] = False
          stack.append((ny, nx))
    out.append(np.array(pixels))
  return out


def classify_shape(pixels: np.ndarray) -> str:
  """Shape of one component from its (N, 2) (y, x) pixels.

  A triangle's rows widen from top to bottom; a square fills its bounding box's corners, a
  circle leaves them empty (more robust to a few missing pixels than the fill ratio alone).
  """
  ys, xs = pixels[:, 0] - pixels[:, 0].min(), pixels[:, 1] - pixels[:, 1].min()
  height, width = ys.max() + 1, xs.max() + 1
  mask = np.zeros((height, width), bool)
  mask[ys, xs] = True
  fill = mask.mean()
  rows = mask.sum(axis=1)
  third = max(height // 3, 1)
  if rows[-third:].mean() > 1.8 * rows[:third].mean() and fill < 0.8:
    return "triangle"
  corners = mask[[0, 0, -1, -1], [0, -1, 0, -1]].mean()
  return "square" if corners >= 0.5 and fill > 0.8 else "circle"


def detect(image, *, min_area: int = 6, **pixel_kwargs) -> list[Detection]:
  """All objects of an (S, S, 3) image in [−1, 1], in raster order of their first pixel."""
  labels = classify_pixels(image, **pixel_kwargs)
  found = []
  for index, color in enumerate(_COLORS):
    for pixels in _components(labels == index):
      if len(pixels) < min_area:
        continue
      ys, xs = pixels[:, 0], pixels[:, 1]
      found.append((int(ys.min()), int(xs.min()), Detection(
          color=color, shape=classify_shape(pixels),
          centroid=(float(xs.mean()), float(ys.mean())),
          box=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
          area=len(pixels))))
  return [d for _, _, d in sorted(found, key=lambda t: (t[0], t[1]))]
