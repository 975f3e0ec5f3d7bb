"""The unified model: KV-cached decoding vs full forward, attention masks, MoT routing, shapes."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import lively_params, scorer, tiny_rollout, tiny_spec
from unigrpo_jax.model import (IMAGE, TEXT, ModelSpec, SequenceLayout, StackParams,
                               UnifiedTransformer, for_decoding, init_params, param_logical_axes)
from unigrpo_jax.model.masks import attention_mask
from unigrpo_jax.sampling import make_rollout, score_trajectory
from unigrpo_jax.sampling.forward import image_velocity, run_slots


def _logits(model, params, h):
  return model.apply({"params": params}, h, method=model.logits)


@pytest.mark.parametrize("overrides", [dict(), dict(mot=False, tie_embeddings=True),
                                       dict(num_kv_heads=4), dict(matmul_dtype="bfloat16")])
def test_cached_decode_equals_full_forward(overrides):
  spec = tiny_spec(**overrides)
  model = UnifiedTransformer(spec)
  params = init_params(spec, jax.random.key(0))
  b, length, prompt = 3, 12, 5
  tokens = jax.random.randint(jax.random.key(1), (b, length), 0, spec.vocab_size)
  prompt_mask = jnp.ones((b, prompt), bool).at[0, :2].set(False)  # row 0 left-padded
  valid = jnp.concatenate([prompt_mask, jnp.ones((b, length - prompt), bool)], axis=1)
  blocks = jnp.full((length,), -1, jnp.int32)

  embed = lambda p, t: model.apply({"params": p}, t, method=model.embed_tokens)  # noqa: E731

  @jax.jit
  def full(params):
    h, _ = run_slots(model, StackParams(params, looped=False), embed(params, tokens), 0, valid,
                     blocks, prompt_mask)
    return _logits(model, params, h)

  @jax.jit
  def cached(params):
    layers = for_decoding(params, spec)
    cache = layers.empty_cache(spec, b, length)
    h, cache = run_slots(model, layers, embed(params, tokens[:, :prompt]), 0, valid, blocks,
                         prompt_mask, cache)
    out = [_logits(model, params, h)]
    for s in range(prompt, length):
      h, cache = run_slots(model, layers, embed(params, tokens[:, s:s + 1]), s, valid, blocks,
                           prompt_mask, cache)
      out.append(_logits(model, params, h))
    return jnp.concatenate(out, axis=1)

  want, got = full(params), cached(params)
  real = np.asarray(valid)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5, rtol=1e-5)


def test_attention_mask_rules():
  layout = SequenceLayout(prompt_len=2, text_len=2, image_tokens=3, rounds=2)
  blocks = jnp.asarray(layout.block_ids())
  valid = jnp.ones((1, layout.length), bool).at[0, 0].set(False)
  mask = np.asarray(attention_mask(jnp.arange(layout.length), valid, blocks))[0]
  img = layout.image_start(0)
  block = slice(img, img + 3)
  assert mask[block, block].all()  # bidirectional inside the image
  assert not mask[img + 3:, 0].any()  # padding slot visible to nobody
  text_after = layout.text_start(1)
  assert mask[text_after, block].all()  # later text sees the image
  assert not mask[layout.text_start(0), block].any()  # earlier text does not
  assert not mask[img, img + 3:].any()  # the image sees nothing after it
  causal = np.tril(np.ones_like(mask))
  outside = np.asarray(blocks) < 0
  np.testing.assert_array_equal(mask[outside][:, outside], causal[outside][:, outside]
                                & np.asarray(valid)[0][outside][None])


def _two_round_trajectory(model, params, spec, key=3):
  prompts = jax.random.randint(jax.random.key(2), (3, 6), 4, model.spec.vocab_size)
  return make_rollout(model, spec)(params, prompts, jnp.ones((3, 6), bool), jax.random.key(key))


def test_noised_blocks_are_invisible_and_clean_images_condition_later_text(tiny):
  model, params = tiny
  spec = tiny_rollout(temperature=1.0)
  traj = _two_round_trajectory(model, params, spec)
  score = scorer(model, spec)
  base = score(params, traj)
  # Every noised state x_{t_j}, j < N, changed: no token log-prob moves.
  noised = traj.latents.at[:, :, :-1].add(1.0)
  moved = score(params, traj.replace(latents=noised))
  np.testing.assert_array_equal(np.asarray(moved["token_logp"]), np.asarray(base["token_logp"]))
  # The clean first image changed: round-1 text is untouched, round-2 text moves.
  images = traj.images.at[:, 0].add(1.0)
  moved = score(params, traj.replace(images=images))
  mask = np.asarray(traj.token_mask)
  np.testing.assert_array_equal(np.asarray(moved["token_logp"])[:, 0],
                                np.asarray(base["token_logp"])[:, 0])
  delta = np.abs(np.asarray(moved["token_logp"]) - np.asarray(base["token_logp"]))[:, 1]
  assert delta[mask[:, 1]].max() > 1e-4


def test_image_block_attention_is_bidirectional(tiny):
  model, params = tiny
  spec = tiny_rollout(rounds=1)
  layout = spec.layout(model.spec)
  b = 2
  blocks = jnp.asarray(layout.block_ids())
  valid = jnp.zeros((b, layout.length), bool).at[:, :layout.image_start(0)].set(True)
  prompt_mask = jnp.ones((b, spec.prompt_len), bool)
  tokens = jax.random.randint(jax.random.key(0), (b, layout.image_start(0)), 4, 40)
  h = model.apply({"params": params}, tokens, method=model.embed_tokens)
  stacked = StackParams(params, looped=False)
  _, cache = run_slots(model, stacked, h, 0, valid,
                       blocks, prompt_mask, stacked.empty_cache(model.spec, b, layout.length))

  @jax.jit
  def velocity(x):
    return image_velocity(model, stacked, x, 0.5, layout.image_start(0), valid, blocks,
                          prompt_mask, cache)

  x = jax.random.normal(jax.random.key(1), (b,) + model.spec.image_shape)
  p = model.spec.patch_size
  # Perturb the last patch (bottom-right): the first patch's velocity (top-left) must change.
  x2 = x.at[:, -p:, -p:].add(1.0)
  v1, v2 = velocity(x), velocity(x2)
  assert float(jnp.abs(v1[:, :p, :p] - v2[:, :p, :p]).max()) > 1e-5


def test_mot_generation_weights_touch_only_image_tokens(tiny):
  model, params = tiny
  spec = tiny_rollout(temperature=1.0)
  traj = _two_round_trajectory(model, params, spec)
  score = scorer(model, spec)
  other = dict(params)
  other["layers"] = dict(params["layers"])
  other["layers"]["image"] = jax.tree.map(lambda w: w + 0.05, params["layers"]["image"])
  other["image_norm"] = jax.tree.map(lambda w: w * 1.5, params["image_norm"])
  base, moved = score(params, traj), score(other, traj)
  np.testing.assert_array_equal(np.asarray(moved["token_logp"]), np.asarray(base["token_logp"]))
  assert float(jnp.abs(moved["velocity"] - base["velocity"]).max()) > 1e-4
  assert float(jnp.abs(moved["step_logp"] - base["step_logp"]).max()) > 1e-4


def test_per_token_routing_matches_static_routing():
  spec = tiny_spec()
  model = UnifiedTransformer(spec)
  params = lively_params(spec)
  b, n = 2, 7
  h = jax.random.normal(jax.random.key(0), (b, n, spec.width))
  pos = jnp.broadcast_to(jnp.arange(n), (b, n))
  mask = jnp.broadcast_to(jnp.eye(n, dtype=bool), (b, n, n))  # each token alone: routing only
  run = lambda **kw: model.apply({"params": params}, h, pos, mask, **kw)[0]  # noqa: E731
  modality = jnp.array([[TEXT, IMAGE, TEXT, IMAGE, IMAGE, TEXT, TEXT]] * b)
  mixed = run(modality=modality, route=None)
  text, image = run(route=TEXT), run(route=IMAGE)
  want = jnp.where((modality == IMAGE)[..., None], image, text)
  np.testing.assert_allclose(np.asarray(mixed), np.asarray(want), atol=1e-6)
  assert float(jnp.abs(text - image).max()) > 1e-3


def test_parameters_carry_logical_axes():
  spec = tiny_spec()
  axes = param_logical_axes(spec)
  params = init_params(spec, jax.random.key(0))
  flat_axes = jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(
      x, jax.sharding.PartitionSpec))
  shapes = {jax.tree_util.keystr(k): v.shape for k, v in
            jax.tree_util.tree_leaves_with_path(params)}
  assert len(flat_axes) == len(shapes)
  for path, names in flat_axes:
    assert len(names) == len(shapes[jax.tree_util.keystr(path)]), path
  assert tuple(axes["layers"]["text"]["q"]["kernel"]) == ("layers", "embed", "heads",
                                                          "head_dim")
  # Zero-initialised velocity head: a fresh model predicts no motion.
  assert float(jnp.abs(params["image_out"]["proj"]["kernel"]).max()) == 0.0


@pytest.mark.parametrize("field,overrides", [
    ("model.image_size", dict(image_size=10, patch_size=4)),
    ("model.num_kv_heads", dict(num_heads=4, num_kv_heads=3)),
    ("model.depth", dict(depth=0)),
    ("model.dtype", dict(dtype="float33")),
])
def test_bad_model_spec_names_the_field(field, overrides):
  kw = dict(vocab_size=64, width=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8,
            mlp_dim=64, image_size=8, patch_size=4)
  kw.update(overrides)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    ModelSpec(**kw)


def test_scanned_and_looped_layers_score_alike(tiny):
  model, params = tiny
  spec = tiny_rollout()
  traj = _two_round_trajectory(model, params, spec)
  scanned = UnifiedTransformer(dataclasses.replace(model.spec, scan_layers=True))
  a = scorer(model, spec)(params, traj)
  b = scorer(scanned, spec)(params, traj)
  for key in ("token_logp", "step_logp", "velocity"):
    np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=2e-5, rtol=1e-5)


def test_x0_prediction_head_gives_the_velocity_of_its_clean_image():
  spec = tiny_spec(prediction="x0", x0_min_time=0.05)
  model = UnifiedTransformer(spec)
  params = lively_params(spec)
  b, n = 2, spec.image_tokens
  h = jax.random.normal(jax.random.key(0), (b, n, spec.width))
  x = jax.random.normal(jax.random.key(1), (b,) + spec.image_shape)
  t = jnp.array([0.5, 0.01])
  v = model.apply({"params": params}, h, x, t, method=model.velocity)
  raw = UnifiedTransformer(dataclasses.replace(spec, prediction="velocity"))
  head = raw.apply({"params": params}, h, x, t, method=model.velocity)
  np.testing.assert_allclose(np.asarray(v[0]), np.asarray((x[0] - head[0]) / 0.5), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(v[1]), np.asarray((x[1] - head[1]) / 0.05), rtol=1e-5)
  # The on-policy identity holds for this head too.
  rollout = tiny_rollout()
  traj = _two_round_trajectory(model, params, rollout)
  score = scorer(model, rollout)(params, traj)
  sm = np.asarray(traj.step_mask)
  np.testing.assert_allclose(np.asarray(score["step_logp"])[sm], np.asarray(traj.step_logp)[sm],
                             atol=1e-5)
  with pytest.raises(ValueError, match=r"model\.prediction must be"):
    tiny_spec(prediction="eps")


def test_bagel_position_table_is_its_sincos_with_columns_first():
  """Bagel's `get_2d_sincos_pos_embed` written out: meshgrid(w, h) puts the column in the
  first half; each half [sin, cos] with ω_i = 10⁴^(−i/(D/4))."""
  from unigrpo_jax.model.image import sincos_2d
  grid, dim = 5, 16
  omega = 1.0 / 10_000 ** (np.arange(dim // 4) / (dim / 4))
  want = np.zeros((grid * grid, dim))
  for r in range(grid):
    for c in range(grid):
      for half, pos in enumerate((c, r)):
        want[r * grid + c, half * dim // 2:(half + 1) * dim // 2] = np.concatenate(
            [np.sin(pos * omega), np.cos(pos * omega)])
  np.testing.assert_allclose(sincos_2d(grid, dim, columns_first=True), want, atol=1e-6)
  # The default keeps the row first (the plain image embedding's table).
  np.testing.assert_allclose(sincos_2d(grid, dim)[:, :dim // 2], want[:, dim // 2:], atol=1e-6)


@pytest.mark.slow
def test_remat_recomputes_the_same_loss_and_gradients():
  """`remat` changes what the backward pass stores, not what it computes: a scanned scoring
  pass's log-probs and their gradients equal those without it."""
  spec = tiny_spec(scan_layers=True)
  params = lively_params(spec)
  rollout = tiny_rollout()
  tokens = jax.random.randint(jax.random.key(2), (4, 5), 4, 48)
  traj = make_rollout(UnifiedTransformer(spec), rollout)(params, tokens, jnp.ones((4, 5), bool),
                                                         jax.random.key(7))

  def value_and_grad(model_spec):
    model = UnifiedTransformer(model_spec)

    def loss(p):
      scores = score_trajectory(p, traj, model=model, spec=rollout)
      return jnp.sum(scores["step_logp"]) + jnp.sum(scores["token_logp"])
    return jax.jit(jax.value_and_grad(loss))(params)

  (a, grads_a), (b, grads_b) = value_and_grad(spec), value_and_grad(
      dataclasses.replace(spec, remat=True))
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  for x, y in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="model.remat .* needs model.scan_layers"):
    tiny_spec(remat=True)
