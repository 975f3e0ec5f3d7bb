"""An exponential moving average of the policy's parameters (`config.ema`).

When it is on, evaluation, the sample grids and the saved parameters use the average; the
rollouts and the update use the parameters themselves. It lives in the train state
(`TrainState.ema`): sharded like the parameters, checkpointed with them, resumed exactly.
"""
import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class EMASpec:
  """`config.ema`. decay: d of ema ← d·ema + (1 − d)·params, in (0, 1); 0 turns the EMA off.
  every: the average moves every `every` GRPO steps; start: through step `start` the average
  is the parameters themselves (it starts averaging after them)."""
  decay: float = 0.0
  every: int = 1
  start: int = 0

  def __post_init__(self):
    if isinstance(self.decay, bool) or not (self.decay == 0 or 0 < self.decay < 1):
      raise ValueError(f"ema.decay must be in (0, 1) (0 turns the EMA off), got {self.decay!r}")
    if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
      raise ValueError(f"ema.every must be a positive integer, got {self.every!r}")
    if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
      raise ValueError(f"ema.start must be a non-negative integer, got {self.start!r}")

  @property
  def enabled(self) -> bool:
    return self.decay > 0


def ema_update(ema, params, step, spec: EMASpec):
  """The average after GRPO step `step` (1-based: the steps done so far).

  ema, params: pytrees of one structure; step: int or () int array.
  Returns `params` (in ema's dtypes) while step ≤ `spec.start`; after it, d·ema + (1 − d)·params
  (in float32) on every `spec.every`-th step counted from `start`; `ema` otherwise.
  """
  step = jnp.asarray(step, jnp.int32)
  follow = step <= spec.start
  due = (step - spec.start) % spec.every == 0

  def one(e, p):
    mean = spec.decay * e.astype(jnp.float32) + (1.0 - spec.decay) * p.astype(jnp.float32)
    return jnp.where(follow, p.astype(e.dtype), jnp.where(due, mean.astype(e.dtype), e))
  return jax.tree.map(one, ema, params)
