"""ShapeWorld: scenes render and the detector recovers them, clean and degraded."""
import numpy as np
import pytest

from unigrpo_jax.data import shapeworld
from unigrpo_jax.data.detector import classify_pixels, detect


def _as_set(scene):
  return sorted((o.color, o.shape, o.row, o.col) for o in scene.objects)


def _detected(image, cell=8):
  # An object's block starts in the cell of its bounding box's top-left pixel.
  return sorted((d.color, d.shape, d.box[1] // cell, d.box[0] // cell) for d in detect(image))


def _degrade(image, rng):
  """Noise, a vertical blur and a per-channel colour jitter: what a flow model's output has."""
  noisy = image + rng.normal(0.0, 0.15, image.shape)
  blurred = 0.7 * noisy + 0.1 * (np.roll(noisy, 1, 0) + np.roll(noisy, -1, 0) + np.roll(noisy, 1, 1))
  return np.clip(blurred * (1 + rng.uniform(-0.1, 0.1, (1, 1, 3))), -1, 1)


@pytest.mark.parametrize("degraded", [False, True])
def test_detector_recovers_random_scenes(degraded):
  rng = np.random.default_rng(1 + degraded)
  for _ in range(2000):
    scene = shapeworld.sample_scene(rng, num_objects=int(rng.integers(1, 6)), large_prob=0.3)
    image = shapeworld.render(scene)
    if degraded:
      image = _degrade(image, rng)
    assert _detected(image) == _as_set(scene), scene


def test_specks_are_ignored_and_background_is_empty():
  image = shapeworld.render(shapeworld.Scene(()))
  assert detect(image) == []
  assert (classify_pixels(image) == -1).all()
  speck = image.copy()
  speck[3:5, 3:5] = np.array(shapeworld.PALETTE["red"]) / 127.5 - 1  # 4 pixels
  assert detect(speck) == []


def test_detection_geometry():
  scene = shapeworld.Scene((shapeworld.Object("square", "blue", 1, 2),
                            shapeworld.Object("circle", "red", 2, 0, extent=2)))
  found = {d.color: d for d in detect(shapeworld.render(scene))}
  assert found["blue"].box == (17, 9, 22, 14) and found["blue"].area == 36
  assert found["blue"].cell(32, 4) == (1, 2)
  np.testing.assert_allclose(found["red"].centroid, (7.5, 23.5))
  assert found["red"].cell(32, 4) == (2, 0)


def test_bad_scenes_fail_clearly():
  with pytest.raises(ValueError, match="overlaps"):
    shapeworld.Scene((shapeworld.Object("square", "red", 0, 0, 2),
                      shapeworld.Object("circle", "blue", 1, 1)))
  with pytest.raises(ValueError, match="does not fit"):
    shapeworld.Scene((shapeworld.Object("square", "red", 3, 3, 2),))
  with pytest.raises(ValueError, match="unknown shape or colour"):
    shapeworld.Scene((shapeworld.Object("hexagon", "red", 0, 0),))
  with pytest.raises(ValueError, match=r"shapeworld\.size \(30\) is not divisible"):
    shapeworld.Scene((), size=30, grid=4)
