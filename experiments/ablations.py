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
import jax
import jax.numpy as jnp
import numpy as np

import options as sweeps
from unigrpo_jax.sampling import sde


def matching_latent_kl_weight(config) -> float:
  """The latent KL's β that penalises a velocity difference as much as the configured velocity
  MSE's λ_v does, on average over the trained SDE steps: at step j the KL is r_j times the
  MSE, r_j = (∂μ/∂v)² / (2σ_j²), read off the sampler's own step."""
  r = config.rollout
  times = sde.time_grid(r.num_steps, r.shift)
  zero, one = jnp.zeros((1, 1)), jnp.ones((1, 1))
  ratios = []
  for j in np.flatnonzero(sde.window_mask(r.num_steps, r.sde_window)):
    def mean_std(v):
      _, _, mean, std = sde.sde_step(zero, v, times[j], times[j + 1], r.noise_level,
                                     key=jax.random.key(0), t_max=times[1])
      return mean, std
    (m1, std), (m0, _) = mean_std(one), mean_std(zero)
    ratios.append(float(((m1 - m0) ** 2 / (2.0 * std**2)).squeeze()))
  return config.loss.velocity_weight / float(np.mean(ratios))


def variants(config) -> dict:
  """Variant name → config overrides (dotted path → value); each changes one thing against
  "joint", the method as configured (the latent KL at the weight that matches its λ_v)."""
  return {
      "joint": {},
      "image_only": {"loss.text": False},
      "text_only": {"loss.image": False, "loss.velocity_weight": 0.0},
      "cfg": {"rollout.cfg_scale": 2.0},
      "latent_kl": {"loss.velocity_weight": 0.0,
                    "loss.latent_kl_weight": matching_latent_kl_weight(config)},
      "no_regulariser": {"loss.velocity_weight": 0.0},
  }


def main(argv):
  del argv
  sweeps.sweep(variants)


if __name__ == "__main__":
  flags.FLAGS.set_default("root", "workdir/ablations")
  flags.FLAGS.set_default("out", "experiments/results/ablations")
  app.run(main)
