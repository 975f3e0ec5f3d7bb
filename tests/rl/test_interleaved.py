"""Interleaved GRPO's step-wise credit: per-round advantages from outcome and process rewards on
a hand-built group, and the objective giving every token and SDE step of round r exactly
A[:, r]."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_rollout
from unigrpo_jax.rl import LossSpec, RLBatch, unigrpo_objective
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.rl.advantages import AdvantageSpec, trajectory_advantages


def advantages(scores, step_scores, step_mask, kind):
  return trajectory_advantages(
      scores, step_scores, step_mask, weights=dict(a=1.0), process_weights=dict(p=1.0, q=0.5),
      group_size=2, spec=AdvantageSpec(kind=kind, scale="group", eps=0.0, clip=None))


# One group of two stories over three rounds: the first reaches all three rounds, the second
# stops after two (its third round does not exist).
OUTCOME = {"a": np.array([1.0, 0.0], np.float32)}
STEPS = {"p": np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 9.0]], np.float32),
         "q": np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 9.0]], np.float32)}
MASK = np.array([[True, True, True], [True, True, False]])


def test_outcome_advantages_repeat_over_the_rounds():
  adv, total = advantages(OUTCOME, STEPS, MASK, "outcome")
  a = 1 / np.sqrt(0.5)  # (1 − 0.5) / std with n − 1 = sqrt(0.5)
  np.testing.assert_allclose(adv, [[a / 2, a / 2, a / 2], [-a / 2, -a / 2, -a / 2]], rtol=1e-6)
  np.testing.assert_allclose(total, [1.0, 0.0])


@pytest.mark.parametrize("kind", ["process", "both"])
def test_process_advantages_by_hand(kind):
  adv, _ = advantages(OUTCOME, STEPS, MASK, kind)
  # p + 0.5 q = [[1, 0, 1], [1, 1, (13.5, a round the story never reached)]]: the five
  # existing step rewards are normalised together (mean 0.8, std with n − 1 = sqrt(0.2)),
  # and each round gets the sum of its own and the later ones.
  norm = np.array([[0.2, -0.8, 0.2], [0.2, 0.2, 0.0]]) / np.sqrt(0.2)
  want = np.array([[norm[0].sum(), norm[0, 1:].sum(), norm[0, 2]],
                   [norm[1, :2].sum(), norm[1, 1], 0.0]])
  if kind == "both":
    want = want + np.array([[1.0], [-1.0]]) / np.sqrt(0.5) / 2 * MASK
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)


def test_process_advantages_credit_later_steps_to_earlier_ones():
  steps = {"p": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32),
           "q": np.zeros((2, 3), np.float32)}
  adv, _ = advantages(OUTCOME, steps, np.ones((2, 3), bool), "process")
  r = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
  norm = (r - r.mean()) / r.std(ddof=1)
  np.testing.assert_allclose(adv, np.flip(np.cumsum(np.flip(norm, 1), 1), 1), rtol=1e-6,
                             atol=1e-6)
  assert adv[0, 2] > 0 > adv[1, 2]  # the step that earned the reward is credited ...
  # ... and so is every step before it.
  assert float(adv[0, 1]) == pytest.approx(float(adv[1, 1])) and adv[0, 1] > 0


def test_every_token_and_sde_step_of_round_r_gets_the_advantage_of_round_r(tiny):
  model, params = tiny
  spec = tiny_rollout(rounds=3, max_text_tokens=4)
  prompts = jax.random.randint(jax.random.key(0), (4, 6), 5, 48)
  traj = make_rollout(model, spec)(params, prompts, jnp.ones(prompts.shape, bool),
                                   jax.random.key(2))
  adv = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0], [2.0, 1.0, 0.0], [-1.0, 4.0, 2.0]])

  def loss(token_logp, step_logp):
    scores = dict(token_logp=token_logp, step_logp=step_logp,
                  token_entropy=jnp.zeros_like(token_logp))
    return unigrpo_objective(scores, None, RLBatch(traj=traj, advantages=adv),
                             LossSpec(velocity_weight=0.0))[0]

  # On-policy (ratio 1, nothing clipped), d loss / d logp = −A[b, r] · w_b: a positive weight
  # that depends only on the row (token mean, or trained-step mean, per row).
  g_text, g_image = jax.grad(loss, argnums=(0, 1))(traj.token_logp, traj.step_logp)
  token_mask = np.asarray(traj.token_mask)
  step_mask = np.asarray(traj.step_mask)
  assert token_mask[:, 1:].any() and step_mask[:, 1:].any(), "need later rounds to test"
  a = np.asarray(adv)[:, :, None]
  for grad, mask in ((g_text, token_mask), (g_image, step_mask)):
    weight = -np.asarray(grad) / np.where(a == 0, 1.0, a)
    for b in range(4):
      row = weight[b][mask[b] & (np.broadcast_to(a[b], mask[b].shape) != 0)]
      assert row.size and np.all(row > 0) and np.ptp(row) < 1e-5 * row.max(), (b, row)
  # Rounds a row never reached get no gradient at all.
  assert np.all(np.asarray(g_text)[~token_mask] == 0)
  assert np.all(np.asarray(g_image)[~step_mask] == 0)
