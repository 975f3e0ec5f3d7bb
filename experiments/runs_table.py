r"""The table of finished GRPO runs and the warm-ups they started from, each with what its config
changes against a reference config, written as markdown and JSON:

  python experiments/runs_table.py --config=configs/shapeworld.py:world2 \
      --run=g1=workdir/w2/g1 --run=g2=workdir/w2/g2 --out=experiments/results/world2_tuning

A run is a `python -m unigrpo_jax.main` workdir holding a GRPO stage; its warm-up is the SFT
workdir its `rl.init_params` names (or the run's own SFT stage), links resolved, so runs whose
paths reach one warm-up through different links share its row. Per warm-up: held-out score per
family, visual-text alignment, and how much its images rely on their text at high noise
(`heldout_text_reliance`, computed from its parameters when its results predate it). Per run:
held-out before and after with the gain's interval, the training-prompt gain, the families,
object precision (a gain bought by drawing extra objects shows as a fall), cell and colour
diversity (a collapse to one layout or one colour shows as a fall), and wall time. With
`--sampled_plans`, also the held-out score and diversity with plans sampled as in training
(`eval.sampled_plans`; computed from the run's parameters before and after when its results
predate them): a greedy plan fixes a prompt's cells and colours, so only these show how
varied the policy itself is. Where the runs ran is the machine this script runs on only if
they ran here.
"""
import json
import os

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from unigrpo_jax import metric_writer, validation
from unigrpo_jax.evaluation import gain_interval, overall_diversity
from unigrpo_jax.checkpoint import load_params
from unigrpo_jax.timing import cpu_model, matmul_peak_gflops
from unigrpo_jax.train import experiment, sft_stage

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py:world2",
                                          "The config the runs' changes are read against.")
_RUNS = flags.DEFINE_multi_string("run", [], "label=workdir of a finished GRPO run.")
_OUT = flags.DEFINE_string("out", "experiments/results/runs", "Output path prefix.")
_SAMPLED = flags.DEFINE_bool("sampled_plans", False, "Add each run's held-out evaluation with "
                             "sampled plans, computed where its results lack it.")

# Where a run lives and what it starts from, not what it trains: left out of its changes.
_PLACES = ("data.data_dir", "rl.init_params", "stages")
# The sections (and fields) one stage alone never reads: left out of a one-stage workdir's
# changes.
_SFT_ONLY = ("sft", "sft_data", "sft_train", "sft_optim")
_GRPO_ONLY = ("rl", "rl_optim", "rewards", "process_rewards", "loss", "advantages", "ema",
              "lora", "reward_models", "reward_servers", "reward_client", "eval.every")
_SCORES = ("geneval_strict", "visual_text_alignment", "object_precision")


def changes(config: dict, reference: dict) -> dict:
  """The fields whose value differs from the reference's, less places and the sections of a
  stage the workdir did not run; a field the run's config lacks (it ran before the field
  existed, with what was then the only behaviour) is "<absent>"."""
  unread = (() if "grpo" in config["stages"] else _GRPO_ONLY) + (
      () if "sft" in config["stages"] else _SFT_ONLY)
  ref, run = validation.flatten(reference), validation.flatten(config)
  return {k: run.get(k, "<absent>") for k in [*run, *(k for k in ref if k not in run)]
          if k not in _PLACES and k not in unread and k.split(".")[0] not in unread
          and ref.get(k, "<absent>") != run.get(k, "<absent>")}


def read_json(*parts) -> dict:
  with open(os.path.join(*parts)) as f:
    return json.load(f)


def scores(evaluation: dict) -> dict:
  return dict({k: evaluation["overall"][k] for k in _SCORES},
              per_family={f: v["geneval_strict"] for f, v in evaluation["per_family"].items()},
              diversity=overall_diversity(evaluation))


def text_reliance(workdir: str, sft: dict, config) -> dict:
  """The warm-up's recorded `heldout_text_reliance`, or computed from its parameters."""
  if "heldout_text_reliance" in sft:
    return sft["heldout_text_reliance"]
  exp = experiment.build(config)
  params = load_params(os.path.join(workdir, "sft", "params"), exp.abstract_params)
  return sft_stage.heldout_text_reliance(exp, params)


