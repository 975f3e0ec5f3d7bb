r"""The UniGRPO ablation in miniature: GRPO variants from one SFT checkpoint, same budget, same
seeds; writes the table as markdown and JSON under experiments/results/.

  python experiments/ablations.py --config=configs/shapeworld.py --config.rl.steps=300 \
      --config.eval.every=300 --sft_params=workdir/main/sft/params --seeds=0

Without `--sft_params` it first runs the warm-up SFT stage once (into `--workdir`) and starts
every variant from it. Per variant and seed it reports the held-out mini-GenEval (strict and
partial, ODE sampler, greedy text) before and after, the training reward over the last tenth of
the steps (SDE samples), and rollout / step times. A training reward that climbs while the
held-out strict score does not is reward hacking.
"""
import os
import shutil
import time

from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import metric_writer
from unigrpo_jax.train import experiment, grpo_stage, sft_stage

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py", "Config.")
_SFT = flags.DEFINE_string("sft_params", "", "Parameters-only SFT checkpoint to start from.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/ablations", "Where the runs go.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data order and sampling) per variant.")
_VARIANTS = flags.DEFINE_list("variants", None, "Subset of VARIANTS to run (default: all).")
_OUT = flags.DEFINE_string("out", "experiments/results/ablations", "Output path prefix.")

# name → config overrides (dotted paths): each changes one thing against "joint".
VARIANTS = {
    "joint": {},
    "image_only": {"loss.text": False},
    "text_only": {"loss.image": False, "loss.velocity_weight": 0.0},
    "cfg": {"rollout.cfg_scale": 2.0},
    "latent_kl": {"loss.velocity_weight": 0.0, "loss.latent_kl_weight": 0.01},
    "no_regulariser": {"loss.velocity_weight": 0.0},
}


def run_variant(config, workdir: str) -> dict:
  results = grpo_stage.run(experiment.build(config), workdir)
  records = [r for r in metric_writer.read(os.path.join(workdir, "grpo"))
             if "reward/combined" in r]
  tail = records[-max(1, len(records) // 10):]
  return dict(
      before=results["before"]["overall"], after=results["after"]["overall"],
      after_per_family={f: s["geneval_strict"] for f, s in results["after"]["per_family"].items()},
      geneval_gain=results["geneval_gain"],
      geneval_gain_train_prompts=results["geneval_gain_train_prompts"],
      train_reward={k[len("reward/"):]: float(np.mean([r[k] for r in tail]))
                    for k in tail[0] if k.startswith("reward/")},
      rollout_s=float(np.median([r["time/rollout_s"] for r in records[1:]])),
      step_s=float(np.median([r["time/step_s"] for r in records[1:]])),
      train_s=results["train_s"])


def markdown(rows: dict) -> str:
  lines = ["| variant | seed | held-out strict (before → after) | gain | held-out partial | "
           "gain on training prompts (ODE) | training reward strict (SDE, last 10 %) | "
           "training reward combined | rollout s | step s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for key, r in rows.items():
    name, seed = key.rsplit("/", 1)
    lines.append(
        f"| {name} | {seed} | {r['before']['geneval_strict']:.3f} → "
        f"{r['after']['geneval_strict']:.3f} | {r['geneval_gain']:+.3f} | "
        f"{r['after']['geneval_partial']:.3f} | {r['geneval_gain_train_prompts']:+.3f} | "
        f"{r['train_reward'].get('geneval_strict', float('nan')):.3f} | "
        f"{r['train_reward']['combined']:.3f} | {r['rollout_s']:.2f} | {r['step_s']:.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  base = _CONFIG.value
  t0 = time.time()
  sft_params = sft_stage.params_or_run(base, _SFT.value, _WORKDIR.value)
  names = _VARIANTS.value or list(VARIANTS)
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    raise ValueError(f"--variants names unknown variants {unknown}; known: {list(VARIANTS)}")
  rows = {}
  for name in names:
    for seed in _SEEDS.value:
      config = experiment.with_overrides(base, dict(
          VARIANTS[name], seed=int(seed), **{"rl.init_params": os.path.abspath(sft_params)}))
      workdir = os.path.join(_WORKDIR.value, f"{name}_seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, never a resumed one
      rows[f"{name}/{seed}"] = run_variant(config, workdir)
      print(markdown({f"{name}/{seed}": rows[f"{name}/{seed}"]}).splitlines()[-1], flush=True)
  table = markdown(rows)
  metric_writer.write_json(_OUT.value + ".json", dict(
      rows=rows, seeds=[int(s) for s in _SEEDS.value], steps=base.rl.steps,
      sft_params=sft_params, wall_s=time.time() - t0, variants={n: VARIANTS[n] for n in names}))
  with open(_OUT.value + ".md", "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
