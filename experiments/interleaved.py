r"""Interleaved GRPO: process vs outcome rewards from one interleaved warm-up, same budget, same
seeds; writes the table (markdown) and the curves (JSON) under experiments/results/.

  python experiments/interleaved.py --config=configs/interleaved.py --config.rl.steps=150 \
      --config.eval.every=25 --sft_params=workdir/interleaved/sft/params

Without `--sft_params` it first runs the warm-up SFT stage once (into `--workdir`). Per variant
(advantages from outcome rewards, from process rewards, from both) and seed it reports the
held-out interleaved score (the mean of structure, relevance, alignment and final-scene
mini-GenEval; ODE sampler, greedy text) before, during (every `eval.every` steps) and after, the
first step at which it reaches `--target` above the warm-up, the per-step scores, and — the
single-modality skills — text-to-image mini-GenEval and captioning accuracy after RL beside the
warm-up's.
"""
import json
import os
import shutil
import time

from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import metric_writer
from unigrpo_jax.checkpoint import load_params
from unigrpo_jax.rl import advantages
from unigrpo_jax.train import experiment, grpo_stage, sft_stage, tasks
from unigrpo_jax.train.sft import sft_encoders

_CONFIG = config_flags.DEFINE_config_file("config", "configs/interleaved.py", "Config.")
_SFT = flags.DEFINE_string("sft_params", "", "Parameters-only SFT checkpoint to start from.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/interleaved_variants", "Where runs go.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data order and sampling) per variant.")
_VARIANTS = flags.DEFINE_list("variants", ["outcome", "process", "both"], "Advantage kinds.")
_TARGET = flags.DEFINE_float("target", 0.05, "Score gain over the warm-up to count steps to.")
_OUT = flags.DEFINE_string("out", "experiments/results/interleaved", "Output path prefix.")


def skills(config, params_path: str) -> dict:
  """Text-to-image mini-GenEval (held-out, ODE) and held-out captioning of `params_path`."""
  exp = experiment.build(experiment.with_overrides(config, {"rl.task": "t2i"}))
  params = load_params(params_path, exp.abstract_params)
  specs = tasks.sft_layouts(config)
  encoders = sft_encoders(specs, tokenizer=exp.tokenizer, model_spec=exp.model_spec,
                          grid=config.data.grid)
  caption = sft_stage.heldout_metrics(exp, params, "understanding", specs["understanding"],
                                      encoders["understanding"])
  return dict(t2i_geneval_strict=exp.evaluate(params)["overall"]["geneval_strict"],
              caption_exact=caption["text_exact"], caption_token_acc=caption["text_token_acc"])


def run_variant(config, workdir: str, target: float) -> dict:
  results = grpo_stage.run(experiment.build(config), workdir)
  headline = results["headline"]
  records = metric_writer.read(os.path.join(workdir, "grpo"))
  curve = {r["step"]: r[f"eval/{headline}"] for r in records if f"eval/{headline}" in r}
  before = results["before"]["overall"][headline]
  reached = [step for step, score in sorted(curve.items()) if score >= before + target]
  train = [r for r in records if "reward/combined" in r]
  return dict(
      before=results["before"]["overall"], after=results["after"]["overall"],
      per_step_before=results["before"]["per_step"], per_step_after=results["after"]["per_step"],
      gain=results["gain"], gain_train_prompts=results["gain_train_prompts"],
      curve=curve, steps_to_target=reached[0] if reached else None,
      train_reward_curve=[r["reward/combined"] for r in train],
      step_s=float(np.median([r["time/step_s"] for r in train[1:]])),
      skills=skills(config, os.path.join(workdir, "grpo", "params")),
      train_s=results["train_s"])


def markdown(rows: dict, warmup: dict, target: float) -> str:
  lines = ["| advantages | seed | held-out score (warm-up → after) | gain | structure | relevance "
           f"| alignment | final-scene GenEval | steps to +{target:.2f} | t2i GenEval "
           f"(warm-up {warmup['t2i_geneval_strict']:.3f}) | captioning token acc. (warm-up "
           f"{warmup['caption_token_acc']:.3f}) | step s |", "|---" * 12 + "|"]
  for key, r in rows.items():
    name, seed = key.rsplit("/", 1)
    a = r["after"]
    lines.append(
        f"| {name} | {seed} | {r['before']['interleaved_score']:.3f} → "
        f"{a['interleaved_score']:.3f} | {r['gain']:+.3f} | {a['interleaved_structure']:.3f} | "
        f"{a['interleaved_relevance']:.3f} | {a['interleaved_alignment']:.3f} | "
        f"{a['interleaved_geneval']:.3f} | {r['steps_to_target'] or 'not reached'} | "
        f"{r['skills']['t2i_geneval_strict']:.3f} | {r['skills']['caption_token_acc']:.3f} | "
        f"{r['step_s']:.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  base = _CONFIG.value
  t0 = time.time()
  sft_params = sft_stage.params_or_run(base, _SFT.value, _WORKDIR.value)
  unknown = sorted(set(_VARIANTS.value) - set(advantages.KINDS))
  if unknown:
    raise ValueError(f"--variants names unknown advantage kinds {unknown}; known: "
                     f"{advantages.KINDS}")
  warmup = skills(base, sft_params)
  rows = {}
  for name in _VARIANTS.value:
    for seed in _SEEDS.value:
      config = experiment.with_overrides(base, {"advantages.kind": name, "seed": int(seed),
                                                "rl.init_params": os.path.abspath(sft_params)})
      workdir = os.path.join(_WORKDIR.value, f"{name}_seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, never a resumed one
      rows[f"{name}/{seed}"] = run_variant(config, workdir, _TARGET.value)
      print(markdown({f"{name}/{seed}": rows[f"{name}/{seed}"]}, warmup,
                     _TARGET.value).splitlines()[-1], flush=True)
  table = markdown(rows, warmup, _TARGET.value)
  metric_writer.write_json(_OUT.value + ".json", dict(
      rows=rows, warmup_skills=warmup, seeds=[int(s) for s in _SEEDS.value],
      steps=base.rl.steps, target=_TARGET.value, sft_params=sft_params,
      wall_s=time.time() - t0, config=json.loads(base.to_json())))
  with open(_OUT.value + ".md", "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