def warmup_row(workdir: str, reference: dict) -> dict:
  config = read_json(workdir, "config.json")
  sft = read_json(workdir, "sft", "results.json")
  wall = read_json(workdir, "results.json").get("wall_s")
  cfg = ml_collections.ConfigDict(config)
  return dict(workdir=workdir, changes=changes(config, reference), steps=sft["steps"],
              **scores(sft["after"]), text_reliance=text_reliance(workdir, sft, cfg),
              wall_min=None if wall is None or "grpo" in config["stages"] else wall / 60)


def warmup_names(workdirs: list) -> dict:
  """Warm-up workdir → its name in the table: the folder's name, with its parent's when two
  warm-ups share a folder name (`seeds_a/sft0`, `seeds_b/sft0`)."""
  def tail(w, n):
    return os.path.join(*os.path.normpath(w).split(os.sep)[-n:])
  folders = [tail(p, 1) for p in set(map(os.path.normpath, workdirs))]
  return {w: tail(w, 1 if folders.count(tail(w, 1)) == 1 else 2) for w in workdirs}


def resolved(path: str) -> str:
  """The path with its links resolved, relative to the working directory: a warm-up reached
  through a link (a seed sweep's root linking another's warm-ups) is the warm-up it links to."""
  return os.path.relpath(os.path.realpath(path))


def sampled_plans(workdir: str, grpo: dict, config: dict) -> dict:
  """The run's held-out evaluation with sampled plans before and after, and the gain with its
  interval: as its results recorded them, or computed from its starting and final
  parameters."""
  if "before_sampled_plans" in grpo:
    before, after = grpo["before_sampled_plans"], grpo["after_sampled_plans"]
  else:
    exp = experiment.build(ml_collections.ConfigDict(config))
    init = config["rl"]["init_params"] or os.path.join(workdir, "sft", "params")
    before, after = (exp.evaluate(load_params(path, exp.abstract_params), sampled_plans=True)
                     for path in (init, os.path.join(workdir, "grpo", "params")))
  headline = grpo["headline"]
  return dict(before=scores(before), after=scores(after),
              gain=after["overall"][headline] - before["overall"][headline],
              gain_interval=gain_interval(before, after, headline))


def run_row(label: str, workdir: str, reference: dict) -> dict:
  config = read_json(workdir, "config.json")
  results = read_json(workdir, "results.json")
  grpo = results["grpo"]
  init = config["rl"]["init_params"]
  warmup = resolved(os.path.dirname(os.path.dirname(init)) if init else workdir)
  row = dict(label=label, workdir=workdir, warmup=warmup,
             changes=changes(config, reference), steps=grpo["steps"],
             before=scores(grpo["before"]), after=scores(grpo["after"]), gain=grpo["gain"],
             gain_interval=grpo["gain_interval"], train_prompts_gain=grpo["gain_train_prompts"],
             train_prompts_gain_interval=grpo["gain_train_prompts_interval"],
             wall_min=results["wall_s"] / 60)
  if _SAMPLED.value:
    row["sampled_plans"] = sampled_plans(workdir, grpo, config)
  return row


def _changed(c: dict) -> str:
  return ", ".join(f"`{k}={v}`" for k, v in c.items()) or "–"


def _interval(i) -> str:
  return "" if i is None else f" [{i[0]:+.3f}, {i[1]:+.3f}]"


def _diversity(before: dict, after: dict) -> str:
  """The cell and colour diversity columns, before → after ("–" where not measured)."""
  return " | ".join(
      f"{before['diversity'][k]:.2f} → {after['diversity'][k]:.2f}"
      if k in before["diversity"] else "–" for k in ("cells", "colors"))


