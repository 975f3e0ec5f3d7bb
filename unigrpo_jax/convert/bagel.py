r"""BAGEL-7B-MoT checkpoints (a folder with `llm_config.json`, `ema.safetensors`,
`ae.safetensors` and the tokenizer files) → our parameter pytrees.

The language model is Qwen2 with Bagel's load-time overrides (`qk_norm`, an untied head, the
mixture of transformers); its tensors live under `language_model.`, and every per-layer tensor
and the final norm have a `_moe_gen` twin holding the generation expert. The layout is data:
the Qwen2 rules (`convert/qwen2.py`) plus the per-head q/k norms, each read twice — as it is
into the text (understanding) expert, and with `_moe_gen` inserted after its module's name
(`self_attn.q_proj_moe_gen`, `mlp_moe_gen.gate_proj`, `input_layernorm_moe_gen`,
`model.norm_moe_gen`) into the image (generation) expert. The generation side adds the
timestep embedder (`time_embedder.mlp.{0,2}`), the latent projections (`vae2llm`, `llm2vae`)
and the latent position table (`latent_pos_embed.pos_embed`, whose rows fix
`max_latent_size`); the autoencoder is `ae.safetensors` (`convert/flux_ae.py`). The vision
encoder (`vit_model.vision_model.*`, `connector.*`, `vit_pos_embed.*`; `model/vision.py`) is
read when the folder has `vit_config.json`, its sizes from the tensors' shapes and the head
count from the json. Tensors are read one at a time from the memory-mapped file and placed
straight into the (sharded) parameter tree.

Command line (Orbax parameter checkpoints of the model and the autoencoder, `bagel.json` with
both specs and the special-token ids, and the tokenizer's files):

  python -m unigrpo_jax.convert.bagel --bagel_dir=/path/BAGEL-7B-MoT --out=/path/bagel_params

A run's `config.bagel.checkpoint` may name either kind of folder (`check_folder`,
`load_into`, `load_autoencoder`): a download is read tensor by tensor, a converted one restored
by Orbax straight into the run's shardings.
"""
import dataclasses
import json
import os
import re
import shutil

from absl import flags
from flax import traverse_util
import jax
import numpy as np
from safetensors.numpy import save_file

from unigrpo_jax import checkpoint, sharding
from unigrpo_jax.convert import flux_ae, qwen2, shards
from unigrpo_jax.convert.qwen2 import LAYER, LINEAR, SAME, Rule
from unigrpo_jax.model import ModelSpec, init_params, param_logical_axes
from unigrpo_jax.model import vision

LLM_CONFIG = "llm_config.json"
CONVERTED = "bagel.json"  # marks a folder written by `convert_folder`
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json")
VIT_CONFIG = "vit_config.json"
EMA = "ema.safetensors"
AE = "ae.safetensors"
PREFIX = "language_model."
VISION_PREFIXES = ("vit_model.", "connector.", "vit_pos_embed.")
LATENT_PATCH = 2  # Bagel's latent_patch_size: 2×2 latent pixels a token
TOKEN_NAMES = {"bos": "<|im_start|>", "eos": "<|im_end|>",
               "start_of_image": "<|vision_start|>", "end_of_image": "<|vision_end|>"}
# Bagel's loader (app.py) overrides these fields of llm_config.json.
LLM_OVERRIDES = dict(qk_norm=True, tie_embeddings=False, mot=True)

QK_NORM_RULES = tuple(Rule(f"model.layers.{LAYER}.self_attn.{p}_norm.weight",
                           ("layers", "text", f"{p}_norm", "scale"), SAME) for p in "qk")
_GEN_MODULE = re.compile(r"(self_attn\.\w+?_(?:proj|norm)|mlp|input_layernorm"
                         r"|post_attention_layernorm|model\.norm)\.")


def gen_name(hf: str) -> str:
  """The `_moe_gen` twin of an understanding tensor's name."""
  return _GEN_MODULE.sub(lambda m: f"{m.group(1)}_moe_gen.", hf, count=1)


