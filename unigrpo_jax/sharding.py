"""Device mesh and logical-axis partitioning rules: declared once, applied to every pytree.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism whose devices
also split the parameters and optimizer state), `tensor` (tensor parallelism over heads and the
MLP). Model parameters carry logical axis names (`model/layers.py`); `RULES` maps them to mesh
axes, MaxText-style. The batch is split over ("data", "fsdp"). Everything is placed with
`NamedSharding`s, and jitted functions take their shardings from their inputs.
"""
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis → mesh axis (or None: replicated). `embed` is split by FSDP, the head and MLP
# dimensions by tensor parallelism; layers, head_dim and image patches stay whole.
RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("head_dim", None),
    ("patch", None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Axis sizes from `config.mesh` ({"data": n, "fsdp": n, "tensor": n}, one may be −1 for
  "the rest"). Raises ValueError naming the field when they do not fit the devices."""
  unknown = set(mesh_config) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; known: {MESH_AXES}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(mesh_config)}")
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh.{axis} must be positive or -1, got {size}")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f"config.mesh {dict(mesh_config)}: the fixed axes ({fixed} devices) do "
                       f"not divide the {num_devices} available devices")
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh {dict(mesh_config)} needs {math.prod(sizes)} devices but "
                     f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def check_batch(mesh: Mesh, batch_size: int, group_size: int, *, field: str = "batch_size"):
  """The batch (named `field` in messages) must hold whole groups and split evenly over the
  data axes."""
  if group_size < 1 or batch_size % group_size:
    raise ValueError(f"{field} {batch_size} is not a multiple of rl.group_size "
                     f"{group_size}")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % shards:
    raise ValueError(f"{field} {batch_size} does not divide over the mesh's data axes "
                     f"(config.mesh: data × fsdp = {shards} devices)")


def logical_to_mesh(logical: P, rules=RULES) -> P:
  """PartitionSpec of logical names → PartitionSpec of mesh axes."""
  table = dict(rules)
  return P(*(None if name is None else table[name] for name in logical))


def param_shardings(logical_axes, mesh: Mesh, shapes=None, rules=RULES):
  """NamedShardings for a pytree of logical PartitionSpecs (`param_logical_axes`).

  With `shapes` (a matching pytree of arrays or ShapeDtypeStructs), checks that every sharded
  dimension divides by its mesh axes and names the parameter otherwise.
  """
  is_spec = lambda x: isinstance(x, P)  # noqa: E731
  specs = jax.tree.map(lambda p: logical_to_mesh(p, rules), logical_axes, is_leaf=is_spec)
  if shapes is not None:
    for (path, spec), leaf in zip(jax.tree_util.tree_leaves_with_path(specs, is_leaf=is_spec),
                                  jax.tree.leaves(shapes)):
      for dim, axes in zip(leaf.shape, spec):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        n = math.prod(mesh.shape[a] for a in axes)
        if dim % n:
          raise ValueError(f"parameter {jax.tree_util.keystr(path)} of shape {leaf.shape}: "
                           f"dimension {dim} does not divide over mesh axes {axes} ({n})")
  return jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=is_spec)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) axis over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def shard_batch(tree, mesh: Mesh, batch_size: int):
  """Places a batch pytree: leaves with a leading axis of `batch_size` split over the data
  axes, the others (the shared time grid, scalars) replicated. Placement never changes values,
  only where they live."""
  def place(x):
    batched = x.ndim >= 1 and x.shape[0] == batch_size
    return jax.device_put(x, batch_sharding(mesh, x.ndim) if batched else
                          NamedSharding(mesh, P()))
  return jax.tree.map(place, tree)


def with_shardings(shapes, shardings):
  """ShapeDtypeStructs of `shapes` placed by `shardings` (matching pytrees): an abstract,
  sharded tree — a restore target or a memory estimate that allocates nothing."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def bytes_per_device(tree) -> int:
  """Bytes the first device holds of a pytree of (possibly sharded) arrays or
  ShapeDtypeStructs with shardings."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) else x.shape
    total += math.prod(shape) * np.dtype(x.dtype).itemsize
  return total
