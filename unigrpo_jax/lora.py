"""Low-rank adapters (LoRA) on chosen projection kernels of the block stack (`config.lora`).

With LoRA on, the trained parameters are the adapters alone: for a kernel W of an adapted
projection, a pair `lora_a` (*in, r) and `lora_b` (r, *out), and the projection computes
x·W + (α/r)·(x·A)·B. The base W stays frozen (in `base_dtype` if given) and is not a trained
parameter: it gets no gradient and no optimizer state, and the checkpoints hold the adapters
only — and the parameters `unfrozen` names, which are trained in full beside them (e.g. the
image input and output layers, or the norms). The reference model of the GRPO losses is the base with the adapters off — no second
copy of the model. `merge` folds the adapters into full parameters (what the stage saves and
what the Hugging Face / Bagel export reads).

Adapters are named by expert and projection, "<expert>/<projection>" with expert `text` or
`image` (Bagel's generation expert) and projection q, k, v, o, gate, up or down; shell patterns
work ("image/*": every projection of the generation expert, UniRL's recipe on Bagel).

The model (`model/layers.py`) applies whatever adapters its parameter tree holds, so
`combine(base, adapters)` is the policy and `base` alone the reference. B starts at zero: the
adapted model equals the base exactly until the first update. Written here rather than with
qwix: qwix intercepts the matmuls of Flax layers by their call, while this model concatenates
q/k/v (and gate/up) kernels into one matmul — adapters in the parameter tree keep that one
matmul and add only the low-rank products.
"""
import dataclasses
import fnmatch
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# The adapted projections under an expert, and how many leading axes of each kernel are its
# input (o reads (heads, head_dim)).
PROJECTIONS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}


