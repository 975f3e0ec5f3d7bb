"""The exact, rule-based ShapeWorld detector: objects by connected component, shapes by template.

It scores *generated* images, which are never clean, and GRPO optimises against it, so each
step is made hard to fool and tolerant of blur, noise and darkening:
  1. each pixel's hue names its nearest palette colour, and its *coverage* is its saturation
     over that colour's (a blend of a colour with the grey background keeps the hue and scales
     the saturation; darkening does the same);
  2. pixels of coverage ≥ `COARSE_COVERAGE` form 4-connected regions, each thresholded again at
     half its own peak coverage, so a blurred or darkened object keeps its half-maximum
     outline; on cells of 12 pixels or more a 3×3 median filter first removes pixel noise, and
     a region that narrows to a neck of two pixels or less is cut there, so the noisy, blurred
     gap between two neighbours does not join them;
  3. every remaining connected component is one object, whatever its colours; components under
     half the area of the world's smallest one-cell shape are specks and are dropped;
  4. an object's colour is the palette colour of at least `min_share` of its pixels, or None
     (a two-tone object, or a colour off the palette, has no colour);
  5. its shape is the template (each shape of the world, one or two cells wide, rendered
     exactly and seen through steps 1–2 sharp and under `BLURS`) with the highest
     intersection-over-union, bounding boxes centred and shifted by up to a pixel; below
     `min_match` the object has no shape (a dot, half a shape or a blob meets no clause);
  6. each object reports its centroid, bounding box (x0, y0, x1, y1, inclusive), area and how
     well its shape matched.
Detections are cached by image content: the rewards of one batch detect each image once.
`detect_all` detects a batch's images in `THREADS` threads (NumPy and SciPy release the GIL for
part of each image's work).
"""
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import threading

import numpy as np
from scipy import ndimage

from unigrpo_jax.data import shapeworld
from unigrpo_jax.data.shapeworld import LATEST, World

COARSE_COVERAGE = 0.3  # well above the background's 0 and the noise on it
BLURS = (0.0, 0.05, 0.09)  # Gaussian σ as a share of the cell: the blurs templates are seen under
MAX_HUE_GAP = 20.0  # degrees: a pixel further in hue from every palette colour has no colour
CACHE_SIZE = 4096
# A batch's images are detected in this many threads: the rest of each image's work holds the
# GIL, so more threads than two add little (docs/benchmarks.md).
THREADS = 2


