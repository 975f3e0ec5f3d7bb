"""The GRPO stage: Grain prompts → jitted rollout (one linear SDE rollout, no CFG) → rewards (pure
functions) → group advantages → jitted sharded update(s) → periodic held-out ODE evaluation →
checkpoints.

Start-up, in this order: resume the newest readable checkpoint in `<workdir>/grpo/checkpoints`
> start from the parameters-only checkpoint `rl.init_params` (default: the SFT stage's
`<workdir>/sft/params`) > fresh parameters (only with `rl.init_params = "none"`). The frozen
reference model is always that starting point; a checkpoint records where it came from, so a
resumed run rebuilds the same one. Step i's rollout key is the base key (checkpointed) folded
with i, and the prompt stream's position is checkpointed: a resumed run samples and updates
exactly what an uninterrupted one would. A SIGTERM/SIGINT stops the loop after the step in
flight with a checkpoint at that step; an update with a non-finite loss, gradient or reward is
skipped and counted, and `faults.max_skipped_in_a_row` of them stop the run
(`train/loop.py`).

Writes under `<workdir>/grpo/`: `checkpoints/`, `params` (the final parameters only),
TensorBoard events + `metrics.jsonl`, `eval_before.json`, `samples_<step>.png` at each
evaluation, `results.json` (the task's evaluation before and after on held-out and on training
prompts; `gain` and `gain_train_prompts` of its headline score — for text-to-image also named
`geneval_gain` and `geneval_gain_train_prompts`).
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from unigrpo_jax import evaluate as evaluation
from unigrpo_jax import rewards, sharding
from unigrpo_jax.checkpoint import Checkpoints, load_params, save_params
from unigrpo_jax.data.pipeline import rl_prompts
from unigrpo_jax.metric_writer import MetricWriter
from unigrpo_jax.optim import OptimizerSpec, make_optimizer
from unigrpo_jax.rl import LossSpec, RLBatch, UpdateSpec, make_update
from unigrpo_jax.rl.advantages import AdvantageSpec, trajectory_advantages
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.sampling.scoring import check_group_prompts
from unigrpo_jax.train.experiment import Experiment, write_json
from unigrpo_jax.train.faults import SkipCounter
from unigrpo_jax.train.loop import TrainClock, finish_step, host_state, restore_key
from unigrpo_jax.train.preemption import Guard


def reference_source(exp: Experiment, workdir: str) -> str:
  """Where the starting parameters (and the frozen reference) come from: a parameters-only
  checkpoint path (absolute: a checkpoint records it), or "none" for fresh parameters from
  the seed."""
  source = exp.config.rl.init_params or os.path.join(workdir, "sft", "params")
  return source if source == "none" else os.path.abspath(source)


def starting_params(exp: Experiment, source: str):
  """The parameters GRPO starts from (and the frozen reference)."""
  if source == "none":
    return exp.init_params(jax.random.key(exp.config.seed))
  return load_params(source, exp.abstract_params)


def eval_scalars(ev: dict, headline: str) -> dict:
  """Scalars of one held-out evaluation: every overall score, and the headline score per
  family (which family a gain or a loss comes from, along the run)."""
  return {**{f"eval/{k}": v for k, v in ev["overall"].items()},
          **{f"eval/{family}/{headline}": scores[headline]
             for family, scores in ev["per_family"].items()}}


def run(exp: Experiment, workdir: str, guard: Guard | None = None) -> dict:
  """Runs (or resumes) the GRPO stage; returns its results dict. With a `guard` (main's), a
  SIGTERM/SIGINT stops it after the step in flight with a checkpoint (`Preempted`)."""
  cfg, guard = exp.config, guard if guard is not None else Guard()
  stage_dir = os.path.join(workdir, "grpo")
  rl = cfg.rl
  batch_size = rl.prompts_per_batch * rl.group_size
  sharding.check_batch(exp.mesh, batch_size, rl.group_size)
  rewards.check_names(cfg.rewards, field="config.rewards")
  rewards.check_names(cfg.process_rewards, field="config.process_rewards")
  spec = exp.task.rollout(cfg)
  loss = LossSpec(**cfg.loss)
  advantage_spec = AdvantageSpec(**cfg.advantages)
  optimizer = make_optimizer(OptimizerSpec(**cfg.rl_optim))
  sample = make_rollout(exp.model, spec, rl.group_size)
  update = make_update(exp.model, spec, loss,
                       UpdateSpec(rl.num_updates, rl.num_minibatches, rl.group_size), optimizer)
  prompts = iter(rl_prompts(exp.data.as_data_source("train"), tokenizer=exp.tokenizer,
                            prompt_len=spec.prompt_len, prompts_per_batch=rl.prompts_per_batch,
                            group_size=rl.group_size, seed=cfg.seed, grid=cfg.data.grid,
                            prefix=exp.task.prefix,
                            families=exp.task.train_families(cfg)))
  checkpoints = Checkpoints(os.path.join(stage_dir, "checkpoints"), **cfg.checkpoint)
  restored = checkpoints.restore_latest(exp.abstract_train_state(optimizer))
  skips = SkipCounter(cfg.faults.max_skipped_in_a_row)
  writer = MetricWriter(stage_dir)
  before_path = os.path.join(stage_dir, "eval_before.json")
  if restored is not None:
    # The reference is what the checkpointed run started from, whatever the config says now.
    start, state, host = restored
    prompts.set_state(host["data"])
    skips.restore(host["skips"])
    key, source = restore_key(host), host["reference"]
  else:
    start, key, source = 0, jax.random.key(cfg.seed + 2), reference_source(exp, workdir)
  ref_params = starting_params(exp, source)
  if restored is None:
    state = exp.init_train_state(ref_params, optimizer)
    before = dict(heldout=exp.evaluate(state.params), train=exp.evaluate(state.params, "train"))
    write_json(before_path, before)
    writer.write(0, eval_scalars(before["heldout"], exp.task.headline))
  else:
    with open(before_path) as f:
      before = json.load(f)
  results = dict(before=before["heldout"], before_train_prompts=before["train"])
  total = rl.steps
  clock = TrainClock(host if restored is not None else None)
  bar = tqdm.tqdm(range(start, total), initial=start, total=total, desc="grpo",
                  mininterval=2.0)
  for i in bar:
    t0 = time.perf_counter()
    batch = next(prompts)
    check_group_prompts(batch["tokens"], batch["mask"], rl.group_size)
    tokens, mask = sharding.shard_batch((batch["tokens"], batch["mask"]), exp.mesh, batch_size)
    traj = sample(state.params, tokens, mask, jax.random.fold_in(key, i))
    images = np.asarray(traj.images)
    t1 = time.perf_counter()
    texts = evaluation.decode_texts(traj, exp.tokenizer)
    _, scores = rewards.evaluate(dict(cfg.rewards), images, texts, batch["metadata"],
                                 allow_nonfinite=True)
    _, step_scores = rewards.evaluate(dict(cfg.process_rewards), images, texts,
                                      batch["metadata"], per_step=True, allow_nonfinite=True)
    step_mask = np.asarray(traj.token_mask).any(axis=2)
    record = {f"reward/{k}": float(np.mean(v)) for k, v in scores.items()}
    record.update({f"reward/{k}": float(v.sum() / step_mask.sum())
                   for k, v in step_scores.items()})
    record.update({"time/rollout_s": t1 - t0,
                   "text/tokens": float(np.asarray(traj.token_mask).sum(axis=(1, 2)).mean())})
    nonfinite = sorted(k for k, v in {**scores, **step_scores}.items()
                       if not np.isfinite(v).all())
    if nonfinite:  # no advantages from NaN: this batch's update is skipped, the state kept
      skips.record(i + 1, True, f"non-finite rewards {nonfinite}")
    else:
      adv, combined = trajectory_advantages(
          scores, step_scores, step_mask, weights=dict(cfg.rewards),
          process_weights=dict(cfg.process_rewards), group_size=rl.group_size,
          spec=advantage_spec)
      t2 = time.perf_counter()
      state, metrics = update(state, ref_params,
                              RLBatch(traj=traj, advantages=sharding.shard_batch(
                                  adv, exp.mesh, batch_size)))
      metrics = jax.device_get(metrics)  # waits for the update
      t3 = time.perf_counter()
      skips.record(i + 1, bool(np.any(metrics["skipped"])))
      record.update({"reward/combined": float(np.mean(combined)),
                     "advantage/abs_mean": float(np.mean(np.abs(adv))),
                     "time/reward_s": t2 - t1, "time/update_s": t3 - t2,
                     "time/step_s": t3 - t0})
      if (i + 1) % rl.log_every == 0 or i == start:
        # Means over passes × minibatches.
        record.update({f"update/{k}": float(np.mean(v)) for k, v in metrics.items()})
    record.update({"faults/skipped": float(skips.in_a_row > 0),
                   "faults/skipped_total": skips.total})
    writer.write(i + 1, record)
    bar.set_postfix(reward=f"{record.get('reward/combined', np.nan):.3f}",
                    step_s=f"{time.perf_counter() - t0:.2f}")
    if (i + 1) % cfg.eval.every == 0 and i + 1 < total:
      ev = exp.evaluate(state.params)
      writer.write(i + 1, eval_scalars(ev, exp.task.headline))
      exp.save_samples(state.params, os.path.join(stage_dir, f"samples_{i + 1}.png"))
    finish_step(i + 1, total, stage="grpo", state=state, checkpoints=checkpoints, guard=guard,
                skips=skips, host=host_state(cfg, data=prompts.get_state(), key=key,
                                             skips=skips, clock=clock, reference=source))
  checkpoints.close()
  save_params(os.path.join(stage_dir, "params"), state.params)
  results["after"] = exp.evaluate(state.params)
  results["after_train_prompts"] = exp.evaluate(state.params, "train")
  writer.write(total, eval_scalars(results["after"], exp.task.headline))
  writer.close()
  exp.save_samples(state.params, os.path.join(stage_dir, f"samples_{total}.png"))
  results.update(steps=total, train_s=clock.seconds(), batch_size=batch_size,
                 heldout_prompts=len(exp.eval_examples))
  headline = exp.task.headline
  gain = lambda a, b: (results[a]["overall"][headline]  # noqa: E731
                       - results[b]["overall"][headline])
  # The same score on prompts GRPO trained on: a gain there but not held out is memorisation.
  results.update(headline=headline, gain=gain("after", "before"),
                 gain_train_prompts=gain("after_train_prompts", "before_train_prompts"))
  if headline == "geneval_strict":
    results.update(geneval_gain=results["gain"],
                   geneval_gain_train_prompts=results["gain_train_prompts"])
  write_json(os.path.join(stage_dir, "results.json"), results)
  return results
