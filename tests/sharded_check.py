"""Run by test_sharding.py in a subprocess with 8 fake CPU devices (XLA_FLAGS set before JAX
starts): the same rollout, GRPO update (full, and LoRA adapters over the frozen base) and SFT
steps on one device (computed once) and on each data × fsdp × tensor mesh given as a JSON
list. Prints one JSON line of maximum absolute
differences per mesh."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import lively_params, tiny_rollout, tiny_spec  # noqa: E402
from unigrpo_jax import lora, sharding  # noqa: E402
from unigrpo_jax.model import UnifiedTransformer, param_logical_axes  # noqa: E402
from unigrpo_jax.optim import (OptimizerSpec, init_train_state,  # noqa: E402
                               make_optimizer, train_state_shardings)
from unigrpo_jax.rl import LossSpec, RLBatch, UpdateSpec, make_update  # noqa: E402
from unigrpo_jax.rl.advantages import group_advantages  # noqa: E402
from unigrpo_jax.sampling import make_rollout  # noqa: E402
from unigrpo_jax.train.sft import SFTBatch, SFTSpec, make_sft_step  # noqa: E402

OPTIM = dict(learning_rate=1e-3, schedule="constant", warmup_steps=0, total_steps=10, b1=0.9,
             b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip=1.0)


def main():
  mesh_configs = json.loads(sys.argv[1])
  assert jax.device_count() == 8, jax.devices()
  spec = tiny_spec(depth=1)  # one block: the sharding rules, not depth, are under test
  model = UnifiedTransformer(spec)
  params = lively_params(spec)
  rollout = tiny_rollout()
  batch_size, group = 8, 4
  # GRPO groups: each prompt four times (the update encodes it once per group).
  prompts = jnp.repeat(jax.random.randint(jax.random.key(0), (batch_size // group, 6), 4,
                                          spec.vocab_size), group, axis=0)
  mask = jnp.ones(prompts.shape, bool)
  key = jax.random.key(1)
  optimizer = make_optimizer(OptimizerSpec(**OPTIM))
  loss = LossSpec(beta=0.04)
  update = make_update(model, rollout, loss,
                       UpdateSpec(num_updates=2, num_minibatches=2, group_size=group),
                       optimizer, donate=False)
  sample = make_rollout(model, rollout)
  rewards = jax.random.uniform(jax.random.key(2), (batch_size,))
  adv = jnp.repeat(group_advantages(rewards, group)[:, None], rollout.rounds, axis=1)

  def run(params, prompts, mask):
    traj = sample(params, prompts, mask, key)
    state = init_train_state(params, optimizer)
    state, metrics = update(state, params, RLBatch(traj=traj, advantages=adv))
    return traj, state, metrics

  one = jax.devices()[0]
  traj1, state1, metrics1 = run(*jax.device_put((params, prompts, mask), one))

  # LoRA on every projection of both experts: the adapters are what is trained, the base is
  # the reference. A random B, so that the first update already moves A too.
  adapters_spec = lora.LoRASpec(enabled=True, rank=4, alpha=8.0, modules=("text/*", "image/*"))
  adapters = lora.init_adapters(params, adapters_spec, jax.random.key(3))
  adapters = jax.tree_util.tree_map_with_path(
      lambda path, x: (0.1 * jax.random.normal(jax.random.key(4), x.shape)
                       if path[-1].key == "lora_b" else x), adapters)
  lora_update = make_update(model, rollout, loss,
                            UpdateSpec(num_updates=2, num_minibatches=2, group_size=group),
                            optimizer, lora=adapters_spec, donate=False)

  def lora_run(adapters, params, traj):
    return lora_update(init_train_state(adapters, optimizer), params,
                       RLBatch(traj=traj, advantages=adv))

  lora1, lora_metrics1 = lora_run(*jax.device_put((adapters, params), one), traj1)

  # Two SFT steps on the sampled sequences as targets: one device vs the mesh, the state
  # pinned to its shardings.
  def sft_run(state, traj, step):
    batch = SFTBatch(prompt_tokens=traj.prompt_tokens, prompt_mask=traj.prompt_mask,
                     tokens=traj.tokens, token_mask=traj.token_mask, images=traj.images,
                     image_mask=traj.image_mask, valid=traj.valid)
    for _ in range(2):
      state, metrics = step(state, batch, key)
    return state, metrics

  sft = SFTSpec()
  fresh = lambda: init_train_state(jax.tree.map(jnp.copy, params), optimizer)  # noqa: E731
  sft1, sft_metrics1 = sft_run(jax.device_put(fresh(), one), traj1,
                               make_sft_step(model, rollout, sft, optimizer))

  def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  for mesh_config in mesh_configs:
    mesh = sharding.make_mesh(mesh_config)
    sharding.check_batch(mesh, batch_size, group)
    shardings = sharding.param_shardings(param_logical_axes(spec), mesh, params)
    params_sharded = jax.device_put(params, shardings)
    prompts_s, mask_s = sharding.shard_batch((prompts, mask), mesh, batch_size)
    traj2, state2, metrics2 = run(params_sharded, prompts_s, mask_s)
    gathered = sharding.gathered(params_sharded)
    traj_gathered = sample(gathered, prompts_s, mask_s, key)
    state_shardings = train_state_shardings(optimizer, params, shardings, mesh)
    sft2, sft_metrics2 = sft_run(
        jax.device_put(fresh(), state_shardings), traj2,
        make_sft_step(model, rollout, sft, optimizer, state_shardings=state_shardings))
    adapter_sh = sharding.param_shardings(
        lora.adapter_logical_axes(param_logical_axes(spec), adapters), mesh, adapters)
    lora2, lora_metrics2 = lora_run(jax.device_put(adapters, adapter_sh), params_sharded, traj2)
    sft_kernel = sft2.params["layers"]["text"]["q"]["kernel"]
    kernel = state2.params["layers"]["text"]["q"]["kernel"]
    print(json.dumps(dict(
        mesh=dict(mesh.shape), trajectory=max_diff(traj1, traj2),
        params=max_diff(state1.params, state2.params),
        update_size=max_diff(state1.params, params),
        metrics=max_diff(metrics1, metrics2),
        param_shards=len(kernel.sharding.device_set),
        param_sharding=str(kernel.sharding.spec),
        gathered_trajectory=max_diff(traj1, traj_gathered),
        placed_sharding=str(params_sharded["layers"]["text"]["q"]["kernel"].sharding.spec),
        gathered_sharding=str(gathered["layers"]["text"]["q"]["kernel"].sharding.spec),
        sft_params=max_diff(sft1.params, sft2.params),
        sft_metrics=max_diff(sft_metrics1, sft_metrics2),
        sft_update_size=max_diff(sft1.params, params),
        sft_kept_sharding=sft_kernel.sharding.is_equivalent_to(
            shardings["layers"]["text"]["q"]["kernel"], sft_kernel.ndim),
        lora_params=max_diff(lora1.params, lora2.params),
        lora_update_size=max_diff(lora1.params, adapters),
        lora_metrics=max_diff(lora_metrics1, lora_metrics2),
        lora_bytes_one=sharding.bytes_per_device(lora1.params),
        lora_bytes_mesh=sharding.bytes_per_device(lora2.params),
        bytes_one=sharding.bytes_per_device(state1.params),
        bytes_mesh=sharding.bytes_per_device(state2.params))), flush=True)


if __name__ == "__main__":
  main()
