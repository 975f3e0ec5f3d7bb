"""The warm-up SFT stage: the hybrid Grain mix → the sharded SFT step (one compiled program per
kind of example) → checkpoints → held-out evaluation → a parameters-only checkpoint that GRPO
starts from (`<workdir>/sft/params`).

Everything the stage writes lives in `<workdir>/sft/`: `checkpoints/` (train state + host
state: data position, key, skip counts; resumed from on restart, exactly), TensorBoard events
and `metrics.jsonl`, `samples.png`, `results.json` (held-out mini-GenEval before and after; per
kind, teacher-forced text accuracy — for understanding, the captioning accuracy — and flow MSE;
how much the images rely on their text at mid and high noise, `heldout_text_reliance`).
"""
import functools
import os

import jax
import numpy as np
import tqdm

from unigrpo_jax import distributed, sharding
from unigrpo_jax.checkpoint import Checkpoints, save_params
from unigrpo_jax.data.pipeline import decode_example, reading, sft_mix
from unigrpo_jax.metric_writer import MetricWriter, write_json
from unigrpo_jax.model import count_params
from unigrpo_jax.optim import OptimizerSpec, make_optimizer
from unigrpo_jax.train import experiment, loop, tasks
from unigrpo_jax.train.experiment import Experiment
from unigrpo_jax.train.loop import TrainClock
from unigrpo_jax.train.preemption import Guard
from unigrpo_jax.train.sft import (SFTSpec, make_sft_step, sft_encoders, sft_loss,
                                   text_reliance)

# Flow times at which the warm-up's reliance on its text is reported: mid, and the high noise
# where the sampler (shifted grid) spends most of its steps and settles the layout.
TEXT_RELIANCE_TIMES = (0.5, 0.8, 0.95)


def _heldout_batches(exp: Experiment, encoder, limit: int):
  """Encoded batches of the first `limit` held-out examples (whole batches of
  `eval.batch_size`), this process's rows of each."""
  source = exp.data.as_data_source("heldout")
  batch_size = exp.eval.batch_size
  share = sharding.local_rows(exp.mesh, batch_size)
  for start in range(0, min(limit, len(source)) - batch_size + 1, batch_size):
    yield encoder([decode_example(source[i]) for i in range(start, start + batch_size)][share])


def heldout_metrics(exp: Experiment, params, kind: str, spec, encoder) -> dict:
  """Teacher-forced SFT metrics of one kind on held-out examples: text token accuracy, the
  fraction of rows whose whole text greedy decoding writes exactly (for understanding: the
  captioning accuracy), and the flow MSE of the drawn images."""
  batch_size = exp.eval.batch_size
  loss = jax.jit(functools.partial(sft_loss, model=exp.model, rollout=spec,
                                   sft=SFTSpec(**exp.config.sft)))
  rows = []
  for batch in _heldout_batches(exp, encoder, len(exp.eval_examples)):
    _, metrics = loss(params, sharding.shard_batch(batch, exp.mesh, batch_size),
                      jax.random.key(0))
    rows.append({k: float(metrics[k]) for k in ("text_exact", "text_token_acc", "flow_mse")})
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def heldout_text_reliance(exp: Experiment, params) -> dict:
  """`sft.text_reliance` on the first batch of held-out text-to-image examples, at
  `TEXT_RELIANCE_TIMES`: whether the warm-up's images follow their text where the sampler
  settles the layout."""
  spec = tasks.sft_layouts(exp.config)["t2i"]
  encoder = sft_encoders({"t2i": spec}, tokenizer=exp.tokenizer, model_spec=exp.model_spec,
                         grid=exp.config.data.grid)["t2i"]
  batch_size = exp.eval.batch_size
  batch = next(_heldout_batches(exp, encoder, batch_size))
  return text_reliance(params, batch, TEXT_RELIANCE_TIMES, model=exp.model, rollout=spec,
                       place=lambda b: sharding.shard_batch(b, exp.mesh, batch_size))


