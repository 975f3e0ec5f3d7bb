"""ShapeWorld: scenes render and the detector recovers them, clean and degraded, in both worlds."""
import numpy as np
import pytest

from unigrpo_jax.data import shapeworld
from unigrpo_jax.data.detector import as_drawn, colors_and_coverage, detect

V1, V2 = shapeworld.WORLDS[1], shapeworld.WORLDS[2]


def _as_set(scene):
  return sorted((o.color, o.shape, o.row, o.col) for o in scene.objects)


def _detected(image, world):
  # An object's block starts in the cell of its bounding box's top-left pixel.
  cell = world.size // world.grid
  return sorted(((d.color, d.shape, d.box[1] // cell, d.box[0] // cell)
                 for d in detect(image, world=world)), key=str)


def _degrade_v1(image, rng):
  """Noise, a vertical blur and a per-channel colour jitter: what a flow model's output has."""
  noisy = image + rng.normal(0.0, 0.15, image.shape)
  blurred = 0.7 * noisy + 0.1 * (np.roll(noisy, 1, 0) + np.roll(noisy, -1, 0)
                                 + np.roll(noisy, 1, 1))
  return np.clip(blurred * (1 + rng.uniform(-0.1, 0.1, (1, 1, 3))), -1, 1)


@pytest.mark.parametrize("world, degradation", [
    (V1, None), (V1, "v1"),
    (V2, None), (V2, dict(blur=0.6)), (V2, dict(blur=1.0)), (V2, dict(noise=0.15)),
    (V2, dict(dark=0.6)), (V2, dict(blur=0.8, noise=0.08, dark=0.8))])
def test_detector_recovers_random_scenes(world, degradation):
  rng = np.random.default_rng(1)
  for _ in range(300):
    scene = shapeworld.sample_scene(rng, num_objects=int(rng.integers(1, 6)), large_prob=0.3,
                                    world=world)
    image = shapeworld.render(scene)
    if degradation == "v1":
      image = _degrade_v1(image, rng)
    elif degradation:
      image = shapeworld.degrade(image, rng, **degradation)
    assert _detected(image, world) == _as_set(scene), scene


@pytest.mark.parametrize("world", [V1, V2])
def test_specks_are_ignored_and_background_is_empty(world):
  image = shapeworld.render(shapeworld.Scene((), world.size, world.grid, world))
  assert detect(image, world=world) == []
  _, coverage = colors_and_coverage((image + 1) * 127.5, world)
  assert (coverage == 0).all()
  speck = image.copy()
  speck[3:5, 3:5] = np.array(world.palette[0][1]) / 127.5 - 1  # 4 pixels
  assert detect(speck, world=world) == []


def test_detection_geometry():
  scene = shapeworld.Scene((shapeworld.Object("square", "blue", 1, 2),
                            shapeworld.Object("circle", "red", 2, 0, extent=2)), 32, 4, V1)
  found = {d.color: d for d in detect(shapeworld.render(scene), world=V1)}
  assert found["blue"].box == (17, 9, 22, 14) and found["blue"].area == 36
  assert found["blue"].cell(32, 4) == (1, 2)
  np.testing.assert_allclose(found["red"].centroid, (7.5, 23.5))
  assert found["red"].cell(32, 4) == (2, 0)


@pytest.mark.parametrize("world", [V1, V2])
def test_as_drawn_is_what_the_detector_sees_on_a_clean_render(world):
  rng = np.random.default_rng(3)
  cell = world.size // world.grid
  for _ in range(40):
    scene = shapeworld.sample_scene(rng, num_objects=3, large_prob=0.3, world=world)
    seen = {(d.color, d.shape, d.box) for d in detect(shapeworld.render(scene), world=world)}
    drawn = {(d.color, d.shape, d.box) for d in (as_drawn(o, cell) for o in scene.objects)}
    assert seen == drawn


def test_bad_scenes_fail_clearly():
  with pytest.raises(ValueError, match="overlaps"):
    shapeworld.Scene((shapeworld.Object("square", "red", 0, 0, 2),
                      shapeworld.Object("circle", "blue", 1, 1)))
  with pytest.raises(ValueError, match="does not fit"):
    shapeworld.Scene((shapeworld.Object("square", "red", 3, 3, 2),))
  with pytest.raises(ValueError, match="unknown shape or colour"):
    shapeworld.Scene((shapeworld.Object("hexagon", "red", 0, 0),))
  with pytest.raises(ValueError, match="version 1 has shapes"):
    shapeworld.Scene((shapeworld.Object("star", "red", 0, 0),), 32, 4, V1)
  with pytest.raises(ValueError, match=r"shapeworld\.size \(30\) is not divisible"):
    shapeworld.Scene((), size=30, grid=4)
  with pytest.raises(ValueError, match="unknown ShapeWorld version 3"):
    shapeworld.get_world(3)


def test_worlds_are_what_they_promise():
  assert len(V2.shapes) >= 8 and len(V2.colors) >= 8 and max(V2.counts) == 5
  # Every pair of shapes is told apart: a template matches its own shape best by a margin.
  cell = V2.size // V2.grid
  for shape in V2.shapes:
    scene = shapeworld.Scene((shapeworld.Object(shape, "red", 1, 1),), world=V2)
    (found,) = detect(shapeworld.render(scene), world=V2)
    assert found.shape == shape and found.match == 1.0
    assert (found.box, found.area) == (as_drawn(scene.objects[0], cell).box,
                                       as_drawn(scene.objects[0], cell).area)
