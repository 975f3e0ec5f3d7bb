"""Start-up checks of a whole config, run by `main` before any data is built or anything
compiles. Every failure is a ConfigError (a ValueError) whose message names the config field:

  * each section a stage uses builds its spec — `model` (image size vs patch size, heads vs KV
    heads, dtypes), `rollout` + `tokens`, and for training `eval` (with the warm-up SFT, one
    whole batch of held-out examples), `loss` (loss and KL names, listing the known ones),
    `advantages`, the optimizers, the update passes; unknown fields are named;
  * `mesh` fits the devices (`gather_rollout_params` is a bool); the RL batch
    (`rl.prompts_per_batch × rl.group_size`) holds whole groups and, like
    `sft_data.batch_size`, divides over the data axes;
  * `stages`, `data.families`, `rl.task`, `rl.families` (the task's), `advantages.kind`,
    `sft_data.mix` kinds and reward names are known (listed); reward weights (`rewards`, and
    `process_rewards` when the advantages use them) are finite numbers, not all zero;
    `reward_modules` import; `ema` (decay in (0, 1), or 0 for off), `lora` (rank, alpha, and
    module patterns that each match a kernel) and `rl.reference_refresh` (only with a loss
    that uses the reference, and not with LoRA);
  * the tokenizer (`tokenizer_path`, or the checkpoint's) loads, fits `model.vocab_size` and
    has the ids `tokens` names;
  * a Hugging Face checkpoint (`hf.checkpoint`) agrees with `model` and holds exactly the
    tensors it needs, shaped as it needs (headers only: nothing is read); so does a Bagel
    folder (`bagel.checkpoint`) with `model` and `autoencoder`;
  * `data.world` is a ShapeWorld version, `data.plan_order` and `plan_words` are known,
    `data.grid` divides `data.size`, which a pixel model's `image_size` equals; the data is
    read ahead by at least one batch;
  * a latent model's `autoencoder` builds its spec, has the model's latent channels and
    decodes to the data's image size; `prompt_template` holds `{prompt}` once (and is plain
    when the warm-up SFT runs: it writes prompts bare);
  * a workdir that already holds a run was started with a compatible config
    (`check_workdir`): only `RESUMABLE` fields may change across a resume.
Whether every prompt fits `rollout.prompt_len` (the KV cache's prompt slots) is checked when the
data is built (`train/experiment.build`), still before anything compiles.
"""
import dataclasses
import importlib
import json
import math
import os

import jax

from unigrpo_jax import lora, metric_writer, rewards, sharding
from unigrpo_jax.convert import bagel, qwen2
from unigrpo_jax.data import prompts, shapeworld, tokenizer as tokenizer_lib
from unigrpo_jax.data.pipeline import PROMPT, READ_FIELDS
from unigrpo_jax.ema import EMASpec
from unigrpo_jax.evaluation import EvalSpec
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.model import ModelSpec, init_params
from unigrpo_jax.model.autoencoder import AutoencoderSpec
from unigrpo_jax.rewards import configured
from unigrpo_jax.optim import OptimizerSpec
from unigrpo_jax.rl import LossSpec, UpdateSpec
from unigrpo_jax.rl.advantages import AdvantageSpec
from unigrpo_jax.sampling import RolloutSpec
from unigrpo_jax.train import tasks

# Fields a resumed run may change: lengths, cadences, evaluation, placement, paths, how the
# data is read (and runs saved before those fields existed resume without them). A
# schedule's total_steps follows its stage's length (configs/shapeworld.py), so it may too:
# extending a cosine run stretches the rest of its decay.
RESUMABLE = ("stages", "rl.steps", "rl.log_every", "rl_optim.total_steps", "sft_train.steps",
             "sft_optim.total_steps", "sft_train.log_every",
             "sft_train.eval_before", "eval", "checkpoint", "mesh",
             "gather_rollout_params", "faults", "data.data_dir",
             "reward_modules", "distributed", "reward_servers", "reward_client",
             "rl.overlap_rewards", *(f"data.{field}" for field in READ_FIELDS))


