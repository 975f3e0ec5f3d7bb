r"""Qwen2 / Qwen2.5 checkpoints in Hugging Face format ↔ our parameter pytree.

The conversion is data: `RULES` pairs each Hugging Face tensor name with our parameter path
and one invertible layout transform (`Layout`). Importing walks the checkpoint shard by shard
and writes each tensor straight into an already-sharded parameter tree (for stacked layers,
into its layer's slice, buffers donated), so host memory never holds more than one tensor;
exporting applies the inverse transforms layer slice by layer slice.

Bagel-style initialisation of the mixture of transformers: every text-expert tensor is written
into the image (generation) expert too, the final norm into the image norm; the image
embedding and velocity head keep their fresh initialisation (the head is zero).

Vocabulary: a checkpoint with fewer embedding rows than `model.vocab_size` (the tokenizer grew:
`convert/tokenizer.py`) fills the new rows — and lm_head columns — with the mean of the
checkpoint's rows. A tied checkpoint's redundant `lm_head.weight`, if saved, is ignored.

Command line (parameters-only Orbax checkpoint that `rl.init_params` can name, or the export):

  python -m unigrpo_jax.convert.qwen2 --config=configs/qwen2_5.py:0.5b \
      --hf_dir=/path/Qwen2.5-0.5B --out=/path/params
"""
import dataclasses
import functools
import math
import os

from absl import flags
from flax import traverse_util
import jax
import numpy as np

from unigrpo_jax import checkpoint, sharding
from unigrpo_jax.convert import shards
from unigrpo_jax.model import ModelSpec, init_params, param_logical_axes

LAYER = "{layer}"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a Hugging Face tensor maps onto our parameter (per layer).

  kind "same": identical; "reshape": a flat HF vector split into our shape (biases per head);
  "linear": an HF `nn.Linear` weight (out, in) becomes our kernel (*in, *out): transposed and
  its axes split, our first `in_axes` axes being the input ones.
  """
  kind: str
  in_axes: int = 1

  def to_ours(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if self.kind == "linear":
      x = x.T
    return x.reshape(shape)

  def to_hf(self, y: np.ndarray) -> np.ndarray:
    if self.kind == "same":
      return y
    if self.kind == "reshape":
      return y.reshape(-1)
    return y.reshape(math.prod(y.shape[:self.in_axes]), -1).T


SAME, FLAT, LINEAR = Layout("same"), Layout("reshape"), Layout("linear")


@dataclasses.dataclass(frozen=True)
class Rule:
  """One Hugging Face tensor (name, `{layer}` for per-layer ones) → our path in the text
  expert (`layers/text/…` for per-layer ones), with its layout. `vocab_axis`: our axis over
  vocabulary rows, which may be longer than the checkpoint's."""
  hf: str
  ours: tuple[str, ...]
  layout: Layout
  vocab_axis: int | None = None

  @property
  def per_layer(self) -> bool:
    return LAYER in self.hf


def _layer(name, *path, layout):
  return Rule(f"model.layers.{LAYER}.{name}", ("layers", "text") + path, layout)


BASE_RULES = (
    Rule("model.embed_tokens.weight", ("embed", "embedding"), SAME, vocab_axis=0),
    Rule("model.norm.weight", ("text_norm", "scale"), SAME),
    _layer("input_layernorm.weight", "attn_norm", "scale", layout=SAME),
    _layer("post_attention_layernorm.weight", "mlp_norm", "scale", layout=SAME),
    _layer("self_attn.q_proj.weight", "q", "kernel", layout=LINEAR),
    _layer("self_attn.k_proj.weight", "k", "kernel", layout=LINEAR),
    _layer("self_attn.v_proj.weight", "v", "kernel", layout=LINEAR),
    _layer("self_attn.o_proj.weight", "o", "kernel", layout=Layout("linear", in_axes=2)),
    _layer("mlp.gate_proj.weight", "mlp", "gate", "kernel", layout=LINEAR),
    _layer("mlp.up_proj.weight", "mlp", "up", "kernel", layout=LINEAR),
    _layer("mlp.down_proj.weight", "mlp", "down", "kernel", layout=LINEAR),
)
BIAS_RULES = tuple(_layer(f"self_attn.{p}_proj.bias", p, "bias", layout=FLAT) for p in "qkv")
LM_HEAD = Rule("lm_head.weight", ("lm_head", "kernel"), LINEAR, vocab_axis=1)


