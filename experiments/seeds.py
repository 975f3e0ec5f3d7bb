r"""The main job over seeds: each warm-up seed's SFT once, then GRPO from its checkpoint with each
GRPO seed, every run a `python -m unigrpo_jax.main` subprocess sharing one data folder; then the
table of every pair with its held-out gain and 95 % interval, the training-prompt gain, object
precision (extra objects pass GenEval's rules, so a gain bought with clutter shows here), cell
and colour diversity before and after (with greedy plans, and with plans sampled as in
training where the runs measured them: `eval.sampled_plans`), and wall time, written as
markdown and JSON:

  python experiments/seeds.py --config=configs/shapeworld.py:world2 --root=workdir/seeds \
      --warmup_seeds=0,1,2 --grpo_seeds=0,1 --out=experiments/results/seeds_world2

Extra `--override=--config.x=y` flags go to every run. A run whose `results.json` exists is
read, not run again, so a stopped sweep resumes where it stopped (and each run resumes from
its own checkpoints). A finished main job (both stages in one workdir: the README's first
command is warm-up seed 0 with GRPO seed 0) joins as `sft0` and `sft0_grpo0`, both links to
its workdir; its wall time then counts once. The summary says whether the sweep meets the bar
the default job is held to (`--bar_mean`, `--bar_each`: the mean gain and every gain at least
that), and on which CPU it ran.
"""
import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

from unigrpo_jax import metric_writer
from unigrpo_jax.evaluation import overall_diversity
from unigrpo_jax.timing import cpu_model, matmul_peak_gflops

