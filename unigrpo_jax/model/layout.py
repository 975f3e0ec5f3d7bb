"""Where each part of a text–image trajectory lives in the fixed-length sequence (and KV cache).

A trajectory of `rounds` rounds is laid out in static slots:

    [prompt: P] ( [text: T] [image: I] [</img>: 1] )×(R−1)  [text: T] [image: I]

Prompts are left-padded into their P slots; a text segment owns all T slots even if its row stops
early (the rest are masked, not removed); each image block owns I slots; between rounds one
`</img>` slot closes the image. Because the layout is static, the rollout, teacher-forced scoring
and training all use the same slot indices and compile once per shape.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SequenceLayout:
  """Static slot arithmetic for `rounds` rounds of (text, image); image_tokens = 0 for text
  alone."""
  prompt_len: int
  text_len: int
  image_tokens: int
  rounds: int

  def __post_init__(self):
    for name in ("prompt_len", "text_len", "rounds"):
      if getattr(self, name) <= 0:
        raise ValueError(f"layout.{name} must be positive, got {getattr(self, name)}")
    if self.image_tokens < 0:
      raise ValueError(f"layout.image_tokens must be >= 0, got {self.image_tokens}")

  @property
  def round_len(self) -> int:
    return self.text_len + self.image_tokens + 1

  @property
  def length(self) -> int:
    """Total number of slots L (the KV-cache length)."""
    return self.prompt_len + self.rounds * self.round_len - 1

  def text_start(self, r: int) -> int:
    return self.prompt_len + r * self.round_len

  def image_start(self, r: int) -> int:
    return self.text_start(r) + self.text_len

  def image_end_slot(self, r: int) -> int:
    """The `</img>` slot after image r (only for r < rounds − 1)."""
    if r >= self.rounds - 1:
      raise ValueError(f"round {r} is the last and has no </img> slot")
    return self.image_start(r) + self.image_tokens

  def block_ids(self) -> np.ndarray:
    """(L,) int32: the round index on image slots, −1 elsewhere (bidirectional blocks)."""
    ids = np.full((self.length,), -1, np.int32)
    for r in range(self.rounds):
      ids[self.image_start(r):self.image_start(r) + self.image_tokens] = r
    return ids