@dataclasses.dataclass(frozen=True)
class LoRASpec:
  """`config.lora`. enabled: train adapters instead of the parameters; rank: r; alpha: α (the
  update is scaled by α/r); modules: "<expert>/<projection>" patterns of the adapted kernels
  (module docstring); dropout: on the adapters' input (only 0 is supported); base_dtype: the
  frozen base's dtype ("" keeps the checkpoint's, e.g. "bfloat16" halves its memory);
  unfrozen: shell patterns of parameter paths ("image_out/*", "layers/*/attn_norm/scale")
  trained in full beside the adapters, in the checkpoint's dtype."""
  enabled: bool = False
  rank: int = 64
  alpha: float = 64.0
  modules: tuple[str, ...] = ("image/*",)
  dropout: float = 0.0
  base_dtype: str = ""
  unfrozen: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "modules", tuple(self.modules))
    object.__setattr__(self, "unfrozen", tuple(self.unfrozen))
    if not self.enabled:
      return
    if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
      raise ValueError(f"lora.rank must be a positive integer, got {self.rank!r}")
    if not self.alpha > 0:
      raise ValueError(f"lora.alpha must be positive, got {self.alpha!r}")
    if self.dropout != 0:
      raise ValueError(f"lora.dropout must be 0 (adapter dropout is not supported), got "
                       f"{self.dropout!r}")
    if not self.modules:
      raise ValueError("lora.modules is empty: name the adapted projections, e.g. ('image/*',)")
    if self.base_dtype not in ("", "float32", "bfloat16"):
      raise ValueError(f"lora.base_dtype must be '', 'float32' or 'bfloat16', got "
                       f"{self.base_dtype!r}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def _module_names(params) -> dict:
  """{"<expert>/<projection>": kernel path} of the block stack's projection kernels."""
  found = {}
  for expert, tree in params["layers"].items():
    for name in PROJECTIONS:
      node = tree["mlp"] if name in ("gate", "up", "down") else tree
      if name in node and "kernel" in node[name]:
        found[f"{expert}/{name}"] = (expert, "mlp", name) if node is not tree else (expert, name)
  return found


def adapted_modules(params, spec: LoRASpec) -> dict:
  """{"<expert>/<projection>": path under `layers`} of the kernels `spec.modules` adapt.
  A pattern that matches no kernel raises ValueError naming it and the kernels there are."""
  names = _module_names(params)
  chosen = {}
  for pattern in spec.modules:
    matched = fnmatch.filter(sorted(names), pattern)
    if not matched:
      raise ValueError(f"lora.modules entry {pattern!r} matches no kernel; the model has "
                       f"{sorted(names)}")
    chosen.update({name: names[name] for name in matched})
  return chosen


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _nest(pairs: dict) -> dict:
  """{path tuple: value} → nested dicts."""
  out = {}
  for path, value in pairs.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def _path(path) -> str:
  return "/".join(k.key for k in path)


def unfrozen_parameters(params, spec: LoRASpec) -> list[str]:
  """Paths ("a/b/c") of the parameters `spec.unfrozen` trains in full. A pattern that matches
  no parameter, or matches an adapted kernel, raises ValueError naming it."""
  paths = [_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  adapted = {"/".join(("layers",) + path + ("kernel",))
             for path in adapted_modules(params, spec).values()}
  chosen = []
  for pattern in spec.unfrozen:
    matched = fnmatch.filter(paths, pattern)
    if not matched:
      raise ValueError(f"lora.unfrozen entry {pattern!r} matches no parameter")
    if adapted & set(matched):
      raise ValueError(f"lora.unfrozen entry {pattern!r} matches adapted kernels "
                       f"{sorted(adapted & set(matched))}: a kernel is trained by its adapters "
                       "or in full, not both")
    chosen += [p for p in matched if p not in chosen]
  return chosen


def init_adapters(params, spec: LoRASpec, key) -> dict:
  """What LoRA trains over `params`: adapters for the adapted kernels (stacked over layers
  like them), float32, {"layers": {expert: {projection: {"lora_a", "lora_b"}}}} (gate/up/down
  under "mlp"), A ~ N(0, 1/fan_in), B = 0; and a copy of each `unfrozen` parameter at its
  path."""
  pairs = {}
  for i, (name, path) in enumerate(sorted(adapted_modules(params, spec).items())):
    kernel = _get(params["layers"], path + ("kernel",))
    n_in = PROJECTIONS[name.split("/")[1]]
    depth, inputs, outputs = kernel.shape[0], kernel.shape[1:1 + n_in], kernel.shape[1 + n_in:]
    a = jax.random.normal(jax.random.fold_in(key, i), (depth,) + inputs + (spec.rank,),
                          jnp.float32) / math.sqrt(math.prod(inputs))
    pairs[("layers",) + path + ("lora_a",)] = a
    pairs[("layers",) + path + ("lora_b",)] = jnp.zeros((depth, spec.rank) + outputs,
                                                        jnp.float32)
  for path in unfrozen_parameters(params, spec):
    keys = tuple(path.split("/"))
    pairs[keys] = jnp.copy(_get(params, keys))
  return _nest(pairs)


def adapter_logical_axes(params_axes, adapters) -> dict:
  """Logical PartitionSpecs of `adapters` (`init_adapters`) from their kernels'
  (`param_logical_axes`): A keeps the kernel's layer and input axes, B its layer and output
  axes; the rank is not sharded. The MLP axis becomes `adapter_mlp`, split over FSDP as well
  (`sharding.RULES`): an adapter has no embed axis beside it to carry FSDP, and would
  otherwise be replicated. An unfrozen parameter keeps its own axes."""
  def axes(path, _):
    keys = [k.key for k in path]
    if keys[-1] not in ("lora_a", "lora_b"):
      return _get(params_axes, keys)
    kernel = [("adapter_mlp" if name == "mlp" else name)
              for name in _get(params_axes, keys[:-1] + ["kernel"])]
    n_in = PROJECTIONS[keys[-2]]
    if keys[-1] == "lora_a":
      return P(*kernel[:1 + n_in], None)
    return P(kernel[0], None, *kernel[1 + n_in:])
  return jax.tree_util.tree_map_with_path(axes, adapters)


def _scaled(adapters, scale: float):
  """Adapters with B scaled by α/r: what the model multiplies by."""
  def one(path, x):
    return x * scale if path[-1].key == "lora_b" else x
  return jax.tree_util.tree_map_with_path(one, adapters)


def _deep_merge(base, extra):
  if not isinstance(extra, dict):
    return extra
  out = dict(base)
  for key, value in extra.items():
    out[key] = _deep_merge(base[key], value) if key in base else value
  return out


def combine(base, adapters, spec: LoRASpec):
  """The policy's parameter tree: `base` with the adapters (B scaled by α/r) beside their
  kernels. Nothing is copied; gradients reach the adapters through it."""
  return _deep_merge(base, _scaled(adapters, spec.scale))


def merge(base, adapters, spec: LoRASpec):
  """Full parameters: every adapted kernel W + (α/r)·A·B (in float32, stored in W's dtype),
  every unfrozen parameter as trained (in the base's dtype), the rest of `base` as it is."""
  def one(path, leaf):
    keys = [k.key for k in path]
    node = adapters
    for key in keys[:-1]:
      node = node.get(key, {}) if isinstance(node, dict) else {}
    if keys[-1] in node:  # unfrozen: trained in full
      return node[keys[-1]].astype(leaf.dtype)
    if keys[-1] != "kernel" or "lora_a" not in node:
      return leaf
    a, b = node["lora_a"].astype(jnp.float32), node["lora_b"].astype(jnp.float32)
    delta = jnp.einsum("lir,lro->lio", a.reshape(a.shape[0], -1, a.shape[-1]),
                       b.reshape(b.shape[0], b.shape[1], -1)).reshape(leaf.shape)
    return (leaf.astype(jnp.float32) + spec.scale * delta).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(one, base)


def configured(section) -> LoRASpec | None:
  """The LoRASpec of a `config.lora` section (absent: off), or None when LoRA is off."""
  spec = LoRASpec(**(section or {}))
  return spec if spec.enabled else None


def policy(trained, base, spec: LoRASpec | None):
  """The policy's parameter tree from what the state trains: the parameters themselves, or
  with `spec` the adapters (and unfrozen parameters) over `base`."""
  return trained if spec is None else combine(base, trained, spec)


def cast_base(params, dtype: str):
  """The frozen base in `dtype` ("" leaves it as it is)."""
  return params if not dtype else jax.tree.map(lambda x: x.astype(dtype), params)
