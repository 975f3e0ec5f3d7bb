"""How to sample a trajectory: one frozen, hashable record built from `config.rollout` and
`config.tokens`, validated on creation (every error names its config field)."""
import dataclasses

import numpy as np

from unigrpo_jax.model.layout import SequenceLayout
from unigrpo_jax.model.spec import ModelSpec
from unigrpo_jax.sampling import sde


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
  """Rollout knobs.

  prompt_len: prompt slots (prompts are left-padded to it); max_text_tokens: slots per text
  segment; rounds: text+image rounds (1 for UniGRPO, K for interleaved); num_steps, shift:
  the flow time grid; sde_type: the stochastic step, "sde" (Flow-GRPO's) or "cps" (Flow-CPS,
  coefficients-preserving; `sampling/sde.py`); noise_level: the step's `a` (at most 1 for
  "cps"); group_noise: every row of a GRPO group starts its image from the same noise (the
  group then differs only by the SDE's noise and its text); sde_window: (start, stop) step indices that
  are stochastic (None: all); sde_steps: 0 samples every step of the window with noise, k > 0
  only k of them, drawn anew for each group of rows (shared by the group's rows) — the other
  steps of the window are Euler steps and are not trained (UniRL's recipe on Bagel);
  timestep_fraction: each row trains (and rescores) only this fraction of its noisy steps,
  drawn anew per row (Flow-GRPO's; at least one); slide_every, slide_stride, slide_roll_back:
  the window moves `slide_stride` steps later every `slide_every` GRPO steps (0: fixed) until
  it reaches the grid's end, where it stays, or with `slide_roll_back` starts over (MixGRPO,
  `window_start`); mode:
  "sde" for training rollouts, "ode" for evaluation;
  temperature, top_k: text sampling; draw_images: False samples text only (one round, no
  image block: plain LLM GRPO on the same code path); cfg_scale: classifier-free guidance
  weight, 1 = none (UniGRPO: one conditional forward per step), else v_u + w·(v_c − v_u) with
  two forwards (Flow-GRPO's setting, for the ablation). Token ids come from the tokenizer.
  image_block: "plain" (the image's tokens alone, each at its own position, through the image
  weights) or "bagel" (Bagel's generation step: `block_start_id`, the image's tokens,
  `block_end_id`, all at the position after the last visible token, the two markers through
  the text weights; one round, no CFG). image_reads_prompt: False hides the prompt's slots
  from every image block, which then reads only the text written before it (the plan) and
  earlier images; SFT then hides the prompt from every image too (`sft.prompt_dropout`
  trains that view for a share of them).
  """
  prompt_len: int
  max_text_tokens: int
  pad_id: int
  eos_id: int
  image_start_id: int
  image_end_id: int
  rounds: int = 1
  num_steps: int = 10
  shift: float = 3.0
  sde_type: str = "sde"
  noise_level: float = 0.7
  group_noise: bool = False
  sde_window: tuple[int, int] | None = None
  sde_steps: int = 0
  timestep_fraction: float = 1.0
  slide_every: int = 0
  slide_stride: int = 1
  slide_roll_back: bool = False
  mode: str = "sde"
  temperature: float = 1.0
  top_k: int = 0
  draw_images: bool = True
  cfg_scale: float = 1.0
  image_block: str = "plain"
  block_start_id: int = -1
  block_end_id: int = -1
  image_reads_prompt: bool = True

  def __post_init__(self):
    for name in ("prompt_len", "max_text_tokens", "rounds", "num_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"rollout.{name} must be positive, got {getattr(self, name)}")
    if self.mode not in ("sde", "ode"):
      raise ValueError(f"rollout.mode must be 'sde' or 'ode', got {self.mode!r}")
    if self.noise_level < 0:
      raise ValueError(f"rollout.noise_level must be >= 0, got {self.noise_level}")
    if self.sde_type not in sde.SDE_TYPES:
      raise ValueError(f"rollout.sde_type {self.sde_type!r} is not one of {sde.SDE_TYPES}")
    if self.sde_type == "cps" and self.noise_level > 1:
      raise ValueError(f"rollout.noise_level must be in [0, 1] for rollout.sde_type 'cps' "
                       f"(s = t'·sin(a·π/2)), got {self.noise_level}")
    if self.cfg_scale < 0:
      raise ValueError(f"rollout.cfg_scale must be >= 0, got {self.cfg_scale}")
    if self.top_k < 0:
      raise ValueError(f"rollout.top_k must be >= 0, got {self.top_k}")
    if not self.draw_images and self.rounds != 1:
      raise ValueError(f"rollout.rounds must be 1 when rollout.draw_images is off, got "
                       f"{self.rounds}")
    if self.image_block not in ("plain", "bagel"):
      raise ValueError(f"rollout.image_block must be 'plain' or 'bagel', got "
                       f"{self.image_block!r}")
    if self.image_block == "bagel":
      if self.rounds != 1 or not self.draw_images or self.cfg_scale != 1.0:
        raise ValueError("rollout.image_block 'bagel' draws one image a trajectory without CFG: "
                         "it needs rollout.rounds = 1, draw_images and cfg_scale = 1")
      if self.block_start_id < 0 or self.block_end_id < 0:
        raise ValueError("rollout.image_block 'bagel' needs tokens.block_start_id and "
                         "tokens.block_end_id (Bagel's <|vision_start|>, <|vision_end|>)")
    if self.sde_window is not None:
      object.__setattr__(self, "sde_window", tuple(self.sde_window))
    try:
      sde.window_mask(self.num_steps, self.sde_window)
    except ValueError as e:
      raise ValueError(f"rollout.sde_window: {e}") from None
    window = int(sde.window_mask(self.num_steps, self.sde_window).sum())
    if not 0 <= self.sde_steps <= window:
      raise ValueError(f"rollout.sde_steps must be between 0 and the {window} steps of "
                       f"rollout.sde_window {self.sde_window}, got {self.sde_steps}")
    if not 0 < self.timestep_fraction <= 1:
      raise ValueError(f"rollout.timestep_fraction must be in (0, 1], got "
                       f"{self.timestep_fraction}")
    if self.slide_every < 0 or self.slide_stride < 1:
      raise ValueError(f"rollout.slide_every must be >= 0 and rollout.slide_stride >= 1, got "
                       f"{self.slide_every} and {self.slide_stride}")
    if self.slide_every and window == self.num_steps:
      raise ValueError(f"rollout.slide_every moves rollout.sde_window {self.sde_window}, which "
                       f"covers all {self.num_steps} steps: there is nowhere to slide it")

  @classmethod
  def from_config(cls, rollout, tokens, **overrides):
    """From `config.rollout` and `config.tokens` (ConfigDicts or dicts)."""
    kw = dict(rollout)
    kw.update(pad_id=tokens["pad_id"], eos_id=tokens["eos_id"],
              image_start_id=tokens["image_start_id"], image_end_id=tokens["image_end_id"])
    for name in ("block_start_id", "block_end_id"):
      if name in tokens:
        kw[name] = tokens[name]
    kw.update(overrides)
    return cls(**kw)

  @property
  def markers(self) -> tuple[int, int] | None:
    """(start, end) token ids inside an image block ("bagel"), or None ("plain")."""
    return (self.block_start_id, self.block_end_id) if self.image_block == "bagel" else None

  def layout(self, model: ModelSpec) -> SequenceLayout:
    image_tokens = model.image_tokens + 2 * (self.markers is not None) if self.draw_images else 0
    return SequenceLayout(self.prompt_len, self.max_text_tokens, image_tokens, self.rounds)

  def stochastic_steps(self) -> np.ndarray:
    """(N,) bool: the steps that may be sampled with noise (and trained) at GRPO step 0, the
    window; none in ODE or text-only mode. Which of them a row trains is its trajectory's
    `train_steps` (`step_mask`)."""
    if self.mode == "ode" or not self.draw_images:
      return np.zeros((self.num_steps,), bool)
    return sde.window_mask(self.num_steps, self.sde_window)

  @property
  def window(self) -> tuple[int, int]:
    """(first step, size) of the SDE window at GRPO step 0: `sde_window`, or every step."""
    start, stop = self.sde_window if self.sde_window is not None else (0, self.num_steps)
    return start, stop - start

  def window_start(self, step: int) -> int:
    """The window's first step at GRPO step `step` (0-based): `sde_window`'s start, moved
    `slide_stride` later every `slide_every` steps up to the last start that fits
    (num_steps − size), where it stays; with `slide_roll_back`, past it back to the first."""
    start, size = self.window
    if not self.slide_every:
      return start
    moves, last = step // self.slide_every, self.num_steps - size
    if self.slide_roll_back:
      return start + self.slide_stride * (moves % ((last - start) // self.slide_stride + 1))
    return min(start + self.slide_stride * moves, last)

  @property
  def trained_steps(self) -> int:
    """K, the steps of each drawn image that are trained and rescored: its noisy steps
    (`sde_steps`, else the window's) × `timestep_fraction`, rounded down (as Flow-GRPO), at
    least 1; 0 in ODE or text-only mode."""
    if self.mode == "ode" or not self.draw_images:
      return 0
    return max(1, int(self.timestep_fraction * (self.sde_steps or self.window[1])))

  def check_model(self, model: ModelSpec):
    names = ("pad_id", "eos_id", "image_start_id", "image_end_id") + (
        ("block_start_id", "block_end_id") if self.markers else ())
    for name in names:
      if not 0 <= getattr(self, name) < model.vocab_size:
        raise ValueError(f"tokens.{name} ({getattr(self, name)}) is outside the vocabulary "
                         f"(model.vocab_size = {model.vocab_size})")
