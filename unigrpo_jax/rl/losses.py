"""GRPO / Flow-GRPO / UniGRPO losses: pure functions returning (loss, metrics), registered by name.

docs/design.md §4, exactly:
  * text: ρ = exp(logπ_θ − logπ_old) per token, −min(ρA, clip(ρ, 1−ε_lo, 1+ε_hi)A), reduced
    per `loss_type`; optional per-token KL to the reference (k1/k2/k3) weighted by β;
  * image: the same clipped surrogate per trained SDE step with ε_img, mean over trained steps
    then over the batch; or with GRPO-Guard's RatioNorm, the ratio taken as
    log r̂ = s·(log r + mean(Δμ²)/(2s²)), Δμ = μ_old − μ_θ, s the step's noise scale;
  * velocity MSE (UniGRPO's regulariser) and the closed-form latent KL (Flow-GRPO's).
`LOSSES` maps names to these functions so configs pick them by name.
"""
import jax.numpy as jnp

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOSSES = {}


def register(name: str):
  def wrap(fn):
    LOSSES[name] = fn
    return fn
  return wrap


def kl_estimate(logp, ref_logp, kind: str = "k3"):
  """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token log-probs (Schulman's k1/k2/k3)."""
  log_ratio = ref_logp - logp  # log π_ref/π_θ
  if kind == "k1":
    return -log_ratio
  if kind == "k2":
    return 0.5 * log_ratio**2
  if kind == "k3":
    return jnp.exp(log_ratio) - log_ratio - 1.0
  raise ValueError(f"kl estimator {kind!r} is not one of {KL_ESTIMATORS}")


def _masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1)


def _clipped_surrogate(logp, old_logp, advantages, mask, clip_low, clip_high):
  """Per-element −min(ρA, clip(ρ)A) and its diagnostics."""
  ratio = jnp.exp(logp - old_logp)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  per = jnp.maximum(unclipped, clipped)
  was_clipped = ((ratio < 1.0 - clip_low) & (advantages < 0)) | (
      (ratio > 1.0 + clip_high) & (advantages > 0))
  mask_f = mask.astype(jnp.float32)
  big = jnp.finfo(jnp.float32).max
  metrics = dict(
      clip_fraction=_masked_mean(was_clipped.astype(jnp.float32), mask_f),
      ratio_mean=_masked_mean(ratio, mask_f),
      ratio_min=jnp.min(jnp.where(mask, ratio, big), initial=big),
      ratio_max=jnp.max(jnp.where(mask, ratio, -big), initial=-big),
      approx_kl=_masked_mean(kl_estimate(logp, old_logp, "k3"), mask_f),  # KL(θ ‖ old)
      unclipped_objective=_masked_mean(-unclipped, mask_f),
      clipped_objective=_masked_mean(-per, mask_f))
  return per, metrics


def _per_element(advantages, shape):
  """(B,) advantages broadcast over the trailing dims of `shape`; (B, …) passed through."""
  advantages = jnp.asarray(advantages, jnp.float32)
  return advantages.reshape(advantages.shape + (1,) * (len(shape) - advantages.ndim))