def rules(spec: ModelSpec) -> tuple[Rule, ...]:
  """The rules that apply to `spec` (q/k/v biases, an untied head)."""
  return (BASE_RULES + BIAS_RULES * spec.qkv_bias
          + (() if spec.tie_embeddings else (LM_HEAD,)))


def destinations(rule: Rule, spec: ModelSpec) -> list[tuple[str, ...]]:
  """Our paths a rule writes: the text expert, and with MoT its copy in the image expert (and
  the final norm's copy in the image norm) — Bagel's initialisation."""
  paths = [rule.ours]
  if spec.mot and rule.ours[:2] == ("layers", "text"):
    paths.append(("layers", "image") + rule.ours[2:])
  if spec.mot and rule.ours == ("text_norm", "scale"):
    paths.append(("image_norm", "scale"))
  return paths


# ----------------------------------------------------------------------------- configs


def spec_fields(hf_config) -> dict:
  """The text fields of `ModelSpec` a Qwen2 `transformers` config determines; anything this
  model does not implement (another architecture, RoPE scaling, sliding windows) is an error."""
  if hf_config.model_type != "qwen2":
    raise ValueError(f"checkpoint model_type is {hf_config.model_type!r}; only 'qwen2' "
                     f"(Qwen2, Qwen2.5) is supported")
  rope = dict(getattr(hf_config, "rope_parameters", None) or {})
  theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", None))
  if rope.get("rope_type", "default") != "default" or theta is None:
    raise ValueError(f"checkpoint rope_parameters {rope} are not supported (plain RoPE only)")
  if getattr(hf_config, "use_sliding_window", False):
    raise ValueError("checkpoint uses sliding-window attention, which this model does not")
  if hf_config.hidden_act != "silu":
    raise ValueError(f"checkpoint hidden_act is {hf_config.hidden_act!r}; Qwen2 uses 'silu'")
  heads = hf_config.num_attention_heads
  head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
  return dict(vocab_size=hf_config.vocab_size, width=hf_config.hidden_size,
              depth=hf_config.num_hidden_layers, num_heads=heads,
              num_kv_heads=hf_config.num_key_value_heads, head_dim=head_dim,
              mlp_dim=hf_config.intermediate_size, rope_theta=float(theta),
              norm_eps=hf_config.rms_norm_eps, qkv_bias=True,
              tie_embeddings=bool(hf_config.tie_word_embeddings))


def read_config(path: str):
  """The checkpoint's `transformers` config (config.json, no download)."""
  from transformers import AutoConfig  # transformers is heavy; only conversion needs it
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise FileNotFoundError(f"{path!r} has no config.json: not a Hugging Face checkpoint")
  return AutoConfig.from_pretrained(path)


def check_spec(spec: ModelSpec, hf_config):
  """Raises naming every `model.<field>` that disagrees with the checkpoint's config."""
  check_fields(spec, spec_fields(hf_config), "the checkpoint")


def check_fields(spec: ModelSpec, fields: dict, what: str):
  """Raises naming every `model.<field>` of `spec` that disagrees with `fields` (a
  checkpoint's; the vocabulary may be larger than the checkpoint's: added tokens)."""
  wrong = []
  for name, value in fields.items():
    ours = getattr(spec, name)
    if name == "vocab_size" and ours >= value:
      continue
    if ours != value:
      wrong.append(f"model.{name} is {ours!r} but the checkpoint has {value!r}")
  if wrong:
    raise ValueError(f"config does not match {what}: " + "; ".join(wrong))


