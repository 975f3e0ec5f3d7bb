r"""The entry point: `python -m unigrpo_jax.main --config=configs/<name>.py[:variant] --workdir=DIR`.

Runs the stages the config lists in `config.stages`, in order:
  * `sft` — the warm-up SFT on the hybrid mix (`train/sft_stage.py`), ending in the
    parameters-only checkpoint `<workdir>/sft/params`;
  * `grpo` — UniGRPO from that checkpoint (`train/grpo_stage.py`), with held-out evaluation
    before, during and after;
  * `rollout` — the plumbing demo: samples one batch of trajectories from a fresh model,
    rescores them teacher-forced (the on-policy ratio must be 1), writes `rollout.png`.
Each stage resumes from its own checkpoints in the workdir. The job ends with
`<workdir>/results.json` (every stage's results; for GRPO the evaluation table and
`geneval_gain`). Overrides: `--config.rl.group_size=8` and the like (ml_collections flags).
"""
import json
import os
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import visualize
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params
from unigrpo_jax.sampling import RolloutSpec, make_rollout, score_trajectory
from unigrpo_jax.train import experiment, grpo_stage, sft_stage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and outputs go.")
flags.mark_flags_as_required(["config", "workdir"])


def rollout_stage(config, workdir: str) -> dict:
  """Samples a batch of trajectories from a freshly initialised model; checks ratio = 1."""
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
      params=int(sum(x.size for x in jax.tree.leaves(params))))


def training_stage(module):
  def run(config, workdir):
    return module.run(experiment.build(config), workdir)
  return run


STAGES = {"rollout": rollout_stage, "sft": training_stage(sft_stage),
          "grpo": training_stage(grpo_stage)}


def main(argv):
  del argv
  # Orbax logs every save at INFO; the progress bars say what a person needs.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f"config.stages names unknown stages {unknown}; known: {list(STAGES)}")
  os.makedirs(workdir, exist_ok=True)
  results, t0 = {}, time.time()
  for stage in config.stages:
    print(f"== stage {stage} ({workdir})", flush=True)
    results[stage] = STAGES[stage](config, workdir)
  results["wall_s"] = time.time() - t0
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps({stage: r["after"]["overall"] if isinstance(r, dict) and "after" in r else r
                    for stage, r in results.items()}, indent=1))


if __name__ == "__main__":
  app.run(main)
