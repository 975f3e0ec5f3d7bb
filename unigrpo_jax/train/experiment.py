"""What every training stage shares, built once from the config: the model (and, for a latent
model such as Bagel, its autoencoder), the tokenizer, the ShapeWorld data, the device mesh and
parameter shardings, the held-out evaluation, and the sample grids people look at.

Validation happens here too, before anything compiles (after `validation.validate` checked the
config itself): every prompt of the data must fit `rollout.prompt_len`, every parameter must
divide over its mesh axes.
"""
import copy
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from transformers import PreTrainedTokenizerFast

from unigrpo_jax import distributed, evaluation, lora, sharding, visualize
from unigrpo_jax.evaluation import EvalSpec
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.convert import bagel, qwen2
from unigrpo_jax.data import tokenizer as tokenizer_lib
from unigrpo_jax.data.pipeline import (READ_FIELDS, Subset, as_prompt, as_text,
                                       check_prompt_lengths, encode_prompts)
from unigrpo_jax.data.tfds_shapeworld import ShapeWorld, prepare
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params, param_logical_axes
from unigrpo_jax.model import autoencoder
from unigrpo_jax.model.autoencoder import AutoencoderSpec
from unigrpo_jax.optim import init_train_state, train_state_shardings
from unigrpo_jax.sampling import RolloutSpec, Trajectory, make_rollout
from unigrpo_jax.train import tasks


