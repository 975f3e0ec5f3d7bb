r"""BAGEL-7B-MoT checkpoints (a folder with `llm_config.json`, `ema.safetensors`, …) → our
parameter pytree.

The language model is Qwen2 with Bagel's load-time overrides (`qk_norm`, an untied head, the
mixture of transformers). Its tensors live under `language_model.`; every per-layer tensor and
the final norm have a `_moe_gen` twin holding the generation expert. The layout is data: the
Qwen2 rules (`convert/qwen2.py`) plus the per-head q/k norms, each read twice — as it is into
the text (understanding) expert, and with `_moe_gen` inserted after its module's name
(`self_attn.q_proj_moe_gen`, `mlp_moe_gen.gate_proj`, `input_layernorm_moe_gen`,
`model.norm_moe_gen`) into the image (generation) expert. Tensors are read one at a time from
the memory-mapped file and placed straight into the (sharded) parameter tree.
"""
import json
import os
import re

from flax import traverse_util
import jax

from unigrpo_jax.convert import qwen2, shards
from unigrpo_jax.convert.qwen2 import LAYER, SAME, Rule
from unigrpo_jax.model import ModelSpec, init_params

LLM_CONFIG = "llm_config.json"
EMA = "ema.safetensors"
PREFIX = "language_model."
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


def llm_targets(spec: ModelSpec):
  """{tensor name: (rule, layer or None, [our path])} of the language model."""
  return {rule.hf.replace(LAYER, str(i)): (rule, i if rule.per_layer else None, [rule.ours])
          for rule in llm_rules(spec)
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


def check_llm_tensors(shapes: dict[str, tuple[int, ...]], spec: ModelSpec, vocab_rows: int,
                      file: str):
  """Raises listing the language model's missing, unexpected (under `language_model.`) and
  differently shaped tensors."""
  params = traverse_util.flatten_dict(
      jax.eval_shape(lambda: init_params(spec, jax.random.key(0))))
  want = {}
  for name, (rule, layer, dests) in llm_targets(spec).items():
    shape = list(params[dests[0]].shape[1:] if layer is not None else params[dests[0]].shape)
    if rule.vocab_axis is not None:
      shape[rule.vocab_axis] = vocab_rows
    want[name] = jax.eval_shape(rule.layout.to_hf, jax.ShapeDtypeStruct(
        tuple(shape), "float32")).shape
  have = {k: v for k, v in shapes.items() if k.startswith(PREFIX)}
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shaped = sorted(f"{k} {have[k]} (expected {want[k]})" for k in set(want) & set(have)
                  if tuple(have[k]) != tuple(want[k]))
  if missing or unexpected or shaped:
    parts = [f"{label}: {', '.join(items[:12])}" + (f" … ({len(items)} in all)"
                                                     if len(items) > 12 else "")
             for label, items in (("missing", missing), ("unexpected", unexpected),
                                  ("differently shaped", shaped)) if items]
    raise ValueError(f"Bagel checkpoint {file!r}: the language model does not fit — "
                     + "; ".join(parts))


def load_llm_into(params, path: str, spec: ModelSpec):
  """Writes the language model of the Bagel folder `path` (`ema.safetensors`) into `params`,
  a full tree for `spec`, placed anywhere; its buffers are consumed. Checks the config and
  every tensor's name and shape first. Returns the new tree."""
  fields = llm_spec_fields(path)
  wrong = [f"model.{k} is {getattr(spec, k)!r} but the checkpoint has {v!r}"
           for k, v in fields.items()
           if getattr(spec, k) != v and not (k == "vocab_size" and spec.vocab_size >= v)]
  if wrong:
    raise ValueError("config does not match the Bagel checkpoint: " + "; ".join(wrong))
  file = os.path.join(path, EMA)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path!r} has no {EMA}: not a Bagel checkpoint folder")
  check_llm_tensors(shards.file_shapes(file), spec, fields["vocab_size"], file)
  return qwen2.place(params, shards.iter_file(file), llm_targets(spec), fields["vocab_size"],
                     spec.vocab_size)