@dataclasses.dataclass(frozen=True)
class Detection:
  color: str | None  # None: no palette colour covers min_share of the object
  shape: str | None  # None: no template matches at min_match
  centroid: tuple[float, float]  # (x, y) in pixels
  box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
  area: int
  match: float = 1.0  # IoU with the best template

  def cell(self, size: int, grid: int) -> tuple[int, int]:
    """(row, col) of the grid cell holding the centroid."""
    cell = size / grid
    return (min(int(self.centroid[1] // cell), grid - 1),
            min(int(self.centroid[0] // cell), grid - 1))


def _hue(rgb: np.ndarray) -> np.ndarray:
  """Hue in degrees [0, 360) of (..., 3) RGB values."""
  r, g, b = np.moveaxis(np.asarray(rgb, np.float32), -1, 0)
  return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0


def _saturation(rgb: np.ndarray) -> np.ndarray:
  return rgb.max(axis=-1) - rgb.min(axis=-1)


@functools.lru_cache(maxsize=None)
def _palette(world: World) -> tuple[np.ndarray, np.ndarray]:
  """The palette's hues (degrees) and saturations (0..255)."""
  rgb = np.array([c for _, c in world.palette], np.float32)
  return _hue(rgb), _saturation(rgb)


def colors_and_coverage(rgb: np.ndarray, world: World) -> tuple[np.ndarray, np.ndarray]:
  """(S, S, 3) RGB in 0..255 → (S, S) index of the palette colour nearest in hue (−1 where
  none is within MAX_HUE_GAP) and (S, S) coverage (step 1 of the module docstring)."""
  hues, full = _palette(world)
  gap = np.abs(_hue(rgb)[..., None] - hues)
  gap = np.minimum(gap, 360.0 - gap)
  nearest = gap.argmin(-1)
  near = np.take_along_axis(gap, nearest[..., None], -1)[..., 0] <= MAX_HUE_GAP
  return np.where(near, nearest, -1), _saturation(rgb) / full[nearest]


def _denoise(coverage: np.ndarray, cell: int) -> np.ndarray:
  """A 3×3 median filter on cells of 12 pixels or more (on smaller ones it would round a
  6-pixel square's corners into a circle's)."""
  return ndimage.median_filter(coverage, size=3, mode="nearest") if cell >= 12 else coverage


def objects_mask(coverage: np.ndarray, cell: int) -> np.ndarray:
  """(S, S) coverage → (S, S) int labels of its objects, 0 = background (step 2)."""
  coverage = _denoise(coverage, cell)
  coarse, count = ndimage.label(coverage >= COARSE_COVERAGE)
  peaks = np.concatenate([np.zeros(1, coverage.dtype), _peaks(coverage, coarse, count)])
  fine = (coarse > 0) & (coverage >= 0.5 * peaks[coarse])
  return _split_necks(fine) if cell >= 12 else ndimage.label(fine)[0]


def _peaks(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
  """(count,) the 90th percentile of `values` over each of labels 1..count, exactly as
  `np.percentile`'s linear method computes it, from one sort (a noisy image has hundreds of
  components, and a call per component dominated its detection)."""
  inside = labels > 0
  label, value = labels[inside], values[inside]
  value = value[np.lexsort((value, label))]
  sizes = np.bincount(label, minlength=count + 1)[1:]
  starts = np.cumsum(sizes) - sizes
  virtual = (sizes - 1) * 0.9
  floor = np.floor(virtual)
  gamma = virtual - floor
  below = starts + floor.astype(np.intp)
  lower, upper = value[below], value[np.minimum(below + 1, starts + sizes - 1)]
  diff = upper - lower
  return np.where(gamma >= 0.5, upper - diff * (1.0 - gamma).astype(value.dtype),
                  lower + diff * gamma.astype(value.dtype))


def _split_necks(mask: np.ndarray) -> np.ndarray:
  """Labels of `mask`'s components, each cut where it narrows to two pixels or less: the cores
  that survive a one-pixel erosion seed the objects, and every pixel joins the nearest core
  (a component without a core of its own stays whole)."""
  components, _ = ndimage.label(mask)
  cores, count = ndimage.label(ndimage.binary_erosion(mask))
  if not count:
    return components
  _, nearest = ndimage.distance_transform_edt(cores == 0, return_indices=True)
  pairs = np.where(mask, components * (count + 1) + cores[tuple(nearest)], 0)
  _, labels = np.unique(pairs, return_inverse=True)
  return labels.reshape(mask.shape)


class _Templates:
  """Every (shape, extent) template of a world at one cell size, seen through steps 1–2 sharp
  and under each of BLURS, cropped to its box, centred in a C×C canvas (C = 2·cell + 4) and
  shifted by −1, 0, 1 pixels in x and y, flattened into one (C·C, N) 0/1 bank: a column per
  template, so that an object's overlap with each is a sum of the rows of its pixels."""

  def __init__(self, world: World, cell: int):
    self.size = 2 * cell + 4
    names, bank = [], []
    for shape in world.shapes:
      for extent in (1, 2):
        drawn = np.pad(shapeworld.shape_mask(shape, cell * extent).astype(np.float32), 3)
        for blur in BLURS:
          seen = ndimage.gaussian_filter(drawn, blur * cell) if blur else drawn
          mask = _crop(_denoise(seen, cell) >= 0.5)
          for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
              names.append(shape)
              bank.append(_centre(mask, self.size, dy, dx).reshape(-1))
    self.names = tuple(names)
    self.bank = np.stack(bank, axis=1).astype(np.float32)
    self.areas = self.bank.sum(0)
    self.min_area = min(int(shapeworld.shape_mask(s, cell).sum()) for s in world.shapes) / 2

  def match(self, mask: np.ndarray) -> tuple[str | None, float]:
    """The best template for one object's (h, w) bool mask cropped to its box: (shape, IoU);
    an object larger than a two-cell block matches nothing."""
    if max(mask.shape) > self.size - 2:
      return None, 0.0
    pixels = np.flatnonzero(_centre(mask, self.size))
    # A sum of rows, not a BLAS product: scoring runs beside the model's threads, and a
    # threaded matrix-vector product then waits on busy cores (~100× slower).
    inter = self.bank[pixels].sum(0)
    iou = inter / (self.areas + pixels.size - inter)
    best = int(iou.argmax())
    return self.names[best], float(iou[best])


_templates = functools.lru_cache(maxsize=None)(_Templates)


def _crop(mask: np.ndarray) -> np.ndarray:
  ys, xs = np.nonzero(mask)
  return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _centre(mask: np.ndarray, size: int, dy: int = 0, dx: int = 0) -> np.ndarray:
  out = np.zeros((size, size), bool)
  y0, x0 = (size - mask.shape[0]) // 2 + dy, (size - mask.shape[1]) // 2 + dx
  out[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
  return out


def as_drawn(obj: shapeworld.Object, cell: int) -> Detection:
  """The detection of `obj` drawn exactly on cells of `cell` pixels: its shape's own box,
  centroid and area as the detector sees them (what a plan promises, and how
  `prompts.target_scene` checks a scene without rendering it)."""
  (mean_x, mean_y), (left, top, right, bottom), area = _seen_extent(obj.shape, cell, obj.extent)
  y0, x0 = obj.row * cell, obj.col * cell
  return Detection(obj.color, obj.shape, (mean_x + x0, mean_y + y0),
                   (x0 + left, y0 + top, x0 + right, y0 + bottom), area)


@functools.lru_cache(maxsize=None)
def _seen_extent(shape: str, cell: int, extent: int):
  """The centroid, box and area of a shape's exact mask as step 2 sees it (the median filter
  trims a pixel off its tips); target scenes ask for them thousands of times."""
  seen = _denoise(shapeworld.shape_mask(shape, cell * extent).astype(np.float32), cell) >= 0.5
  ys, xs = np.nonzero(seen)
  return ((float(xs.mean()), float(ys.mean())),
          (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), len(ys))


_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


def detect(image, *, world: World = LATEST, grid: int | None = None, min_match: float = 0.75,
           min_share: float = 0.75) -> list[Detection]:
  """All objects of an (S, S, 3) image in [−1, 1] drawn on `grid` cells a side (default: the
  world's), in raster order of their boxes' top-left corners.

  Args:
    min_match: the IoU with a template below which an object has no shape.
    min_share: the share of an object's pixels one colour must have to name its colour.
  """
  return detect_all([image], worlds=[world], grids=[grid], min_match=min_match,
                    min_share=min_share)[0]


def detect_all(images, *, worlds, grids, min_match: float = 0.75,
               min_share: float = 0.75) -> list[list[Detection]]:
  """`detect` of each image: images[i] (S, S, 3) drawn in worlds[i] on grids[i] cells a side
  (None: the world's). The images not in the cache are detected in `THREADS` threads; the
  detections are the same as one at a time."""
  if not len(worlds) == len(grids) == len(images):
    raise ValueError(f"detect_all: {len(images)} images, {len(worlds)} worlds and "
                     f"{len(grids)} grids; give one world and one grid an image")
  images = [np.ascontiguousarray(image, np.float32) for image in images]
  keys = [(hashlib.blake2b(image.tobytes(), digest_size=16).digest(), image.shape, world, grid,
           min_match, min_share) for image, world, grid in zip(images, worlds, grids)]
  found = {}
  with _cache_lock:
    for key in keys:
      if key in _cache:
        _cache.move_to_end(key)
        found[key] = _cache[key]
  todo = {key: (image, world, grid) for key, image, world, grid
          in zip(keys, images, worlds, grids) if key not in found}

  def run(item):
    key, (image, world, grid) = item
    cell = image.shape[0] // (grid or world.grid)
    return key, tuple(_detect(image, world, cell, min_match, min_share))

  if len(todo) > 1:
    with concurrent.futures.ThreadPoolExecutor(min(THREADS, len(todo))) as pool:
      done = list(pool.map(run, todo.items()))
  else:
    done = list(map(run, todo.items()))
  with _cache_lock:
    for key, detections in done:
      _cache[key] = found[key] = detections
    while len(_cache) > CACHE_SIZE:
      _cache.popitem(last=False)
  return [list(found[key]) for key in keys]


def _detect(image, world: World, cell: int, min_match: float, min_share: float):
  templates = _templates(world, cell)
  colors, coverage = colors_and_coverage((image + 1.0) * 127.5, world)
  labels = objects_mask(coverage, cell)
  found = []
  for index, region in enumerate(ndimage.find_objects(labels), start=1):
    if region is None:
      continue
    mask = labels[region] == index
    area = int(mask.sum())
    if area < templates.min_area:
      continue
    ys, xs = np.nonzero(mask)
    counts = np.bincount(colors[region][mask] + 1, minlength=len(world.palette) + 1)[1:]
    color = world.colors[counts.argmax()] if counts.max() >= min_share * area else None
    shape, match = templates.match(_crop(mask))
    y0, x0 = region[0].start, region[1].start
    found.append(Detection(
        color=color, shape=shape if match >= min_match else None,
        centroid=(float(xs.mean() + x0), float(ys.mean() + y0)),
        box=(int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max()), int(y0 + ys.max())),
        area=area, match=match))
  return sorted(found, key=lambda d: (d.box[1], d.box[0]))