class ConfigError(ValueError):
  """A config field is unusable; the message names it."""


def _check_fields(cls, section, name: str):
  """Unknown fields of `config.<name>` (for dataclass spec `cls`) are named."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(section) - known)
  if unknown:
    raise ConfigError(f"config.{name} has unknown fields {unknown}; known: {sorted(known)}")


def import_reward_modules(config):
  """Imports `config.reward_modules`: modules that register more rewards (`@rewards.register`)."""
  for module in config.get("reward_modules", ()):
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ConfigError(f"config.reward_modules: cannot import {module!r} ({e})") from e


def check_rewards(weights, field: str = "config.rewards", known=None):
  """Names among `known` (default: the registered rewards), finite numeric weights, not all
  zero."""
  rewards.check_names(weights, known, field=field)
  for name, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(
        weight):
      raise ConfigError(f"{field}.{name} must be a finite number (its weight), got {weight!r}")
  if not any(weights.values()):
    raise ConfigError(f"{field} has no non-zero weight: {dict(weights)}")


def validate(config, num_devices: int | None = None, *,
             stages: tuple[str, ...] = ("rollout", "sft", "grpo")):
  """Runs every start-up check on `config` (see the module docstring); `stages` are the ones
  `main` knows."""
  unknown = [s for s in config.stages if s not in stages]
  if unknown:
    raise ConfigError(f"config.stages names unknown stages {unknown}; known: {list(stages)}")
  for cls, name in ((ModelSpec, "model"), (RolloutSpec, "rollout")):
    _check_fields(cls, config[name], name)
  model = ModelSpec(**config.model)
  RolloutSpec.from_config(config.rollout, config.tokens).check_model(model)
  ae = _check_autoencoder(config, model)
  if ae is not None and "rollout" in config.stages:
    raise ConfigError("config.stages: the rollout demo stage shows a pixel model's images; a "
                      "latent model (config.autoencoder) runs the grpo stage")
  training = [s for s in config.stages if s in ("sft", "grpo")]
  if not training:
    return
  _check_template(config, training)
  if ae is not None and ae.downsample * model.image_size != config.data.size:
    raise ConfigError(f"the autoencoder decodes model.image_size {model.image_size} latents to "
                      f"{ae.downsample * model.image_size} pixels (×{ae.downsample}), but "
                      f"data.size is {config.data.size}")
  _check_data(config, model, ae)
  families = [f for f in config.data.families if f not in prompts.ALL_FAMILIES]
  if families:
    raise ConfigError(f"config.data.families names unknown families {families}; known: "
                      f"{prompts.ALL_FAMILIES}")
  folder = config.get("bagel", {}).get("checkpoint", "")
  if folder:
    if ae is None:
      raise ConfigError("config.bagel.checkpoint needs config.autoencoder (Bagel draws latents)")
    try:
      bagel.check_folder(folder, model, ae)
    except (OSError, ValueError) as e:
      raise ConfigError(f"config.bagel.checkpoint: {e}") from e
  tokenizer_lib.for_config(config)
  if config.hf.checkpoint:
    try:
      qwen2.check_checkpoint(config.hf.checkpoint, model)
    except (OSError, ValueError) as e:
      raise ConfigError(f"config.hf.checkpoint: {e}") from e
  num_devices = jax.device_count() if num_devices is None else num_devices
  mesh = jax.sharding.AbstractMesh(sharding.mesh_shape(config.mesh, num_devices),
                                   sharding.MESH_AXES)
  if not isinstance(sharding.gathers_for_rollout(config), bool):
    raise ConfigError("config.gather_rollout_params must be True or False, got "
                      f"{config.gather_rollout_params!r}")
  for name in ("sft_optim",) * ("sft" in training) + ("rl_optim",) * ("grpo" in training):
    try:
      OptimizerSpec(**config[name])
    except (KeyError, TypeError, ValueError) as e:
      raise ConfigError(f"config.{name}: {e}") from e
  _check_fields(EvalSpec, config.eval, "eval")
  EvalSpec(**config.eval)
  heldout = min(config.eval.num_prompts, config.data.get("num_heldout", config.eval.num_prompts))
  if "sft" in training and heldout < config.eval.batch_size:
    raise ConfigError(
        f"config.eval.batch_size = {config.eval.batch_size} is above the {heldout} held-out "
        "examples evaluated (eval.num_prompts, data.num_heldout): the warm-up SFT's held-out "
        "metrics read whole batches")
  if "grpo" in training:
    _check_fields(LossSpec, config.loss, "loss")
    LossSpec(**config.loss)
    batch = config.rl.prompts_per_batch * config.rl.group_size
    field = "the RL batch (rl.prompts_per_batch × rl.group_size)"
    sharding.check_batch(mesh, batch, config.rl.group_size, field=field)
    UpdateSpec(config.rl.num_updates, config.rl.num_minibatches, config.rl.group_size)
    if batch % config.rl.num_minibatches:
      raise ConfigError(f"{field} {batch} does not split into rl.num_minibatches = "
                        f"{config.rl.num_minibatches}")
    try:
      tasks.get(config).train_families(config)
    except ValueError as e:
      raise ConfigError(str(e)) from e
    chunks = config.rl.get("rollout_chunks", 1)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
      raise ConfigError(f"config.rl.rollout_chunks must be a positive integer, got {chunks!r}")
    if batch % chunks:
      raise ConfigError(f"config.rl.rollout_chunks = {chunks} does not divide {field} {batch}")
    sharding.check_batch(mesh, batch // chunks, config.rl.group_size,
                         field=f"a rollout part ({field} / rl.rollout_chunks = {chunks})")
    _check_fields(EMASpec, config.get("ema", {}), "ema")
    try:
      EMASpec(**config.get("ema", {}))
    except ValueError as e:
      raise ConfigError(f"config.{e}") from e
    refresh = config.rl.get("reference_refresh", 0)
    if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 0:
      raise ConfigError(f"config.rl.reference_refresh must be a non-negative integer (0: never), "
                        f"got {refresh!r}")
    _check_fields(LoRASpec, config.get("lora", {}), "lora")
    try:
      adapters = LoRASpec(**config.get("lora", {}))
      if adapters.enabled:
        shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
        lora.adapted_modules(shapes, adapters)
        lora.unfrozen_parameters(shapes, adapters)
    except ValueError as e:
      raise ConfigError(f"config.{e}") from e
    if refresh and adapters.enabled:
      raise ConfigError("config.rl.reference_refresh: with config.lora the reference is the "
                        "base with the adapters off, which is not refreshed")
    if refresh and not LossSpec(**config.loss).needs_reference:
      raise ConfigError("config.rl.reference_refresh refreshes a reference the loss does not "
                        "use: set loss.beta, loss.velocity_weight or loss.latent_kl_weight")
    if not isinstance(config.rl.get("overlap_rewards", True), bool):
      raise ConfigError("config.rl.overlap_rewards must be True or False, got "
                        f"{config.rl.overlap_rewards!r}")
    per_part = config.rl.get("update_per_part", False)
    if not isinstance(per_part, bool):
      raise ConfigError(f"config.rl.update_per_part must be True or False, got {per_part!r}")
    if per_part and (config.rl.num_updates, config.rl.num_minibatches) != (1, 1):
      raise ConfigError("config.rl.update_per_part takes one optimizer step on the mean of the "
                        "parts' gradients: it needs rl.num_updates = rl.num_minibatches = 1, got "
                        f"{config.rl.num_updates} and {config.rl.num_minibatches}")
    if per_part and config.advantages.get("scale", "group") == "batch":
      raise ConfigError("config.rl.update_per_part computes each part's advantages as its "
                        "rewards come in: advantages.scale 'batch' needs the whole batch first")
    import_reward_modules(config)
    try:
      known = configured.known_names(config)
      configured.client_spec(config)
    except ValueError as e:
      raise ConfigError(str(e)) from e
    check_rewards(config.rewards, known=known)
    _check_fields(AdvantageSpec, config.advantages, "advantages")
    if AdvantageSpec(**config.advantages).kind != "outcome":
      check_rewards(config.process_rewards, "config.process_rewards", known)
  if "sft" in training:
    sharding.check_batch(mesh, config.sft_data.batch_size, 1, field="sft_data.batch_size")
    kinds = sorted(set(config.sft_data.mix) - set(tasks.SFT_KINDS))
    if kinds:
      raise ConfigError(f"config.sft_data.mix names unknown kinds {kinds}; "
                        f"known: {tasks.SFT_KINDS}")


def _check_autoencoder(config, model: ModelSpec) -> AutoencoderSpec | None:
  """`config.autoencoder`'s spec (None when absent: the model draws pixels)."""
  if "autoencoder" not in config:
    return None
  _check_fields(AutoencoderSpec, config.autoencoder, "autoencoder")
  ae = AutoencoderSpec(**config.autoencoder)
  if ae.z_channels != model.image_channels:
    raise ConfigError(f"autoencoder.z_channels ({ae.z_channels}) must equal "
                      f"model.image_channels ({model.image_channels}): the model draws its latents")
  return ae