def hf_config_from_spec(spec: ModelSpec):
  """A `transformers.Qwen2Config` describing the text part of `spec` (for the export)."""
  from transformers import Qwen2Config
  return Qwen2Config(vocab_size=spec.vocab_size, hidden_size=spec.width,
                     intermediate_size=spec.mlp_dim, num_hidden_layers=spec.depth,
                     num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
                     head_dim=spec.head_dim, rms_norm_eps=spec.norm_eps,
                     tie_word_embeddings=spec.tie_embeddings, hidden_act="silu",
                     rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
                     dtype=spec.param_dtype)


# ------------------------------------------------------------------------------ import


def expected_tensors(spec: ModelSpec, vocab_rows: int,
                     rule_set: tuple[Rule, ...] | None = None) -> dict[str, tuple[int, ...]]:
  """{tensor name: shape} a checkpoint for `spec` holds (`vocab_rows` embedding rows), by
  `rule_set` (default: Qwen2's `rules(spec)`)."""
  params = traverse_util.flatten_dict(
      jax.eval_shape(lambda: init_params(spec, jax.random.key(0))))
  out = {}
  for rule in rules(spec) if rule_set is None else rule_set:
    shape = list(params[rule.ours].shape[1:] if rule.per_layer else params[rule.ours].shape)
    if rule.vocab_axis is not None:
      shape[rule.vocab_axis] = vocab_rows
    hf_shape = jax.eval_shape(rule.layout.to_hf, jax.ShapeDtypeStruct(tuple(shape),
                                                                     np.float32)).shape
    for i in range(spec.depth) if rule.per_layer else [None]:
      out[rule.hf.replace(LAYER, str(i))] = hf_shape
  return out


def check_tensors(path: str, spec: ModelSpec, vocab_rows: int):
  """Raises listing the missing, unexpected and differently shaped tensors of checkpoint
  `path` against `spec`, before anything is read."""
  want = expected_tensors(spec, vocab_rows)
  have = shards.tensor_shapes(path)
  if spec.tie_embeddings:
    have.pop(LM_HEAD.hf, None)
  shards.check_fit(want, have, f"checkpoint {path!r} does not fit the model")


def check_checkpoint(path: str, spec: ModelSpec):
  """Every check of checkpoint directory `path` against `spec` (its config, then its tensor
  names and shapes), from config.json and the safetensors headers alone. Returns the
  checkpoint's `transformers` config."""
  hf_config = read_config(path)
  check_spec(spec, hf_config)
  check_tensors(path, spec, hf_config.vocab_size)
  return hf_config


def _targets(spec: ModelSpec) -> dict[str, tuple[Rule, int | None, list[tuple[str, ...]]]]:
  """{HF tensor name: (rule, layer or None, our paths it is written to)}."""
  return {rule.hf.replace(LAYER, str(i)): (rule, i if rule.per_layer else None,
                                           destinations(rule, spec))
          for rule in rules(spec)
          for i in (range(spec.depth) if rule.per_layer else [None])}


@functools.lru_cache(maxsize=None)
def _setter(sharding):
  """Jitted dst.at[i].set(x) that reuses dst's buffers (donated) and keeps its sharding."""
  return jax.jit(lambda dst, x, i: jax.lax.dynamic_update_index_in_dim(dst, x, i, 0),
                 out_shardings=sharding, donate_argnums=0)


def _slice_sharding(sharding):
  """The sharding of one layer of a stacked parameter (its leading axis dropped)."""
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(
        *tuple(sharding.spec)[1:]))
  return sharding


def _grow_vocab(x: np.ndarray, axis: int, rows: int) -> np.ndarray:
  """Pads `x` along `axis` to `rows` with the mean of its existing rows."""
  extra = rows - x.shape[axis]
  if extra == 0:
    return x
  mean = x.mean(axis=axis, keepdims=True, dtype=np.float32).astype(x.dtype)
  return np.concatenate([x, np.repeat(mean, extra, axis=axis)], axis=axis)