def run(exp: Experiment, workdir: str, guard: Guard | None = None) -> dict:
  """Runs (or resumes) the SFT stage; returns its results dict. With a `guard` (main's), a
  SIGTERM/SIGINT stops it after the step in flight with a checkpoint (`Preempted`)."""
  cfg, guard = exp.config, guard if guard is not None else Guard()
  stage_dir = os.path.join(workdir, "sft")
  optimizer = make_optimizer(OptimizerSpec(**cfg.sft_optim))
  state_shardings = exp.train_state_shardings(optimizer)
  specs = tasks.sft_layouts(cfg)
  weights = dict(cfg.sft_data.mix)
  encoders = sft_encoders(specs, tokenizer=exp.tokenizer, model_spec=exp.model_spec,
                          grid=cfg.data.grid)
  batch_size = cfg.sft_data.batch_size
  sharding.check_batch(exp.mesh, batch_size, 1)
  steps = {kind: make_sft_step(exp.model, spec, SFTSpec(**cfg.sft), optimizer,
                               state_shardings=state_shardings)
           for kind, spec in specs.items() if weights.get(kind, 0) > 0}
  data = iter(sft_mix(exp.data.as_data_source("train"), encoders=encoders, weights=weights,
                      batch_size=batch_size, seed=cfg.seed,
                      share=sharding.local_rows(exp.mesh, batch_size),
                      read_options=reading(cfg.data)))
  checkpoints = Checkpoints(os.path.join(stage_dir, "checkpoints"), **cfg.checkpoint)
  begin = loop.start(checkpoints, exp.abstract_train_state(optimizer), data,
                     max_skipped_in_a_row=cfg.faults.max_skipped_in_a_row,
                     fresh_key=jax.random.key(cfg.seed + 1))
  key, skips, state, results = begin.key, begin.skips, begin.state, {}
  if not begin.resumed:
    state = exp.init_train_state(exp.init_params(jax.random.key(cfg.seed)), optimizer)
    if cfg.sft_train.eval_before:
      results["before"] = exp.evaluate(state.params)
  writer = MetricWriter(stage_dir)
  total = cfg.sft_train.steps
  clock = TrainClock(begin.host)
  bar = tqdm.tqdm(range(begin.step, total), initial=begin.step, total=total, desc="sft",
                  mininterval=2.0, disable=not distributed.is_primary())
  for i in bar:
    kind, batch = next(data)
    state, metrics = steps[kind](state, sharding.shard_batch(batch, exp.mesh, batch_size), key)
    skips.record(i + 1, bool(metrics["skipped"]), f"a non-finite {kind} loss or gradient")
    if (i + 1) % cfg.sft_train.log_every == 0 or i + 1 == total or skips.in_a_row:
      metrics = {k: float(v) for k, v in metrics.items()}
      writer.write(i + 1, {**{f"sft/{kind}/{k}": v for k, v in metrics.items()},
                           "faults/skipped_total": skips.total})
      bar.set_postfix(kind=kind, loss=f"{metrics['loss']:.3f}")
    loop.finish_step(i + 1, total, stage="sft", state=state, checkpoints=checkpoints,
                     guard=guard, skips=skips,
                     host=loop.host_state(cfg, data=data.get_state(), key=key, skips=skips,
                                          clock=clock))
  checkpoints.close()
  writer.close()
  save_params(os.path.join(stage_dir, "params"), state.params)
  results.update(after=exp.evaluate(state.params), steps=total, train_s=clock.seconds(),
                 params=count_params(state.params),
                 heldout_prompts=len(exp.eval_examples), mix=weights)
  results["heldout_teacher_forced"] = {
      kind: heldout_metrics(exp, state.params, kind, specs[kind], encoders[kind])
      for kind in steps}
  if "t2i" in steps:
    results["heldout_text_reliance"] = heldout_text_reliance(exp, state.params)
  exp.save_samples(state.params, os.path.join(stage_dir, "samples.png"))
  write_json(os.path.join(stage_dir, "results.json"), results)
  return results


def params_or_run(config, path: str, workdir: str) -> str:
  """A parameters-only SFT checkpoint for experiments to start from: `path` if given, else the
  SFT stage of `config` run once into `workdir` (resumed if it is there)."""
  if path:
    return path
  run(experiment.build(experiment.with_overrides(config, {"stages": ("sft",)})), workdir)
  return os.path.join(workdir, "sft", "params")
