"""How the block stack runs, decided by the spec and kept here: the form parameters take for a
pass, its KV cache, and the call that runs the blocks.

Parameters are stored stacked (one array per weight with a leading `layers` axis: checkpoints,
sharding rules and training use that form). A pass runs them either stacked, as one `nn.scan`
over the layers, or looped, as a Python loop over per-layer slices with one (k, v) cache per
layer (docs/design.md §5):

  * `for_training(params, model_spec)`: stacked when `model_spec.scan_layers`, else looped — for
    teacher-forced passes that take gradients;
  * `for_decoding(params, model_spec)`: always looped, the kernels cast once to the matmul operand
    dtype — for the rollout, whose decode loop would otherwise re-slice every layer's
    weights at every token (MaxText's unscanned inference checkpoints, made on the fly).

A `StackParams` carries its form, so `run_blocks` and `empty_cache` follow it; no caller looks
at the shape of the tree.
"""
import flax.struct
import jax
import jax.numpy as jnp

from unigrpo_jax.model.matmul import cast_kernels
from unigrpo_jax.model.spec import ModelSpec
from unigrpo_jax.model.transformer import TEXT, Block, UnifiedTransformer


@flax.struct.dataclass
class StackParams:
  """Model parameters in the form a pass runs them.

  tree: the parameter tree; with `looped`, its `layers` is a tuple of per-layer trees, else
  the stacked tree. Everything outside `layers` is as stored.
  """
  tree: dict
  looped: bool = flax.struct.field(pytree_node=False)

  def empty_cache(self, model_spec: ModelSpec, batch: int, length: int):
    """A zeroed KV cache of this form in the model dtype: looped, a tuple of `depth` (k, v)
    pairs of (B, K, L, D); stacked, one (k, v) pair of (depth, B, K, L, D)."""
    s = model_spec
    shape = (batch, s.num_kv_heads, length, s.head_dim)
    if self.looped:
      return tuple((jnp.zeros(shape, s.dtype), jnp.zeros(shape, s.dtype)) for _ in range(s.depth))
    shape = (s.depth,) + shape
    return (jnp.zeros(shape, s.dtype), jnp.zeros(shape, s.dtype))


def _unstack(params):
  """`params` with `layers` split into a tuple of per-layer trees."""
  depth = jax.tree.leaves(params["layers"])[0].shape[0]
  layers = tuple(jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(depth))
  return {**params, "layers": layers}


def for_training(params, model_spec: ModelSpec) -> StackParams:
  """Stored parameters → the form of a teacher-forced pass (`scan_layers` decides)."""
  if model_spec.scan_layers:
    return StackParams(params, looped=False)
  return StackParams(_unstack(params), looped=True)


def for_decoding(params, model_spec: ModelSpec) -> StackParams:
  """Stored parameters → the form of a rollout: looped, kernels in the matmul operand dtype."""
  return StackParams(cast_kernels(_unstack(params), model_spec.matmul_operand_dtype),
                     looped=True)


def run_blocks(model: UnifiedTransformer, params: StackParams, h, positions, mask, cache=None,
               cache_index=0, modality=None, route=TEXT):
  """The block stack in `params`' form; same arguments and results as
  `UnifiedTransformer.__call__`, the cache in the form of `params.empty_cache`."""
  if not params.looped:
    return model.apply({"params": params.tree}, h, positions, mask, cache, cache_index,
                       modality, route)
  block = Block(model.spec)
  new = []
  for i, layer in enumerate(params.tree["layers"]):
    h, kv = block.apply({"params": layer}, h, None if cache is None else cache[i], positions,
                        mask, cache_index, modality, route)
    new.append(kv)
  return h, tuple(new)
