"""Pictures for people: trajectories' images as PNG grids, alone or with the text beside them
(a prompt and its plan; a story's rounds)."""
import os
import textwrap

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(images):
  """Images in the model's [−1, 1] range (any float array, … × S × S × C) → uint8 pixels."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _upscaled(pixels, scale: int):
  """(S, S, C) uint8 → a PIL image `scale` times larger (nearest neighbour)."""
  big = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
  return Image.fromarray(big.squeeze(-1) if big.shape[-1] == 1 else big)


def _save(canvas: Image.Image, path: str):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)


def save_grid(images, path: str, scale: int = 4, pad: int = 2):
  """Writes images (rows, cols, S, S, C) in [−1, 1] as one PNG grid, each image upscaled."""
  pixels = to_uint8(images)
  rows, cols, size, _, channels = pixels.shape
  cell = size * scale + pad
  canvas = np.full((rows * cell + pad, cols * cell + pad, channels), 255, np.uint8)
  for r in range(rows):
    for c in range(cols):
      big = pixels[r, c].repeat(scale, axis=0).repeat(scale, axis=1)
      canvas[pad + r * cell:pad + r * cell + size * scale,
             pad + c * cell:pad + c * cell + size * scale] = big
  Image.fromarray(canvas.squeeze(-1) if channels == 1 else canvas).save(path)


LINE_H = 12  # pixels a line of PIL's default font takes


def wrap(text: str, width: int) -> list[str]:
  """`text` in lines of at most `width` characters, broken at spaces (a longer word is split);
  nothing is cut off."""
  return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _plan(text: str) -> str:
  """A plan's words without its markers."""
  return text.replace("<plan>", "").split("</plan>")[0].strip()


def save_annotated_grid(images, prompts, plans, path: str, scale: int = 4, columns: int = 4,
                        width: int = 34):
  """images (N, S, S, C) in [−1, 1], each over its prompt and plan, in full (wrapped at
  `width` characters), `columns` a row."""
  pixels = to_uint8(images)
  n, size = len(pixels), pixels.shape[1] * scale
  cell_w = max(size, 200)
  texts = [(wrap(prompts[i], width), wrap(_plan(plans[i]), width)) for i in range(n)]
  text_h = LINE_H * max(len(p) + len(q) for p, q in texts) + 4
  rows = -(-n // columns)
  canvas = Image.new("RGB", (columns * cell_w, rows * (size + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  for i, (prompt, plan) in enumerate(texts):
    x, y = (i % columns) * cell_w, (i // columns) * (size + text_h)
    canvas.paste(_upscaled(pixels[i], scale), (x, y))
    for j, (line, colour) in enumerate([(t, "black") for t in prompt] +
                                       [(t, "navy") for t in plan]):
      draw.text((x + 2, y + size + 2 + LINE_H * j), line, fill=colour)
  _save(canvas, path)


def save_story_strips(images, prompts, texts, path: str, scale: int = 3):
  """images (N, R, S, S, C) in [−1, 1]: one row per story — its prompt, then each round's
  image over that round's sentence, in full (`texts[i]` has one line per round; rounds the
  story did not draw stay blank)."""
  pixels = to_uint8(images)
  n, rounds, size = pixels.shape[0], pixels.shape[1], pixels.shape[2] * scale
  cell_w, label_w = max(size, 150), 170
  stories = []
  for i in range(n):
    lines = texts[i].split("\n")[:rounds] if texts[i] else []
    steps = [wrap(line.replace("<plan>", "").replace("</plan>", "").replace("<img>", "")
                  .strip(), 26) for line in lines]
    stories.append((wrap(prompts[i], 28), lines, steps))
  text_h = LINE_H * max([len(w) for _, _, steps in stories for w in steps] + [1]) + 4
  row_h = [max(size + text_h, LINE_H * len(label) + 4) for label, _, _ in stories]
  canvas = Image.new("RGB", (label_w + rounds * cell_w, sum(row_h)), "white")
  draw = ImageDraw.Draw(canvas)
  y = 0
  for i, (label, lines, steps) in enumerate(stories):
    for j, line in enumerate(label):
      draw.text((2, y + 2 + LINE_H * j), line, fill="black")
    for r, (line, step) in enumerate(zip(lines, steps)):
      x = label_w + r * cell_w
      if "[EOS]" not in line:
        canvas.paste(_upscaled(pixels[i, r], scale), (x, y))
      for j, part in enumerate(step):
        draw.text((x + 2, y + size + 2 + LINE_H * j), part, fill="navy")
    y += row_h[i]
  _save(canvas, path)
