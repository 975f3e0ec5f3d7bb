"""Losses on hand-computed cases, written out with plain loops independently of the code."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unigrpo_jax.rl import losses

LOGP = np.array([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2]], np.float32)
OLD = np.array([[-1.2, -1.5, -0.5], [-0.3, -1.0, -3.0]], np.float32)
MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)
ADV = np.array([1.5, -0.7], np.float32)
REF = np.array([[-1.1, -1.8, -0.6], [-0.5, -1.1, -2.0]], np.float32)
ENT = np.array([[0.9, 0.1, 1.7], [0.4, 2.2, 0.6]], np.float32)


def per_token(logp, old, a, lo, hi):
  ratio = math.exp(logp - old)
  return max(-a * ratio, -a * min(max(ratio, 1 - lo), 1 + hi))


def k3(logp, ref):
  return math.exp(ref - logp) - (ref - logp) - 1


def reference_loss(loss_type, lo=0.2, hi=0.2, beta=0.0, max_len=None, entropy_weight=0.0):
  per = [[per_token(LOGP[i, t], OLD[i, t], ADV[i], lo, hi) + beta * k3(LOGP[i, t], REF[i, t])
          - entropy_weight * ENT[i, t] for t in range(3)] for i in range(2)]
  masked = [[per[i][t] for t in range(3) if MASK[i, t]] for i in range(2)]
  if loss_type == "grpo":
    return sum(sum(row) / len(row) for row in masked) / 2
  if loss_type in ("bnpo", "dapo"):
    return sum(map(sum, masked)) / sum(map(len, masked))
  return sum(map(sum, masked)) / (2 * (max_len or 3))


@pytest.mark.parametrize("loss_type", losses.LOSS_TYPES)
def test_text_loss_types_by_hand(loss_type):
  loss, _ = losses.text_policy_loss(LOGP, OLD, ADV, MASK, loss_type=loss_type)
  np.testing.assert_allclose(float(loss), reference_loss(loss_type), rtol=1e-6)
  loss, _ = losses.text_policy_loss(LOGP, OLD, ADV, MASK, loss_type=loss_type, max_len=8)
  want = reference_loss(loss_type, max_len=8)
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_clip_higher_and_k3_kl():
  loss, metrics = losses.text_policy_loss(LOGP, OLD, ADV, MASK, clip_low=0.2, clip_high=0.28,
                                          ref_logp=REF, beta=0.04, kl="k3")
  np.testing.assert_allclose(float(loss), reference_loss("grpo", 0.2, 0.28, 0.04), rtol=1e-6)
  kls = [k3(LOGP[i, t], REF[i, t]) for i in range(2) for t in range(3) if MASK[i, t]]
  np.testing.assert_allclose(float(metrics["kl_ref"]), sum(kls) / len(kls), rtol=1e-6)
  # ratio e^{0.8} = 2.23 on a positive advantage is clipped at 1.28 (not 1.2) with clip-higher.
  one = losses.text_policy_loss(np.array([[0.8]]), np.array([[0.0]]), np.array([1.0]),
                                np.array([[True]]), clip_low=0.2, clip_high=0.28)
  np.testing.assert_allclose(float(one[0]), -1.28, rtol=1e-6)
  assert float(one[1]["clip_fraction"]) == 1.0


@pytest.mark.parametrize("loss_type", losses.LOSS_TYPES)
def test_entropy_bonus_by_hand(loss_type):
  w = 0.01
  loss, metrics = losses.text_policy_loss(LOGP, OLD, ADV, MASK, loss_type=loss_type,
                                          entropy=ENT, entropy_weight=w)
  np.testing.assert_allclose(float(loss), reference_loss(loss_type, entropy_weight=w),
                             rtol=1e-6)
  entropies = [ENT[i, t] for i in range(2) for t in range(3) if MASK[i, t]]
  np.testing.assert_allclose(float(metrics["entropy"]), sum(entropies) / len(entropies),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="entropy_weight"):
    losses.text_policy_loss(LOGP, OLD, ADV, MASK, entropy_weight=w)


def test_kl_estimators():
  logp, ref = jnp.array([-1.0]), jnp.array([-1.5])
  np.testing.assert_allclose(float(losses.kl_estimate(logp, ref, "k1")[0]), 0.5)
  np.testing.assert_allclose(float(losses.kl_estimate(logp, ref, "k2")[0]), 0.125)
  np.testing.assert_allclose(float(losses.kl_estimate(logp, ref, "k3")[0]),
                             math.exp(-0.5) + 0.5 - 1, rtol=1e-6)


def test_text_loss_gradient_matches_the_analytic_one():
  grad = jax.grad(lambda lp: losses.text_policy_loss(lp, OLD, ADV, MASK,
                                                     loss_type="grpo")[0])(jnp.asarray(LOGP))
  want = np.zeros_like(LOGP)
  for i in range(2):
    n = MASK[i].sum()
    for t in range(3):
      if not MASK[i, t]:
        continue
      ratio = math.exp(LOGP[i, t] - OLD[i, t])
      a = ADV[i]
      clipped_active = (a > 0 and ratio > 1.2) or (a < 0 and ratio < 0.8)
      # d/dlogp of −A·ρ is −A·ρ where the unclipped term is active; 0 where clipped.
      want[i, t] = 0.0 if clipped_active else -a * ratio / n / 2
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-7)


def test_on_policy_clipped_equals_unclipped():
  loss, metrics = losses.text_policy_loss(OLD, OLD, ADV, MASK)
  assert float(metrics["clip_fraction"]) == 0.0
  assert float(metrics["ratio_min"]) == float(metrics["ratio_max"]) == 1.0
  np.testing.assert_allclose(float(metrics["clipped_objective"]),
                             float(metrics["unclipped_objective"]))


def test_image_loss_by_hand():
  logp = np.array([[1e-4, -2e-4], [3e-5, 0.0]], np.float32) + 0.5
  old = np.full((2, 2), 0.5, np.float32)
  mask = np.array([[True, True], [True, False]])
  a = np.array([2.0, -1.0], np.float32)
  eps = 1e-4
  rows = [[per_token(logp[i, j], old[i, j], a[i], eps, eps) for j in range(2) if mask[i, j]]
          for i in range(2)]
  want = sum(sum(r) / len(r) for r in rows) / 2
  loss, _ = losses.image_policy_loss(logp, old, a, mask, clip_range=eps)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # A row with no trained step (its image was never drawn) does not dilute the mean.
  mask2 = np.array([[True, True], [False, False]])
  loss2, _ = losses.image_policy_loss(logp, old, a, mask2, clip_range=eps)
  np.testing.assert_allclose(float(loss2), sum(rows[0]) / 2, rtol=1e-5)


def test_ratio_norm_image_loss_by_hand():
  """GRPO-Guard's RatioNorm: log r̂ = s·(log r + mean(Δμ²)/(2s²)), Δμ = μ_old − μ_θ, then the
  clipped surrogate on r̂ (UniRL's `_ratio_norm_loss`), written out per step."""
  rng = np.random.default_rng(0)
  logp = np.array([[0.31, 0.25], [0.4, 0.1]], np.float32)
  old = np.array([[0.3, 0.27], [0.38, 0.1]], np.float32)
  mean = rng.standard_normal((2, 2, 3, 2)).astype(np.float32)
  old_mean = mean + 0.05 * rng.standard_normal(mean.shape).astype(np.float32)
  std = np.array([[0.2, 0.1], [0.3, 0.0]], np.float32)  # a deterministic step: s = 0
  mask = np.array([[True, True], [True, True]])
  a = np.array([1.5, -0.8], np.float32)
  eps = 0.01
  rows = []
  for i in range(2):
    row = []
    for j in range(2):
      s = float(std[i, j])
      d2 = float(np.mean((old_mean[i, j].astype(np.float64) - mean[i, j]) ** 2))
      log_r_hat = s * (float(logp[i, j]) - float(old[i, j]) + d2 / (2 * s * s)) if s else 0.0
      r = math.exp(log_r_hat)
      row.append(max(-a[i] * r, -a[i] * min(max(r, 1 - eps), 1 + eps)))
    rows.append(sum(row) / 2)
  loss, m = losses.image_policy_ratio_norm_loss(logp, old, mean, old_mean, std, a, mask,
                                                clip_range=eps)
  np.testing.assert_allclose(float(loss), sum(rows) / 2, rtol=1e-5)
  assert np.isfinite(float(m["ratio_mean"])) and "raw_ratio_mean" in m
  # On policy (μ_θ = μ_old, log r = 0) the ratio is exactly 1: the loss is −mean(A).
  same, _ = losses.image_policy_ratio_norm_loss(old, old, mean, mean, std, a, mask)
  np.testing.assert_allclose(float(same), -float(a.mean()), rtol=1e-6)


def test_velocity_mse_and_latent_kl_by_hand():
  v = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3) / 10
  ref = np.zeros_like(v)
  mask = np.array([[True, False], [True, True]])
  per_step = (v**2).mean(-1)
  want = (per_step[0, 0] + per_step[1, 0] + per_step[1, 1]) / 3
  np.testing.assert_allclose(float(losses.velocity_mse(v, ref, mask)[0]), want, rtol=1e-6)
  std = np.array([[0.5, 1.0], [2.0, 0.25]], np.float32)[..., None]
  per_step = ((v**2) / (2 * std**2)).mean(-1)
  want = (per_step[0, 0] + per_step[1, 0] + per_step[1, 1]) / 3
  np.testing.assert_allclose(float(losses.latent_kl(v, ref, std, mask)[0]), want, rtol=1e-6)


def test_registry_and_bad_names():
  assert {"text_policy", "image_policy", "image_policy_ratio_norm", "velocity_mse",
          "latent_kl"} <= set(losses.LOSSES)
  with pytest.raises(ValueError, match=r"loss\.loss_type 'ppo' is not one of"):
    losses.text_policy_loss(LOGP, OLD, ADV, MASK, loss_type="ppo")
  with pytest.raises(ValueError, match=r"kl estimator 'k4'"):
    losses.text_policy_loss(LOGP, OLD, ADV, MASK, ref_logp=REF, beta=0.1, kl="k4")
