"""The GRPO stage: Grain prompts → jitted rollout (one linear SDE rollout, no CFG) → rewards (pure
functions) → group advantages → jitted sharded update(s) → periodic held-out ODE evaluation →
checkpoints.

Start-up, in this order: resume the newest readable checkpoint in `<workdir>/grpo/checkpoints`
> start from the parameters-only checkpoint `rl.init_params` (default: the SFT stage's
`<workdir>/sft/params`) > fresh parameters (only with `rl.init_params = "none"`). The frozen
reference model is that starting point — or, with `rl.reference_refresh` = k, the policy of the
last multiple of k steps, written to `<workdir>/grpo/references/<step>`; a checkpoint records
where its reference comes from, so a resumed run rebuilds the same one. With `config.ema` on,
evaluations, sample grids and the saved parameters are the policy's moving average
(`ema.py`). With `config.lora` on, the state trains LoRA adapters over the frozen starting
parameters, which are also the reference (`lora.py`): checkpoints hold the adapters, `params`
the merged weights. Step i's rollout key is the base key (checkpointed) folded with i, and
the prompt stream's position is checkpointed: a resumed run samples and updates exactly what an
uninterrupted one would. A SIGTERM/SIGINT stops the loop after the step in
flight with a checkpoint at that step; an update with a non-finite loss, gradient or reward is
skipped and counted, and `faults.max_skipped_in_a_row` of them stop the run
(`train/loop.py`).

Writes under `<workdir>/grpo/`: `checkpoints/`, `params` (the final parameters only, or their
average), TensorBoard events + `metrics.jsonl`, `eval_before.json`, `samples_<step>.png` at each
evaluation, `results.json` (the task's evaluation before and after on held-out and on training
prompts, and with `eval.sampled_plans` on held-out prompts with sampled plans; `gain`,
`gain_train_prompts` and `gain_sampled_plans` of its headline score — for text-to-image also
named `geneval_gain` and `geneval_gain_train_prompts`).
"""
import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from unigrpo_jax import distributed, evaluation, lora as lora_lib, rewards, sharding
from unigrpo_jax.checkpoint import Checkpoints, load_params, save_params
from unigrpo_jax.ema import EMASpec, ema_update
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.data.pipeline import reading, rl_prompts
from unigrpo_jax.metric_writer import MetricWriter, write_json
from unigrpo_jax.optim import OptimizerSpec, TrainState, make_optimizer
from unigrpo_jax.rl import (GradientSum, LossSpec, RLBatch, UpdateSpec, make_accumulate,
                            make_apply, make_update)
from unigrpo_jax.rl.advantages import AdvantageSpec, trajectory_advantages
from unigrpo_jax.rewards import configured
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.sampling.rollout import concat_trajectories
from unigrpo_jax.sampling.scoring import check_group_prompts
from unigrpo_jax.train import loop, overlap
from unigrpo_jax.train.experiment import Experiment
from unigrpo_jax.train.faults import SkipCounter
from unigrpo_jax.train.loop import TrainClock
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


