r"""The main result: the default job (warm-up SFT, then UniGRPO) and its held-out table, written
as markdown and JSON under experiments/results/ (`geneval_gain`, seed, wall time).

  python experiments/main_job.py --config=configs/shapeworld.py --workdir=workdir/main

With `--reuse`, a finished job in `--workdir` (`python -m unigrpo_jax.main … --workdir=…`, the
README's first command) is summarised instead of run again.
"""
import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from unigrpo_jax import evaluate as evaluation
from unigrpo_jax.train import experiment, grpo_stage, sft_stage

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py", "Config.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/main", "The job's workdir.")
_REUSE = flags.DEFINE_bool("reuse", False, "Summarise a finished job in --workdir.")
_OUT = flags.DEFINE_string("out", "experiments/results/main_job", "Output path prefix.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  path = os.path.join(_WORKDIR.value, "results.json")
  if _REUSE.value:
    with open(path) as f:
      results = json.load(f)
  else:
    t0 = time.time()
    exp = experiment.build(cfg)
    results = dict(sft=sft_stage.run(exp, _WORKDIR.value), grpo=grpo_stage.run(exp, _WORKDIR.value))
    results["wall_s"] = time.time() - t0
    experiment.write_json(path, results)
  grpo = results["grpo"]
  summary = dict(
      geneval_gain=grpo["geneval_gain"],
      geneval_gain_train_prompts=grpo["geneval_gain_train_prompts"],
      sft=grpo["before"]["overall"], grpo=grpo["after"]["overall"],
      per_family={f: dict(sft=grpo["before"]["per_family"][f]["geneval_strict"],
                          grpo=grpo["after"]["per_family"][f]["geneval_strict"])
                  for f in sorted(grpo["before"]["per_family"])},
      seed=cfg.seed, wall_s=results["wall_s"], sft_train_s=results["sft"]["train_s"],
      grpo_train_s=grpo["train_s"], grpo_steps=grpo["steps"],
      heldout_examples=grpo["heldout_prompts"], config=cfg.to_dict())
  experiment.write_json(_OUT.value + ".json", summary)
  with open(_OUT.value + ".md", "w") as f:
    f.write("Held-out, after warm-up SFT\n\n" + evaluation.markdown_table(grpo["before"])
            + "\n\nHeld-out, after UniGRPO\n\n" + evaluation.markdown_table(grpo["after"])
            + f"\n\ngeneval_gain {summary['geneval_gain']:+.3f} (training prompts "
            f"{summary['geneval_gain_train_prompts']:+.3f}); seed {cfg.seed}; wall "
            f"{summary['wall_s'] / 60:.1f} min\n")
  print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


if __name__ == "__main__":
  app.run(main)