def markdown(summary: dict) -> str:
  families = list(next(iter(summary["warmups"].values()))["per_family"])
  times = list(next(iter(summary["warmups"].values()))["text_reliance"])
  lines = [f"Changes are against `{summary['config']}`; {summary['cpu']} "
           f"({summary['matmul_gflops']:.0f} GFLOP/s float32 2048² matmul) ran this table.", "",
           "## Warm-ups", "",
           "| warm-up | changes | held-out | " + " | ".join(families) + " | alignment | "
           + " | ".join(f"x0 error at t = {t}, own / other text" for t in times)
           + " | wall (min) |", "|" + "---|" * (5 + len(families) + len(times))]
  for name, w in summary["warmups"].items():
    lines.append(
        f"| {name} | {_changed(w['changes'])} | {w['geneval_strict']:.3f} | "
        + " | ".join(f"{w['per_family'][f]:.2f}" for f in families)
        + f" | {w['visual_text_alignment']:.3f} | "
        + " | ".join(f"{e['matched']:.4f} / {e['mismatched']:.4f}"
                     for e in w["text_reliance"].values())
        + f" | {'–' if w['wall_min'] is None else format(w['wall_min'], '.1f')} |")
  lines += ["", "## GRPO runs", "",
            "| run | warm-up | changes | held-out | gain [95 %] | training prompts gain | "
            + " | ".join(families)
            + " | object precision | cell diversity | colour diversity | wall (min) |",
            "|" + "---|" * (10 + len(families))]
  for r in summary["runs"]:
    b, a = r["before"], r["after"]
    diversity = _diversity(b, a)
    lines.append(
        f"| {r['label']} | {r['warmup_name']} | {_changed(r['changes'])} | "
        f"{b['geneval_strict']:.3f} → {a['geneval_strict']:.3f} | "
        f"{r['gain']:+.3f}{_interval(r['gain_interval'])} | "
        f"{r['train_prompts_gain']:+.3f}{_interval(r['train_prompts_gain_interval'])} | "
        + " | ".join(f"{b['per_family'][f]:.2f} → {a['per_family'][f]:.2f}" for f in families)
        + f" | {b['object_precision']:.2f} → {a['object_precision']:.2f} | {diversity} | "
        f"{r['wall_min']:.1f} |")
  sampled = [r for r in summary["runs"] if "sampled_plans" in r]
  if sampled:
    lines += ["", "## With sampled plans", "",
              "Held-out prompts drawn with plans sampled as in training (ODE images).", "",
              "| run | held-out | gain [95 %] | object precision | alignment | cell diversity | "
              "colour diversity |", "|" + "---|" * 7]
    for r in sampled:
      p = r["sampled_plans"]
      b, a = p["before"], p["after"]
      lines.append(
          f"| {r['label']} | {b['geneval_strict']:.3f} → {a['geneval_strict']:.3f} | "
          f"{p['gain']:+.3f}{_interval(p['gain_interval'])} | "
          f"{b['object_precision']:.2f} → {a['object_precision']:.2f} | "
          f"{b['visual_text_alignment']:.2f} → {a['visual_text_alignment']:.2f} | "
          f"{_diversity(b, a)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not _RUNS.value:
    raise app.UsageError("name at least one --run=label=workdir")
  reference = json.loads(_CONFIG.value.to_json())
  runs = []
  for entry in _RUNS.value:
    label, sep, workdir = entry.partition("=")
    if not sep or not os.path.isfile(os.path.join(workdir, "grpo", "results.json")):
      raise app.UsageError(f"--run={entry}: expected label=workdir of a finished GRPO run")
    runs.append(run_row(label, workdir, reference))
  names = warmup_names([r["warmup"] for r in runs])
  warmups = {}
  for r in runs:
    r["warmup_name"] = names[r["warmup"]]
    if r["warmup_name"] not in warmups:
      warmups[r["warmup_name"]] = warmup_row(r["warmup"], reference)
  summary = dict(config=config_flags.get_config_filename(flags.FLAGS["config"]), warmups=warmups,
                 runs=runs, cpu=cpu_model(), matmul_gflops=matmul_peak_gflops(2048))
  table = markdown(summary)
  metric_writer.write_json(_OUT.value + ".json", summary)
  with open(_OUT.value + ".md", "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  app.run(main)
