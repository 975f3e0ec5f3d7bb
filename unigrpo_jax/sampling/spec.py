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
  the flow time grid; noise_level: the SDE's `a`; sde_window: (start, stop) step indices that
  are stochastic (None: all); mode: "sde" for training rollouts, "ode" for evaluation;
  temperature, top_k: text sampling; draw_images: False samples text only (one round, no
  image block: plain LLM GRPO on the same code path); cfg_scale: classifier-free guidance
  weight, 1 = none (UniGRPO: one conditional forward per step), else v_u + w·(v_c − v_u) with
  two forwards (Flow-GRPO's setting, for the ablation). Token ids come from the tokenizer.
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
  noise_level: float = 0.7
  sde_window: tuple[int, int] | None = None
  mode: str = "sde"
  temperature: float = 1.0
  top_k: int = 0
  draw_images: bool = True
  cfg_scale: float = 1.0

  def __post_init__(self):
    for name in ("prompt_len", "max_text_tokens", "rounds", "num_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"rollout.{name} must be positive, got {getattr(self, name)}")
    if self.mode not in ("sde", "ode"):
      raise ValueError(f"rollout.mode must be 'sde' or 'ode', got {self.mode!r}")
    if self.noise_level < 0:
      raise ValueError(f"rollout.noise_level must be >= 0, got {self.noise_level}")
    if self.cfg_scale < 0:
      raise ValueError(f"rollout.cfg_scale must be >= 0, got {self.cfg_scale}")
    if self.top_k < 0:
      raise ValueError(f"rollout.top_k must be >= 0, got {self.top_k}")
    if not self.draw_images and self.rounds != 1:
      raise ValueError(f"rollout.rounds must be 1 when rollout.draw_images is off, got "
                       f"{self.rounds}")
    if self.sde_window is not None:
      object.__setattr__(self, "sde_window", tuple(self.sde_window))
    try:
      sde.window_mask(self.num_steps, self.sde_window)
    except ValueError as e:
      raise ValueError(f"rollout.sde_window: {e}") from None

  @classmethod
  def from_config(cls, rollout, tokens, **overrides):
    """From `config.rollout` and `config.tokens` (ConfigDicts or dicts)."""
    kw = dict(rollout)
    kw.update(pad_id=tokens["pad_id"], eos_id=tokens["eos_id"],
              image_start_id=tokens["image_start_id"], image_end_id=tokens["image_end_id"])
    kw.update(overrides)
    return cls(**kw)

  def layout(self, model: ModelSpec) -> SequenceLayout:
    image_tokens = model.image_tokens if self.draw_images else 0
    return SequenceLayout(self.prompt_len, self.max_text_tokens, image_tokens, self.rounds)

  def stochastic_steps(self) -> np.ndarray:
    """(N,) bool: steps sampled with noise (and trained); none in ODE or text-only mode."""
    if self.mode == "ode" or not self.draw_images:
      return np.zeros((self.num_steps,), bool)
    return sde.window_mask(self.num_steps, self.sde_window)

  def check_model(self, model: ModelSpec):
    for name in ("pad_id", "eos_id", "image_start_id", "image_end_id"):
      if not 0 <= getattr(self, name) < model.vocab_size:
        raise ValueError(f"tokens.{name} ({getattr(self, name)}) is outside the vocabulary "
                         f"(model.vocab_size = {model.vocab_size})")