def llm_rules(spec: ModelSpec) -> tuple[Rule, ...]:
  """The rules of Bagel's language model for `spec`, names under `language_model.`: the
  understanding tensors to the text expert, their `_moe_gen` twins to the image expert."""
  und = qwen2.rules(spec) + (QK_NORM_RULES if spec.qk_norm else ())
  out = []
  for rule in und:
    out.append(Rule(PREFIX + rule.hf, rule.ours, rule.layout, rule.vocab_axis))
    if rule.ours[:2] == ("layers", "text"):
      out.append(Rule(PREFIX + gen_name(rule.hf), ("layers", "image") + rule.ours[2:],
                      rule.layout))
    elif rule.ours == ("text_norm", "scale"):
      out.append(Rule(PREFIX + gen_name(rule.hf), ("image_norm", "scale"), rule.layout))
  return tuple(out)


GENERATION_RULES = tuple(
    Rule(f"{theirs}.{leaf}", ours + ({"weight": "kernel"}.get(leaf, leaf),),
         LINEAR if leaf == "weight" else SAME)
    for theirs, ours in (("time_embedder.mlp.0", ("image_in", "time_in")),
                         ("time_embedder.mlp.2", ("image_in", "time_out")),
                         ("vae2llm", ("image_in", "patch")),
                         ("llm2vae", ("image_out", "proj")))
    for leaf in ("weight", "bias")) + (
        Rule("latent_pos_embed.pos_embed", ("image_in", "pos_table"), SAME),)


def rules(spec: ModelSpec) -> tuple[Rule, ...]:
  """Every rule of a Bagel checkpoint's `ema.safetensors` for `spec`."""
  return llm_rules(spec) + GENERATION_RULES


def targets(spec: ModelSpec):
  """{tensor name: (rule, layer or None, [our path])}."""
  return {rule.hf.replace(LAYER, str(i)): (rule, i if rule.per_layer else None, [rule.ours])
          for rule in rules(spec)
          for i in (range(spec.depth) if rule.per_layer else [None])}


def llm_spec_fields(path: str) -> dict:
  """The `ModelSpec` text fields of a Bagel folder's `llm_config.json`, with Bagel's overrides."""
  from transformers import Qwen2Config  # transformers is heavy; only conversion needs it
  file = os.path.join(path, LLM_CONFIG)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path!r} has no {LLM_CONFIG}: not a Bagel checkpoint folder")
  with open(file) as f:
    raw = json.load(f)
  fields = qwen2.spec_fields(Qwen2Config(**raw))
  fields.update(LLM_OVERRIDES)
  return fields


def folder_spec(path: str, **overrides) -> tuple[ModelSpec, flux_ae.AutoencoderSpec]:
  """The model and autoencoder specs of a Bagel folder: the language model from
  `llm_config.json` (with Bagel's overrides), the latent tokens from the tensors' shapes
  (`max_latent_size` = √rows of `latent_pos_embed`; 2×2 patches of the latent), the
  autoencoder from `ae.safetensors`. Images default to the largest the table holds; `overrides`
  replace any `ModelSpec` field (`image_size`, `dtype`, …)."""
  fields = dict(llm_spec_fields(path), **_latent_fields(path))
  ae_spec = flux_ae.infer_spec(shards.file_shapes(_file(path, AE)))
  fields.update(image_channels=ae_spec.z_channels)
  fields.update(image_size=LATENT_PATCH * fields["max_latent_size"])
  fields.update(overrides)
  return ModelSpec(**fields), ae_spec


def _latent_fields(path: str) -> dict:
  """The `ModelSpec` fields of Bagel's latent tokens that `ema.safetensors` fixes (the latent
  table's side from its rows; 2×2 patches; t as is; velocity prediction)."""
  ema = _file(path, EMA)
  shapes = shards.file_shapes(ema)
  if "latent_pos_embed.pos_embed" not in shapes:
    raise ValueError(f"{ema!r} has no latent_pos_embed.pos_embed: not a Bagel checkpoint")
  rows = shapes["latent_pos_embed.pos_embed"][0]
  side = int(round(rows ** 0.5))
  if side * side != rows:
    raise ValueError(f"{ema!r}: latent_pos_embed.pos_embed has {rows} rows, not a square")
  return dict(patch_size=LATENT_PATCH, max_latent_size=side, time_scale=1.0,
              prediction="velocity")


