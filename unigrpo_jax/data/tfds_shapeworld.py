"""The ShapeWorld TFDS dataset: generated deterministically from a seed, stored as array_record.

Each example carries everything any use of it needs: the prompt (text, family, GenEval
metadata as JSON), a target scene that satisfies it (its uint8 image, plan and caption). RL
reads the prompts, warm-up SFT reads (prompt → plan → image) and (image → caption). Splits
`train` and `heldout` are disjoint in prompts (by prompt-text hash; `prompts.split_prompts`),
drawn from the ShapeWorld version `world` names. No TensorFlow is needed: the builder is
prepared with `file_format="array_record"` and read with `as_data_source`.
"""
import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds

from unigrpo_jax.data import prompts, shapeworld


class ShapeWorldConfig(tfds.core.BuilderConfig):
  """Generation knobs (from `config.data`): examples per split, seed, held-out fraction of
  prompt space, the ShapeWorld version, canvas size and grid (default: the version's),
  probability of a large (2×2-cell) object, the order plans list their objects in
  (`prompts.PLAN_ORDERS`) and the order of an object's words (`prompts.PLAN_WORDS`)."""

  def __init__(self, *, num_train: int, num_heldout: int, seed: int = 0,
               heldout_fraction: float = 0.2, world: int = shapeworld.LATEST.version,
               size: int | None = None, grid: int | None = None, large_prob: float = 0.0,
               families=prompts.FAMILIES, plan_order: str = prompts.PLAN_ORDERS[0],
               plan_words: str = prompts.PLAN_WORDS[0], **kwargs):
    super().__init__(**kwargs)
    self.num_train, self.num_heldout, self.seed = num_train, num_heldout, seed
    self.heldout_fraction, self.world = heldout_fraction, shapeworld.get_world(world)
    self.size, self.grid = size or self.world.size, grid or self.world.grid
    self.large_prob, self.families = large_prob, tuple(families)
    self.plan_order, self.plan_words = plan_order, plan_words
    for knob, known in prompts.PLAN_FORMS.items():
      if getattr(self, knob) not in known:
        raise ValueError(f"{knob} must be one of {known}, got {getattr(self, knob)!r}")


class ShapeWorld(tfds.core.GeneratorBasedBuilder):
  """Prompts, target images, plans and captions of the ShapeWorld domain."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [ShapeWorldConfig(name="default", num_train=4096, num_heldout=512)]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        # A listed held-out split is read in its order: the first n examples cover every
        # family (evaluation reads the first `eval.num_prompts`).
        disable_shuffling=self.builder_config.world.heldout_listed,
        features=tfds.features.FeaturesDict({
            "prompt": tfds.features.Text(),
            "family": tfds.features.Text(),
            "metadata": tfds.features.Text(),  # Prompt.to_json() as a JSON string
            "plan": tfds.features.Text(),
            "caption": tfds.features.Text(),
            # uint8 tensor, not tfds Image: Image needs TensorFlow to encode.
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples("train"),
            "heldout": self._generate_examples("heldout")}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    count = cfg.num_train if split == "train" else cfg.num_heldout
    # One stream per split, seeded by (seed, split): deterministic and independent.
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
    listed = listed_prompts(rng, cfg) if split == "heldout" and cfg.world.heldout_listed else None
    for index in range(count):
      family = cfg.families[index % len(cfg.families)]
      prompt = (listed[index % len(listed)] if listed else
                prompts.sample_prompt(rng, family, split, cfg.heldout_fraction, cfg.world))
      scene = prompts.target_scene(rng, prompt, size=cfg.size, grid=cfg.grid,
                                   large_prob=cfg.large_prob)
      image = np.round((shapeworld.render(scene) + 1.0) * 127.5).astype(np.uint8)
      yield index, dict(prompt=prompt.text, family=prompt.family,
                        metadata=json.dumps(prompt.to_json()),
                        plan=prompts.plan_text(scene, prompt, cfg.plan_order, cfg.plan_words),
                        caption=prompts.caption(scene), image=image)


def listed_prompts(rng: np.random.Generator, cfg: ShapeWorldConfig) -> list[prompts.Prompt]:
  """Every held-out prompt of `cfg.families` once: each family's in a random order, the
  families taking turns until each runs out (so the first n examples cover every family)."""
  queues = []
  for family in cfg.families:
    pool = list(prompts.split_prompts(family, "heldout", cfg.heldout_fraction, cfg.world))
    queues.append([pool[i] for i in rng.permutation(len(pool))])
  out = []
  while any(queues):
    out += [queue.pop(0) for queue in queues if queue]
  return out


def prepare(data_dir: str, **config) -> ShapeWorld:
  """Builds (once; later calls reuse the files) and returns the builder. `config`: the
  ShapeWorldConfig knobs; the config name is a hash of them (with the default version
  written in), so settings never collide. Raster, colour-first plans, the form there was
  before plans had a choice, stay out of the name, so data sets built before keep theirs."""
  config = {"world": shapeworld.LATEST.version, **config}
  for knob, known in prompts.PLAN_FORMS.items():
    if config.get(knob) == known[0]:
      del config[knob]
  digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode())
  name = "c" + digest.hexdigest()[:12]
  builder = ShapeWorld(data_dir=data_dir, config=ShapeWorldConfig(name=name, **config))
  builder.download_and_prepare(file_format="array_record")
  return builder