_CONFIG = flags.DEFINE_string("config", "configs/shapeworld.py:world2", "The job's config.")
_ROOT = flags.DEFINE_string("root", "workdir/seeds", "Folder of the runs' workdirs.")
_WARMUP = flags.DEFINE_list("warmup_seeds", ["0", "1", "2"], "Seeds of the SFT warm-ups.")
_GRPO = flags.DEFINE_list("grpo_seeds", ["0", "1"], "Seeds of the GRPO runs from each warm-up.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "A --config.x=y flag for every run.")
_OUT = flags.DEFINE_string("out", "experiments/results/seeds", "Output path prefix.")
_BAR_MEAN = flags.DEFINE_float("bar_mean", 0.15, "The mean held-out gain the job must reach.")
_BAR_EACH = flags.DEFINE_float("bar_each", 0.10, "The held-out gain every run must reach.")


def run(workdir: str, *flags_: str) -> dict:
  """`main` in `workdir` (skipped when it already finished); its results.json."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    data_dir = os.path.join(_ROOT.value, "tfds")
    subprocess.run([sys.executable, "-m", "unigrpo_jax.main", f"--config={_CONFIG.value}",
                    f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *flags_,
                    *_OVERRIDES.value], check=True)
  with open(path) as f:
    return json.load(f)


def diversity(grpo: dict, before: str, after: str, kind: str) -> tuple:
  """(before, after) of one diversity measure of the run's evaluations `before` and `after`
  (None where not measured)."""
  return tuple(overall_diversity(grpo.get(k, {})).get(kind) for k in (before, after))


def row(warmup: int, seed: int, sft_wall_s: float, grpo: dict) -> dict:
  """One (warm-up, GRPO) pair's figures; `sft_wall_s` the warm-up's wall time where it ran
  apart from GRPO (0 where one job ran both, its `wall_s` in `grpo`)."""
  sampled = ("before_sampled_plans", "after_sampled_plans")
  return dict(
      warmup_seed=warmup, grpo_seed=seed,
      after_sft=grpo["before"]["overall"]["geneval_strict"],
      after_grpo=grpo["after"]["overall"]["geneval_strict"],
      gain=grpo["geneval_gain"], gain_interval=grpo["gain_interval"],
      train_prompts_gain=grpo["geneval_gain_train_prompts"],
      train_prompts_gain_interval=grpo["gain_train_prompts_interval"],
      object_precision=tuple(grpo[k]["overall"].get("object_precision")
                             for k in ("before", "after")),
      cells_diversity=diversity(grpo, "before", "after", "cells"),
      colors_diversity=diversity(grpo, "before", "after", "colors"),
      sampled_plans_gain=grpo.get("gain_sampled_plans"),
      sampled_plans_cells_diversity=diversity(grpo, *sampled, "cells"),
      sampled_plans_colors_diversity=diversity(grpo, *sampled, "colors"),
      wall_min=(sft_wall_s + grpo["wall_s"]) / 60)


def markdown(rows, summary) -> str:
  def pair(a, b):
    return "–" if a is None else f"{a:.2f} → {b:.2f}"
  def sampled(r):
    if r["sampled_plans_gain"] is None:
      return "–"
    return (f"{r['sampled_plans_gain']:+.3f}, {pair(*r['sampled_plans_cells_diversity'])} / "
            f"{pair(*r['sampled_plans_colors_diversity'])}")
  lines = ["| warm-up seed | GRPO seed | after SFT | after GRPO | gain [95 %] | training "
           "prompts gain [95 %] | object precision | cell diversity | colour diversity | "
           "sampled plans: gain, cell / colour diversity | wall (min) |",
           "|" + "---|" * 11]
  for r in rows:
    lines.append(
        f"| {r['warmup_seed']} | {r['grpo_seed']} | {r['after_sft']:.3f} | "
        f"{r['after_grpo']:.3f} | {r['gain']:+.3f} [{r['gain_interval'][0]:+.3f}, "
        f"{r['gain_interval'][1]:+.3f}] | {r['train_prompts_gain']:+.3f} "
        f"[{r['train_prompts_gain_interval'][0]:+.3f}, "
        f"{r['train_prompts_gain_interval'][1]:+.3f}] | {pair(*r['object_precision'])} | "
        f"{pair(*r['cells_diversity'])} | "
        f"{pair(*r['colors_diversity'])} | {sampled(r)} | "
        f"{r['wall_min']:.1f} |")
  return ("\n".join(lines) + f"\n\nMean gain {summary['mean_gain']:+.3f}, lowest "
          f"{summary['min_gain']:+.3f}; the bar (mean ≥ {_BAR_MEAN.value:+.2f}, each ≥ "
          f"{_BAR_EACH.value:+.2f}) is {'met' if summary['meets_bar'] else 'not met'}. "
          f"{' '.join([summary['config'], *summary['overrides']])}, {summary['cpu']} "
          f"({summary['matmul_gflops']:.0f} GFLOP/s "
          "float32 2048² matmul).\n")


def main(argv):
  del argv
  rows = []
  for warmup in map(int, _WARMUP.value):
    sft_dir = os.path.join(_ROOT.value, f"sft{warmup}")
    sft = run(sft_dir, "--config.stages=('sft',)", f"--config.seed={warmup}")
    for seed in map(int, _GRPO.value):
      grpo_dir = os.path.join(_ROOT.value, f"sft{warmup}_grpo{seed}")
      grpo = run(grpo_dir, "--config.stages=('grpo',)", f"--config.seed={seed}",
                 f"--config.rl.init_params={os.path.join(sft_dir, 'sft', 'params')}")
      one_job = os.path.realpath(grpo_dir) == os.path.realpath(sft_dir)
      rows.append(row(warmup, seed, 0.0 if one_job else sft["wall_s"],
                      grpo["grpo"] | dict(wall_s=grpo["wall_s"])))
  gains = [r["gain"] for r in rows]
  summary = dict(rows=rows, mean_gain=float(np.mean(gains)), min_gain=float(np.min(gains)),
                 meets_bar=bool(np.mean(gains) >= _BAR_MEAN.value
                                and np.min(gains) >= _BAR_EACH.value),
                 config=_CONFIG.value, overrides=_OVERRIDES.value, cpu=cpu_model(),
                 matmul_gflops=matmul_peak_gflops(2048))
  metric_writer.write_json(_OUT.value + ".json", summary)
  with open(_OUT.value + ".md", "w") as f:
    f.write(markdown(rows, summary))
  print(markdown(rows, summary))


if __name__ == "__main__":
  app.run(main)
