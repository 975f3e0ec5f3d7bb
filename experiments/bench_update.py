r"""GRPO step benchmark: rollout + rewards + reference + update, as one JSON object.

  python experiments/bench_update.py --config=configs/bench.py:update_text
  python experiments/bench_update.py --config=configs/bench.py:update_joint

A step is what a training loop does per batch: the jitted rollout, a toy reward on the host
(fraction of even token ids, as the Tunix peer; for `joint` plus mean image brightness), group
advantages, and the jitted update (reference scoring when the loss needs it, teacher-forced
rescoring, loss, gradient, AdamW). `step_s` is the median over `bench.steps` steps after the
first; `compile_s` the ahead-of-time compile of the rollout and the update. `bytes_per_device`
counts parameters + optimizer state on one device and on a `bench.fsdp_devices`-way FSDP mesh
(from the sharding rules on an abstract mesh: nothing is allocated).
"""
import json
import os
import platform
import statistics
import time

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import sharding
from unigrpo_jax.model import (ModelSpec, UnifiedTransformer, count_params, init_params,
                               param_logical_axes)
from unigrpo_jax.optim import (OptimizerSpec, init_train_state, make_optimizer,
                               train_state_shardings)
from unigrpo_jax.rl import (GradientSum, LossSpec, RLBatch, UpdateSpec, make_accumulate,
                            make_apply, make_update)
from unigrpo_jax.rl.advantages import group_advantages
from unigrpo_jax.sampling import RolloutSpec, make_rollout
from unigrpo_jax.sampling.rollout import concat_trajectories
from unigrpo_jax.sampling import flops as sampling_flops
from unigrpo_jax.timing import matmul_peak_gflops, mixed_precision_figures
from unigrpo_jax.train import overlap

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py:update_text",
                                          "Benchmark config.")


def toy_reward(traj) -> np.ndarray:
  tokens, live = np.asarray(traj.tokens), np.asarray(traj.token_mask)
  reward = ((tokens % 2 == 0) & live).sum(axis=(1, 2)) / np.maximum(live.sum(axis=(1, 2)), 1)
  drawn = np.asarray(traj.image_mask)
  if drawn.any():
    reward = reward + np.asarray(traj.images).mean(axis=(1, 2, 3, 4)) * drawn.mean(axis=1)
  return reward.astype(np.float32)


def overlap_figures(cfg, model, update, state, ref_params, prompts, mask, spec, loss, optimizer,
                    rollout_s):
  """The step with the batch sampled in `bench.chunks` parts and a reward that sleeps as long
  as the whole batch's rollout took (in proportion to each part's rows), three ways: every part
  scored after sampling, then the update (`sequential`); each part scored while the next
  samples, then the update (`overlap`); and that with each part's gradient taken as soon as its
  rewards are in, then one optimizer step on their mean (`per_part`: `rl.update_per_part`,
  `train/overlap.py`, `rl/update.py`)."""
  chunks, group = cfg.bench.chunks, cfg.rl.group_size
  rows = prompts.shape[0] // chunks
  part_sample = make_rollout(model, spec, group)
  concat = jax.jit(concat_trajectories)
  accumulate = make_accumulate(model, spec, loss, group)
  apply = make_apply(optimizer)

  def slow_reward(traj):
    time.sleep(rollout_s * rows / prompts.shape[0])
    return toy_reward(traj)

  def advantages(scores):
    return jnp.repeat(group_advantages(scores, group)[:, None], spec.rounds, axis=1)

  def step(state, key, mode):
    t0 = time.perf_counter()
    total = [GradientSum.zeros(state.params)]

    def consume(c, traj, host, scores):
      del host
      total[0], _ = accumulate(total[0], state.params, ref_params,
                               RLBatch(traj=traj, advantages=advantages(scores)))

    trajs, _, scores, _ = overlap.sample_and_score(
        lambda c: part_sample(state.params, prompts[c * rows:(c + 1) * rows],
                              mask[c * rows:(c + 1) * rows], jax.random.fold_in(key, c)),
        lambda c, traj: jax.device_get(traj), slow_reward, chunks, mode != "sequential",
        consume if mode == "per_part" else None)
    if mode == "per_part":
      state, _ = apply(state, total[0])
    else:
      state, _ = update(state, ref_params, RLBatch(traj=concat(trajs),
                                                   advantages=advantages(np.concatenate(scores))))
    jax.block_until_ready(state)
    return state, time.perf_counter() - t0

  modes, out = ("sequential", "overlap", "per_part"), {}
  for mode in modes:  # one step each warms its programs up
    state, _ = step(state, jax.random.key(99), mode)
  for mode in modes:
    times = []
    for i in range(cfg.bench.steps):
      state, seconds = step(state, jax.random.key(100 + i), mode)
      times.append(seconds)
    out[f"{mode}_step_s"] = statistics.median(times)
  return dict(chunks=chunks, reward_s=rollout_s, **out,
              overlap_speedup=out["sequential_step_s"] / out["overlap_step_s"],
              per_part_speedup=out["sequential_step_s"] / out["per_part_step_s"])


