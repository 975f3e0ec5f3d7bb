"""The jitted rollout: on-policy identity, stopping rules, determinism, ODE mode, bad input."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import TOKENS, lively_params, scorer, tiny_rollout, tiny_spec
from unigrpo_jax.model import UnifiedTransformer
from unigrpo_jax.sampling import make_rollout, score_trajectory, sde


def _prompts(b=4, p=5, vocab=48, seed=2):
  tokens = jax.random.randint(jax.random.key(seed), (b, p), 4, vocab)
  mask = jnp.ones((b, p), bool).at[0, :2].set(False).at[1, :1].set(False)
  return tokens, mask


@pytest.mark.parametrize("overrides,model_overrides", [
    (dict(), {}), (dict(rounds=1, sde_window=None, top_k=5), {}), (dict(cfg_scale=3.0), {}),
    (dict(), dict(matmul_dtype="bfloat16")), (dict(rounds=1), dict(vocab_limit=6)),
    (dict(sde_type="cps"), {}), (dict(image_reads_prompt=False), {})])
def test_recomputed_log_probs_equal_the_rollout(tiny, overrides, model_overrides):
  """Ratio = 1 on-policy: teacher-forced scoring reproduces every recorded log-prob (with
  bfloat16 matmuls too: rollout and rescoring run the same products; with a vocabulary limit,
  no id past it is drawn)."""
  model, params = tiny
  if model_overrides:
    model = UnifiedTransformer(tiny_spec(**model_overrides))
    params = lively_params(model.spec)
  spec = tiny_rollout(**overrides)
  tokens, mask = _prompts()
  traj = make_rollout(model, spec)(params, tokens, mask, jax.random.key(7))
  score = scorer(model, spec)(params, traj)
  tm, sm = np.asarray(traj.token_mask), np.asarray(traj.step_mask)
  assert tm.sum() > 0 and sm.sum() > 0
  if model.spec.vocab_limit:
    assert np.asarray(traj.tokens)[tm].max() < model.spec.vocab_limit
    assert np.all(np.isfinite(np.asarray(score["token_entropy"])))
  np.testing.assert_allclose(np.asarray(score["token_logp"])[tm], np.asarray(traj.token_logp)[tm],
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[sm], np.asarray(traj.step_logp)[sm],
                             atol=1e-5, rtol=1e-5)
  ratio = np.exp(np.asarray(score["step_logp"]) - np.asarray(traj.step_logp))[sm]
  np.testing.assert_allclose(ratio, 1.0, atol=1e-5)
  # The recorded SDE means (RatioNorm's μ_old) are the recomputed ones.
  trained = sm[:, :, spec.stochastic_steps()]
  np.testing.assert_allclose(np.asarray(score["mean"])[trained],
                             np.asarray(traj.step_mean)[trained], atol=1e-5, rtol=1e-5)
  # Shapes of the trajectory pytree.
  b, r, t, n = 4, spec.rounds, spec.max_text_tokens, spec.num_steps
  assert traj.tokens.shape == (b, r, t) and traj.step_logp.shape == (b, r, n)
  assert traj.latents.shape == (b, r, n + 1) + model.spec.image_shape
  np.testing.assert_array_equal(np.asarray(traj.latents[:, :, -1]), np.asarray(traj.images))
  assert score["velocity"].shape == (b, r, int(spec.stochastic_steps().sum())) + \
      model.spec.image_shape


def test_sde_steps_draws_k_steps_of_the_window_per_group_and_stays_on_policy(tiny):
  """`sde_steps` k: each group of rows samples k steps of the window with noise (the same k
  for its rows, other groups others), the rest of the window deterministically; only those k
  are trained, and rescoring reproduces their log-probs."""
  model, params = tiny
  spec = tiny_rollout(rounds=1, num_steps=6, sde_window=(0, 5), sde_steps=2)
  g, groups = 2, 6
  tokens, mask = _prompts(b=groups)
  tokens, mask = jnp.repeat(tokens, g, axis=0), jnp.repeat(mask, g, axis=0)
  traj = make_rollout(model, spec, g)(params, tokens, mask, jax.random.key(3))
  sm = np.asarray(traj.step_mask)[:, 0]  # (B, N)
  drawn = np.asarray(traj.image_mask)[:, 0]
  assert drawn.sum() >= 4
  np.testing.assert_array_equal(sm[drawn].sum(axis=1), 2)
  assert not sm[:, 5].any()  # outside the window
  per_group = sm.reshape(groups, g, -1)
  for rows, live in zip(per_group, drawn.reshape(groups, g)):
    for row in rows[live]:
      np.testing.assert_array_equal(row, rows[live][0])
  assert len({tuple(rows.any(axis=0)) for rows in per_group}) > 1  # drawn anew per group
  # Untrained window steps are Euler steps: no density recorded.
  logp = np.asarray(traj.step_logp)[:, 0]
  assert np.all(logp[~sm] == 0.0) and np.all(logp[sm] != 0.0)
  score = scorer(model, spec, g)(params, traj)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[:, 0][sm], logp[sm], atol=1e-5,
                             rtol=1e-5)
  # Only those k are rescored: the trajectory names them, and its means are at them.
  steps = np.asarray(traj.train_steps)[:, 0]
  assert steps.shape == (g * groups, 2)
  for b in np.flatnonzero(drawn):
    np.testing.assert_array_equal(steps[b], np.flatnonzero(sm[b]))
  assert score["mean"].shape[2] == 2
  np.testing.assert_allclose(np.asarray(score["mean"])[:, 0][drawn],
                             np.asarray(traj.step_mean)[:, 0][drawn], atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="rollout.sde_steps"):
    tiny_rollout(num_steps=6, sde_window=(0, 5), sde_steps=6)


def test_timestep_fraction_and_a_sliding_window_train_the_steps_they_name(tiny):
  """A window slid to step 1 is sampled with noise there and only there; each row trains
  (and rescores) half of it, its own half, and rescoring reproduces those log-probs."""
  model, params = tiny
  spec = tiny_rollout(rounds=1, num_steps=6, sde_window=(0, 4), timestep_fraction=0.5,
                      slide_every=2)
  assert [spec.window_start(i) for i in range(8)] == [0, 0, 1, 1, 2, 2, 2, 2]
  rolled = tiny_rollout(num_steps=6, sde_window=(0, 2), slide_every=1, slide_stride=2,
                        slide_roll_back=True)
  assert [rolled.window_start(i) for i in range(5)] == [0, 2, 4, 0, 2]
  tokens, mask = _prompts(b=6)
  traj = make_rollout(model, spec)(params, tokens, mask, jax.random.key(4), spec.window_start(2))
  logp = np.asarray(traj.step_logp)[:, 0]
  assert np.all(logp[:, 1:5] != 0) and np.all(logp[:, [0, 5]] == 0)
  steps = np.asarray(traj.train_steps)[:, 0]
  assert steps.shape == (6, 2) and np.all((steps >= 1) & (steps < 5))
  assert np.all(np.diff(steps, axis=1) > 0) and len({tuple(row) for row in steps}) > 1
  sm, drawn = np.asarray(traj.step_mask)[:, 0], np.asarray(traj.image_mask)[:, 0]
  assert drawn.sum() >= 3
  for b in np.flatnonzero(drawn):
    np.testing.assert_array_equal(np.flatnonzero(sm[b]), steps[b])
  score = scorer(model, spec)(params, traj)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[:, 0][sm], logp[sm], atol=1e-5,
                             rtol=1e-5)
  assert score["velocity"].shape[:3] == (6, 1, 2)
  np.testing.assert_allclose(np.asarray(score["mean"])[:, 0][drawn],
                             np.asarray(traj.step_mean)[:, 0][drawn], atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="rollout.timestep_fraction must be in"):
    tiny_rollout(timestep_fraction=0.0)
  with pytest.raises(ValueError, match="nowhere to slide"):
    tiny_rollout(sde_window=None, slide_every=1)


def test_group_noise_starts_a_group_from_one_noise_and_stays_on_policy(tiny):
  """`group_noise`: the rows of a group share x_1 (other groups have others); the SDE's
  noise still differs per row, and rescoring reproduces every log-prob."""
  model, params = tiny
  spec = tiny_rollout(rounds=1, group_noise=True, sde_type="cps")
  g, groups = 2, 3
  tokens, mask = _prompts(b=groups)
  tokens, mask = jnp.repeat(tokens, g, axis=0), jnp.repeat(mask, g, axis=0)
  traj = make_rollout(model, spec, g)(params, tokens, mask, jax.random.key(5))
  start = np.asarray(traj.latents)[:, 0, 0].reshape(groups, g, -1)
  np.testing.assert_array_equal(start[:, 0], start[:, 1])
  assert not np.allclose(start[0, 0], start[1, 0])
  assert not np.allclose(np.asarray(traj.images)[0], np.asarray(traj.images)[1])
  sm = np.asarray(traj.step_mask)
  score = scorer(model, spec, g)(params, traj)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[sm], np.asarray(traj.step_logp)[sm],
                             atol=1e-5, rtol=1e-5)
  plain = make_rollout(model, tiny_rollout(rounds=1, sde_type="cps"), g)(params, tokens, mask,
                                                                        jax.random.key(5))
  assert not np.array_equal(np.asarray(plain.latents)[0, 0, 0], np.asarray(plain.latents)[1, 0, 0])
  with pytest.raises(ValueError, match="rollout.noise_level must be in"):
    tiny_rollout(sde_type="cps", noise_level=1.5)
  with pytest.raises(ValueError, match="rollout.sde_type 'dpm'"):
    tiny_rollout(sde_type="dpm")


def test_same_key_same_trajectory_different_key_different_samples(tiny):
  model, params = tiny
  spec = tiny_rollout()
  fn = make_rollout(model, spec)
  tokens, mask = _prompts()
  a = fn(params, tokens, mask, jax.random.key(0))
  b = fn(params, tokens, mask, jax.random.key(0))
  c = fn(params, tokens, mask, jax.random.key(1))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
  assert not np.allclose(np.asarray(a.images), np.asarray(c.images))


def _forcing(spec_model, token_id):
  """Params whose text head always emits `token_id`.

  Residual channel 0 is pinned to +100 for every text token (embedding column set, every
  block's writes to it zeroed); the final norm and LM head read only that channel, and only
  into `token_id`'s logit.
  """
  params = lively_params(spec_model)
  params["embed"]["embedding"] = params["embed"]["embedding"].at[:, 0].set(100.0)
  for expert in params["layers"].values():
    expert["o"]["kernel"] = expert["o"]["kernel"].at[..., 0].set(0.0)
    expert["mlp"]["down"]["kernel"] = expert["mlp"]["down"]["kernel"].at[..., 0].set(0.0)
  params["text_norm"]["scale"] = jnp.zeros_like(params["text_norm"]["scale"]).at[0].set(1.0)
  params["lm_head"]["kernel"] = jnp.zeros_like(params["lm_head"]["kernel"]).at[0, token_id].set(
      1000.0)
  return params


def test_rows_stop_at_image_start_and_end_at_eos():
  spec_m = tiny_spec()
  model = UnifiedTransformer(spec_m)
  spec = tiny_rollout()
  fn = make_rollout(model, spec)
  tokens, mask = _prompts()
  for stop, ends in ((TOKENS["image_start_id"], False), (TOKENS["eos_id"], True)):
    traj = fn(_forcing(spec_m, stop), tokens, mask, jax.random.key(0))
    t, tm = np.asarray(traj.tokens), np.asarray(traj.token_mask)
    assert (t[:, 0, 0] == stop).all()
    assert tm[:, 0, 0].all() and not tm[:, 0, 1:].any()
    assert (t[:, 0, 1:] == TOKENS["pad_id"]).all()
    np.testing.assert_array_equal(np.asarray(traj.token_logp)[:, 0, 1:], 0.0)
    if ends:  # EOS ends the trajectory: no image, no later round.
      assert not np.asarray(traj.image_mask).any() and not np.asarray(traj.step_mask).any()
      assert not tm[:, 1].any()
    else:  # <img> stops the segment; the image is drawn and the next round starts.
      assert np.asarray(traj.image_mask).all()
      assert (t[:, 1, 0] == stop).all() and tm[:, 1, 0].all()
      np.testing.assert_array_equal(np.asarray(traj.step_mask)[0, 0], spec.stochastic_steps())


def test_top_k_draws_only_among_the_k_most_likely(tiny):
  model, params = tiny
  spec = tiny_rollout(rounds=1, top_k=1, temperature=1.0)
  greedy = tiny_rollout(rounds=1, temperature=0.0)
  tokens, mask = _prompts()
  a = make_rollout(model, spec)(params, tokens, mask, jax.random.key(0))
  b = make_rollout(model, greedy)(params, tokens, mask, jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_ode_mode_is_deterministic_euler(tiny):
  model, params = tiny
  spec = tiny_rollout(mode="ode", temperature=0.0)
  tokens, mask = _prompts()
  traj = make_rollout(model, spec)(params, tokens, mask, jax.random.key(0))
  assert not np.asarray(traj.step_mask).any()
  np.testing.assert_array_equal(np.asarray(traj.step_logp), 0.0)
  assert traj.train_steps.shape == (4, spec.rounds, 0)  # nothing to train
  # Each recorded transition is the Euler step of the velocity the scorer recomputes (at every
  # step, when the trajectory names them all).
  sde_spec = tiny_rollout(temperature=0.0, sde_window=None, noise_level=0.0)
  every = jnp.broadcast_to(jnp.arange(spec.num_steps, dtype=jnp.int32),
                           (4, spec.rounds, spec.num_steps))
  score = scorer(model, sde_spec)(params, traj.replace(train_steps=every))
  grid = traj.timesteps
  for j in range(spec.num_steps):
    want = sde.ode_step(traj.latents[:, 0, j], score["velocity"][:, 0, j], grid[j], grid[j + 1])
    np.testing.assert_allclose(np.asarray(traj.latents[:, 0, j + 1]), np.asarray(want),
                               atol=1e-5)


def test_bad_input_raises_before_compiling(tiny):
  model, params = tiny
  spec = tiny_rollout()
  fn = make_rollout(model, spec)
  tokens = jnp.ones((2, spec.prompt_len + 1), jnp.int32)
  with pytest.raises(ValueError, match=r"rollout\.prompt_len"):
    fn(params, tokens, jnp.ones(tokens.shape, bool), jax.random.key(0))
  with pytest.raises(ValueError, match=r"tokens\.eos_id"):
    make_rollout(model, tiny_rollout(eos_id=999))(params, tokens[:, :3],
                                                  jnp.ones((2, 3), bool), jax.random.key(0))
  with pytest.raises(ValueError, match=r"rollout\.sde_window"):
    tiny_rollout(sde_window=(2, 9))
  with pytest.raises(ValueError, match=r"rollout\.mode"):
    tiny_rollout(mode="cfg")


def test_text_only_rollout(tiny):
  model, params = tiny
  spec = tiny_rollout(rounds=1, draw_images=False)
  assert spec.layout(model.spec).length == spec.prompt_len + spec.max_text_tokens
  tokens, mask = _prompts()
  traj = make_rollout(model, spec)(params, tokens, mask, jax.random.key(7))
  assert not np.asarray(traj.image_mask).any() and not np.asarray(traj.step_mask).any()
  score = scorer(model, spec)(params, traj)
  tm = np.asarray(traj.token_mask)
  np.testing.assert_allclose(np.asarray(score["token_logp"])[tm], np.asarray(traj.token_logp)[tm],
                             atol=1e-5, rtol=1e-5)
  assert score["velocity"].shape[2] == 0
  with pytest.raises(ValueError, match=r"rollout\.rounds must be 1 when rollout\.draw_images"):
    tiny_rollout(rounds=2, draw_images=False)


def test_cfg_unconditional_branch_ignores_prompt_and_text(tiny):
  """v_u sees only image blocks: changing the prompt and text leaves it unchanged, while the
  conditional velocity moves; scale 1 is exactly the conditional velocity (no CFG)."""
  from unigrpo_jax.sampling.forward import guided_velocity, unconditional
  from unigrpo_jax.sampling.scoring import encode
  model, params = tiny
  spec = tiny_rollout(rounds=1)
  layout = spec.layout(model.spec)
  blocks = jnp.asarray(layout.block_ids())
  tokens, mask = _prompts()
  traj = make_rollout(model, spec)(params, tokens, mask, jax.random.key(7))
  other = traj.replace(prompt_tokens=(traj.prompt_tokens + 5) % 48)
  x = jax.random.normal(jax.random.key(3), traj.images[:, 0].shape)

  @functools.partial(jax.jit, static_argnums=(1, 2))
  def jitted_velocity(t, scale, uncond):
    context = encode(params, t, model=model, spec=spec).context
    valid = unconditional(t.valid, blocks) if uncond else t.valid
    return guided_velocity(model, context.params, x, 0.5, layout.image_start(0), valid, blocks,
                           t.prompt_mask, context.cache, scale)

  def velocity(t, scale, uncond=False):
    return np.asarray(jitted_velocity(t, scale, uncond))

  np.testing.assert_allclose(velocity(traj, 1.0, uncond=True),
                             velocity(other, 1.0, uncond=True), atol=1e-6)
  assert np.abs(velocity(traj, 1.0) - velocity(other, 1.0)).max() > 1e-3
  v_c, v_u = velocity(traj, 1.0), velocity(traj, 1.0, uncond=True)
  np.testing.assert_allclose(velocity(traj, 3.0), v_u + 3.0 * (v_c - v_u), atol=1e-5)


def test_images_that_do_not_read_the_prompt_read_the_text(tiny):
  """With `image_reads_prompt` off, rescored velocities ignore the prompt once the text is
  hidden (nothing else carries it) and read the text when it is in view; on, they read the
  prompt."""
  model, params = tiny
  off, on = tiny_rollout(rounds=1, image_reads_prompt=False), tiny_rollout(rounds=1)
  layout = off.layout(model.spec)
  text = np.zeros(layout.length, bool)
  text[layout.text_start(0):layout.image_start(0)] = True
  tokens, mask = _prompts()
  traj = make_rollout(model, off)(params, tokens, mask, jax.random.key(7))
  no_text = traj.replace(valid=traj.valid & ~text)
  other = no_text.replace(prompt_tokens=(no_text.prompt_tokens + 5) % 48)
  velocity = lambda spec, t: np.asarray(scorer(model, spec)(params, t)["velocity"])  # noqa: E731
  np.testing.assert_allclose(velocity(off, no_text), velocity(off, other), atol=1e-6)
  assert np.abs(velocity(on, no_text) - velocity(on, other)).max() > 1e-3
  assert np.abs(velocity(off, traj) - velocity(off, no_text)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
def test_prompt_encoded_once_per_group_scores_like_every_row(scan_layers):
  """Rollout and scoring with `group_size` (each group's prompt run once, its keys/values
  repeated to the group) give every row's samples, log-probs, velocities and gradients as
  running each row alone."""
  spec = tiny_spec(scan_layers=scan_layers)
  model = UnifiedTransformer(spec)
  params = lively_params(spec)
  rollout = tiny_rollout()
  tokens, mask = _prompts(b=2)
  tokens, mask = jnp.repeat(tokens, 3, axis=0), jnp.repeat(mask, 3, axis=0)
  traj = make_rollout(model, rollout)(params, tokens, mask, jax.random.key(7))
  # Prefilled once per group, the rollout samples the same trajectories.
  grouped = make_rollout(model, rollout, group_size=3)(params, tokens, mask, jax.random.key(7))
  np.testing.assert_array_equal(np.asarray(grouped.tokens), np.asarray(traj.tokens))
  for name in ("token_logp", "step_logp", "images"):
    np.testing.assert_allclose(np.asarray(getattr(grouped, name)),
                               np.asarray(getattr(traj, name)), atol=1e-5, rtol=1e-5)

  def score(p, group_size):
    return score_trajectory(p, traj, model=model, spec=rollout, group_size=group_size)

  want, got = (jax.jit(score, static_argnums=1)(params, g) for g in (1, 3))
  for key in want:
    np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=2e-6,
                               rtol=1e-5, err_msg=key)

  def total(p, group_size):
    s = score(p, group_size)
    return jnp.sum(s["token_logp"]) + jnp.sum(s["step_logp"]) + jnp.sum(s["velocity"] ** 2)

  grads = [jax.jit(jax.grad(total), static_argnums=1)(params, g) for g in (1, 3)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)
