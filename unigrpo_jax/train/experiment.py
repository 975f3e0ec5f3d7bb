"""What every training stage shares, built once from the config: the model, the tokenizer, the
ShapeWorld data, the device mesh and parameter shardings, the held-out evaluation, and the
sample grids people look at.

Validation happens here too, before anything compiles (after `validation.validate` checked the
config itself): every prompt of the data must fit `rollout.prompt_len`, every parameter must
divide over its mesh axes.
"""
import copy
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw
from transformers import PreTrainedTokenizerFast

from unigrpo_jax import evaluate as evaluation
from unigrpo_jax import sharding, visualize
from unigrpo_jax.convert import qwen2
from unigrpo_jax.data import tokenizer as tokenizer_lib
from unigrpo_jax.data.pipeline import (Subset, as_text, check_prompt_lengths, encode_prompts,
                                       with_prefix)
from unigrpo_jax.data.tfds_shapeworld import ShapeWorld, prepare
from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params, param_logical_axes
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
  eval_spec: RolloutSpec
  sample: Callable[..., Trajectory]  # the jitted ODE rollout of the evaluation
  eval_examples: list[dict]
  train_examples: list[dict]  # training-split prompts scored the same way: the generalisation gap

  def init_params(self, key):
    """Fresh parameters, created directly in their shardings; with `config.hf.checkpoint`,
    the pretrained text weights written into them (both experts; `convert/qwen2.py`)."""
    params = jax.jit(lambda k: init_params(self.model_spec, k),
                     out_shardings=self.param_shardings)(key)
    if self.config.hf.checkpoint:
      params = qwen2.load_into(params, self.config.hf.checkpoint, self.model_spec)
    return params

  def train_state_shardings(self, optimizer):
    """Shardings of a TrainState: optimizer moments sharded like their parameters."""
    return train_state_shardings(optimizer, self.abstract_params, self.param_shardings,
                                 self.mesh)

  def init_train_state(self, params, optimizer):
    """A TrainState over `params` laid out on the mesh from the start."""
    init = jax.jit(lambda p: init_train_state(p, optimizer),
                   out_shardings=self.train_state_shardings(optimizer))
    return init(params)

  def abstract_train_state(self, optimizer):
    """The TrainState `init_train_state` would make, as ShapeDtypeStructs with shardings: the
    target a checkpoint restores into, nothing allocated."""
    shapes = jax.eval_shape(lambda p: init_train_state(p, optimizer), self.abstract_params)
    return sharding.with_shardings(shapes, self.train_state_shardings(optimizer))

  def evaluate(self, params, split: str = "heldout") -> dict:
    """Mini-GenEval per family and overall, plus the text rewards (ODE, greedy), on the
    held-out prompts (or, with split="train", on `eval.train_prompts` training prompts)."""
    examples = self.eval_examples if split == "heldout" else self.train_examples
    return evaluation.evaluate(params, examples, model=self.model,
                               spec=self.eval_spec, tokenizer=self.tokenizer,
                               grid=self.config.data.grid,
                               batch_size=self.config.eval.batch_size, sample=self.sample,
                               rewards=self.task.eval_rewards,
                               step_rewards=self.task.eval_step_rewards,
                               prefix=self.task.prefix)

  def save_samples(self, params, path: str):
    """A PNG of held-out samples: for each of the first `eval.grid_prompts` prompts, the
    image the model draws (ODE) beside the prompt and the plan it wrote — or, for
    multi-round tasks, the story as a strip: each round's image over its sentence."""
    examples = self.eval_examples[:self.config.eval.grid_prompts]
    texts = [with_prefix(ex["prompt"], self.task.prefix) for ex in examples]
    batch = self.config.eval.batch_size
    tokens, mask = encode_prompts((texts * batch)[:batch], self.tokenizer,
                                  self.eval_spec.prompt_len)
    traj = self.sample(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0))
    plans = evaluation.decode_texts(traj, self.tokenizer)[:len(examples)]
    if self.eval_spec.rounds > 1:
      save_story_strips(np.asarray(traj.images[:len(examples)]), texts, plans, path)
    else:
      save_annotated_grid(np.asarray(traj.images[:len(examples), 0]), texts, plans, path)


