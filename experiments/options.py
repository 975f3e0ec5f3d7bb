r"""The training options measured on ShapeWorld: the default GRPO stage and each option (LoRA,
EMA, the sampler variants, reference refresh, a text KL, an entropy bonus) from one warm-up
checkpoint, with the same seeds and budget, every held-out prompt sampled several times so each
score has its interval:

  python experiments/options.py --root=workdir/options --seeds=0,1,2 \
      --config.rl.steps=300 --out=experiments/results/options

Without `--sft_params` the warm-up SFT stage runs once first (into `<root>/sft`). Every run is
a `python -m unigrpo_jax.main` subprocess with its own workdir, sharing one data folder and one
compilation cache (the caller's `JAX_COMPILATION_CACHE_DIR`, else `<root>/jax_cache`); a run
whose `results.json` exists is read, not run again, so a stopped sweep resumes where it
stopped; an option without overrides runs in `<root>/default_seed<n>` whatever its name
(`ablations.py`'s "joint" reads the options' "default"); `--extend` adds options to an earlier
sweep's table (same warm-up, budget and CPU model). `--config.x=y` flags go to every run (the
warm-up's too).

Per option it reports, over seeds: the held-out headline (mini-GenEval strict, ODE sampler,
greedy plan) after GRPO with each run's 95 % bootstrap interval over prompts and the seeds'
mean and spread; the gain over the warm-up; the training reward (SDE samples, the last tenth
of the steps); the gap between that reward and the held-out score at the start and at the end
(reward hacking shows as a gap that widens); the diversity after (and, where the runs
measured it, `eval.sampled_plans`, the gain and the diversity with sampled plans: the
policy's own); the median step time; and the compiled step's peak memory per device (XLA's
memory analysis of the rollout and the update, `memory.py`).
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags
import jax
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import lora as lora_lib, memory, metric_writer, sharding
from unigrpo_jax.evaluation import overall_diversity
from unigrpo_jax.optim import OptimizerSpec, make_optimizer
from unigrpo_jax.rl import LossSpec, UpdateSpec, make_update
from unigrpo_jax.sampling import make_rollout
from unigrpo_jax.timing import cpu_model, matmul_peak_gflops
from unigrpo_jax.train import experiment

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py", "The job's config.")
_ROOT = flags.DEFINE_string("root", "workdir/options", "Folder of the runs' workdirs.")
_SFT = flags.DEFINE_string("sft_params", "", "Parameters-only warm-up checkpoint to start from "
                           "(default: run the SFT stage into <root>/sft).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "GRPO seeds of every option.")
_OPTIONS = flags.DEFINE_list("options", None, "Subset of the options to run (default: all).")
_SAMPLES = flags.DEFINE_integer("samples_per_prompt", 4, "Samples of every evaluated prompt.",
                                lower_bound=1)
_OUT = flags.DEFINE_string("out", "experiments/results/options", "Output path prefix.")
_EXTEND = flags.DEFINE_bool("extend", False, "Keep the rows of an existing <out>.json for the "
                            "options not run now (its warm-up, steps, seeds, samples and CPU "
                            "must be this sweep's).")


def options(config) -> dict:
  """Option name → config overrides (dotted path → value) against `config`; each changes one
  thing. Schedules are set in fractions of the run's steps, rates in multiples of its rate."""
  steps = config.rl.steps
  return {
      "default": {},
      # Both experts adapted (the default trains both); adapters learn at 10× the full
      # fine-tune's rate (the image side keeps its scale), as is usual for LoRA.
      "lora": {"lora.enabled": True, "lora.rank": 32, "lora.alpha": 32.0,
               "lora.modules": ("text/*", "image/*"),
               "rl_optim.learning_rate": 10 * config.rl_optim.learning_rate},
      # Flow-GRPO's EMA: decay 0.9 every 8 steps.
      "ema": {"ema.decay": 0.9, "ema.every": 8},
      "cps": {"rollout.sde_type": "cps"},
      "group_noise": {"rollout.group_noise": True},
      "timestep_fraction": {"rollout.timestep_fraction": 0.5},
      # MixGRPO: the 6-step window moves 2 steps every eighth of the run, over all 20 steps.
      "sliding_window": {"rollout.slide_every": max(1, steps // 8), "rollout.slide_stride": 2},
      "reference_refresh": {"rl.reference_refresh": max(1, steps // 4)},
      # A per-token KL to the reference on the text side (k3), against the narrowing of the
      # plans' colours and cells; or an entropy bonus at PPO's usual coefficient.
      "text_kl": {"loss.beta": 0.1},
      "entropy_bonus": {"loss.entropy_weight": 0.01},
  }


def flag(path: str, value) -> str:
  """The command-line override of one config field (tuples as Python literals)."""
  return f"--config.{path}={value!r}" if isinstance(value, tuple) else f"--config.{path}={value}"


def run(workdir: str, *flags_: str) -> dict:
  """`main` in `workdir` (skipped when it already finished); its results.json."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    # The caller's compilation cache when it set one, else one of the sweep's own.
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   os.path.join(os.path.abspath(_ROOT.value), "jax_cache"))
    subprocess.run([sys.executable, "-m", "unigrpo_jax.main",
                    f"--config={flags.FLAGS['config'].config_filename}",
                    f"--workdir={workdir}", *flags_], check=True, env=env)
  with open(path) as f:
    return json.load(f)


def step_memory(config) -> dict:
  """Peak bytes per device of the option's compiled rollout and update (`memory.py`)."""
  exp = experiment.build(config)
  spec, rl = exp.task.rollout(config), config.rl
  optimizer = make_optimizer(OptimizerSpec(**config.rl_optim))
  lora = lora_lib.configured(config.lora)
  trained = exp.abstract_adapters(lora) if lora else exp.abstract_params
  reference = exp.abstract_params
  if lora and lora.base_dtype:
    reference = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, lora.base_dtype,
                                                            sharding=p.sharding), reference)
  state = exp.abstract_train_state(optimizer, config.ema.decay > 0, trained if lora else None)
  update = make_update(exp.model, spec, LossSpec(**config.loss),
                       UpdateSpec(rl.num_updates, rl.num_minibatches, rl.group_size), optimizer,
                       lora=lora)
  found = memory.grpo_step_memory(make_rollout(exp.model, spec, rl.group_size), update, spec,
                                  trained, state, reference, lora,
                                  rl.prompts_per_batch * rl.group_size, exp.mesh,
                                  gather=sharding.gathers_for_rollout(config))
  return {k: v["peak"] for k, v in found.items()}


def figures(grpo: dict, records: list, headline: str) -> dict:
  """One run's figures from its GRPO results and metrics."""
  rewarded = [r for r in records if "reward/combined" in r]
  tenth = max(1, len(rewarded) // 10)
  def reward(rows, name):
    return float(np.mean([r[f"reward/{name}"] for r in rows]))
  before, after = grpo["before"]["overall"][headline], grpo["after"]["overall"][headline]
  return dict(
      before=before, after=after,
      after_interval=grpo["after"]["intervals"]["overall"][headline],
      gain=grpo["gain"], gain_interval=grpo["gain_interval"],
      train_prompts_after=grpo["after_train_prompts"]["overall"][headline],
      train_reward=reward(rewarded[-tenth:], headline),
      train_reward_combined=reward(rewarded[-tenth:], "combined"),
      gap_start=reward(rewarded[:tenth], headline) - before,
      gap_end=reward(rewarded[-tenth:], headline) - after,
      step_s=float(np.median([r["time/step_s"] for r in rewarded[1:]])),
      diversity_before=overall_diversity(grpo["before"]),
      diversity_after=overall_diversity(grpo["after"]),
      sampled_plans_gain=grpo.get("gain_sampled_plans"),
      sampled_plans_diversity_after=overall_diversity(grpo.get("after_sampled_plans", {})))


def summary(runs: list) -> dict:
  """The seeds' mean and standard deviation of each figure."""
  columns = {key: [r[key] for r in runs] for key in (
      "after", "gain", "train_prompts_after", "train_reward", "train_reward_combined",
      "gap_start", "gap_end", "step_s")}
  for kind in ("cells", "colors"):
    if all(kind in r["diversity_after"] for r in runs):
      columns[f"{kind}_diversity_after"] = [r["diversity_after"][kind] for r in runs]
    if all(kind in r.get("sampled_plans_diversity_after", {}) for r in runs):
      columns[f"sampled_plans_{kind}_diversity_after"] = [
          r["sampled_plans_diversity_after"][kind] for r in runs]
  if all(r.get("sampled_plans_gain") is not None for r in runs):
    columns["sampled_plans_gain"] = [r["sampled_plans_gain"] for r in runs]
  return {key: dict(mean=float(np.mean(values)),
                    std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
          for key, values in columns.items()}


def markdown(rows: dict, meta: dict) -> str:
  def ms(s):  # the seeds' mean, ± their standard deviation when there are several
    return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if len(meta["seeds"]) > 1 else "")
  lines = [
      "| option | held-out after | gain, each seed [95 %] | training prompts after | "
      "training reward (last 10 %) | gap start → end | diversity after, cells / colours | "
      "sampled plans: gain, diversity after | step s | peak MiB (rollout / update) |",
      "|" + "---|" * 10]
  for name, row in rows.items():
    gains = " ".join(f"{r['gain']:+.3f} [{r['gain_interval'][0]:+.3f}, "
                     f"{r['gain_interval'][1]:+.3f}]" for r in row["runs"])
    s, mib = row["summary"], row["peak_bytes"]
    spread = " / ".join(f"{s[k]['mean']:.2f}" if k in s else "–"
                        for k in ("cells_diversity_after", "colors_diversity_after"))
    sampled = "–" if "sampled_plans_gain" not in s else (
        f"{s['sampled_plans_gain']['mean']:+.3f}, " + " / ".join(
            f"{s[k]['mean']:.2f}" if k in s else "–" for k in (
                "sampled_plans_cells_diversity_after", "sampled_plans_colors_diversity_after")))
    lines.append(
        f"| {name} | {ms(s['after'])} | {gains} | {ms(s['train_prompts_after'])} | "
        f"{ms(s['train_reward'])} | {s['gap_start']['mean']:+.3f} → "
        f"{s['gap_end']['mean']:+.3f} | {spread} | {sampled} | {s['step_s']['mean']:.2f} | "
        f"{mib['rollout'] / 2**20:.1f} / {mib['update'] / 2**20:.1f} |")
  before = " / ".join(f"{meta['warmup_diversity'][k]:.2f}" if k in meta["warmup_diversity"]
                      else "–" for k in ("cells", "colors"))
  return ("\n".join(lines) + f"\n\nWarm-up {meta['warmup_before']:.3f} held-out, diversity "
          f"(cells / colours) {before}; "
          f"{meta['steps']} GRPO steps per run, seeds {meta['seeds']}, "
          f"{meta['samples_per_prompt']} samples per held-out prompt; {meta['cpu']} "
          f"({meta['matmul_gflops']:.0f} GFLOP/s float32 2048² matmul).\n")


def memory_of(name: str, config) -> dict:
  """`step_memory` of the option whose runs are `<root>/<name>_seed<n>`, kept in
  `<root>/memory.json` (a resumed sweep, or another sweep in the same root, reads it)."""
  path = os.path.join(_ROOT.value, "memory.json")
  known = {}
  if os.path.exists(path):
    with open(path) as f:
      known = json.load(f)
  if name not in known:
    known[name] = step_memory(config)
    metric_writer.write_json(path, known)
  return known[name]


def earlier_sweep() -> dict:
  """The table in `<out>.json` that `--extend` adds to ({} when there is none or no --extend)."""
  path = _OUT.value + ".json"
  if not _EXTEND.value or not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def check_comparable(earlier: dict, **ours) -> None:
  """Raises ValueError when the earlier table (`earlier_sweep`) differs from this sweep in one
  of `ours` (warm-up score, budget, CPU model: step times and bfloat16 rounding), so its rows
  would not compare with these."""
  for key, value in ours.items():
    if earlier and earlier[key] != value:
      raise ValueError(f"--extend: {_OUT.value}.json has {key}={earlier[key]!r} but this sweep "
                       f"has {value!r}; its rows do not compare with this sweep's")


def sweep(variants) -> None:
  """Runs every variant of `variants(config)` (name → config overrides, each against the
  config) with every seed from one warm-up, and writes the table.

  Args:
    variants: the run's config (with the command line's overrides) → {name: {dotted config
      path: value}}; the first is the baseline whose warm-up score the table quotes.
  """
  t0 = time.time()
  # The runs share one data folder: the one given, or <root>/tfds.
  given = dict(flags.FLAGS["config"].override_values)
  given.setdefault("data.data_dir", os.path.join(os.path.abspath(_ROOT.value), "tfds"))
  base = experiment.with_overrides(_CONFIG.value, given)
  steps, table = base.rl.steps, variants(base)
  names = _OPTIONS.value or list(table)
  unknown = sorted(set(names) - set(table))
  if unknown:
    raise ValueError(f"--options names unknown options {unknown}; known: {list(table)}")
  given = [flag(k, v) for k, v in given.items()]
  # What `--extend` needs to match is checked before the first run, the warm-up after it.
  seeds, cpu, earlier = [int(s) for s in _SEEDS.value], cpu_model(), earlier_sweep()
  check_comparable(earlier, steps=steps, seeds=seeds, samples_per_prompt=_SAMPLES.value, cpu=cpu)
  sft = _SFT.value
  if not sft:
    run(os.path.join(_ROOT.value, "sft"), *given, "--config.stages=('sft',)")
    sft = os.path.join(_ROOT.value, "sft", "sft", "params")
  common = [*given, "--config.stages=('grpo',)", f"--config.rl.init_params={os.path.abspath(sft)}",
            f"--config.eval.samples_per_prompt={_SAMPLES.value}", f"--config.eval.every={steps}"]
  headline, rows = "geneval_strict", {}
  for name in names:
    runs = []
    # Variants without overrides are the configured method: one run a seed, whatever their
    # name, so the options and the ablations given one root share it.
    folder = name if table[name] else "default"
    for seed in seeds:
      workdir = os.path.join(_ROOT.value, f"{folder}_seed{seed}")
      results = run(workdir, *common, f"--config.seed={seed}",
                    *[flag(k, v) for k, v in table[name].items()])
      runs.append(figures(results["grpo"], metric_writer.read(os.path.join(workdir, "grpo")),
                          headline) | dict(seed=seed))
      if not rows and len(runs) == 1:
        check_comparable(earlier, warmup_before=runs[0]["before"])
    rows[name] = dict(overrides=table[name], runs=runs, summary=summary(runs),
                      peak_bytes=memory_of(folder, experiment.with_overrides(base, table[name])))
    print(f"{name}: held-out {rows[name]['summary']['after']}", flush=True)
  meta = dict(steps=steps, seeds=seeds,
              samples_per_prompt=_SAMPLES.value, sft_params=os.path.abspath(sft),
              warmup_before=rows[names[0]]["runs"][0]["before"],
              warmup_diversity=rows[names[0]]["runs"][0]["diversity_before"], overrides=given,
              cpu=cpu, matmul_gflops=matmul_peak_gflops(2048), wall_s=time.time() - t0)
  if earlier:  # the earlier table's other options join these, in the options' order
    merged = earlier["rows"] | rows
    rows = {name: merged[name] for name in table if name in merged}
  metric_writer.write_json(_OUT.value + ".json", dict(meta, rows=rows))
  with open(_OUT.value + ".md", "w") as f:
    f.write(markdown(rows, meta))
  print(markdown(rows, meta))


def main(argv):
  del argv
  sweep(options)


if __name__ == "__main__":
  app.run(main)
