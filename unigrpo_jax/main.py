r"""The entry point: `python -m unigrpo_jax.main --config=configs/<name>.py[:variant] --workdir=DIR`.

Runs the stages the config lists in `config.stages`, in order:
  * `sft` — the warm-up SFT on the hybrid mix (`train/sft_stage.py`), ending in the
    parameters-only checkpoint `<workdir>/sft/params`;
  * `grpo` — UniGRPO from that checkpoint (`train/grpo_stage.py`), with held-out evaluation
    before, during and after;
  * `rollout` — the plumbing demo: samples one batch of trajectories from a fresh model,
    rescores them teacher-forced (the on-policy ratio must be 1), writes `rollout.png`.
Before anything is built the whole config is checked (`validation.py`: every error names its
field) and compared with the config a run in the same workdir was started with. Each stage
resumes exactly from its own checkpoints in the workdir. SIGTERM/SIGINT stop the job after the
step in flight with a checkpoint at that step (exit status 128 + signal, one line saying where
it saved); too many non-finite updates in a row stop it with status 1, the last good state
checkpointed. The job ends with `<workdir>/results.json` (every stage's results; for GRPO the
evaluation table and `geneval_gain`). Overrides: `--config.rl.group_size=8` and the like
(ml_collections flags).
"""
import functools
import json
import os
import sys
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import distributed, metric_writer, validation, visualize
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, count_params, init_params
from unigrpo_jax.sampling import RolloutSpec, make_rollout, score_trajectory
from unigrpo_jax.train import experiment, grpo_stage, sft_stage
from unigrpo_jax.train.faults import NonFiniteError
from unigrpo_jax.train.preemption import Guard, Preempted

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and outputs go.")
flags.mark_flags_as_required(["config", "workdir"])


def rollout_stage(config, workdir: str, guard: Guard, build) -> dict:
  """Samples a batch of trajectories from a freshly initialised model; checks ratio = 1."""
  del guard, build  # two rollouts: nothing to checkpoint, no data or evaluation
  model_spec = ModelSpec(**config.model)
  spec = RolloutSpec.from_config(config.rollout, config.tokens)
  model = UnifiedTransformer(model_spec)
  key = jax.random.key(config.seed)
  init_key, prompt_key, sample_key = jax.random.split(key, 3)
  params = init_params(model_spec, init_key)
  # Random weights draw nothing but noise with a zero velocity head; give it scale to show.
  head = params["image_out"]["proj"]
  head["kernel"] = 0.02 * jax.random.normal(init_key, head["kernel"].shape)
  first_free = max(config.tokens.values()) + 1
  prompts = jax.random.randint(prompt_key, (config.batch_size, spec.prompt_len), first_free,
                               model_spec.vocab_size)
  mask = jnp.ones(prompts.shape, bool)

  sample = make_rollout(model, spec)
  t0 = time.perf_counter()
  traj = jax.block_until_ready(sample(params, prompts, mask, sample_key))
  first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  traj = jax.block_until_ready(sample(params, prompts, mask, sample_key))
  steady_s = time.perf_counter() - t0
  scores = jax.jit(lambda p, t: score_trajectory(p, t, model=model, spec=spec))(params, traj)

  token_mask, step_mask = np.asarray(traj.token_mask), np.asarray(traj.step_mask)
  token_gap = np.abs(np.asarray(scores["token_logp"]) - np.asarray(traj.token_logp))[token_mask]
  step_gap = np.abs(np.asarray(scores["step_logp"]) - np.asarray(traj.step_logp))[step_mask]
  visualize.save_grid(traj.images, os.path.join(workdir, "rollout.png"))
  return dict(
      batch=config.batch_size, rounds=spec.rounds, text_slots=spec.max_text_tokens,
      sde_steps=spec.num_steps,
      text_tokens_sampled=int(token_mask.sum()), images_drawn=int(np.asarray(traj.image_mask).sum()),
      mean_token_logp=float(np.asarray(traj.token_logp)[token_mask].mean()),
      mean_step_logp=float(np.asarray(traj.step_logp)[step_mask].mean()),
      max_abs_log_ratio=float(max(token_gap.max(initial=0.0), step_gap.max(initial=0.0))),
      first_call_s=first_s, rollout_s=steady_s,
      params=count_params(params))


def training_stage(module):
  def run(config, workdir, guard, build):
    return module.run(build(), workdir, guard)
  return run


STAGES = {"rollout": rollout_stage, "sft": training_stage(sft_stage),
          "grpo": training_stage(grpo_stage)}


def main(argv):
  del argv
  # Orbax logs every save at INFO; the progress bars say what a person needs.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    spec = distributed.DistributedSpec(**config.get("distributed", {}))
  except TypeError as e:  # an unknown field
    sys.exit(f"config error: config.distributed: {e}")
  except ValueError as e:
    sys.exit(f"config error: {e}")
  distributed.initialize(spec)  # before anything touches a device
  if "rollout" in config.stages and jax.process_count() > 1:
    sys.exit("config error: config.stages: the rollout demo stage runs in one process; the "
             "sft and grpo stages run on many")
  try:
    validation.validate(config, stages=tuple(STAGES))
    validation.check_workdir(config, workdir)
  except (ValueError, OSError) as e:  # every check names its field; no traceback needed
    sys.exit(f"config error: {e}")
  results, t0 = {}, time.time()
  # One Experiment for every stage of the job: the stages share its compiled programs (the
  # evaluation's rollouts), not only its data.
  build = functools.cache(lambda: experiment.build(config))
  with Guard() as guard:
    for stage in config.stages:
      # A signal (to any process) after the last stage's final checkpoint.
      signum = distributed.agree_max(guard.signum or 0)
      if signum:
        print(f"stopped by a signal before stage {stage}; the stages before it are complete; "
              f"run the same command again to go on", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
      if distributed.is_primary():
        print(f"== stage {stage} ({workdir})", flush=True)
      try:
        results[stage] = STAGES[stage](config, workdir, guard, build)
      except Preempted as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
      except NonFiniteError as e:
        sys.exit(f"error: {e}")
  results["wall_s"] = time.time() - t0
  metric_writer.write_json(os.path.join(workdir, "results.json"), results)
  if distributed.is_primary():
    print(json.dumps({stage: r["after"]["overall"] if isinstance(r, dict) and "after" in r
                      else r for stage, r in results.items()}, indent=1))


if __name__ == "__main__":
  app.run(main)