def build(config) -> Experiment:
  """The Experiment for `config` (data built on first use, under `config.data.data_dir`)."""
  model_spec = ModelSpec(**config.model)
  tok = tokenizer_lib.for_config(config)
  task = tasks.get(config)
  eval_spec = task.rollout(config, mode="ode", temperature=0.0)
  eval_spec.check_model(model_spec)
  mesh = sharding.make_mesh(config.mesh)
  shapes = jax.eval_shape(lambda: init_params(model_spec, jax.random.key(0)))
  shardings = sharding.param_shardings(param_logical_axes(model_spec), mesh, shapes)
  data_cfg = dict(config.data)
  builder = prepare(data_cfg.pop("data_dir"), **data_cfg)

  # Each split's task prompts, read once: all checked against the prompt slots, the first
  # `eval.num_prompts` / `eval.train_prompts` kept for evaluation.
  examples = {}
  for split in ("train", "heldout"):
    source = Subset(builder.as_data_source(split), task.families)
    examples[split] = [{k: as_text(record[k]) for k in ("prompt", "family", "metadata")}
                       for record in map(source.__getitem__, range(len(source)))]
    check_prompt_lengths([with_prefix(ex["prompt"], task.prefix) for ex in examples[split]],
                         tok, eval_spec.prompt_len, f"the {split} prompts of task {task.name}")

  model = UnifiedTransformer(model_spec)
  return Experiment(config=config, model_spec=model_spec, model=model, tokenizer=tok,
                    data=builder, mesh=mesh, param_shardings=shardings,
                    abstract_params=sharding.with_shardings(shapes, shardings), task=task,
                    eval_spec=eval_spec, sample=make_rollout(model, eval_spec),
                    eval_examples=examples["heldout"][:config.eval.num_prompts],
                    train_examples=examples["train"][:config.eval.train_prompts])


def save_annotated_grid(images, prompts, plans, path: str, scale: int = 4, columns: int = 4):
  """images (N, S, S, C) in [−1, 1], each over its prompt and plan text, `columns` a row."""
  pixels = visualize.to_uint8(images)
  n, size = len(pixels), pixels.shape[1] * scale
  cell_w, text_h = max(size, 200), 40
  rows = -(-n // columns)
  canvas = Image.new("RGB", (columns * cell_w, rows * (size + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    x, y = (i % columns) * cell_w, (i // columns) * (size + text_h)
    big = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
    canvas.paste(Image.fromarray(big.squeeze(-1) if big.shape[-1] == 1 else big), (x, y))
    plan = plans[i].replace("<plan>", "").split("</plan>")[0].strip()
    draw.text((x + 2, y + size + 2), prompts[i][:34], fill="black")
    draw.text((x + 2, y + size + 14), plan[:34], fill="navy")
    draw.text((x + 2, y + size + 26), plan[34:68], fill="navy")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)


def save_story_strips(images, prompts, texts, path: str, scale: int = 3):
  """images (N, R, S, S, C) in [−1, 1]: one row per story — its prompt, then each round's
  image over that round's sentence (`texts[i]` has one line per round; rounds the story did
  not draw stay blank)."""
  pixels = visualize.to_uint8(images)
  n, rounds, size = pixels.shape[0], pixels.shape[1], pixels.shape[2] * scale
  cell_w, text_h, label_w = max(size, 150), 28, 170
  canvas = Image.new("RGB", (label_w + rounds * cell_w, n * (size + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    y = i * (size + text_h)
    draw.text((2, y + 2), prompts[i][:28], fill="black")
    draw.text((2, y + 14), prompts[i][28:56], fill="black")
    for r, line in enumerate(texts[i].split("\n")[:rounds] if texts[i] else []):
      x = label_w + r * cell_w
      if "[EOS]" not in line:
        big = pixels[i, r].repeat(scale, axis=0).repeat(scale, axis=1)
        canvas.paste(Image.fromarray(big.squeeze(-1) if big.shape[-1] == 1 else big), (x, y))
      step = line.replace("<plan>", "").replace("</plan>", "").replace("<img>", "").strip()
      draw.text((x + 2, y + size + 2), step[:26], fill="navy")
      draw.text((x + 2, y + size + 14), step[26:52], fill="navy")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)


def with_overrides(config, changes: dict):
  """A copy of `config` with dotted-path overrides, {"rl.steps": 300} (what `--config.rl.steps`
  does on the command line): how experiment scripts derive their variants."""
  config = copy.deepcopy(config)
  config.update_from_flattened_dict(changes)
  return config


def write_json(path: str, value):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f, indent=1)
