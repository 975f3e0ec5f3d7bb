"""The multi-process runtime: one Python process per host, each driving its local devices, all
running the same program (JAX's multi-controller model, as on a TPU pod slice or GPU nodes).

Owns start-up from `config.distributed`, which rows of a global batch this process holds, moving
those rows between the host and global arrays, and the few agreements a training loop needs
across processes (per-row scores gathered everywhere, a stop flag, JSON-able values). With one
process every function here is the identity of its one-process meaning, so the stages run one
code path whatever the process count.

Rows: a batch of B rows is split over the mesh's data axes; the mesh lists the devices process
by process, so each process holds one contiguous block of rows (`sharding.local_rows`). Every
process reads the same global order of prompts (the same seed) and draws only its block of each
batch: the global batch, and so the run, is the one a single process would make.
"""
import dataclasses
import json

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  """`config.distributed`. num_processes: 1 = this process alone (nothing to start, unless a
  `coordinator_address` is given: then a one-process distributed runtime, whose collectives are
  those of a multi-process run); 0 = detected from the environment (Cloud TPU, SLURM, …:
  `jax.distributed.initialize()` with no arguments); N ≥ 2 = N processes that meet at
  `coordinator_address` (host:port of process 0), this one being `process_id`.
  heartbeat_timeout_s: how long the others wait for a process that stopped answering before
  they all exit (a lost process never leaves the rest hanging)."""
  coordinator_address: str = ""
  num_processes: int = 1
  process_id: int = 0
  heartbeat_timeout_s: int = 100
  initialization_timeout_s: int = 300

  def __post_init__(self):
    if self.num_processes < 0:
      raise ValueError(f"config.distributed.num_processes must be >= 0 (0: detect, 1: one "
                       f"process), got {self.num_processes}")
    if self.num_processes >= 2 or (self.num_processes == 1 and self.coordinator_address):
      if not self.coordinator_address or ":" not in self.coordinator_address:
        raise ValueError(f"config.distributed.coordinator_address must be host:port with "
                         f"num_processes = {self.num_processes}, got "
                         f"{self.coordinator_address!r}")
      if not 0 <= self.process_id < self.num_processes:
        raise ValueError(f"config.distributed.process_id must be in [0, "
                         f"{self.num_processes}), got {self.process_id}")
    for name in ("heartbeat_timeout_s", "initialization_timeout_s"):
      if getattr(self, name) < 1:
        raise ValueError(f"config.distributed.{name} must be >= 1, got {getattr(self, name)}")


def initialize(spec: DistributedSpec):
  """Joins the processes `spec` names (before anything touches a device); one process: nothing.
  CPU devices talk through Gloo (JAX's CPU collectives); TPU and GPU use their own."""
  if spec.num_processes == 1 and not spec.coordinator_address:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = {} if spec.num_processes == 0 else dict(
      coordinator_address=spec.coordinator_address, num_processes=spec.num_processes,
      process_id=spec.process_id)
  jax.distributed.initialize(**where, heartbeat_timeout_seconds=spec.heartbeat_timeout_s,
                             initialization_timeout=spec.initialization_timeout_s)
  logging.get_absl_handler().setFormatter(_ProcessFormatter(jax.process_index()))


class _ProcessFormatter(logging.PythonFormatter):
  """absl's log lines, each prefixed with the process that wrote it."""

  def __init__(self, index: int):
    super().__init__()
    self.prefix = f"[process {index}] "

  def format(self, record):
    return self.prefix + super().format(record)


def is_primary() -> bool:
  """Whether this process writes the run's shared outputs (logs, JSON, images): process 0."""
  return jax.process_index() == 0


def to_host(x) -> np.ndarray:
  """This process's part of a global array split over its first axis (its blocks, in order),
  or the whole of a replicated one, as NumPy."""
  if x.is_fully_addressable:
    return np.asarray(x)
  blocks = {}
  for shard in x.addressable_shards:
    blocks.setdefault((shard.index[0].start or 0) if shard.index else 0, shard.data)
  return np.concatenate([np.asarray(blocks[k]) for k in sorted(blocks)], axis=0)


def to_global(x, sharding: NamedSharding, global_shape: tuple) -> jax.Array:
  """A global array from this process's part of it (`x`: its rows, or the whole value when
  `sharding` replicates it)."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)


def replicate(tree, mesh: Mesh):
  """Every leaf (the same value on every process) replicated over the whole mesh."""
  everywhere = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: to_global(x, everywhere, np.shape(x)), tree)


def gather_rows(tree):
  """Each NumPy leaf (this process's rows first) concatenated over the processes in process
  order: every process gets the global batch's rows."""
  if jax.process_count() == 1:
    return tree

  def gather(x):  # as raw bytes: no dtype is narrowed on the way (float64 stays float64)
    x = np.ascontiguousarray(x)
    raw = multihost_utils.process_allgather(x.view(np.uint8).reshape(len(x), -1), tiled=True)
    return np.asarray(raw).reshape(-1).view(x.dtype).reshape((-1,) + x.shape[1:])
  return jax.tree.map(gather, tree)


def gather_objects(value) -> list:
  """[each process's `value`] (JSON-able), in process order, on every process."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  size = int(multihost_utils.process_allgather(np.int64(data.size)).max())
  padded = multihost_utils.process_allgather(np.pad(data, (0, size - data.size)))
  return [json.loads(bytes(row).rstrip(b"\0")) for row in np.asarray(padded)]


def agree_max(value: int) -> int:
  """The largest of every process's `value`: one decision all processes take alike."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int64(value))))


def primary_first(make, name: str):
  """`make()` on process 0, then on the others once it is done (what process 0 writes to a
  shared folder, such as the prepared data, the others then read): returns its result."""
  if jax.process_count() == 1:
    return make()
  result = make() if is_primary() else None
  multihost_utils.sync_global_devices(f"unigrpo_jax:{name}")
  return result if is_primary() else make()
