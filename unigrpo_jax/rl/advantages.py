"""Advantages from rewards: group-relative (GRPO), filtered (DAPO), combined, and process-level.

Rewards are laid out group-contiguous: `batch = prompts × G`, rows [g·G, (g+1)·G) share a
prompt. Everything here is a pure function of arrays (jit-safe); when called on concrete arrays
it also checks them and names the offending input (shape, group size, non-finite values).
Standard deviations use n − 1 (as TRL and Tunix; Flow-GRPO uses n); docs/design.md §3.
`AdvantageSpec` is `config.advantages`; `trajectory_advantages` is what a GRPO step calls.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

SCALES = ("group", "batch", "none")
KINDS = ("outcome", "process", "both")


@dataclasses.dataclass(frozen=True)
class AdvantageSpec:
  """`config.advantages`. kind: "outcome" (the combined reward, group-normalised, one value
  on every round), "process" (per-round rewards, `process_advantages`) or "both" (their sum);
  scale, eps, clip: `group_advantages`; normalize_each: `combine_rewards`."""
  kind: str = "outcome"
  scale: str = "group"
  eps: float = 1e-4
  clip: float | None = 5.0
  normalize_each: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"config.advantages.kind {self.kind!r} is not one of {KINDS}")
    if self.scale not in SCALES:
      raise ValueError(f"config.advantages.scale {self.scale!r} is not one of {SCALES}")


def check_rewards(name: str, rewards, shape: tuple[int, ...]):
  """Raises ValueError naming `name` if `rewards` is not `shape` or (when concrete) not finite."""
  if tuple(np.shape(rewards)) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(np.shape(rewards))}, expected {tuple(shape)}")
  if not isinstance(rewards, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(rewards))):
    bad = np.argwhere(~np.isfinite(np.asarray(rewards)))[:5].tolist()
    raise ValueError(f"{name} has non-finite values (NaN or inf), first at indices {bad}")


def _vector(name: str, x):
  """x as a finite (B,) array, or a ValueError naming `name`."""
  x = jnp.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name} must have shape (batch,), got {tuple(x.shape)}")
  check_rewards(name, x, x.shape)
  return x


def _check_groups(name: str, batch: int, group_size: int):
  if group_size < 1 or batch % group_size:
    raise ValueError(f"{name}: batch of {batch} rows does not divide into groups of "
                     f"group_size = {group_size}")


def _grouped(x, group_size):
  return x.reshape(x.shape[0] // group_size, group_size, *x.shape[1:])


def group_advantages(rewards, group_size: int, *, scale: str = "group", eps: float = 1e-4,
                     clip: float | None = 5.0):
  """A_i = clip((R_i − mean_g R) / (std R + eps), ±clip). rewards: (B,) → (B,) float32.

  scale: "group" (std within the group, GRPO), "batch" (std over the whole batch),
  "none" (no division, Dr.GRPO). clip=None disables clipping.
  """
  if scale not in SCALES:
    raise ValueError(f"advantage scale {scale!r} is not one of {SCALES}")
  rewards = _vector("rewards", rewards)
  _check_groups("rewards", rewards.shape[0], group_size)
  r = rewards.astype(jnp.float32)
  grouped = _grouped(r, group_size)
  centred = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
  if scale == "group":
    std = jnp.repeat(jnp.std(grouped, axis=1, ddof=1), group_size)
    adv = centred / (std + eps)
  elif scale == "batch":
    adv = centred / (jnp.std(r, ddof=1) + eps)
  else:
    adv = centred
  return adv if clip is None else jnp.clip(adv, -clip, clip)


def informative_groups(rewards, group_size: int):
  """(B,) bool: False for every row of a group whose rewards are all equal (DAPO's filter:
  such a group has zero advantage and only dilutes the batch)."""
  grouped = _grouped(jnp.asarray(rewards), group_size)
  keep = jnp.max(grouped, axis=1) > jnp.min(grouped, axis=1)
  return jnp.repeat(keep, group_size)


def combine_rewards(rewards: dict, weights: dict, *, group_size: int | None = None,
                    normalize_each: bool = False, eps: float = 1e-4):
  """Weighted sum of named (B,) rewards; `weights` must name exactly the same rewards.

  normalize_each: normalise every reward within its group first, (r − mean_g)/(std_g + eps),
  so that no reward dominates by its scale (GDPO-style); needs `group_size`.
  """
  if set(rewards) != set(weights):
    raise ValueError(f"reward weights name {sorted(weights)} but the rewards are "
                     f"{sorted(rewards)}")
  total = 0.0
  for name in sorted(rewards):
    r = _vector(f"reward '{name}'", rewards[name])
    if normalize_each:
      if group_size is None:
        raise ValueError("combine_rewards(normalize_each=True) needs group_size")
      r = group_advantages(r, group_size, scale="group", eps=eps, clip=None)
    total = total + weights[name] * r
  return total


def process_advantages(step_rewards, group_size: int, *, step_mask=None, eps: float = 1e-4,
                       outcome=None):
  """Step-wise advantages from per-step rewards (DeepSeekMath process supervision).

  step_rewards: (B, J), step j of trajectory i scored r_i^(j); step_mask: (B, J) bool, which
  steps exist (default all). All existing step rewards of a group are normalised together,
  r̃ = (r − mean) / (std + eps), and step j gets Σ_{j' ≥ j} r̃^(j'). `outcome`: optional (B,)
  outcome advantages added to every step. Returns (B, J) float32, 0 on missing steps.
  """
  r = jnp.asarray(step_rewards, jnp.float32)
  if r.ndim != 2:
    raise ValueError(f"step_rewards must be (batch, steps), got shape {r.shape}")
  check_rewards("step_rewards", r, r.shape)
  _check_groups("step_rewards", r.shape[0], group_size)
  mask = jnp.ones(r.shape, bool) if step_mask is None else jnp.asarray(step_mask, bool)
  if mask.shape != r.shape:
    raise ValueError(f"step_mask has shape {mask.shape}, step_rewards {r.shape}")
  gr, gm = _grouped(r, group_size), _grouped(mask, group_size)
  count = jnp.sum(gm, axis=(1, 2), keepdims=True)
  mean = jnp.sum(gr * gm, axis=(1, 2), keepdims=True) / jnp.maximum(count, 1)
  var = jnp.sum(((gr - mean) * gm) ** 2, axis=(1, 2), keepdims=True) / jnp.maximum(count - 1, 1)
  norm = jnp.where(gm, (gr - mean) / (jnp.sqrt(var) + eps), 0.0).reshape(r.shape)
  adv = jnp.flip(jnp.cumsum(jnp.flip(norm, axis=1), axis=1), axis=1)
  if outcome is not None:
    outcome = jnp.asarray(outcome, jnp.float32)
    check_rewards("outcome advantages", outcome, (r.shape[0],))
    adv = adv + outcome[:, None]
  return jnp.where(mask, adv, 0.0)


def trajectory_advantages(scores: dict, step_scores: dict, step_mask, *, weights: dict,
                          process_weights: dict, group_size: int, spec: AdvantageSpec):
  """(B, R) advantages of a batch of trajectories, and the (B,) combined outcome reward.

  scores: reward name → (B,) outcome scores, combined with `weights`; step_scores: name →
  (B, R) per-round scores, combined with `process_weights` (used unless `spec.kind` is
  "outcome"); step_mask: (B, R), the rounds each trajectory reached.
  """
  total = combine_rewards(scores, weights, group_size=group_size,
                          normalize_each=spec.normalize_each)
  outcome = group_advantages(total, group_size, scale=spec.scale, eps=spec.eps, clip=spec.clip)
  if spec.kind == "outcome":
    return jnp.repeat(outcome[:, None], step_mask.shape[1], axis=1), total
  per_step = sum(weight * jnp.asarray(step_scores[name])
                 for name, weight in sorted(process_weights.items()))
  return process_advantages(per_step, group_size, step_mask=step_mask, eps=spec.eps,
                            outcome=outcome if spec.kind == "both" else None), total
