r"""Learning curves of GRPO runs, from their logs: a training reward (SDE samples, smoothed) and
a held-out evaluation score (ODE, greedy) per run, as a PNG, a markdown table and JSON under
experiments/results/. Reads `<workdir>/grpo/metrics.jsonl`; never re-runs anything.

  python experiments/curves.py --runs="lr 3e-5=workdir/sw1;joint=workdir/main" \
      --out=experiments/results/grpo_tuning
  python experiments/curves.py --score=interleaved_score --reward=combined \
      --runs="outcome=workdir/interleaved_howto_variants/outcome_seed0;…" --out=…
"""
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
_SCORE = flags.DEFINE_string("score", "geneval_strict", "Held-out evaluation score (eval/<score>).")
_REWARD = flags.DEFINE_string(
    "reward", "geneval_strict",
    "Training reward (reward/<reward>; counting/geneval_strict: one prompt family's).")


def summarise(workdir: str, window: int, score: str, reward: str) -> dict:
  records = metric_writer.read(os.path.join(workdir, "grpo"))
  train = [r for r in records if "reward/combined" in r]
  evals = [r for r in records if f"eval/{score}" in r]
  values = np.array([r.get(f"reward/{reward}", np.nan) for r in train])
  # A window without the reward (a run that did not train on it, or a family's reward in
  # steps that drew none of its prompts) has no point.
  windows = [(train[i]["step"], values[i:i + window]) for i in range(0, len(train), window)]
  points = [(step, float(np.nanmean(v))) for step, v in windows if not np.isnan(v).all()]
  return dict(train=points,
              eval=[(r["step"], {k[len("eval/"):]: v for k, v in r.items()
                                 if k.startswith("eval/")}) for r in evals],
              steps=train[-1]["step"] if train else 0,
              step_s=float(np.median([r["time/step_s"] for r in train[1:]])) if train else 0)


def main(argv):
  del argv
  runs = dict(item.split("=", 1) for item in _RUNS.value.split(";"))
  score, reward = _SCORE.value, _REWARD.value
  result = {label: summarise(path, _WINDOW.value, score, reward) for label, path in runs.items()}
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  lines = [f"| run | steps | step s | held-out {score} at each evaluation (step: score) | "
           f"training {reward}, first → last window |", "|---|---|---|---|---|"]
  for label, r in result.items():
    steps, values = zip(*r["train"]) if r["train"] else ((), ())
    left.plot(steps, values, label=label)
    right.plot([s for s, _ in r["eval"]], [e[score] for _, e in r["eval"]], "o-", label=label)
    evals = ", ".join(f"{s}: {e[score]:.3f}" for s, e in r["eval"])
    lines.append(f"| {label} | {r['steps']} | {r['step_s']:.2f} | {evals} | "
                 + (f"{values[0]:.3f} → {values[-1]:.3f} |" if values else "not a reward |"))
  left.set(xlabel="GRPO step", ylabel=f"training reward {reward} (SDE)")
  right.set(xlabel="GRPO step", ylabel=f"held-out {score} (ODE)")
  left.legend(fontsize=7)
  right.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  fig.savefig(_OUT.value + ".png", dpi=90)
  metric_writer.write_json(_OUT.value + ".json", dict(runs=runs, curves=result))
  with open(_OUT.value + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
