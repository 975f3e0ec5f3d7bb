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

from unigrpo_jax import distributed

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis → mesh axis (or None: replicated). `embed` is split by FSDP, the head and MLP
# dimensions by tensor parallelism; layers, head_dim and image patches stay whole. A LoRA
# adapter's MLP axis (`adapter_mlp`) is its only large one: split over FSDP too.
RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("adapter_mlp", ("fsdp", "tensor")),
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
  data axes; on a concrete mesh, each process must hold whole groups."""
  if group_size < 1 or batch_size % group_size:
    raise ValueError(f"{field} {batch_size} is not a multiple of rl.group_size "
                     f"{group_size}")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  seen = (f"{jax.process_count()} process(es), {math.prod(mesh.shape.values())} devices, mesh "
          f"{dict(mesh.shape)}")
  if batch_size % shards:
    raise ValueError(f"{field} {batch_size} does not divide over the mesh's data axes "
                     f"(config.mesh: data × fsdp = {shards} devices; {seen})")
  if not isinstance(mesh, Mesh):  # an abstract mesh (start-up checks) has no processes yet
    return
  rows = local_rows(mesh, batch_size)
  if rows.start % group_size or rows.stop % group_size:
    raise ValueError(f"{field} {batch_size}: process {jax.process_index()} holds rows "
                     f"{rows.start}:{rows.stop}, which splits a group of rl.group_size "
                     f"{group_size} across processes ({seen}); each group must be scored where "
                     f"its images are")


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


def without_axis(s: NamedSharding, axis: str) -> NamedSharding:
  """`s` with mesh `axis` taken out of its PartitionSpec: what that axis split, each of its
  devices holds whole; every other axis's split is kept."""
  def drop(entry):
    kept = tuple(n for n in ((entry,) if isinstance(entry, str) else entry or ()) if n != axis)
    return kept[0] if len(kept) == 1 else (kept or None)
  return NamedSharding(s.mesh, P(*(drop(entry) for entry in s.spec)))


def gathered_shardings(tree, axis: str = "fsdp"):
  """The shardings of `tree`'s leaves (arrays, or ShapeDtypeStructs with shardings) with
  `axis` taken out (`without_axis`; a leaf not placed on a mesh keeps its own)."""
  return jax.tree.map(lambda x: without_axis(x.sharding, axis)
                      if isinstance(x.sharding, NamedSharding) else x.sharding, tree)


def gathers_for_rollout(config) -> bool:
  """Whether rollouts sample from parameters gathered over fsdp (`gathered`):
  `config.gather_rollout_params`, off where a config does not set it."""
  return config.get("gather_rollout_params", False)


def gathered(tree, axis: str = "fsdp"):
  """`tree`'s arrays placed by `gathered_shardings`: one all-gather per array.

  For sampling: with weights split over fsdp, XLA splits each decode and flow step's
  activations the same way and reduces them across devices at every matmul — a collective
  per layer per token; gathered once per rollout, the steps run without any.

  Args:
    tree: pytree of jax.Arrays (those with NamedShardings are resharded).
  Returns:
    the same values, resharded (`tree` itself when `axis` has one device everywhere).
  """
  meshes = {x.sharding.mesh for x in jax.tree.leaves(tree)
            if isinstance(x.sharding, NamedSharding)}
  if all(mesh.shape.get(axis, 1) == 1 for mesh in meshes):
    return tree
  return jax.device_put(tree, gathered_shardings(tree, axis))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) axis over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def local_rows(mesh: Mesh, batch_size: int) -> slice:
  """The rows [start, stop) of a `batch_size`-row batch split over the data axes that this
  process's devices hold (all of them with one process): one block, as `make_mesh` lists the
  devices process by process."""
  held = batch_sharding(mesh, 1).addressable_devices_indices_map((batch_size,)).values()
  blocks = sorted({(index[0].start or 0, index[0].stop or batch_size) for index in held})
  if any(stop != start for (_, stop), (start, _) in zip(blocks, blocks[1:])):
    raise ValueError(f"this process's devices hold rows {blocks} of the batch, not one block: "
                     f"the mesh must list the devices process by process")
  return slice(blocks[0][0], blocks[-1][1])


def host_rows(x: jax.Array, mesh: Mesh | None = None) -> np.ndarray:
  """This process's rows (`local_rows`) of a global batch array as NumPy, however the
  computation that made it laid it out (re-split over the data axes of `mesh`, by default the
  array's own); with one process, the whole array."""
  if x.is_fully_addressable:
    return np.asarray(x)
  mesh = x.sharding.mesh if mesh is None else mesh
  return distributed.to_host(jax.device_put(x, batch_sharding(mesh, x.ndim)))


def shard_batch(tree, mesh: Mesh, batch_size: int):
  """Places a batch pytree as global arrays: leaves with a leading axis of this process's rows
  (`local_rows`; the whole batch with one process) split over the data axes, the others (the
  shared time grid, scalars) replicated. Placement never changes values, only where they
  live."""
  rows = local_rows(mesh, batch_size)
  def place(x):
    if np.ndim(x) >= 1 and np.shape(x)[0] == rows.stop - rows.start:
      return distributed.to_global(x, batch_sharding(mesh, np.ndim(x)),
                                   (batch_size,) + np.shape(x)[1:])
    return distributed.to_global(x, NamedSharding(mesh, P()), np.shape(x))
  return jax.tree.map(place, tree)


def chunk_order(batch_size: int, chunks: int) -> np.ndarray | None:
  """The row order that turns `chunks` concatenated chunks of a batch (each placed by
  `shard_batch` from every process's rows of it) into the layout `shard_batch` gives the whole
  batch — each process's block holding its rows of chunk 0, then of chunk 1, … — as indices into
  the concatenation, (batch_size,); None with one process, where the two are the same."""
  processes = jax.process_count()
  if processes == 1:
    return None
  per = batch_size // chunks // processes
  return np.arange(batch_size).reshape(chunks, processes, per).transpose(1, 0, 2).reshape(-1)


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