def _check_data(config, model: ModelSpec, ae: AutoencoderSpec | None):
  """The ShapeWorld version and plan form exist, its canvas is the one the model draws, and
  it is read ahead by at least one batch."""
  try:
    shapeworld.get_world(config.data.get("world", shapeworld.LATEST.version))
  except ValueError as e:
    raise ConfigError(f"config.data.world: {e}") from e
  for field, known in prompts.PLAN_FORMS.items():
    if config.data.get(field, known[0]) not in known:
      raise ConfigError(f"config.data.{field} must be one of {known}, got "
                        f"{config.data.get(field)!r}")
  for field, least in READ_FIELDS.items():
    if config.data[field] < least:
      raise ConfigError(f"config.data.{field} must be >= {least}, got {config.data[field]}")
  if config.data.size % config.data.grid:
    raise ConfigError(f"config.data.size ({config.data.size}) is not divisible by "
                      f"config.data.grid ({config.data.grid})")
  if ae is None and model.image_size != config.data.size:
    raise ConfigError(f"model.image_size ({model.image_size}) is not data.size "
                      f"({config.data.size}): a pixel model draws the data's images")


def _check_template(config, training: list[str]):
  template = config.get("prompt_template", PROMPT)
  if not isinstance(template, str) or template.count(PROMPT) != 1:
    raise ConfigError(f"config.prompt_template must hold {PROMPT} exactly once, got "
                      f"{template!r}")
  if "sft" in training and template != PROMPT:
    raise ConfigError(f"config.prompt_template is {template!r}, but the warm-up SFT writes "
                      f"prompts bare: use {PROMPT!r} or run only the grpo stage")


