"""Pictures for people: trajectories' images as PNG grids."""
import numpy as np
from PIL import Image


def to_uint8(images):
  """Images in the model's [−1, 1] range (any float array, … × S × S × C) → uint8 pixels."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


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
