"""The GRPO update: teacher-forced rescoring, reference scores, loss, gradients, Optax steps.

One jitted function per shape (`make_update`). Given a rollout batch it
  1. scores the batch once under the frozen reference parameters (only if the loss needs them:
     β > 0, velocity MSE or latent KL) — gradients never reach them;
  2. runs `num_updates` passes over `num_minibatches` minibatches (nested `lax.scan`s, no Python
     loop over steps or tokens): rescore under the current parameters (the shared context once
     per minibatch, then every trained SDE step against it), UniGRPO objective, gradient,
     AdamW step with global-norm clipping — skipped, state unchanged, when the loss or a
     gradient is non-finite (`apply_if_finite`). The very first minibatch is exactly
     on-policy.
Minibatch m holds rows m, m + M, m + 2M, …: a strided split keeps every minibatch spread over
the data-parallel devices.

A batch sampled in parts can also be updated part by part (`make_accumulate`, `make_apply`):
each part's gradient is taken as soon as its rewards are in — while later parts are still
being scored — summed, and one optimizer step applies their mean. Every part is scored under
the parameters it was sampled with (exactly on-policy), as in a one-minibatch update; the
step's gradient is the mean of the parts' mean-loss gradients (gradient accumulation).
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from unigrpo_jax import lora as lora_lib
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.model import UnifiedTransformer
from unigrpo_jax.optim import TrainState, apply_if_finite
from unigrpo_jax.rl.objective import LossSpec, RLBatch, unigrpo_objective
from unigrpo_jax.sampling.scoring import score_trajectory
from unigrpo_jax.sampling.spec import RolloutSpec


@dataclasses.dataclass(frozen=True)
class UpdateSpec:
  """`config.rl.num_updates` passes over each rollout batch, `config.rl.num_minibatches` per
  pass. `group_size`: the batch's rows come in contiguous GRPO groups of this many samples of
  one prompt (`config.rl.group_size`), so scoring encodes each prompt once per group
  (`sampling.scoring.encode`); 1 encodes every row's prompt."""
  num_updates: int = 1
  num_minibatches: int = 1
  group_size: int = 1

  def __post_init__(self):
    for name in ("num_updates", "num_minibatches", "group_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"rl.{name} must be >= 1, got {getattr(self, name)}")

  @property
  def minibatch_group_size(self) -> int:
    """Rows per group inside a strided minibatch: G/M consecutive rows of each group when M
    divides G, else groups do not stay together (1)."""
    g, m = self.group_size, self.num_minibatches
    return g // m if g % m == 0 else 1


def _minibatches(tree, m: int):
  """Splits every leaf's batch axis into m strided minibatches: (B, …) → (m, B/m, …)."""
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // m, m) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def _reference_scores(ref_params, batch: RLBatch, *, model, rollout: RolloutSpec, loss: LossSpec,
                      group_size: int):
  """The frozen reference's scores of `batch` (None when the loss does not read them)."""
  if (loss.image or loss.velocity_weight or loss.latent_kl_weight) and not rollout.trained_steps:
    raise ValueError("the loss has image terms (loss.image, loss.velocity_weight or "
                     "loss.latent_kl_weight) but the rollout trains no SDE step "
                     "(rollout.mode 'ode', rollout.draw_images off, or an empty sde_window)")
  if not loss.needs_reference:
    return None
  return jax.lax.stop_gradient(score_trajectory(ref_params, batch.traj, model=model,
                                                spec=rollout, group_size=group_size))


def _loss(params, batch: RLBatch, ref_scores, *, ref_params, model, rollout: RolloutSpec,
          loss: LossSpec, group_size: int, lora: LoRASpec | None):
  """(loss, metrics) of `batch` under the policy `params` (adapters over `ref_params` with
  `lora`)."""
  policy = lora_lib.policy(params, ref_params, lora)
  scores = score_trajectory(policy, batch.traj, model=model, spec=rollout, group_size=group_size)
  return unigrpo_objective(scores, ref_scores, batch, loss)