@register("text_policy")
def text_policy_loss(logp, old_logp, advantages, mask, *, loss_type: str = "grpo",
                     clip_low: float = 0.2, clip_high: float = 0.2, ref_logp=None,
                     beta: float = 0.0, kl: str = "k3", max_len: int | None = None,
                     entropy=None, entropy_weight: float = 0.0):
  """GRPO clipped surrogate over tokens.

  logp, old_logp, mask: (B, T); advantages: (B,) per sequence or (B, T) per token.
  loss_type: "grpo" token mean per sequence then batch mean; "bnpo"/"dapo" sum over all tokens
  / number of tokens; "dr_grpo" sum / (B × max_len) (max_len defaults to T).
  ref_logp, beta, kl: per-token KL to the reference added as β·KL (β = 0: off).
  entropy: optional (B, T) per-token entropy of π_θ, reported; entropy_weight > 0 also
  subtracts entropy_weight × entropy per token (an entropy bonus, reduced like the surrogate).
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss.loss_type {loss_type!r} is not one of {LOSS_TYPES}")
  mask_f = mask.astype(jnp.float32)
  per, metrics = _clipped_surrogate(logp, old_logp, _per_element(advantages, logp.shape), mask,
                                    clip_low, clip_high)
  if beta:
    if ref_logp is None:
      raise ValueError("text_policy_loss: beta > 0 needs ref_logp")
    kl_tok = kl_estimate(logp, ref_logp, kl)
    per = per + beta * kl_tok
    metrics["kl_ref"] = _masked_mean(kl_tok, mask_f)
  if entropy_weight:
    if entropy is None:
      raise ValueError("text_policy_loss: entropy_weight > 0 needs entropy")
    per = per - entropy_weight * entropy
  if loss_type == "grpo":
    per_seq = jnp.sum(per * mask_f, axis=1) / jnp.maximum(jnp.sum(mask_f, axis=1), 1.0)
    loss = jnp.mean(per_seq)
  elif loss_type in ("bnpo", "dapo"):
    loss = jnp.sum(per * mask_f) / jnp.maximum(jnp.sum(mask_f), 1.0)
  else:
    loss = jnp.sum(per * mask_f) / (logp.shape[0] * (max_len or logp.shape[1]))
  if entropy is not None:
    metrics["entropy"] = _masked_mean(entropy, mask_f)
  metrics["tokens"] = jnp.sum(mask_f)
  return loss, metrics


@register("image_policy")
def image_policy_loss(logp, old_logp, advantages, mask, *, clip_range: float = 1e-4):
  """Flow-GRPO clipped surrogate over trained SDE steps.

  logp, old_logp, mask: (B, S) per trained step; advantages (B,) or (B, S). Mean over each
  row's trained steps, then over the rows that have any.
  """
  mask_f = mask.astype(jnp.float32)
  per, metrics = _clipped_surrogate(logp, old_logp, _per_element(advantages, logp.shape), mask,
                                    clip_range, clip_range)
  steps = jnp.sum(mask_f, axis=1)
  per_row = jnp.sum(per * mask_f, axis=1) / jnp.maximum(steps, 1.0)
  rows = (steps > 0).astype(jnp.float32)
  loss = jnp.sum(per_row * rows) / jnp.maximum(jnp.sum(rows), 1.0)
  return loss, metrics


def ratio_norm_log_ratio(logp, old_logp, mean, old_mean, std):
  """GRPO-Guard's RatioNorm: log r̂ = s·(log r + mean_elems(Δμ²)/(2s²)), Δμ = μ_old − μ_θ.

  logp, old_logp, std: (B, S) per trained step (std s = σ_t·√(−Δt), > 0); mean, old_mean:
  (B, S, …) SDE means. Returns (B, S) log r̂."""
  delta = jnp.mean((old_mean - mean) ** 2, axis=tuple(range(2, mean.ndim)))
  safe = jnp.where(std > 0, std, 1.0)  # a deterministic step (s = 0) has log r̂ = 0
  return jnp.where(std > 0, std * (logp - old_logp + delta / (2.0 * safe ** 2)), 0.0)


@register("image_policy_ratio_norm")
def image_policy_ratio_norm_loss(logp, old_logp, mean, old_mean, std, advantages, mask, *,
                                 clip_range: float = 1e-4):
  """`image_policy_loss` on the RatioNorm ratio r̂ (`ratio_norm_log_ratio`) instead of r."""
  log_r_hat = ratio_norm_log_ratio(logp, old_logp, mean, old_mean, std)
  loss, metrics = image_policy_loss(old_logp + log_r_hat, old_logp, advantages, mask,
                                    clip_range=clip_range)
  metrics["raw_ratio_mean"] = _masked_mean(jnp.exp(logp - old_logp), mask.astype(jnp.float32))
  return loss, metrics


def _per_step_mean(x, mask):
  """Mean over (row, step) pairs in `mask` (B, S) of the element mean of x (B, S, …)."""
  per_step = jnp.mean(x, axis=tuple(range(2, x.ndim)))
  return _masked_mean(per_step, mask.astype(jnp.float32))


@register("velocity_mse")
def velocity_mse(velocity, ref_velocity, mask):
  """UniGRPO: mean over (i, j ∈ S) of mean_elems ‖v_θ − v_ref‖². velocity: (B, S, …)."""
  value = _per_step_mean((velocity - ref_velocity) ** 2, mask)
  return value, dict(velocity_mse=value)


@register("latent_kl")
def latent_kl(mean, ref_mean, std, mask):
  """Flow-GRPO: mean over trained steps of mean_elems ‖μ_θ − μ_ref‖² / (2σ²). std broadcasts."""
  value = _per_step_mean((mean - ref_mean) ** 2 / (2.0 * std**2), mask)
  return value, dict(latent_kl=value)
