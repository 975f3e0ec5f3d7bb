"""The GRPO update: exactly on-policy first, moves the policy the right way, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import lively_params, tiny_rollout, tiny_spec
from unigrpo_jax import sharding
from unigrpo_jax.model import UnifiedTransformer, param_logical_axes
from unigrpo_jax.optim import (OptimizerSpec, init_train_state, make_optimizer,
                               train_state_shardings)
from unigrpo_jax.rl import (GradientSum, LossSpec, RLBatch, UpdateSpec, make_accumulate,
                            make_apply, make_update)
from unigrpo_jax.rl.advantages import group_advantages
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.sampling.scoring import check_group_prompts

OPTIM = dict(learning_rate=1e-3, schedule="constant", warmup_steps=0, total_steps=100, b1=0.9,
             b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)


def _setup(loss=LossSpec(), update=UpdateSpec(), rollout=None, optim=OPTIM, seed=0):
  spec = tiny_spec(depth=1)  # one block: the update, not the stack, is under test
  model = UnifiedTransformer(spec)
  params = lively_params(spec, seed)
  rollout = rollout or tiny_rollout()
  optimizer = make_optimizer(OptimizerSpec(**optim))
  return (model, params, rollout, make_rollout(model, rollout),
          make_update(model, rollout, loss, update, optimizer, donate=False), optimizer)


def _outcome(rewards, group, rounds):
  return jnp.repeat(group_advantages(jnp.asarray(rewards), group)[:, None], rounds, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("image_ratio,sampler", [
    ("plain", {}), ("ratio_norm", {}),
    ("ratio_norm", dict(sde_type="cps", sde_window=(0, 2), slide_every=1, timestep_fraction=0.5))])
def test_first_update_is_exactly_on_policy(image_ratio, sampler):
  """The first minibatch's ratios are 1 (RatioNorm's r̂ too: μ_θ = the recorded μ_old) — also
  with the coefficients-preserving step, a window slid one step on, and half of it trained."""
  model, params, rollout, sample, update, optimizer = _setup(
      loss=LossSpec(beta=0.04, latent_kl_weight=0.1, image_ratio=image_ratio),
      update=UpdateSpec(num_updates=2, num_minibatches=2), rollout=tiny_rollout(**sampler))
  prompts = jax.random.randint(jax.random.key(0), (8, 6), 4, 48)
  traj = sample(params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(1),
                rollout.window_start(1))
  if sampler:  # one trained step a row, in the slid window [1, 3)
    steps = np.asarray(traj.train_steps)
    assert steps.shape == (8, rollout.rounds, 1) and set(np.unique(steps)) == {1, 2}
  batch = RLBatch(traj=traj, advantages=_outcome(np.arange(8.0) % 3, 4, rollout.rounds))
  _, metrics = update(init_train_state(params, optimizer), params, batch)
  first = {k: float(np.asarray(v)[0, 0]) for k, v in metrics.items()}
  for part in ("text", "image"):
    assert abs(first[f"{part}/ratio_min"] - 1) < 1e-5 and abs(first[f"{part}/ratio_max"] - 1) < 1e-5
    assert first[f"{part}/clip_fraction"] == 0.0
    np.testing.assert_allclose(first[f"{part}/clipped_objective"],
                               first[f"{part}/unclipped_objective"], rtol=1e-6, atol=1e-7)
  # Reference = current parameters before the first step: every regulariser is zero.
  assert first["text/kl_ref"] < 1e-6 and first["image/velocity_mse"] < 1e-10
  assert first["image/latent_kl"] < 1e-8
  # Later minibatches are off-policy: the parameters did move.
  assert abs(float(np.asarray(metrics["text/ratio_max"])[1, 1]) - 1) > 1e-4
  assert ("image/raw_ratio_mean" in metrics) == (image_ratio == "ratio_norm")


def test_non_finite_loss_skips_the_update_and_keeps_the_state():
  """A NaN advantage (as from a NaN reward that got past the loop) makes the loss NaN: that
  minibatch's update is skipped — parameters, moments and step unchanged — and the next finite
  one applies."""
  _, params, rollout, sample, update, optimizer = _setup(
      update=UpdateSpec(num_updates=1, num_minibatches=2))
  prompts = jax.random.randint(jax.random.key(0), (8, 6), 4, 48)
  traj = sample(params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(1))
  good = _outcome(np.arange(8.0) % 3, 4, rollout.rounds)
  state = init_train_state(params, optimizer)
  # Minibatch 0 holds rows 0, 2, 4, 6: poison only those.
  poisoned = good.at[0].set(jnp.nan)
  skipped_state, metrics = update(state, params, RLBatch(traj=traj, advantages=poisoned))
  assert np.asarray(metrics["skipped"]).tolist() == [[1.0, 0.0]]
  assert int(skipped_state.step) == 1  # only minibatch 1 applied
  all_bad, metrics = update(state, params, RLBatch(traj=traj, advantages=good * jnp.nan))
  assert np.asarray(metrics["skipped"]).tolist() == [[1.0, 1.0]]
  assert int(all_bad.step) == 0
  jax.tree.map(np.testing.assert_array_equal, all_bad, state)
  stepped, metrics = update(state, params, RLBatch(traj=traj, advantages=good))
  assert np.asarray(metrics["skipped"]).tolist() == [[0.0, 0.0]]
  assert int(stepped.step) == 2


def _train(reward_fn, loss, iterations, optim, group=8, prompts=2):
  rollout = tiny_rollout(rounds=1, max_text_tokens=4, num_steps=4, sde_window=(0, 3))
  model, params, rollout, sample, update, optimizer = _setup(
      loss=loss, rollout=rollout, optim=optim, update=UpdateSpec(group_size=group))
  state = init_train_state(params, optimizer)
  base = jax.random.randint(jax.random.key(0), (prompts, 6), 4, 48)
  tokens = jnp.repeat(base, group, axis=0)
  mask = jnp.ones(tokens.shape, bool)
  history = []
  for it in range(iterations):
    traj = sample(state.params, tokens, mask, jax.random.key(100 + it))
    rewards = reward_fn(traj)
    history.append(float(np.mean(rewards)))
    state, _ = update(state, params, RLBatch(traj=traj, advantages=_outcome(rewards, group, 1)))
  return history


def test_text_grpo_raises_a_reward_that_favours_one_token():
  favoured = 7

  def reward(traj):
    tokens, live = np.asarray(traj.tokens[:, 0]), np.asarray(traj.token_mask[:, 0])
    return ((tokens == favoured) & live).sum(1) / np.maximum(live.sum(1), 1)

  history = _train(reward, LossSpec(image=False, velocity_weight=0.0), 15,
                   dict(OPTIM, learning_rate=3e-2))
  assert np.mean(history[-3:]) > np.mean(history[:3]) + 0.3, history


def test_entropy_bonus_alone_raises_the_text_entropy():
  """Zero advantages and no regulariser: only the bonus moves the text policy, upwards."""
  rollout = tiny_rollout(rounds=1, max_text_tokens=4, num_steps=4, sde_window=(0, 3))
  _, params, rollout, sample, update, optimizer = _setup(
      loss=LossSpec(image=False, velocity_weight=0.0, entropy_weight=1.0), rollout=rollout,
      update=UpdateSpec(num_updates=4, group_size=4))
  prompts = jax.random.randint(jax.random.key(0), (8, 6), 4, 48)
  traj = sample(params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(1))
  _, metrics = update(init_train_state(params, optimizer), params,
                      RLBatch(traj=traj, advantages=jnp.zeros((8, 1))))
  entropy = np.asarray(metrics["text/entropy"])[:, 0]
  assert np.all(np.diff(entropy) > 0), entropy


def test_flow_grpo_raises_a_reward_that_favours_bright_images():
  def reward(traj):
    return np.asarray(traj.images[:, 0]).mean(axis=(1, 2, 3))

  history = _train(reward, LossSpec(text=False, velocity_weight=0.0, clip_image=1e-2), 15,
                   dict(OPTIM, learning_rate=1e-2))
  assert np.mean(history[-3:]) > np.mean(history[:3]) + 0.3, history


@pytest.mark.slow
def test_prompt_encoded_once_per_group_gives_the_same_update():
  """`group_size` only changes how the shared prompt is computed: the same new parameters and
  metrics as encoding every row, with minibatches that keep half a group each."""
  loss = LossSpec(beta=0.04, latent_kl_weight=0.1)
  # Adam's eps at 1e-3, not 1e-8: with 1e-8 a parameter whose gradient is near zero moves
  # by about lr·g/(|g| + eps), which turns last-bit differences between the two summation
  # orders into 1e-4 parameter differences (one embedding row, on an AMD EPYC). With 1e-3
  # the step is close to linear in such gradients, so the comparison tests the gradients.
  optim = dict(OPTIM, eps=1e-3)
  _, params, rollout, sample, per_row, optimizer = _setup(
      loss=loss, update=UpdateSpec(num_updates=2, num_minibatches=2), optim=optim)
  *_, grouped, _ = _setup(loss=loss, update=UpdateSpec(num_updates=2, num_minibatches=2,
                                                       group_size=4), optim=optim)
  prompts = jnp.repeat(jax.random.randint(jax.random.key(0), (2, 6), 4, 48), 4, axis=0)
  mask = jnp.ones(prompts.shape, bool).at[:4, :2].set(False)  # group 0 left-padded
  traj = sample(params, prompts, mask, jax.random.key(1))
  batch = RLBatch(traj=traj, advantages=_outcome(np.arange(8.0) % 3, 4, rollout.rounds))
  state = init_train_state(params, optimizer)
  want, want_metrics = per_row(state, params, batch)
  got, got_metrics = grouped(state, params, batch)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(want.params),
                                                              jax.tree.leaves(params)))
  assert moved > 1e-4
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for name in ("loss", "text/ratio_max", "image/ratio_max", "text/kl_ref"):
    np.testing.assert_allclose(got_metrics[name], want_metrics[name], atol=1e-5, rtol=1e-5)


def test_groups_that_do_not_share_a_prompt_are_refused():
  tokens = np.repeat(np.arange(12).reshape(2, 6), 3, axis=0)
  mask = np.ones(tokens.shape, bool)
  check_group_prompts(tokens, mask, 3)
  check_group_prompts(np.where(mask, tokens, 99), mask, 3)
  bad = tokens.copy()
  bad[4, 1] += 1
  with pytest.raises(ValueError, match=r"group 1 \(rows 3–5\) have different prompt_tokens"):
    check_group_prompts(bad, mask, 3)
  bad_mask = mask.copy()
  bad_mask[0, 0] = False
  with pytest.raises(ValueError, match=r"group 0 \(rows 0–2\) have different prompt_mask"):
    check_group_prompts(tokens, bad_mask, 3)
  with pytest.raises(ValueError, match="groups of 4"):
    check_group_prompts(tokens, mask, 4)
  with pytest.raises(ValueError, match=r"rl\.group_size must be >= 1"):
    UpdateSpec(group_size=0)


def test_bad_update_inputs_fail_clearly():
  model, params, rollout, sample, update, optimizer = _setup(
      update=UpdateSpec(num_minibatches=3))
  prompts = jax.random.randint(jax.random.key(0), (4, 6), 4, 48)
  traj = sample(params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(1))
  state = init_train_state(params, optimizer)
  with pytest.raises(ValueError, match=r"rl\.num_minibatches = 3"):
    update(state, params, RLBatch(traj=traj, advantages=jnp.zeros((4, rollout.rounds))))
  _, _, _, _, update1, _ = _setup()
  with pytest.raises(ValueError, match=r"advantages have shape \(4,\), expected \(4, 2\)"):
    update1(state, params, RLBatch(traj=traj, advantages=jnp.zeros((4,))))
  with pytest.raises(ValueError, match=r"loss\.loss_type 'ppo'"):
    LossSpec(loss_type="ppo")
  with pytest.raises(ValueError, match=r"loss\.clip_image must be >= 0"):
    LossSpec(clip_image=-1.0)
  with pytest.raises(ValueError, match=r"loss\.beta and loss\.entropy_weight act on the text"):
    LossSpec(text=False, entropy_weight=0.01)
  with pytest.raises(ValueError, match=r"rl\.num_updates must be >= 1"):
    UpdateSpec(num_updates=0)
  with pytest.raises(ValueError, match=r"optim\.schedule 'linear'"):
    OptimizerSpec(**dict(OPTIM, schedule="linear"))


def test_image_lr_scale_scales_only_the_image_side():
  from unigrpo_jax.optim import image_parameters
  params = lively_params(tiny_spec())
  grads = jax.tree.map(jnp.ones_like, params)
  marks = image_parameters(params)
  assert marks["layers"]["image"]["q"]["kernel"] and marks["image_out"]["proj"]["kernel"]
  assert not marks["layers"]["text"]["q"]["kernel"] and not marks["embed"]["embedding"]

  def first_step(scale):
    optimizer = make_optimizer(OptimizerSpec(**dict(OPTIM, image_lr_scale=scale)))
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return updates

  one, ten = first_step(1.0), first_step(10.0)
  for mark, a, b in zip(jax.tree.leaves(marks), jax.tree.leaves(one), jax.tree.leaves(ten)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a) * (10.0 if mark else 1.0),
                               rtol=1e-6)
  with pytest.raises(ValueError, match=r"optim\.image_lr_scale must be positive"):
    OptimizerSpec(**dict(OPTIM, image_lr_scale=0.0))


def test_frozen_parameters_stay_out_of_the_step_and_the_clipping_norm():
  """UniRL's Bagel recipe freezes embeddings, norms and head: they do not move (weight decay
  included), and the global-norm clip sees only the trained gradients."""
  from unigrpo_jax.optim import frozen_parameters
  params = lively_params(tiny_spec(qk_norm=True))
  kinds = ("embeddings", "norms", "head")
  marks = frozen_parameters(params, kinds)
  assert marks["embed"]["embedding"] and marks["lm_head"]["kernel"]
  assert marks["layers"]["image"]["q_norm"]["scale"] and marks["text_norm"]["scale"]
  assert not marks["layers"]["text"]["q"]["kernel"] and not marks["image_in"]["patch"]["kernel"]
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  spec = OptimizerSpec(**dict(OPTIM, grad_clip=1e-3, frozen=kinds))
  optimizer = make_optimizer(spec)
  opt_state = optimizer.init(params)
  updates, _ = optimizer.update(grads, opt_state, params)
  # The trained side alone: the same step from an optimizer that sees only its gradients.
  plain = make_optimizer(OptimizerSpec(**dict(OPTIM, grad_clip=1e-3)))
  masked_grads = jax.tree.map(lambda g, m: jnp.where(m, 0.0, g), grads, marks)
  want, _ = plain.update(masked_grads, plain.init(params), params)
  for m, u, w in zip(jax.tree.leaves(marks), jax.tree.leaves(updates), jax.tree.leaves(want)):
    if m:
      assert not np.any(np.asarray(u))
    else:
      np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=1e-6, atol=1e-12)
  # The state is sharded like any other (its moments mirror the parameters).
  mesh = sharding.make_mesh({"fsdp": -1})
  shardings = sharding.param_shardings(param_logical_axes(tiny_spec(qk_norm=True)), mesh, params)
  train_state_shardings(optimizer, params, shardings, mesh)
  with pytest.raises(ValueError, match=r"optim\.frozen names \['bias'\]"):
    OptimizerSpec(**dict(OPTIM, frozen=("bias",)))


@pytest.mark.slow
def test_update_per_part_is_one_step_on_the_parts_mean_gradient():
  """One part: the same step as the one-minibatch update. Two parts of whole groups: every part
  exactly on-policy (its ratios 1, its reference terms 0), one optimizer step on the mean of
  their gradients — the sum of each part's gradient taken alone — and none when a part's
  advantages are NaN."""
  loss = LossSpec(beta=0.04, velocity_weight=1e-3)
  model, params, rollout, sample, update, optimizer = _setup(loss=loss,
                                                             update=UpdateSpec(group_size=4))
  prompts = jnp.repeat(jax.random.randint(jax.random.key(0), (2, 6), 4, 48), 4, axis=0)
  traj = sample(params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(1))
  batch = RLBatch(traj=traj, advantages=_outcome(np.arange(8.0) % 3, 4, rollout.rounds))
  accumulate = make_accumulate(model, rollout, loss, 4)
  apply = make_apply(optimizer, donate=False)
  state = init_train_state(params, optimizer)

  whole, _ = update(state, params, batch)
  total, _ = accumulate(GradientSum.zeros(params), params, params, batch)
  one_part, one_metrics = apply(state, total)
  for a, b in zip(jax.tree.leaves(one_part.params), jax.tree.leaves(whole.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
  assert float(one_metrics["skipped"]) == 0.0

  parts = [jax.tree.map(lambda x, c=c: x[4 * c:4 * (c + 1)] if x.ndim and x.shape[0] == 8
                        else x, batch) for c in range(2)]
  total, alone = GradientSum.zeros(params), []
  for part in parts:
    total, metrics = accumulate(total, params, params, part)
    assert abs(float(metrics["text/ratio_max"]) - 1) < 1e-5
    assert abs(float(metrics["image/ratio_max"]) - 1) < 1e-5
    assert float(metrics["text/kl_ref"]) < 1e-6 and float(metrics["image/velocity_mse"]) < 1e-10
    alone.append(accumulate(GradientSum.zeros(params), params, params, part)[0])
  assert int(total.parts) == 2
  for a, b, c in zip(*(jax.tree.leaves(t.grads) for t in (total, *alone))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b) + np.asarray(c), atol=1e-6)
  mean = optimizer.update(jax.tree.map(lambda g: g / 2, total.grads), state.opt_state, params)[0]
  stepped, metrics = apply(state, total)
  for p, new, u in zip(*map(jax.tree.leaves, (params, stepped.params, mean))):
    np.testing.assert_allclose(np.asarray(new), np.asarray(p) + np.asarray(u), atol=1e-7)
  assert int(stepped.step) == 1 and float(metrics["skipped"]) == 0.0

  poisoned = parts[1].replace(advantages=parts[1].advantages.at[0].set(jnp.nan))
  total = accumulate(accumulate(GradientSum.zeros(params), params, params, parts[0])[0],
                     params, params, poisoned)[0]
  kept, metrics = apply(state, total)
  assert float(metrics["skipped"]) == 1.0 and int(kept.step) == 0
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