def _file(path: str, name: str) -> str:
  file = os.path.join(path, name)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path!r} has no {name}: not a Bagel checkpoint folder")
  return file


def check_tensors(shapes: dict[str, tuple[int, ...]], spec: ModelSpec, vocab_rows: int,
                  file: str):
  """Raises listing the missing, unexpected and differently shaped tensors of `ema.safetensors`
  against `spec` (the vision encoder's are not checked)."""
  want = qwen2.expected_tensors(spec, vocab_rows, rules(spec))
  have = {k: v for k, v in shapes.items() if not k.startswith(VISION_PREFIXES)}
  shards.check_fit(want, have, f"Bagel checkpoint {file!r} does not fit the model")


def check_folder(path: str, spec: ModelSpec, ae_spec: flux_ae.AutoencoderSpec):
  """Every check of the Bagel folder `path` against a run's model and autoencoder specs, from
  `llm_config.json` and the safetensors headers alone (nothing is read): the language model's
  fields with Bagel's overrides, the latent fields (`model.image_size` may be any size the
  latent table holds), every tensor's name and shape (the autoencoder's against `ae_spec`).
  Raises naming what differs. A converted folder's `bagel.json` is checked the same way (its
  Orbax trees are checked as they are restored)."""
  if is_converted(path):
    saved = _converted(path)
    fields = {k: v for k, v in saved["model"].items() if k in _CONVERTED_FIELDS}
    qwen2.check_fields(spec, fields, f"the converted Bagel checkpoint {path!r}")
    wrong = [f"autoencoder.{k} is {getattr(ae_spec, k)!r} but the checkpoint has {v!r}"
             for k, v in saved["autoencoder"].items()
             if k in _AE_FIELDS and getattr(ae_spec, k) != (tuple(v) if isinstance(v, list)
                                                             else v)]
    if wrong:
      raise ValueError(f"config does not match the converted Bagel checkpoint {path!r}: "
                       + "; ".join(wrong))
    return
  fields = dict(llm_spec_fields(path), **_latent_fields(path))
  qwen2.check_fields(spec, fields, f"the Bagel checkpoint {path!r}")
  file = _file(path, EMA)
  check_tensors(shards.file_shapes(file), spec, fields["vocab_size"], file)
  flux_ae.check_tensors(_file(path, AE), ae_spec)


# What a converted folder's specs fix (the rest — dtypes, image size, layer scanning — is the
# run's choice).
_CONVERTED_FIELDS = ("vocab_size", "width", "depth", "num_heads", "num_kv_heads", "head_dim",
                     "mlp_dim", "rope_theta", "norm_eps", "qkv_bias", "tie_embeddings",
                     "qk_norm", "mot", "patch_size", "image_channels", "max_latent_size",
                     "time_scale", "prediction")
_AE_FIELDS = ("in_channels", "out_channels", "channels", "channel_multipliers",
              "num_res_blocks", "z_channels")


def is_converted(path: str) -> bool:
  """Whether `path` is a folder written by `convert_folder` (it has `bagel.json`)."""
  return os.path.isfile(os.path.join(path, CONVERTED))


def _converted(path: str) -> dict:
  with open(os.path.join(path, CONVERTED)) as f:
    return json.load(f)


def load_autoencoder(path: str, spec: flux_ae.AutoencoderSpec):
  """The autoencoder's parameters from a Bagel folder: its `ae.safetensors`, or a converted
  folder's `autoencoder/` checkpoint."""
  if is_converted(path):
    target = jax.eval_shape(lambda: flux_ae.init_autoencoder(spec, jax.random.key(0)))
    return checkpoint.load_params(os.path.join(path, "autoencoder"), target)
  return flux_ae.load(_file(path, AE), spec)[1]