def state_bytes(optimizer, params, model_spec: ModelSpec, mesh) -> int:
  """Parameter + optimizer bytes on one device of `mesh` under the sharding rules."""
  shapes = jax.eval_shape(lambda: params)
  shardings = sharding.param_shardings(param_logical_axes(model_spec), mesh, shapes)
  state_shardings = train_state_shardings(optimizer, shapes, shardings, mesh)
  state_shapes = jax.eval_shape(lambda: init_train_state(params, optimizer))
  placed = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        state_shapes, state_shardings)
  return sharding.bytes_per_device((placed.params, placed.opt_state))


def main(argv):
  del argv
  cfg = _CONFIG.value
  ms = ModelSpec(**cfg.model)
  spec = RolloutSpec.from_config(cfg.rollout, cfg.tokens)
  loss = LossSpec(**cfg.loss)
  update_spec = UpdateSpec(cfg.rl.num_updates, cfg.rl.num_minibatches, cfg.rl.group_size)
  model = UnifiedTransformer(ms)
  optimizer = make_optimizer(OptimizerSpec(**cfg.optim))
  group = cfg.rl.group_size
  batch = cfg.batch_size
  sharding.check_batch(sharding.make_mesh({"data": 1}), batch, group)
  params = init_params(ms, jax.random.key(cfg.seed))
  ref_params = jax.tree.map(jnp.copy, params)
  prompts = jnp.repeat(jax.random.randint(jax.random.key(1), (batch // group, spec.prompt_len),
                                          5, ms.vocab_size), group, axis=0)
  mask = jnp.ones(prompts.shape, bool)

  peak = matmul_peak_gflops(cfg.bench.matmul_size, cfg.bench.repeats)
  sample = make_rollout(model, spec, group)
  update = make_update(model, spec, loss, update_spec, optimizer)
  state = init_train_state(params, optimizer)

  t0 = time.perf_counter()
  sample = sample.lower(params, prompts, mask, jax.random.key(0)).compile()
  traj = sample(params, prompts, mask, jax.random.key(0))
  example = RLBatch(traj=traj, advantages=jnp.zeros((batch, spec.rounds), jnp.float32))
  update = update.lower(state, ref_params, example).compile()
  compile_s = time.perf_counter() - t0

  rollout_t, update_t, step_t = [], [], []
  for step in range(cfg.bench.steps + 1):
    t0 = time.perf_counter()
    traj = jax.block_until_ready(sample(state.params, prompts, mask, jax.random.key(step)))
    t1 = time.perf_counter()
    adv = group_advantages(toy_reward(traj), group)
    batch_in = RLBatch(traj=traj, advantages=jnp.repeat(adv[:, None], spec.rounds, axis=1))
    state, metrics = update(state, ref_params, batch_in)
    jax.block_until_ready(state)
    t2 = time.perf_counter()
    if step:  # the first step warms caches up
      rollout_t.append(t1 - t0)
      update_t.append(t2 - t1)
      step_t.append(t2 - t0)
  step_s = statistics.median(step_t)
  overlap = (overlap_figures(cfg, model, update, state, ref_params, prompts, mask, spec, loss,
                             optimizer, statistics.median(rollout_t))
             if cfg.bench.get("chunks") else {})

  updates = update_spec.num_updates
  minibatches = update_spec.num_minibatches
  reference = sampling_flops.score_flops(ms, spec, batch, update_spec.group_size)
  forward = minibatches * sampling_flops.score_flops(ms, spec, batch // minibatches,
                                                     update_spec.minibatch_group_size)
  step_flops = (sampling_flops.rollout_flops(ms, spec, batch, group)
                + (reference if loss.needs_reference else 0) + 3 * forward * updates)
  length = spec.layout(ms).length
  fsdp = jax.sharding.AbstractMesh((1, cfg.bench.fsdp_devices, 1), sharding.MESH_AXES)
  one = jax.sharding.AbstractMesh((1, 1, 1), sharding.MESH_AXES)
  bytes_one = state_bytes(optimizer, params, ms, one)
  bytes_fsdp = state_bytes(optimizer, params, ms, fsdp)
  result = dict(
      variant="joint" if spec.draw_images else "text",
      step_s=step_s,
      rollout_s=statistics.median(rollout_t),
      update_s=statistics.median(update_t),
      compile_s=compile_s,
      tokens_per_s=batch * length / step_s,
      matmul_peak_gflops=peak,
      step_gflops=step_flops / step_s / 1e9,
      mfu=step_flops / step_s / 1e9 / peak,
      **mixed_precision_figures(ms, step_flops / step_s / 1e9, cfg.bench.matmul_size,
                                cfg.bench.repeats),
      bytes_per_device={"1": bytes_one, str(cfg.bench.fsdp_devices): bytes_fsdp},
      fsdp_bytes_fraction=bytes_fsdp / bytes_one,
      last_loss=float(np.asarray(metrics["loss"]).ravel()[-1]),
      batch=batch, group_size=group, sequence_len=length, new_tokens=spec.max_text_tokens,
      sde_steps=spec.trained_steps, beta=loss.beta,
      params=count_params(params),
      jax=jax.__version__, cpu_count=os.cpu_count(), machine=platform.machine(), **overlap)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