@dataclasses.dataclass
class Experiment:
  """What `build` makes of a config, shared by every stage (fields are built once)."""
  config: ml_collections.ConfigDict
  model_spec: ModelSpec
  model: UnifiedTransformer
  tokenizer: PreTrainedTokenizerFast
  data: ShapeWorld  # the TFDS builder: as_data_source("train" | "heldout")
  mesh: jax.sharding.Mesh
  param_shardings: dict
  abstract_params: dict  # ShapeDtypeStructs with their shardings: nothing allocated
  task: tasks.Task  # layout, prompts and evaluation rewards
  eval: EvalSpec  # config.eval
  eval_rollout: RolloutSpec  # the evaluation's sampler: ODE, greedy text
  sample: Callable[..., Trajectory]  # the jitted ODE rollout of the evaluation
  # ODE images after plans sampled at the rollout's temperature (`eval.sampled_plans`): what
  # the policy itself draws, greedy plans aside.
  policy_rollout: RolloutSpec
  sample_policy: Callable[..., Trajectory]
  eval_examples: list[dict]
  train_examples: list[dict]  # training-split prompts scored the same way: the generalisation gap
  template: str  # how a prompt is written for the model (`tasks.Task.template`)
  # A latent model's autoencoder (`config.autoencoder`): images are its scaled latents, decoded
  # for rewards and grids; None: the model draws pixels.
  ae_spec: AutoencoderSpec | None = None
  ae_params: dict | None = None

  @property
  def bagel_checkpoint(self) -> str:
    return self.config.get("bagel", {}).get("checkpoint", "")

  def init_params(self, key):
    """Fresh parameters, created directly in their shardings; with `config.hf.checkpoint`,
    the pretrained text weights written into them (both experts; `convert/qwen2.py`); with
    `config.bagel.checkpoint`, every weight of the Bagel folder (`convert/bagel.py`)."""
    params = jax.jit(lambda k: init_params(self.model_spec, k),
                     out_shardings=self.param_shardings)(key)
    if self.config.hf.checkpoint:
      params = qwen2.load_into(params, self.config.hf.checkpoint, self.model_spec)
    if self.bagel_checkpoint:
      params = bagel.load_into(params, self.bagel_checkpoint, self.model_spec)
    return params

  def pixels(self, images) -> np.ndarray:
    """A trajectory's images (B, R, S, S, C), a global array → this process's rows of the
    pixels rewards read, (B_local, R, H, W, 3) in [−1, 1]: as they are, or decoded by the
    autoencoder (batched over B·R, sharded as the images are)."""
    if self.ae_spec is None:
      return sharding.host_rows(images, self.mesh)
    b, r = images.shape[:2]
    flat = jnp.reshape(images, (b * r,) + images.shape[2:])
    out = jnp.reshape(autoencoder.decode(self.ae_spec, self.ae_params, flat), (b, r) + (
        flat.shape[1] * self.ae_spec.downsample,) * 2 + (self.ae_spec.out_channels,))
    return sharding.host_rows(out, self.mesh)

  def train_state_shardings(self, optimizer, ema: bool = False, trained=None):
    """Shardings of a TrainState: optimizer moments (and the average, with `ema`) sharded like
    their parameters. trained: the abstract tree of what is trained (`abstract_adapters`);
    None: the model's parameters."""
    trained = self.abstract_params if trained is None else trained
    return train_state_shardings(optimizer, trained, jax.tree.map(lambda x: x.sharding, trained),
                                 self.mesh, ema)

  def init_train_state(self, params, optimizer, ema: bool = False, trained=None):
    """A TrainState over `params` (with a moving average, with `ema`) laid out on the mesh
    from the start; `trained` as in `train_state_shardings`."""
    init = jax.jit(lambda p: init_train_state(p, optimizer, ema),
                   out_shardings=self.train_state_shardings(optimizer, ema, trained))
    return init(params)

  def abstract_train_state(self, optimizer, ema: bool = False, trained=None):
    """The TrainState `init_train_state` would make, as ShapeDtypeStructs with shardings: the
    target a checkpoint restores into, nothing allocated."""
    trained = self.abstract_params if trained is None else trained
    shapes = jax.eval_shape(lambda p: init_train_state(p, optimizer, ema), trained)
    return sharding.with_shardings(shapes, self.train_state_shardings(optimizer, ema, trained))

  def abstract_adapters(self, spec: LoRASpec):
    """What LoRA trains (`lora.init_adapters`: the adapters of `spec`, and the parameters it
    unfreezes) as ShapeDtypeStructs with their shardings (A and B sharded like their kernels'
    input and output axes)."""
    shapes = jax.eval_shape(lambda p: lora.init_adapters(p, spec, jax.random.key(0)),
                            self.abstract_params)
    axes = lora.adapter_logical_axes(param_logical_axes(self.model_spec), shapes)
    return sharding.with_shardings(shapes, sharding.param_shardings(axes, self.mesh, shapes))

  def init_adapters(self, spec: LoRASpec, key, abstract, params):
    """Fresh LoRA adapters (B = 0) over `params`, with copies of the parameters `spec`
    unfreezes, created in the shardings of `abstract` (`abstract_adapters(spec)`)."""
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    return jax.jit(lambda k, p: lora.init_adapters(p, spec, k),
                   out_shardings=shardings)(key, params)

  def sampling_params(self, params):
    """The parameters a rollout samples from: with `config.gather_rollout_params`, gathered
    over the mesh's fsdp axis once (`sharding.gathered`); else as they are."""
    if sharding.gathers_for_rollout(self.config):
      return sharding.gathered(params)
    return params

  def evaluate(self, params, split: str = "heldout", sampled_plans: bool = False) -> dict:
    """Mini-GenEval per family and overall, plus the text rewards (ODE, greedy plans; with
    `sampled_plans`, plans sampled as in training), on the held-out prompts (or, with
    split="train", on `eval.train_prompts` training prompts)."""
    examples = self.eval_examples if split == "heldout" else self.train_examples
    spec, sample = ((self.policy_rollout, self.sample_policy) if sampled_plans
                    else (self.eval_rollout, self.sample))
    return evaluation.score_examples(
        self.sampling_params(params), examples, model=self.model, spec=spec,
        tokenizer=self.tokenizer, grid=self.config.data.grid, batch_size=self.eval.batch_size,
        sample=sample, rewards=self.task.eval_rewards,
        step_rewards=self.task.eval_step_rewards, template=self.template, pixels=self.pixels,
        samples_per_prompt=self.eval.samples_per_prompt, resamples=self.eval.resamples,
        mesh=self.mesh)

  def save_samples(self, params, path: str):
    """A PNG of held-out samples: for each of the first `eval.grid_prompts` prompts, the
    image the model draws (ODE) beside the prompt and the plan it wrote — or, for
    multi-round tasks, the story as a strip: each round's image over its sentence."""
    examples = self.eval_examples[:self.eval.grid_prompts]
    texts = [as_prompt(ex["prompt"], self.template) for ex in examples]
    batch = self.eval.batch_size
    tokens, mask = encode_prompts((texts * batch)[:batch], self.tokenizer,
                                  self.eval_rollout.prompt_len)
    rows = sharding.local_rows(self.mesh, batch)
    traj = self.sample(self.sampling_params(params),
                       *sharding.shard_batch((tokens[rows], mask[rows]), self.mesh, batch),
                       jax.random.key(0))
    plans = sum(distributed.gather_objects(evaluation.decode_texts(traj, self.tokenizer)), [])
    images = distributed.gather_rows(self.pixels(traj.images))
    plans, images = plans[:len(examples)], images[:len(examples)]
    captions = [ex["prompt"] for ex in examples]  # the prompts, not the template around them
    if not distributed.is_primary():
      return
    if self.eval_rollout.rounds > 1:
      visualize.save_story_strips(images, captions, plans, path)
    else:
      visualize.save_annotated_grid(images[:, 0], captions, plans, path)


