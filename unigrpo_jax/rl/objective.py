"""The UniGRPO objective over a rollout batch: L = L_text + L_img + λ_v·L_vel (+ β_img·L_kl).

Joins the trajectory, its advantages, and the current / reference scores (teacher-forced
log-probs and velocities) into the registered losses of `losses.py`. Each term can be switched
off, which gives text-only GRPO, image-only Flow-GRPO, or the joint UniGRPO objective; the
latent KL is there for Flow-GRPO's ablation. Advantages are per round, (B, R): every token of
round r and every SDE step of image r gets A[:, r] (outcome advantages repeat one value over
the rounds; process-level ones differ per round).
"""
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from unigrpo_jax.rl import losses
from unigrpo_jax.sampling.rollout import Trajectory


IMAGE_RATIOS = ("plain", "ratio_norm")


@flax.struct.dataclass
class RLBatch:
  """A rollout batch ready for the update: trajectory and (B, R) advantages."""
  traj: Trajectory
  advantages: jax.Array


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """`config.loss`. text/image: switch the policy terms; loss_type, clip_low, clip_high, beta,
  kl, entropy_weight: the text loss (docs/design.md §4); clip_image: ε_img; image_ratio: "plain" or
  "ratio_norm" (GRPO-Guard's RatioNorm of the image ratio, UniRL's choice on Bagel);
  velocity_weight: λ_v of the velocity MSE; latent_kl_weight: β of Flow-GRPO's latent KL
  (ablation; 0 = off)."""
  text: bool = True
  image: bool = True
  loss_type: str = "grpo"
  clip_low: float = 0.2
  clip_high: float = 0.2
  beta: float = 0.0
  kl: str = "k3"
  entropy_weight: float = 0.0
  clip_image: float = 1e-4
  image_ratio: str = "plain"
  velocity_weight: float = 1.5e-5
  latent_kl_weight: float = 0.0

  def __post_init__(self):
    if self.loss_type not in losses.LOSS_TYPES:
      raise ValueError(f"loss.loss_type {self.loss_type!r} is not one of {losses.LOSS_TYPES}")
    if self.image_ratio not in IMAGE_RATIOS:
      raise ValueError(f"loss.image_ratio {self.image_ratio!r} is not one of {IMAGE_RATIOS}")
    if self.kl not in losses.KL_ESTIMATORS:
      raise ValueError(f"loss.kl {self.kl!r} is not one of {losses.KL_ESTIMATORS}")
    for name in ("clip_low", "clip_high", "clip_image", "beta", "entropy_weight",
                 "velocity_weight", "latent_kl_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
    if not (self.text or self.image):
      raise ValueError("loss.text and loss.image are both off: nothing to train")
    if (self.beta or self.entropy_weight) and not self.text:
      raise ValueError("loss.beta and loss.entropy_weight act on the text policy, which "
                       "loss.text=False leaves untrained")

  @property
  def needs_reference(self) -> bool:
    return bool(self.beta or self.velocity_weight or self.latent_kl_weight)


def _flatten_rounds(x):
  """(B, R, K, …) → (B, R·K, …)."""
  return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _per_round(advantages, k):
  """(B, R) → (B, R·k), each round's advantage repeated over its k tokens or steps."""
  return jnp.repeat(advantages, k, axis=1)


def _at_trained(x, traj: Trajectory):
  """(B, R, N) per-step values → (B, R·K) at each row's trained steps (`traj.train_steps`)."""
  return _flatten_rounds(jnp.take_along_axis(x, traj.train_steps, axis=2))


def unigrpo_objective(scores, ref_scores, batch: RLBatch, spec: LossSpec):
  """Returns (loss, metrics). scores / ref_scores: `score_trajectory` dicts (ref may be None
  when `spec.needs_reference` is False); the image terms cover each row's trained steps
  (`traj.train_steps`, where `traj.step_mask` holds)."""
  traj, adv = batch.traj, jnp.asarray(batch.advantages, jnp.float32)
  k = traj.train_steps.shape[2]
  total, metrics = 0.0, {}
  if spec.text:
    t = traj.tokens.shape[2]
    loss, m = losses.text_policy_loss(
        _flatten_rounds(scores["token_logp"]), _flatten_rounds(traj.token_logp),
        _per_round(adv, t), _flatten_rounds(traj.token_mask), loss_type=spec.loss_type,
        clip_low=spec.clip_low, clip_high=spec.clip_high,
        ref_logp=None if not spec.beta else _flatten_rounds(ref_scores["token_logp"]),
        beta=spec.beta, kl=spec.kl, entropy=_flatten_rounds(scores["token_entropy"]),
        entropy_weight=spec.entropy_weight)
    total = total + loss
    metrics.update({f"text/{k}": v for k, v in m.items()}, **{"text/loss": loss})
  step_mask = _at_trained(traj.step_mask, traj)
  if spec.image:
    logp = _at_trained(scores["step_logp"], traj)
    old_logp = _at_trained(traj.step_logp, traj)
    if spec.image_ratio == "ratio_norm":
      loss, m = losses.image_policy_ratio_norm_loss(
          logp, old_logp, _flatten_rounds(scores["mean"]), _flatten_rounds(traj.step_mean),
          _flatten_rounds(scores["std"]), _per_round(adv, k), step_mask,
          clip_range=spec.clip_image)
    else:
      loss, m = losses.image_policy_loss(logp, old_logp, _per_round(adv, k),
                                         step_mask, clip_range=spec.clip_image)
    total = total + loss
    metrics.update({f"image/{k}": v for k, v in m.items()}, **{"image/loss": loss})
  if spec.velocity_weight:
    loss, m = losses.velocity_mse(_flatten_rounds(scores["velocity"]),
                                  _flatten_rounds(ref_scores["velocity"]), step_mask)
    total = total + spec.velocity_weight * loss
    metrics.update({f"image/{k}": v for k, v in m.items()})
  if spec.latent_kl_weight:
    std = _flatten_rounds(scores["std"])
    loss, m = losses.latent_kl(_flatten_rounds(scores["mean"]), _flatten_rounds(
        ref_scores["mean"]), std.reshape(std.shape + (1,) * 3), step_mask)
    total = total + spec.latent_kl_weight * loss
    metrics.update({f"image/{k}": v for k, v in m.items()})
  metrics["loss"] = total
  return total, metrics
