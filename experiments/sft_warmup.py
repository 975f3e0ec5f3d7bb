r"""Warm-up SFT on the ShapeWorld hybrid mix, evaluated on held-out prompts before and after
(the main job's `sft` stage, run alone from scratch): prints JSON and writes it, the markdown
table and a sample grid under experiments/results/.

  python experiments/sft_warmup.py --config=configs/shapeworld.py:sft
"""
import json
import os
import shutil
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from unigrpo_jax import evaluation
from unigrpo_jax import metric_writer
from unigrpo_jax.train import experiment, sft_stage

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapeworld.py:sft", "Config.")
_OUT = flags.DEFINE_string("out", "experiments/results/sft_warmup", "Output path prefix.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  cfg.sft_train.eval_before = True
  t_start = time.time()
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with tempfile.TemporaryDirectory() as workdir:  # from scratch: never resume an old run
    result = sft_stage.run(experiment.build(cfg), workdir)
    result["curve"] = metric_writer.read(os.path.join(workdir, "sft"))
    shutil.copy(os.path.join(workdir, "sft", "samples.png"), _OUT.value + ".png")
  result.update(wall_s=time.time() - t_start, seed=cfg.seed,
                batch_size=cfg.sft_data.batch_size)
  metric_writer.write_json(_OUT.value + ".json", result)
  with open(_OUT.value + ".md", "w") as f:
    f.write("Before SFT\n\n" + evaluation.markdown_table(result["before"]) + "\n\nAfter SFT\n\n"
            + evaluation.markdown_table(result["after"]) + "\n")
  print(json.dumps(dict(before=result["before"]["overall"], after=result["after"]["overall"],
                        heldout_teacher_forced=result["heldout_teacher_forced"],
                        train_s=result["train_s"])))


if __name__ == "__main__":
  app.run(main)
