"""Sample grids show each prompt and plan in full, wrapped at word boundaries."""
import numpy as np
from PIL import Image

from unigrpo_jax import visualize


def test_wrap_breaks_at_spaces_and_keeps_every_word():
  text = "a photo of a red square above a blue circle and two green triangles left of it"
  lines = visualize.wrap(text, 20)
  assert all(len(line) <= 20 for line in lines) and len(lines) > 2
  assert " ".join(lines).split() == text.split()
  assert visualize.wrap("", 10) == [""]


def test_grids_grow_to_hold_long_texts(tmp_path):
  images = np.zeros((2, 8, 8, 3), np.float32)
  short, long = tmp_path / "short.png", tmp_path / "long.png"
  visualize.save_annotated_grid(images, ["a red square"] * 2, ["<plan> red square </plan>"] * 2,
                                str(short))
  plan = "<plan> " + " ".join(["red square at the top left"] * 6) + " </plan>"
  visualize.save_annotated_grid(images, ["a red square"] * 2, [plan] * 2, str(long))
  assert Image.open(long).size[1] > Image.open(short).size[1] + 3 * visualize.LINE_H
  strips = tmp_path / "strips.png"
  visualize.save_story_strips(np.zeros((2, 3, 8, 8, 3), np.float32),
                              ["stepwise a red square and a blue circle"] * 2,
                              ["<plan> red square </plan> <img>\n<plan> blue circle </plan>", ""],
                              str(strips))
  assert Image.open(strips).size[0] == 170 + 3 * 150
