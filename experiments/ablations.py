r"""The UniGRPO ablation: the method's variants (joint against image-only and text-only losses;
the velocity-field MSE against the latent KL and no regulariser; one linear rollout against
classifier-free guidance) from one warm-up checkpoint, with the same seeds, budget and
evaluation as `options.py` (every held-out prompt sampled several times, each gain with its
95 % interval; a stopped sweep resumes where it stopped):

  python experiments/ablations.py --config=configs/shapeworld.py:world2 \
      --sft_params=workdir/seeds_w2/sft0/sft/params --seeds=0,1 \
      --root=workdir/ablations_w2 --out=experiments/results/ablations_world2

Takes `options.py`'s flags (`--options` picks a subset of the variants here). A training reward
that climbs while the held-out score does not is reward hacking: the table's gap column.
"""
from absl import app, flags

import options as sweeps


def variants(config) -> dict:
  """Variant name → config overrides (dotted path → value); each changes one thing against
  "joint", the method as configured."""
  del config  # no variant depends on the run's length or rates
  return {
      "joint": {},
      "image_only": {"loss.text": False},
      "text_only": {"loss.image": False, "loss.velocity_weight": 0.0},
      "cfg": {"rollout.cfg_scale": 2.0},
      "latent_kl": {"loss.velocity_weight": 0.0, "loss.latent_kl_weight": 0.01},
      "no_regulariser": {"loss.velocity_weight": 0.0},
  }


def main(argv):
  del argv
  sweeps.sweep(variants)


if __name__ == "__main__":
  flags.FLAGS.set_default("root", "workdir/ablations")
  flags.FLAGS.set_default("out", "experiments/results/ablations")
  app.run(main)