def export_folder(path: str, spec: ModelSpec, params, ae_spec: flux_ae.AutoencoderSpec,
                  ae_params, tokenizer=None):
  """Writes `params` (a full tree for `spec`) and the autoencoder's as a Bagel folder:
  `llm_config.json`, `ema.safetensors` in Bagel's names and layouts (both experts, the
  generation tensors), `ae.safetensors` in BFL's, and the tokenizer's files when one is given.
  What `load` / `load_into` read back; the vision encoder is not written."""
  os.makedirs(path, exist_ok=True)
  ema = {name: np.ascontiguousarray(x, np.float32)
         for name, x in qwen2.hf_tensors(params, rules(spec), spec.depth)}
  save_file(ema, os.path.join(path, EMA))
  ae = {flux_ae.bfl_name(p): np.ascontiguousarray(flux_ae.to_torch(np.asarray(x, np.float32)))
        for p, x in traverse_util.flatten_dict(ae_params).items()}
  save_file(ae, os.path.join(path, AE))
  with open(os.path.join(path, LLM_CONFIG), "w") as f:
    f.write(qwen2.hf_config_from_spec(spec).to_json_string())
  if tokenizer is not None:
    tokenizer.save_pretrained(path)


def load_into(params, path: str, spec: ModelSpec):
  """Writes `ema.safetensors` of the Bagel folder `path` into `params`, a full tree for
  `spec`, placed anywhere; its buffers are consumed. Checks the config and every tensor's name
  and shape first, from the headers. Returns the new tree. A converted folder's `model/` is
  restored into `params`' shardings instead."""
  if is_converted(path):
    return checkpoint.load_params(os.path.join(path, "model"), checkpoint.abstract(params))
  fields = llm_spec_fields(path)
  qwen2.check_fields(spec, fields, "the Bagel checkpoint")
  file = _file(path, EMA)
  check_tensors(shards.file_shapes(file), spec, fields["vocab_size"], file)
  return qwen2.place(params, shards.iter_file(file), targets(spec), fields["vocab_size"],
                     spec.vocab_size)


_VIT_LAYER = re.compile(r"^vit_model\.vision_model\.encoder\.layers\.(\d+)\."
                        r"(?:self_attn\.|mlp\.)?(\w+)\.(weight|bias)$")
_VIT_FIXED = {"vit_model.vision_model.embeddings.patch_embedding": ("siglip", "patch_embedding"),
              "vit_model.vision_model.post_layernorm": ("siglip", "post_layernorm"),
              "connector.fc1": ("connector", "fc1"), "connector.fc2": ("connector", "fc2")}


def vision_path(name: str) -> tuple[tuple[str, ...], bool] | None:
  """Bagel's vision tensor name → (our path in the vision parameters, whether it is a linear
  weight to transpose); None for a name that is not one."""
  if name == "vit_model.vision_model.embeddings.position_embedding.weight":
    return ("siglip", "position_embedding"), False
  if name == "vit_pos_embed.pos_embed":
    return ("connector", "pos_table"), False
  m = _VIT_LAYER.match(name)
  if m:
    layer, module, leaf = m.groups()
    prefix = ("siglip", f"layers_{layer}", module)
  else:
    module, _, leaf = name.rpartition(".")
    if module not in _VIT_FIXED:
      return None
    prefix = _VIT_FIXED[module]
  norm = "norm" in prefix[-1]
  if leaf == "bias":
    return prefix + ("bias",), False
  return prefix + ("scale" if norm else "kernel",), not norm


def vision_spec(path: str, shapes: dict, out_width: int, **overrides) -> vision.VisionSpec:
  """The vision encoder's spec: head count and epsilon from `vit_config.json`, the sizes from
  the tensors' shapes (Bagel builds one layer fewer than the json says, so count the file's)."""
  with open(_file(path, VIT_CONFIG)) as f:
    config = json.load(f)
  if config.get("hidden_act", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_fast"):
    raise ValueError(f"{VIT_CONFIG}: hidden_act {config['hidden_act']!r} is not supported "
                     f"(Bagel's SigLIP uses gelu_pytorch_tanh)")
  prefix = "vit_model.vision_model."
  width, patch_in = shapes[prefix + "embeddings.patch_embedding.weight"]
  rows = shapes[prefix + "embeddings.position_embedding.weight"][0]
  layers = {int(m.group(1)) for m in map(_VIT_LAYER.match, shapes) if m}
  channels = config.get("num_channels", 3)
  fields = dict(width=width, depth=len(layers), num_heads=config["num_attention_heads"],
                mlp_dim=shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0],
                patch_size=int(round((patch_in / channels) ** 0.5)),
                max_patches_per_side=int(round(rows ** 0.5)), channels=channels,
                norm_eps=config.get("layer_norm_eps", 1e-6), out_width=out_width)
  fields.update(overrides)
  return vision.VisionSpec(**fields)