def prune_references(directory: str, checkpoints: str, every: int, current: str):
  """Deletes the reference snapshots (`directory/<step>`) that no checkpoint in `checkpoints`
  needs: the checkpoint of step s was written with the snapshot of the last multiple of
  `every` ≤ s, so the snapshots older than the oldest checkpoint's go; `current` always
  stays. The oldest checkpoint is read from the folder itself, not the manager's list: a step
  the manager has dropped may still be on disk after a kill, and be the one a resume reads."""
  steps = [int(name.split(".")[0]) for name in os.listdir(checkpoints)
           if name.split(".")[0].isdigit()] if os.path.isdir(checkpoints) else []
  if not steps or not os.path.isdir(directory):
    return
  oldest = every * (min(steps) // every)
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if name.isdigit() and int(name) < oldest and path != current:
      shutil.rmtree(path, ignore_errors=True)


def eval_scalars(ev: dict, headline: str) -> dict:
  """Scalars of one held-out evaluation: every overall score, and the headline score per
  family (which family a gain or a loss comes from, along the run)."""
  return {**{f"eval/{k}": v for k, v in ev["overall"].items()},
          **{f"eval/{family}/{headline}": scores[headline]
             for family, scores in ev["per_family"].items()}}


class ChunkOnHost(NamedTuple):
  """What rewards read of one chunk of a step's rollout (this process's rows of it)."""
  images: np.ndarray  # (b, R, H, W, C) pixels in [−1, 1]
  texts: list  # b decoded texts
  metadata: list  # b per-prompt dicts
  token_mask: np.ndarray  # (b, R, T) which text slots were sampled


@dataclasses.dataclass(frozen=True)
class Step:
  """One GRPO step: the batch's rollout, its rewards (pure functions, on the host), the
  advantages, and the update. Built once per run; `key` is the run's base key, folded with the
  step index, so step i samples the same trajectories in a resumed run as in one that never
  stopped.

  The rollout runs in `chunks` parts of whole groups (`rl.rollout_chunks`; part c's key is the
  step's key folded with c when there is more than one). With `overlap`, part c is scored in a
  worker thread while part c + 1 samples, and the update waits only for the last part's
  rewards; without it, every part is sampled before any is scored. Either way the rewards are
  called on the same parts in the same order: the scores, advantages and update are the
  same. With `accumulate` and `apply` (`rl.update_per_part`) each part's gradient is taken as
  its rewards come in, and one optimizer step applies their mean (`update_per_part`)."""
  exp: Experiment
  sample: Callable  # the jitted rollout
  concat: Callable  # the jitted concatenation of the parts' trajectories
  update: Callable  # the jitted update
  ref_params: dict  # the frozen reference model
  key: jax.Array
  advantages: AdvantageSpec
  batch_size: int
  functions: dict  # reward name → function (registered, model-based or served)
  window_start: Callable  # step → the SDE window's first step (`RolloutSpec.window_start`)
  chunks: int = 1
  overlap: bool = True
  lora: LoRASpec | None = None  # the state holds adapters over `ref_params` (`lora.py`)
  accumulate: Callable | None = None  # with `apply`: the update part by part (`update_per_part`)
  apply: Callable | None = None

  def policy(self, params):
    """The policy's parameter tree from what the state trains (`params`, or adapters)."""
    return lora_lib.policy(params, self.ref_params, self.lora)

  def on_host(self, traj, metadata) -> ChunkOnHost:
    """This process's rows of one part, as the rewards read them (waits for the part)."""
    token_mask = sharding.host_rows(traj.token_mask)
    return ChunkOnHost(self.exp.pixels(traj.images),
                       evaluation.decode_texts(traj, self.exp.tokenizer), metadata, token_mask)

  def score(self, part: ChunkOnHost) -> tuple[dict, dict]:
    """Every weighted reward of one part: (outcome scores, per-step scores), name → array."""
    cfg = self.exp.config
    _, scores = rewards.score_batch(dict(cfg.rewards), part.images, part.texts, part.metadata,
                                    functions=self.functions, allow_nonfinite=True)
    _, step_scores = rewards.score_batch(dict(cfg.process_rewards), part.images, part.texts,
                                         part.metadata, functions=self.functions,
                                         per_step=True, allow_nonfinite=True)
    return scores, step_scores

  def sample_parts(self, i: int, params, batch: dict, consume: Callable | None = None):
    """Samples step i's batch in parts and scores them (`overlap.sample_and_score`, with
    `consume`). Returns (trajs, hosts, scores, sampled_s) per part."""
    key, mesh = jax.random.fold_in(self.key, i), self.exp.mesh
    params = self.exp.sampling_params(params)  # once for all parts
    local = len(batch["metadata"]) // self.chunks
    parts = [slice(c * local, (c + 1) * local) for c in range(self.chunks)]

    def dispatch(c):
      tokens, mask = sharding.shard_batch((batch["tokens"][parts[c]], batch["mask"][parts[c]]),
                                          mesh, self.batch_size // self.chunks)
      return self.sample(params, tokens, mask,
                         key if self.chunks == 1 else jax.random.fold_in(key, c),
                         np.int32(self.window_start(i)))

    return overlap.sample_and_score(
        dispatch, lambda c, traj: self.on_host(traj, batch["metadata"][parts[c]]), self.score,
        self.chunks, self.overlap, consume)

  def rollout_and_score(self, i: int, params, batch: dict):
    """Samples step i's batch in parts and scores them. Returns (traj, scores, step_scores,
    token_mask, sampled_s): the whole batch's trajectory, this process's rows' scores and
    sampled-slot mask (B_local, R, T), and the seconds until the last part was sampled."""
    trajs, hosts, scored, sampled_s = self.sample_parts(i, params, batch)
    traj = trajs[0] if self.chunks == 1 else self.concat(trajs)
    return (traj, *_joined(scored), np.concatenate([h.token_mask for h in hosts]), sampled_s)

  def advantages_of(self, scores: dict, step_scores: dict, step_mask) -> tuple:
    """(advantages (B, R), combined rewards (B,)) of gathered rows (whole groups)."""
    cfg = self.exp.config
    return trajectory_advantages(
        scores, step_scores, step_mask, weights=dict(cfg.rewards),
        process_weights=dict(cfg.process_rewards), group_size=cfg.rl.group_size,
        spec=self.advantages)

  def __call__(self, i: int, state: TrainState, batch: dict, skips: SkipCounter, *,
               log_update: bool) -> tuple[TrainState, dict]:
    """Runs step i on `batch` (tokens, mask, metadata of `rl_prompts`); records a skipped
    update in `skips`. Returns the new state and the step's metrics (with the update's own,
    averaged over passes × minibatches, or over parts, when `log_update`)."""
    exp = self.exp
    t0 = time.perf_counter()
    check_group_prompts(batch["tokens"], batch["mask"], exp.config.rl.group_size)
    if self.accumulate is not None:
      return self.update_per_part(i, state, batch, skips, log_update=log_update, t0=t0)
    # Each process scores its own rows (whole groups); the scores, a few numbers a row, are
    # gathered so that every process computes the global batch's advantages and decisions.
    traj, scores, step_scores, token_mask, sampled_s = self.rollout_and_score(
        i, self.policy(state.params), batch)
    t1 = time.perf_counter()
    gathered = _gather_rows((scores, step_scores), token_mask, batch["metadata"])
    record, nonfinite = _reward_record(*gathered, sampled_s)
    if nonfinite:  # no advantages from NaN: this batch's update is skipped, the state kept
      skips.record(i + 1, True, f"non-finite rewards {nonfinite}")
      return state, record
    adv, combined = self.advantages_of(*gathered[:3])
    t2 = time.perf_counter()
    rows = sharding.local_rows(exp.mesh, self.batch_size)
    state, metrics = self.update(state, self.ref_params, RLBatch(
        traj=traj, advantages=sharding.shard_batch(adv[rows], exp.mesh, self.batch_size)))
    metrics = jax.tree.map(distributed.to_host, metrics)  # waits for the update
    return state, _update_record(record, i, skips, metrics, combined, adv, log_update,
                                 t0, t1, t2, sampled_s)

  def update_per_part(self, i: int, state: TrainState, batch: dict, skips: SkipCounter, *,
                      log_update: bool, t0: float) -> tuple[TrainState, dict]:
    """Step i with the update taken part by part (`rl.update_per_part`): each part's
    advantages and gradient as soon as its rewards are in (its groups are whole), while the
    later parts are scored; then one optimizer step on the mean gradient. A part with
    non-finite rewards skips the step's update, as in `__call__`."""
    exp, part_rows = self.exp, self.batch_size // self.chunks
    rows = sharding.local_rows(exp.mesh, part_rows)
    total = [GradientSum.zeros(state.params)]
    gathered, advantages, combined, metrics = [], [], [], []

    def consume(c, traj, host, scored):
      part = _gather_rows(scored, host.token_mask, host.metadata)
      gathered.append(part)
      if len(advantages) < c or _nonfinite(*part[:2]):  # this part or an earlier one
        return
      adv, part_combined = self.advantages_of(*part[:3])
      advantages.append(adv)
      combined.append(part_combined)
      total[0], part_metrics = self.accumulate(total[0], state.params, self.ref_params, RLBatch(
          traj=traj, advantages=sharding.shard_batch(adv[rows], exp.mesh, part_rows)))
      metrics.append(part_metrics)

    *_, sampled_s = self.sample_parts(i, self.policy(state.params), batch, consume)
    t1 = time.perf_counter()
    record, nonfinite = _reward_record(*_joined(gathered), sampled_s)
    if nonfinite:
      skips.record(i + 1, True, f"non-finite rewards {nonfinite}")
      return state, record
    t2 = time.perf_counter()
    state, step_metrics = self.apply(state, total[0])
    metrics = {**{k: np.stack([distributed.to_host(m[k]) for m in metrics])
                  for k in metrics[0]},
               **jax.tree.map(distributed.to_host, step_metrics)}  # waits for the update
    return state, _update_record(record, i, skips, metrics, np.concatenate(combined),
                                 np.concatenate(advantages), log_update, t0, t1, t2, sampled_s)


def _gather_rows(scored: tuple, token_mask, metadata: list) -> tuple:
  """(scores, step_scores, step_mask (B, R), sampled text tokens (B,), prompt families (B,),
  None where a row's metadata names none) of every process's rows, in one order, from this
  process's (scores, step_scores), sampled-slot mask (B_local, R, T) and rows' metadata."""
  rows = distributed.gather_rows((*scored, token_mask.any(axis=2), token_mask.sum(axis=(1, 2))))
  families = distributed.gather_objects([m.get("family") for m in metadata])
  return (*rows, np.array([f for part in families for f in part], dtype=object))


def _joined(parts: list) -> tuple:
  """Per-part tuples (of name → array dicts and arrays) joined along the rows, part by part."""
  return tuple({k: np.concatenate([p[j][k] for p in parts]) for k in first}
               if isinstance(first, dict) else np.concatenate([p[j] for p in parts])
               for j, first in enumerate(parts[0]))


def _nonfinite(scores: dict, step_scores: dict) -> list:
  """The names of the rewards with a non-finite score."""
  return sorted(k for k, v in {**scores, **step_scores}.items() if not np.isfinite(v).all())


def _reward_record(scores, step_scores, step_mask, text_tokens, families,
                   sampled_s) -> tuple[dict, list]:
  """A step's reward figures (gathered rows; each outcome reward also per prompt family of
  the step, `reward/<family>/<name>`, so that a family's rise or fall along the run shows) and
  the names of non-finite rewards."""
  record = {f"reward/{k}": float(np.mean(v)) for k, v in scores.items()}
  for family in sorted({f for f in families if f is not None}):
    rows = families == family
    record.update({f"reward/{family}/{k}": float(np.mean(v[rows])) for k, v in scores.items()})
  record.update({f"reward/{k}": float(v.sum() / step_mask.sum())
                 for k, v in step_scores.items()})
  record.update({"time/rollout_s": sampled_s, "text/tokens": float(text_tokens.mean())})
  return record, _nonfinite(scores, step_scores)


def _update_record(record, i, skips, metrics, combined, adv, log_update, t0, t1, t2,
                   sampled_s) -> dict:
  """`record` with the update's figures (host `metrics`); the skip counted in `skips`."""
  t3 = time.perf_counter()
  skips.record(i + 1, bool(np.any(metrics["skipped"])))
  record.update({"reward/combined": float(np.mean(combined)),
                 "advantage/abs_mean": float(np.mean(np.abs(adv))),
                 "time/reward_s": t1 - t0 - sampled_s, "time/update_s": t3 - t2,
                 "time/step_s": t3 - t0})
  if log_update:
    record.update({f"update/{k}": float(np.mean(v)) for k, v in metrics.items()})
  return record


def evaluate_before(exp: Experiment, params, stage_dir: str, resumed: bool,
                    writer: MetricWriter) -> dict:
  """The held-out and training-prompt evaluations of the starting parameters (and, with
  `eval.sampled_plans`, the held-out one with sampled plans): computed and saved on a fresh
  start, read back on a resume."""
  path = os.path.join(stage_dir, "eval_before.json")
  if resumed:
    with open(path) as f:
      return json.load(f)
  before = dict(heldout=exp.evaluate(params), train=exp.evaluate(params, "train"))
  if exp.eval.sampled_plans:
    before["heldout_sampled_plans"] = exp.evaluate(params, sampled_plans=True)
  write_json(path, before)
  writer.write(0, eval_scalars(before["heldout"], exp.task.headline))
  return before


def run(exp: Experiment, workdir: str, guard: Guard | None = None) -> dict:
  """Runs (or resumes) the GRPO stage; returns its results dict. With a `guard` (main's), a
  SIGTERM/SIGINT stops it after the step in flight with a checkpoint (`Preempted`)."""
  cfg, guard = exp.config, guard if guard is not None else Guard()
  stage_dir = os.path.join(workdir, "grpo")
  rl = cfg.rl
  batch_size = rl.prompts_per_batch * rl.group_size
  sharding.check_batch(exp.mesh, batch_size, rl.group_size)
  functions = configured.functions(cfg, set(cfg.rewards) | set(cfg.process_rewards))
  rewards.check_names(cfg.rewards, functions, field="config.rewards")
  rewards.check_names(cfg.process_rewards, functions, field="config.process_rewards")
  chunks = rl.get("rollout_chunks", 1)
  sharding.check_batch(exp.mesh, batch_size // chunks, rl.group_size,
                       field="a rollout part (the RL batch / rl.rollout_chunks)")
  spec = exp.task.rollout(cfg)
  optimizer = make_optimizer(OptimizerSpec(**cfg.rl_optim))
  lora = lora_lib.configured(cfg.get("lora"))
  update = make_update(exp.model, spec, LossSpec(**cfg.loss),
                       UpdateSpec(rl.num_updates, rl.num_minibatches, rl.group_size), optimizer,
                       lora=lora)
  rows = sharding.local_rows(exp.mesh, batch_size)
  prompts = iter(rl_prompts(exp.data.as_data_source("train"), tokenizer=exp.tokenizer,
                            prompt_len=spec.prompt_len, prompts_per_batch=rl.prompts_per_batch,
                            group_size=rl.group_size, seed=cfg.seed, grid=cfg.data.grid,
                            template=exp.template, families=exp.task.train_families(cfg),
                            share=slice(rows.start // rl.group_size,
                                        rows.stop // rl.group_size),
                            read_options=reading(cfg.data)))
  checkpoints = Checkpoints(os.path.join(stage_dir, "checkpoints"), **cfg.checkpoint)
  ema = EMASpec(**cfg.get("ema", {}))
  trained = exp.abstract_adapters(lora) if lora else None  # None: the parameters themselves
  begin = loop.start(checkpoints, exp.abstract_train_state(optimizer, ema.enabled, trained),
                     prompts,
                     max_skipped_in_a_row=cfg.faults.max_skipped_in_a_row,
                     fresh_key=jax.random.key(cfg.seed + 2))
  writer = MetricWriter(stage_dir)
  # The reference is what the checkpointed run started from, whatever the config says now.
  source = begin.host["reference"] if begin.resumed else reference_source(exp, workdir)
  ref_params = starting_params(exp, source)
  if begin.resumed:
    state = begin.state
  else:
    initial = (exp.init_adapters(lora, jax.random.key(cfg.seed + 3), trained, ref_params)
               if lora else ref_params)
    state = exp.init_train_state(initial, optimizer, ema.enabled, trained)
  if lora:  # the frozen base the adapters sit on, and the reference (adapters off)
    ref_params = lora_lib.cast_base(ref_params, lora.base_dtype)
  average = jax.jit(lambda state, i: state.replace(ema=ema_update(state.ema, state.params, i,
                                                                  ema)), donate_argnums=0)
  shown = (lambda state: state.ema) if ema.enabled else (lambda state: state.params)  # noqa: E731
  refresh = rl.get("reference_refresh", 0)
  references = os.path.abspath(os.path.join(stage_dir, "references"))
  concat = jax.jit(functools.partial(concat_trajectories,
                                     order=sharding.chunk_order(batch_size, chunks)))
  per_part = rl.get("update_per_part", False)
  step = Step(exp, make_rollout(exp.model, spec, rl.group_size), concat, update, ref_params,
              begin.key, AdvantageSpec(**cfg.advantages), batch_size, functions,
              spec.window_start, chunks, rl.get("overlap_rewards", True), lora,
              make_accumulate(exp.model, spec, LossSpec(**cfg.loss), rl.group_size, lora=lora)
              if per_part else None, make_apply(optimizer) if per_part else None)
  before = evaluate_before(exp, step.policy(state.params), stage_dir, begin.resumed, writer)
  results = dict(before=before["heldout"], before_train_prompts=before["train"])
  if "heldout_sampled_plans" in before:
    results["before_sampled_plans"] = before["heldout_sampled_plans"]
  total, skips = rl.steps, begin.skips
  clock = TrainClock(begin.host)
  bar = tqdm.tqdm(range(begin.step, total), initial=begin.step, total=total, desc="grpo",
                  mininterval=2.0, disable=not distributed.is_primary())
  for i in bar:
    t0 = time.perf_counter()
    state, record = step(i, state, next(prompts), skips,
                         log_update=(i + 1) % rl.log_every == 0 or i == begin.step)
    if ema.enabled:
      state = average(state, i + 1)
    if refresh and (i + 1) % refresh == 0 and i + 1 < total:
      # The reference becomes the policy; a snapshot on disk lets a resumed run rebuild it.
      source = os.path.join(references, str(i + 1))
      save_params(source, state.params)
      step = dataclasses.replace(step, ref_params=jax.tree.map(jnp.copy, state.params))
    record.update({"faults/skipped": float(skips.in_a_row > 0),
                   "faults/skipped_total": skips.total})
    writer.write(i + 1, record)
    bar.set_postfix(reward=f"{record.get('reward/combined', np.nan):.3f}",
                    step_s=f"{time.perf_counter() - t0:.2f}")
    if (i + 1) % exp.eval.every == 0 and i + 1 < total:
      shown_now = step.policy(shown(state))
      writer.write(i + 1, eval_scalars(exp.evaluate(shown_now), exp.task.headline))
      exp.save_samples(shown_now, os.path.join(stage_dir, f"samples_{i + 1}.png"))
    loop.finish_step(i + 1, total, stage="grpo", state=state, checkpoints=checkpoints,
                     guard=guard, skips=skips,
                     host=loop.host_state(cfg, data=prompts.get_state(), key=begin.key,
                                          skips=skips, clock=clock, reference=source))
    if refresh and (i + 1) % cfg.checkpoint.every == 0 and distributed.is_primary():
      prune_references(references, checkpoints.directory, refresh, source)
  checkpoints.close()
  if refresh and distributed.is_primary():  # the last checkpoint is written now
    prune_references(references, checkpoints.directory, refresh, source)
  final = step.policy(shown(state))
  # Full parameters (adapters merged in): what the next consumer and the exports read.
  save_params(os.path.join(stage_dir, "params"),
              lora_lib.merge(ref_params, shown(state), lora) if lora else final)
  results["after"] = exp.evaluate(final)
  results["after_train_prompts"] = exp.evaluate(final, "train")
  if "before_sampled_plans" in results:
    results["after_sampled_plans"] = exp.evaluate(final, sampled_plans=True)
  writer.write(total, eval_scalars(results["after"], exp.task.headline))
  writer.close()
  exp.save_samples(final, os.path.join(stage_dir, f"samples_{total}.png"))
  results.update(steps=total, train_s=clock.seconds(), batch_size=batch_size,
                 heldout_prompts=len(exp.eval_examples))
  headline = exp.task.headline
  gain = lambda a, b: (results[a]["overall"][headline]  # noqa: E731
                       - results[b]["overall"][headline])
  # The same score on prompts GRPO trained on: a gain there but not held out is memorisation.
  def interval(a, b):  # an evaluation saved before per-prompt scores were kept has none
    if "per_prompt" not in results[a] or "per_prompt" not in results[b]:
      return None
    return evaluation.gain_interval(results[b], results[a], headline, exp.eval.resamples)

  results.update(headline=headline, gain=gain("after", "before"),
                 gain_interval=interval("after", "before"),
                 gain_train_prompts=gain("after_train_prompts", "before_train_prompts"),
                 gain_train_prompts_interval=interval("after_train_prompts",
                                                      "before_train_prompts"))
  if "before_sampled_plans" in results:
    results.update(gain_sampled_plans=gain("after_sampled_plans", "before_sampled_plans"),
                   gain_sampled_plans_interval=interval("after_sampled_plans",
                                                        "before_sampled_plans"))
  if headline == "geneval_strict":
    results.update(geneval_gain=results["gain"],
                   geneval_gain_train_prompts=results["gain_train_prompts"])
  write_json(os.path.join(stage_dir, "results.json"), results)
  return results
