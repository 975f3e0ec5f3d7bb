r"""FLUX autoencoder checkpoints (`ae.safetensors`, Black Forest Labs' tensor names, PyTorch
layouts) → the parameters of `model/autoencoder.py`.

Names map by rule: BFL's `encoder.down.0.block.1.conv1.weight` is our
`encoder/down_0/block_1/conv1/kernel` (a level's index, and a block's within its level, join
the list they index; `mid.block_1` is the same in both; a conv's `weight` is our `kernel`, a
GroupNorm's our `scale`). Conv weights (out, in, kh, kw) become (kh, kw, in,
out). The sizes of the autoencoder are read from the tensors' shapes; the file is read one
tensor at a time (only the headers to check it), each placed straight onto its device(s).
"""
import re

from flax import traverse_util
import jax
import numpy as np

from unigrpo_jax.convert import shards
from unigrpo_jax.model.autoencoder import AutoencoderSpec, init_autoencoder

_LEVEL = re.compile(r"^(down|up)_(\d+)$")
_BLOCK = re.compile(r"^(block)_(\d+)$")


def bfl_name(path: tuple[str, ...]) -> str:
  """Our parameter path → BFL's tensor name. Indices are split off levels (`down_0`) and the
  blocks of a level (`block_1`); the middle's `block_1` / `attn_1` are BFL's own names."""
  parts = []
  for i, part in enumerate(path[:-1]):
    m = _LEVEL.match(part) or (_BLOCK.match(part) if i and _LEVEL.match(path[i - 1]) else None)
    parts += [m.group(1), m.group(2)] if m else [part]
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
  return ".".join(parts + [leaf])


def torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of one of our parameters: conv kernels (kh, kw, in, out) → (out, in,
  kh, kw); vectors as they are."""
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape)


def to_ours(x: np.ndarray) -> np.ndarray:
  """A BFL tensor in our layout (conv weights transposed)."""
  return np.transpose(x, (2, 3, 1, 0)) if x.ndim == 4 else x


def to_torch(x: np.ndarray) -> np.ndarray:
  """One of our parameters in BFL's layout (conv kernels transposed back)."""
  return np.transpose(x, (3, 2, 0, 1)) if x.ndim == 4 else x


def infer_spec(shapes: dict[str, tuple[int, ...]], **overrides) -> AutoencoderSpec:
  """The `AutoencoderSpec` whose tensors have these shapes (GroupNorm groups, epsilon and the
  latent scale/shift are not in the file: FLUX's defaults unless overridden)."""
  def need(name):
    if name not in shapes:
      raise ValueError(f"not a FLUX autoencoder checkpoint: tensor {name!r} is missing")
    return shapes[name]

  conv_in = need("encoder.conv_in.weight")
  channels, in_channels = conv_in[0], conv_in[1]
  levels = 1 + max((int(m.group(1)) for m in map(re.compile(r"^encoder\.down\.(\d+)\.").match,
                                                     shapes) if m), default=-1)
  if levels == 0:
    raise ValueError("not a FLUX autoencoder checkpoint: no encoder.down.* tensors")
  multipliers = tuple(need(f"encoder.down.{i}.block.0.conv1.weight")[0] // channels
                      for i in range(levels))
  blocks = 1 + max(int(m.group(1)) for m in map(
      re.compile(r"^encoder\.down\.0\.block\.(\d+)\.").match, shapes) if m)
  fields = dict(in_channels=in_channels, out_channels=need("decoder.conv_out.weight")[0],
                channels=channels, channel_multipliers=multipliers, num_res_blocks=blocks,
                z_channels=need("decoder.conv_in.weight")[1])
  fields.update(overrides)
  return AutoencoderSpec(**fields)


def expected_tensors(spec: AutoencoderSpec) -> dict[str, tuple[int, ...]]:
  """{BFL tensor name: PyTorch shape} of a checkpoint for `spec`."""
  shapes = jax.eval_shape(lambda: init_autoencoder(spec, jax.random.key(0)))
  return {bfl_name(path): torch_shape(leaf.shape)
          for path, leaf in traverse_util.flatten_dict(shapes).items()}


def check_tensors(path: str, spec: AutoencoderSpec, shapes=None):
  """Raises listing every missing, unexpected and differently shaped tensor of `path`."""
  have = shards.file_shapes(path) if shapes is None else shapes
  want = expected_tensors(spec)
  shards.check_fit(want, have, f"autoencoder checkpoint {path!r} does not fit the autoencoder")


def load(path: str, spec: AutoencoderSpec | None = None, shardings=None):
  """Reads an `ae.safetensors` file.

  Args:
    path: the file.
    spec: the autoencoder it must hold; None infers it from the tensors' shapes.
    shardings: a tree of shardings like the parameters (None: the default device).
  Returns:
    (spec, params): params float32, each tensor placed as it is read.
  """
  shapes = shards.file_shapes(path)
  spec = spec or infer_spec(shapes)
  check_tensors(path, spec, shapes)
  names = {bfl_name(p): p for p in traverse_util.flatten_dict(
      jax.eval_shape(lambda: init_autoencoder(spec, jax.random.key(0))))}
  where = traverse_util.flatten_dict(shardings) if shardings is not None else {}
  flat = {}
  for name, x in shards.iter_file(path):
    ours = names[name]
    flat[ours] = jax.device_put(to_ours(x).astype(np.float32), where.get(ours))
  return spec, traverse_util.unflatten_dict(flat)