def place(params, tensors, targets, vocab_rows: int, vocab_size: int):
  """Writes checkpoint tensors into `params` (a full parameter tree, placed anywhere: each
  tensor goes straight into its leaf's sharding, a layer's into its slice of the stack).

  Args:
    params: the tree to fill; its buffers are consumed.
    tensors: iterable of (name, array); names not in `targets` are skipped.
    targets: {name: (rule, layer or None, our paths)} (`_targets`).
    vocab_rows: the checkpoint's vocabulary rows; `vocab_size`: ours (≥, grown by the mean).
  Returns:
    The new tree.
  """
  flat = traverse_util.flatten_dict(params)
  for name, x in tensors:
    if name not in targets:
      continue
    rule, layer, dests = targets[name]
    # Transformed once on the host; the experts' copies have the same shape and dtype.
    shape = list(flat[dests[0]].shape[1:] if layer is not None else flat[dests[0]].shape)
    if rule.vocab_axis is None:
      y = rule.layout.to_ours(x, tuple(shape))
    else:
      shape[rule.vocab_axis] = vocab_rows
      y = _grow_vocab(rule.layout.to_ours(x, tuple(shape)), rule.vocab_axis, vocab_size)
    y = np.asarray(y, dtype=flat[dests[0]].dtype)
    for dest in dests:
      leaf = flat[dest]
      if layer is None:
        flat[dest] = jax.device_put(y, leaf.sharding)
      else:
        flat[dest] = _setter(leaf.sharding)(
            leaf, jax.device_put(y, _slice_sharding(leaf.sharding)), layer)
  return traverse_util.unflatten_dict(flat)


def load_into(params, path: str, spec: ModelSpec):
  """Writes the Qwen2 checkpoint in directory `path` into `params` (a full parameter tree for
  `spec`, e.g. fresh from `init_params`, placed anywhere). Returns the new tree; `params`'
  buffers are consumed. A tied checkpoint's redundant lm_head is skipped (checked first)."""
  hf_config = check_checkpoint(path, spec)
  return place(params, shards.iter_tensors(path), _targets(spec), hf_config.vocab_size,
               spec.vocab_size)


# ------------------------------------------------------------------------------ export


def hf_tensors(params, rule_set: tuple[Rule, ...], depth: int):
  """Yields (checkpoint tensor name, array in the checkpoint's layout) for every rule of
  `rule_set` over `params` (a per-layer rule once a layer of `depth`), one slice at a time."""
  flat = traverse_util.flatten_dict(params)
  for rule in rule_set:
    leaf = flat[rule.ours]
    for i in range(depth) if rule.per_layer else [None]:
      ours = np.asarray(leaf if i is None else leaf[i])
      yield rule.hf.replace(LAYER, str(i)), rule.layout.to_hf(ours)


def export(params, spec: ModelSpec, path: str, max_shard_bytes: int = 5 * 2**30):
  """Writes the text expert of `params` as a Hugging Face Qwen2 checkpoint (config.json and
  safetensors shards) that `transformers` loads; one layer slice at a time on the host."""
  shards.write(path, hf_tensors(params, rules(spec), spec.depth), max_shard_bytes)
  hf_config_from_spec(spec).save_pretrained(path)


def main(argv):
  """The command line (module docstring): import into a parameters-only checkpoint, or export
  one (`--export_from`)."""
  del argv
  cfg, args = flags.FLAGS.config, flags.FLAGS
  spec = ModelSpec(**cfg.model)
  mesh = sharding.make_mesh(cfg.mesh)
  shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  shardings = sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
  if args.export_from:
    params = checkpoint.load_params(args.export_from, sharding.with_shardings(shapes, shardings))
    export(params, spec, args.out)
  else:
    params = jax.jit(lambda k: init_params(spec, k), out_shardings=shardings)(
        jax.random.key(cfg.seed))
    checkpoint.save_params(args.out, load_into(params, args.hf_dir, spec))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  from absl import app
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Model config (configs/qwen2_5.py:0.5b).")
  flags.DEFINE_string("hf_dir", "", "Hugging Face checkpoint directory to import.")
  flags.DEFINE_string("export_from", "", "Parameters-only checkpoint to export instead.")
  flags.DEFINE_string("out", None, "Output: params checkpoint, or HF directory with "
                      "--export_from.", required=True)
  app.run(main)