def flatten(tree: dict, prefix: str = "") -> dict:
  """A nested config dict (as JSON holds it) as {"section.field": value}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _resumable(field: str) -> bool:
  return any(field == f or field.startswith(f + ".") for f in RESUMABLE)


def check_workdir(config, workdir: str):
  """Compares `config` with the one a run in `workdir` saved (`<workdir>/config.json`) and
  raises naming every incompatible field; then saves `config` there. A workdir without
  checkpoints holds no run yet: any config may start there."""
  path = os.path.join(workdir, "config.json")
  requested = json.loads(config.to_json())
  started = any(os.path.isdir(os.path.join(workdir, stage, "checkpoints"))
                for stage in ("sft", "grpo"))
  if started and os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path} (the config of the run in this workdir) is not valid JSON: "
                        f"{e}") from e
    old, new = flatten(saved), flatten(requested)
    missing = object()
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k, missing) != new.get(k, missing) and not _resumable(k)]
    if changed:
      diffs = "; ".join(f"config.{k}: the run has {old.get(k, '(absent)')!r}, this command "
                        f"asks {new.get(k, '(absent)')!r}" for k in changed[:8])
      raise ConfigError(f"workdir {workdir} holds a run whose config differs in fields a resume "
                        f"cannot change — {diffs}. Use another --workdir or the run's values "
                        f"(may change on resume: {', '.join(RESUMABLE)})")
  metric_writer.write_json(path, requested)
