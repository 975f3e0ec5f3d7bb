r"""The main result: the table of a finished default job (warm-up SFT, then UniGRPO), written
as markdown and JSON under experiments/results/ (`geneval_gain`, seed, wall time). The job is
the README's first command; this script only reads its `results.json`:

  python -m unigrpo_jax.main --config=configs/shapeworld.py:world2 --workdir=workdir/main
  python experiments/main_job.py --workdir=workdir/main

A job run as two commands (the SFT stage in one workdir, GRPO from its `sft/params` in another)
names the first with `--sft_workdir`. GRPO runs with other seeds from the same SFT checkpoint
(`--config.stages="('grpo',)" --config.rl.init_params=… --config.seed=1`) join with
`--seed_workdirs`: `geneval_gain` is then the mean over seeds, `geneval_gain_per_seed` each
one; the tables are the first run's, followed by each other seed's held-out table after GRPO
(`after_other_seeds` in the JSON, with its training-prompt scores). The summary's `config` is the one the GRPO run recorded in
its workdir (`config.json`), and `sft_config` the SFT run's where it ran apart: what ran, not
what a command line says. `wall_s` is the wall time of the command that finished each stage's
workdir: a job stopped and resumed counts only its last command (its training times, summed
over resumes, say how long it trained).
"""
import json
import os

from absl import app, flags

from unigrpo_jax import evaluation
from unigrpo_jax import metric_writer

_WORKDIR = flags.DEFINE_string("workdir", "workdir/main", "The finished job's workdir.")
_SFT_WORKDIR = flags.DEFINE_string("sft_workdir", "", "Where the SFT stage ran, if not in "
                                   "--workdir.")
_SEED_WORKDIRS = flags.DEFINE_list("seed_workdirs", [], "GRPO runs with other seeds from the "
                                    "same SFT checkpoint.")
_OUT = flags.DEFINE_string("out", "experiments/results/main_job", "Output path prefix.")


def _config(workdir: str) -> dict:
  """The config a run recorded in its workdir."""
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "results.json")) as f:
    results = json.load(f)
  grpo = results["grpo"]
  wall_s = results["wall_s"]
  config = _config(_WORKDIR.value)
  if _SFT_WORKDIR.value:
    with open(os.path.join(_SFT_WORKDIR.value, "results.json")) as f:
      sft_results = json.load(f)
    results["sft"] = sft_results["sft"]
    wall_s += sft_results["wall_s"]
  seeds, gains, others = [config["seed"]], [grpo["geneval_gain"]], []
  for workdir in _SEED_WORKDIRS.value:
    with open(os.path.join(workdir, "results.json")) as f:
      other = json.load(f)["grpo"]
    seeds.append(_config(workdir)["seed"])
    if other["before"]["overall"] != grpo["before"]["overall"]:
      raise ValueError(f"{workdir} did not start from the same SFT checkpoint as "
                       f"{_WORKDIR.value} (its held-out scores before GRPO differ)")
    gains.append(other["geneval_gain"])
    others.append(other)
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"--seed_workdirs repeat a seed: {seeds}")
  summary = dict(
      geneval_gain=float(sum(gains) / len(gains)), geneval_gain_per_seed=gains, seeds=seeds,
      geneval_gain_train_prompts=grpo["geneval_gain_train_prompts"],
      sft=grpo["before"]["overall"], grpo=grpo["after"]["overall"],
      per_family={f: dict(sft=grpo["before"]["per_family"][f]["geneval_strict"],
                          grpo=grpo["after"]["per_family"][f]["geneval_strict"])
                  for f in sorted(grpo["before"]["per_family"])},
      wall_s=wall_s, sft_train_s=results["sft"]["train_s"],
      grpo_train_s=grpo["train_s"], grpo_steps=grpo["steps"],
      heldout_examples=grpo["heldout_prompts"], config=config,
      after_other_seeds={str(seed): dict(heldout=other["after"],
                                         train_prompts=other["after_train_prompts"]["overall"])
                         for seed, other in zip(seeds[1:], others)})
  if _SFT_WORKDIR.value:
    summary["sft_config"] = _config(_SFT_WORKDIR.value)
  metric_writer.write_json(_OUT.value + ".json", summary)
  with open(_OUT.value + ".md", "w") as f:
    f.write("Held-out, after warm-up SFT\n\n" + evaluation.markdown_table(grpo["before"])
            + "\n\nHeld-out, after UniGRPO\n\n" + evaluation.markdown_table(grpo["after"])
            + f"\n\ngeneval_gain {grpo['geneval_gain']:+.3f} (training prompts "
            f"{summary['geneval_gain_train_prompts']:+.3f}); seed {seeds[0]}"
            + (f"; over seeds {seeds}: " + ", ".join(f"{g:+.3f}" for g in gains)
               + f", mean {summary['geneval_gain']:+.3f}" if len(seeds) > 1 else "")
            + "; training "
            f"{summary['sft_train_s'] / 60:.1f} min SFT + {summary['grpo_train_s'] / 60:.1f} min "
            f"GRPO (summed over resumes); wall {summary['wall_s'] / 60:.1f} min (the finishing "
            "command's)\n"
            + "".join(f"\nHeld-out, after UniGRPO, seed {seed}\n\n"
                      + evaluation.markdown_table(other["after"])
                      + f"\n\ngeneval_gain {other['geneval_gain']:+.3f} (training prompts "
                      f"{other['geneval_gain_train_prompts']:+.3f}, to "
                      f"{other['after_train_prompts']['overall']['geneval_strict']:.3f})\n"
                      for seed, other in zip(seeds[1:], others)))
  print(json.dumps({k: v for k, v in summary.items() if not k.endswith("config")}, indent=1))


if __name__ == "__main__":
  app.run(main)
