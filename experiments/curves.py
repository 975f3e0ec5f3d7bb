r"""Learning curves of GRPO runs, from their logs: training reward (SDE samples, smoothed) and
held-out evaluations (ODE, greedy) per run, as a PNG, a markdown table and JSON under
experiments/results/. Reads `<workdir>/grpo/metrics.jsonl`; never re-runs anything.

  python experiments/curves.py --runs="lr 3e-5=workdir/sw1;joint=workdir/main" \
      --out=experiments/results/grpo_tuning
"""
import json
import os

from absl import app, flags
import matplotlib
import numpy as np

from unigrpo_jax import metric_writer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

_RUNS = flags.DEFINE_string("runs", None, "label=workdir pairs separated by semicolons.", required=True)
_OUT = flags.DEFINE_string("out", "experiments/results/grpo_tuning", "Output path prefix.")
_WINDOW = flags.DEFINE_integer("window", 50, "Steps averaged per point of the training curve.")


def summarise(workdir: str, window: int) -> dict:
  records = metric_writer.read(os.path.join(workdir, "grpo"))
  train = [r for r in records if "reward/combined" in r]
  evals = [r for r in records if "eval/geneval_strict" in r]
  strict = np.array([r.get("reward/geneval_strict", np.nan) for r in train])
  # Runs that did not train on the strict score have no training curve.
  points = ([(train[i]["step"], float(np.mean(strict[i:i + window])))
             for i in range(0, len(train), window)] if not np.isnan(strict).all() else [])
  return dict(train_strict=points,
              eval=[(r["step"], {k[len("eval/"):]: v for k, v in r.items()
                                 if k.startswith("eval/")}) for r in evals],
              steps=train[-1]["step"] if train else 0,
              step_s=float(np.median([r["time/step_s"] for r in train[1:]])) if train else 0)


def main(argv):
  del argv
  runs = dict(item.split("=", 1) for item in _RUNS.value.split(";"))
  result = {label: summarise(path, _WINDOW.value) for label, path in runs.items()}
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  lines = ["| run | steps | step s | held-out strict at each evaluation (step: score) | "
           "training strict, first → last window |", "|---|---|---|---|---|"]
  for label, r in result.items():
    steps, values = zip(*r["train_strict"]) if r["train_strict"] else ((), ())
    left.plot(steps, values, label=label)
    right.plot([s for s, _ in r["eval"]], [e["geneval_strict"] for _, e in r["eval"]], "o-",
               label=label)
    evals = ", ".join(f"{s}: {e['geneval_strict']:.3f}" for s, e in r["eval"])
    lines.append(f"| {label} | {r['steps']} | {r['step_s']:.2f} | {evals} | "
                 + (f"{values[0]:.3f} → {values[-1]:.3f} |" if values else "not a reward |"))
  left.set(xlabel="GRPO step", ylabel="training strict mini-GenEval (SDE)")
  right.set(xlabel="GRPO step", ylabel="held-out strict mini-GenEval (ODE)")
  left.legend(fontsize=7)
  right.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  fig.savefig(_OUT.value + ".png", dpi=90)
  with open(_OUT.value + ".json", "w") as f:
    json.dump(dict(runs=runs, curves=result), f, indent=1)
  with open(_OUT.value + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