def build(config) -> Experiment:
  """The Experiment for `config` (data built on first use, under `config.data.data_dir`)."""
  model_spec = ModelSpec(**config.model)
  tok = tokenizer_lib.for_config(config)
  task = tasks.get(config)
  eval_settings = EvalSpec(**config.eval)
  eval_rollout = task.rollout(config, mode="ode", temperature=0.0)
  policy_rollout = task.rollout(config, mode="ode")
  eval_rollout.check_model(model_spec)
  mesh = sharding.make_mesh(config.mesh)
  shapes = jax.eval_shape(lambda: init_params(model_spec, jax.random.key(0)))
  shardings = sharding.param_shardings(param_logical_axes(model_spec), mesh, shapes)
  # What the data is (hashed into its name), less where it lives and how it is read.
  data_cfg = {k: v for k, v in config.data.items() if k not in ("data_dir", *READ_FIELDS)}
  data_dir = config.data.data_dir
  builder = distributed.primary_first(lambda: prepare(data_dir, **data_cfg), "prepare data")
  template = task.template(config)

  # Each split's task prompts, read once: all checked against the prompt slots, the first
  # `eval.num_prompts` / `eval.train_prompts` kept for evaluation.
  examples = {}
  for split in ("train", "heldout"):
    source = Subset(builder.as_data_source(split), task.families)
    examples[split] = [{k: as_text(record[k]) for k in ("prompt", "family", "metadata")}
                       for record in map(source.__getitem__, range(len(source)))]
    check_prompt_lengths([as_prompt(ex["prompt"], template) for ex in examples[split]],
                         tok, eval_rollout.prompt_len, f"the {split} prompts of task {task.name}")

  ae_spec, ae_params = _autoencoder(config, mesh)
  model = UnifiedTransformer(model_spec)
  return Experiment(config=config, model_spec=model_spec, model=model, tokenizer=tok,
                    data=builder, mesh=mesh, param_shardings=shardings,
                    abstract_params=sharding.with_shardings(shapes, shardings), task=task,
                    eval=eval_settings, eval_rollout=eval_rollout,
                    sample=make_rollout(model, eval_rollout), policy_rollout=policy_rollout,
                    sample_policy=make_rollout(model, policy_rollout),
                    eval_examples=examples["heldout"][:eval_settings.num_prompts],
                    train_examples=examples["train"][:eval_settings.train_prompts],
                    template=template, ae_spec=ae_spec, ae_params=ae_params)


def _autoencoder(config, mesh) -> tuple[AutoencoderSpec | None, dict | None]:
  """The spec of `config.autoencoder` (None for a pixel model) and its parameters, replicated
  over the mesh: the Bagel folder's `ae.safetensors` when `config.bagel.checkpoint` names one,
  else fresh from the seed."""
  if "autoencoder" not in config:
    return None, None
  spec = AutoencoderSpec(**config.autoencoder)
  folder = config.get("bagel", {}).get("checkpoint", "")
  if folder:
    params = bagel.load_autoencoder(folder, spec)
  else:
    params = autoencoder.init_autoencoder(spec, jax.random.key(config.seed + 3))
  return spec, distributed.replicate(params, mesh)


def with_overrides(config, changes: dict):
  """A copy of `config` with dotted-path overrides, {"rl.steps": 300} (what `--config.rl.steps`
  does on the command line): how experiment scripts derive their variants."""
  config = copy.deepcopy(config)
  config.update_from_flattened_dict(changes)
  return config
