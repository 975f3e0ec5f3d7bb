"""LoRA adapters: zero adapters leave the model as it is, merged equals unmerged, the update
trains the adapters alone against the base, its compiled step holds less, and bad settings
are named."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import lively_params, scorer, tiny_rollout, tiny_spec
from unigrpo_jax import lora, memory, sharding
from unigrpo_jax.model import UnifiedTransformer, param_logical_axes
from unigrpo_jax.optim import (OptimizerSpec, init_train_state, make_optimizer,
                               train_state_shardings)
from unigrpo_jax.rl import LossSpec, RLBatch, UpdateSpec, make_update
from unigrpo_jax.sampling import make_rollout

SPEC = lora.LoRASpec(enabled=True, rank=4, alpha=8.0, modules=("image/*", "text/q"))
# Beside the adapters, the image output layer and the generation expert's attention norms
# trained in full.
UNFROZEN = dataclasses.replace(SPEC, unfrozen=("image_out/*", "layers/image/attn_norm/*"))
OPTIM = dict(learning_rate=1e-2, schedule="constant", warmup_steps=0, total_steps=100, b1=0.9,
             b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)


@pytest.fixture(scope="module")
def setup():
  model = UnifiedTransformer(tiny_spec(depth=1))  # one block: adapters are per block
  base = lively_params(model.spec)
  spec = tiny_rollout(rounds=1)
  prompts = jax.random.randint(jax.random.key(0), (4, 6), 4, 48)
  traj = make_rollout(model, spec)(base, prompts, jnp.ones(prompts.shape, bool),
                                   jax.random.key(1))
  return model, base, spec, traj


def _random_adapters(base, seed=3, spec=SPEC):
  adapters = lora.init_adapters(base, spec, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def test_adapters_sit_on_the_named_kernels_with_their_axes(setup):
  model, base, _, _ = setup
  adapters = lora.init_adapters(base, SPEC, jax.random.key(0))
  names = sorted(lora.adapted_modules(base, SPEC))
  assert names == ["image/down", "image/gate", "image/k", "image/o", "image/q", "image/up",
                   "image/v", "text/q"]
  q = adapters["layers"]["image"]["q"]
  kernel = base["layers"]["image"]["q"]["kernel"]  # (depth, width, heads, head_dim)
  assert q["lora_a"].shape == kernel.shape[:2] + (4,)
  assert q["lora_b"].shape == (kernel.shape[0], 4) + kernel.shape[2:]
  o = adapters["layers"]["image"]["o"]  # o reads (heads, head_dim)
  assert o["lora_a"].shape == base["layers"]["image"]["o"]["kernel"].shape[:3] + (4,)
  assert not np.any(np.asarray(q["lora_b"])) and np.any(np.asarray(q["lora_a"]))
  axes = lora.adapter_logical_axes(param_logical_axes(model.spec), adapters)
  assert tuple(axes["layers"]["image"]["q"]["lora_a"]) == ("layers", "embed", None)
  assert tuple(axes["layers"]["image"]["q"]["lora_b"]) == ("layers", None, "heads", "head_dim")
  assert "text" not in adapters["layers"] or "k" not in adapters["layers"]["text"]
  # Unfrozen parameters: copies of the base's, with their own axes.
  unfrozen = lora.init_adapters(base, UNFROZEN, jax.random.key(0))
  np.testing.assert_array_equal(unfrozen["image_out"]["proj"]["kernel"],
                                base["image_out"]["proj"]["kernel"])
  axes = lora.adapter_logical_axes(param_logical_axes(model.spec), unfrozen)
  assert axes["image_out"] == param_logical_axes(model.spec)["image_out"]


def test_zero_adapters_change_nothing_and_merged_equals_unmerged(setup):
  model, base, spec, traj = setup
  score = scorer(model, spec)
  want = score(base, traj)
  zero = lora.init_adapters(base, SPEC, jax.random.key(0))
  got = score(lora.combine(base, zero, SPEC), traj)
  for name in ("token_logp", "step_logp", "velocity"):
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
  # The rollout too: the same text, and the same images to float32 rounding (the compiled
  # rollout fuses the added zero products differently).
  again = make_rollout(model, spec)(lora.combine(base, zero, SPEC), traj.prompt_tokens,
                                    traj.prompt_mask, jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(traj.tokens))
  np.testing.assert_allclose(np.asarray(again.latents), np.asarray(traj.latents), rtol=1e-6,
                             atol=1e-6)
  # Non-zero adapters (and unfrozen parameters moved off the base): they change the outputs,
  # and merging them gives the same outputs.
  adapters = _random_adapters(base, spec=UNFROZEN)
  unmerged = score(lora.combine(base, adapters, UNFROZEN), traj)
  merged = score(lora.merge(base, adapters, UNFROZEN), traj)
  assert not np.allclose(np.asarray(unmerged["velocity"]), np.asarray(want["velocity"]),
                         atol=1e-4)
  for name in ("token_logp", "step_logp", "velocity"):
    np.testing.assert_allclose(np.asarray(merged[name]), np.asarray(unmerged[name]), rtol=1e-5,
                               atol=1e-5, err_msg=name)
  full = lora.merge(base, adapters, UNFROZEN)
  assert jax.tree.structure(full) == jax.tree.structure(base)
  np.testing.assert_array_equal(full["image_out"]["proj"]["kernel"],
                                adapters["image_out"]["proj"]["kernel"])


def test_update_trains_the_adapters_alone_against_the_base(setup):
  model, base, spec, traj = setup
  optimizer = make_optimizer(OptimizerSpec(**OPTIM))
  update = make_update(model, spec, LossSpec(velocity_weight=1.0), UpdateSpec(num_updates=2),
                       optimizer, donate=False, lora=UNFROZEN)
  adapters = _random_adapters(base, spec=UNFROZEN)
  assert sorted(lora.unfrozen_parameters(base, UNFROZEN)) == [
      "image_out/proj/bias", "image_out/proj/kernel", "layers/image/attn_norm/scale"]
  state = init_train_state(adapters, optimizer)
  assert jax.tree.structure(state.opt_state[1][0].mu) == jax.tree.structure(adapters)
  batch = RLBatch(traj=traj, advantages=jnp.asarray([[1.0], [-1.0], [0.5], [-0.5]]))
  base_before = jax.tree.map(np.asarray, base)
  new, metrics = update(state, base, batch)
  # The base is untouched; every adapter leaf and every unfrozen parameter moved.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, base), base_before)
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new.params,
                       adapters)
  assert all(jax.tree.leaves(moved))
  # The reference is the base with the adapters off: the first pass's velocity penalty is the
  # squared distance between the adapted and the plain model's velocities.
  score = scorer(model, spec)
  policy, ref = score(lora.combine(base, adapters, UNFROZEN), traj), score(base, traj)
  mask = np.asarray(traj.step_mask)[:, :, spec.stochastic_steps()]
  diff = (np.asarray(policy["velocity"]) - np.asarray(ref["velocity"])) ** 2
  want = diff.reshape(diff.shape[:3] + (-1,)).mean(-1)[mask].mean()
  np.testing.assert_allclose(float(metrics["image/velocity_mse"][0, 0]), want, rtol=1e-4)
  # On policy at the first minibatch, as without adapters (the rollout came from the base, so
  # here the ratio is the adapted over the base model's: not 1; rescoring the adapted model's
  # own rollout gives 1).
  own = make_rollout(model, spec)(lora.combine(base, adapters, UNFROZEN), traj.prompt_tokens,
                                  traj.prompt_mask, jax.random.key(2))
  _, m = update(state, base, RLBatch(traj=own, advantages=batch.advantages))
  assert abs(float(m["image/ratio_min"][0, 0]) - 1) < 1e-5
  assert abs(float(m["image/ratio_max"][0, 0]) - 1) < 1e-5


@pytest.mark.parametrize("fields,message", [
    (dict(rank=0), "lora.rank must be a positive integer"),
    (dict(alpha=0.0), "lora.alpha must be positive"),
    (dict(dropout=0.1), "lora.dropout must be 0"),
    (dict(base_dtype="float16"), "lora.base_dtype must be"),
    (dict(modules=()), "lora.modules is empty")])
def test_bad_settings_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    lora.LoRASpec(enabled=True, **fields)


def test_a_module_name_that_matches_no_kernel_is_named(setup):
  _, base, _, _ = setup
  with pytest.raises(ValueError, match=r"lora.modules entry 'image/qkv' matches no kernel; "
                                       r"the model has \['image/down'"):
    lora.adapted_modules(base, lora.LoRASpec(enabled=True, modules=("image/qkv",)))
  with pytest.raises(ValueError, match=r"lora.unfrozen entry 'image_head/\*' matches no "):
    lora.unfrozen_parameters(base, dataclasses.replace(SPEC, unfrozen=("image_head/*",)))
  with pytest.raises(ValueError, match=r"lora.unfrozen entry 'layers/image/q/\*' matches "
                                       r"adapted kernels \['layers/image/q/kernel'\]"):
    lora.unfrozen_parameters(base, dataclasses.replace(SPEC, unfrozen=("layers/image/q/*",)))


def test_compiled_update_holds_less_with_adapters(setup):
  """XLA's memory analysis of the compiled step (`memory.py`): with rank-4 adapters the update
  holds the adapters' optimizer state, not the model's, and no second copy as reference."""
  model, base, spec, _ = setup
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
  axes = param_logical_axes(model.spec)
  params = sharding.with_shardings(jax.eval_shape(lambda: base),
                                   sharding.param_shardings(axes, mesh, base))
  adapters = jax.eval_shape(lambda: lora.init_adapters(base, SPEC, jax.random.key(0)))
  adapters = sharding.with_shardings(adapters, sharding.param_shardings(
      lora.adapter_logical_axes(axes, adapters), mesh, adapters))
  optimizer = make_optimizer(OptimizerSpec(**OPTIM))
  found = {}
  for name, trained, adapted in (("full", params, None), ("lora", adapters, SPEC)):
    state = jax.eval_shape(lambda t: init_train_state(t, optimizer), trained)
    state = sharding.with_shardings(state, train_state_shardings(
        optimizer, trained, jax.tree.map(lambda x: x.sharding, trained), mesh))
    update = make_update(model, spec, LossSpec(beta=0.04), UpdateSpec(1, 1, 2), optimizer,
                         lora=adapted)
    found[name] = memory.grpo_step_memory(make_rollout(model, spec, 2), update, spec,
                                          trained, state, params, adapted, 4, mesh)
  for step in found.values():
    for part in step.values():
      assert part["peak"] >= part["argument"] > 0
  n_base = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(base))
  n_adapters = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(adapters))
  # Arguments: the state (trained + two Adam moments), the reference (the KL reads all of
  # it), the batch; with LoRA the base is the reference.
  saved = found["full"]["update"]["argument"] - found["lora"]["update"]["argument"]
  assert saved == 3 * (n_base - n_adapters)
