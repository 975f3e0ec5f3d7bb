"""Pictures for people: trajectories' images as PNG grids, alone or with the text beside them
(a prompt and its plan; a story's rounds)."""
import os

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


def save_annotated_grid(images, prompts, plans, path: str, scale: int = 4, columns: int = 4):
  """images (N, S, S, C) in [−1, 1], each over its prompt and plan text, `columns` a row."""
  pixels = to_uint8(images)
  n, size = len(pixels), pixels.shape[1] * scale
  cell_w, text_h = max(size, 200), 40
  rows = -(-n // columns)
  canvas = Image.new("RGB", (columns * cell_w, rows * (size + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    x, y = (i % columns) * cell_w, (i // columns) * (size + text_h)
    canvas.paste(_upscaled(pixels[i], scale), (x, y))
    plan = plans[i].replace("<plan>", "").split("</plan>")[0].strip()
    draw.text((x + 2, y + size + 2), prompts[i][:34], fill="black")
    draw.text((x + 2, y + size + 14), plan[:34], fill="navy")
    draw.text((x + 2, y + size + 26), plan[34:68], fill="navy")
  _save(canvas, path)


def save_story_strips(images, prompts, texts, path: str, scale: int = 3):
  """images (N, R, S, S, C) in [−1, 1]: one row per story — its prompt, then each round's
  image over that round's sentence (`texts[i]` has one line per round; rounds the story did
  not draw stay blank)."""
  pixels = to_uint8(images)
  n, rounds, size = pixels.shape[0], pixels.shape[1], pixels.shape[2] * scale
  cell_w, text_h, label_w = max(size, 150), 28, 170
  canvas = Image.new("RGB", (label_w + rounds * cell_w, n * (size + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    y = i * (size + text_h)
    draw.text((2, y + 2), prompts[i][:28], fill="black")
    draw.text((2, y + 14), prompts[i][28:56], fill="black")
    for r, line in enumerate(texts[i].split("\n")[:rounds] if texts[i] else []):
      x = label_w + r * cell_w
      if "[EOS]" not in line:
        canvas.paste(_upscaled(pixels[i, r], scale), (x, y))
      step = line.replace("<plan>", "").replace("</plan>", "").replace("<img>", "").strip()
      draw.text((x + 2, y + size + 2), step[:26], fill="navy")
      draw.text((x + 2, y + size + 14), step[26:52], fill="navy")
  _save(canvas, path)