def load_vision(path: str, spec: vision.VisionSpec):
  """The vision encoder's parameters from `ema.safetensors`; every tensor's name and shape is
  checked first (reported by our parameter path, or Bagel's name when it maps to none)."""
  file = _file(path, EMA)
  want = {"/".join(p): x.shape for p, x in traverse_util.flatten_dict(
      jax.eval_shape(lambda: vision.init_vision(spec, jax.random.key(0)))).items()}
  have = {}
  for name, shape in shards.file_shapes(file).items():
    if name.startswith(VISION_PREFIXES):
      found = vision_path(name)
      key = name if found is None else "/".join(found[0])
      have[key] = tuple(reversed(shape)) if found is not None and found[1] else shape
  shards.check_fit(want, have, f"Bagel checkpoint {file!r}: the vision encoder does not fit")
  flat = {}
  for name, x in shards.iter_file(file):
    if name.startswith(VISION_PREFIXES):
      ours, linear = vision_path(name)
      flat[ours] = jax.numpy.asarray(x.T if linear else x, jax.numpy.float32)
  return traverse_util.unflatten_dict(flat)


def token_ids(path: str, given: dict | None = None) -> dict:
  """Bagel's special-token ids {"bos", "eos", "start_of_image", "end_of_image"}: `given`, else
  read from the folder's tokenizer files (`<|im_start|>`, `<|im_end|>`, `<|vision_start|>`,
  `<|vision_end|>`)."""
  if given is None:
    if not any(os.path.isfile(os.path.join(path, f))
               for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
      raise ValueError(f"{path!r} has no tokenizer files: pass token_ids with "
                       f"{sorted(TOKEN_NAMES)}")
    from transformers import AutoTokenizer  # heavy; only needed here
    tok = AutoTokenizer.from_pretrained(path)
    given = {k: tok.convert_tokens_to_ids(v) for k, v in TOKEN_NAMES.items()}
  missing = sorted(set(TOKEN_NAMES) - set(given))
  if missing:
    raise ValueError(f"token_ids lacks {missing} (needs {sorted(TOKEN_NAMES)})")
  return {k: int(given[k]) for k in TOKEN_NAMES}


def convert_folder(path: str, out: str, mesh_config=None, dtype: str = "float32",
                   given_token_ids: dict | None = None):
  """Converts the Bagel folder `path` into `out`: `model/` and `autoencoder/` (Orbax
  parameter checkpoints; the model's placed over a mesh, `mesh_config` default all devices
  on fsdp, as it is read), `bagel.json` (both specs and the token ids) and the tokenizer's
  files."""
  spec, ae_spec = folder_spec(path, dtype=dtype)
  ids = token_ids(path, given_token_ids)
  mesh = sharding.make_mesh(mesh_config or {"fsdp": -1})
  shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  shardings = sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
  params = jax.jit(lambda k: init_params(spec, k), out_shardings=shardings)(jax.random.key(0))
  checkpoint.save_params(os.path.join(out, "model"), load_into(params, path, spec))
  _, ae_params = flux_ae.load(_file(path, AE), ae_spec)
  checkpoint.save_params(os.path.join(out, "autoencoder"), ae_params)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(path, name)):
      shutil.copy(os.path.join(path, name), os.path.join(out, name))
  with open(os.path.join(out, CONVERTED), "w") as f:
    json.dump({"model": dataclasses.asdict(spec), "autoencoder": dataclasses.asdict(ae_spec),
               "token_ids": ids}, f, indent=1)


def main(argv):
  del argv
  args = flags.FLAGS
  convert_folder(args.bagel_dir, args.out, dtype=args.dtype)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  from absl import app
  flags.DEFINE_string("bagel_dir", None, "Downloaded BAGEL-7B-MoT folder.", required=True)
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  flags.DEFINE_string("dtype", "float32", "Activation dtype recorded in the model spec.")
  app.run(main)