def grpo_update(state: TrainState, ref_params, batch: RLBatch, *, model: UnifiedTransformer,
                rollout: RolloutSpec, loss: LossSpec, update: UpdateSpec,
                optimizer: optax.GradientTransformation, lora: LoRASpec | None = None):
  """One rollout batch's worth of updates. Returns (state, metrics); metrics are stacked
  (num_updates, num_minibatches) per name. With `lora`, `state.params` are the adapters over
  the frozen base `ref_params` (`lora.py`): the policy is their combination, the reference the
  base alone, and only the adapters get gradients."""
  batch_size = batch.advantages.shape[0]
  if batch_size % update.num_minibatches:
    raise ValueError(f"rollout batch of {batch_size} rows does not split into "
                     f"rl.num_minibatches = {update.num_minibatches}")
  if batch.advantages.shape != (batch_size, rollout.rounds):
    raise ValueError(f"advantages have shape {batch.advantages.shape}, expected "
                     f"{(batch_size, rollout.rounds)} (batch, rounds)")
  if batch_size % update.group_size:
    raise ValueError(f"rollout batch of {batch_size} rows does not split into groups of "
                     f"rl.group_size = {update.group_size}")
  ref = _reference_scores(ref_params, batch, model=model, rollout=rollout, loss=loss,
                          group_size=update.group_size)
  loss_fn = functools.partial(_loss, ref_params=ref_params, model=model, rollout=rollout,
                              loss=loss, group_size=update.minibatch_group_size, lora=lora)

  def step(state, xs):
    minibatch, ref_minibatch = xs
    minibatch = minibatch.replace(traj=minibatch.traj.replace(timesteps=grid))
    (loss_value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, minibatch, ref_minibatch)
    state, step_metrics = apply_if_finite(state, grads, loss_value, optimizer)
    return state, {**metrics, **step_metrics}

  grid = batch.traj.timesteps  # shared by all rows: not split
  parts = _minibatches((batch.replace(traj=batch.traj.replace(timesteps=None)), ref),
                       update.num_minibatches)

  def one_pass(state, _):
    return jax.lax.scan(step, state, parts)

  return jax.lax.scan(one_pass, state, None, length=update.num_updates)


def make_update(model: UnifiedTransformer, rollout: RolloutSpec, loss: LossSpec,
                update: UpdateSpec, optimizer, *, donate: bool = True,
                lora: LoRASpec | None = None):
  """The compiled update: fn(state, ref_params, batch) → (state, metrics) (with `lora`,
  ref_params is the frozen base the adapters in `state.params` sit on)."""
  fn = functools.partial(grpo_update, model=model, rollout=rollout, loss=loss, update=update,
                         optimizer=optimizer, lora=lora)
  return jax.jit(fn, donate_argnums=(0,) if donate else ())


class GradientSum(NamedTuple):
  """The parts' gradients and losses summed so far, and how many parts they are."""
  grads: Any  # like the trained parameters
  loss: jax.Array  # ()
  parts: jax.Array  # () int32

  @classmethod
  def zeros(cls, params) -> "GradientSum":
    return cls(jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
               jnp.zeros((), jnp.int32))


def accumulate_part(total: GradientSum, params, ref_params, part: RLBatch, *,
                    model: UnifiedTransformer, rollout: RolloutSpec, loss: LossSpec,
                    group_size: int, lora: LoRASpec | None = None):
  """Adds one part's gradient to `total`. `part`: whole groups of `group_size` rows with their
  advantages; scored under `params` (the sampling parameters: exactly on-policy) and, when the
  loss needs it, under the reference. Returns (total, the part's metrics)."""
  if part.advantages.shape != (part.advantages.shape[0], rollout.rounds):
    raise ValueError(f"advantages have shape {part.advantages.shape}, expected "
                     f"(rows, {rollout.rounds}) (rows, rounds)")
  ref = _reference_scores(ref_params, part, model=model, rollout=rollout, loss=loss,
                          group_size=group_size)
  (value, metrics), grads = jax.value_and_grad(functools.partial(
      _loss, ref_params=ref_params, model=model, rollout=rollout, loss=loss,
      group_size=group_size, lora=lora), has_aux=True)(params, part, ref)
  total = GradientSum(jax.tree.map(jnp.add, total.grads, grads), total.loss + value,
                      total.parts + 1)
  return total, metrics


def apply_mean(state: TrainState, total: GradientSum, optimizer):
  """One optimizer step on the parts' mean gradient (none if it or the loss is non-finite:
  `apply_if_finite`). Returns (state, metrics)."""
  parts = total.parts.astype(jnp.float32)
  return apply_if_finite(state, jax.tree.map(lambda g: g / parts, total.grads),
                         total.loss / parts, optimizer)


def make_accumulate(model: UnifiedTransformer, rollout: RolloutSpec, loss: LossSpec,
                    group_size: int, *, lora: LoRASpec | None = None):
  """The compiled `accumulate_part`: fn(total, params, ref_params, part) → (total, metrics)
  (`total` donated)."""
  return jax.jit(functools.partial(accumulate_part, model=model, rollout=rollout, loss=loss,
                                   group_size=group_size, lora=lora), donate_argnums=0)


def make_apply(optimizer, *, donate: bool = True):
  """The compiled `apply_mean`: fn(state, total) → (state, metrics)."""
  return jax.jit(functools.partial(apply_mean, optimizer=optimizer),
                 donate_argnums=(0,) if donate else ())
