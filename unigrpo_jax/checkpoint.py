"""Checkpoints: Orbax `CheckpointManager` for a stage's train state and data position, and
parameters-only checkpoints for handing a model from one stage to the next.

A stage checkpoint holds `state` (the TrainState: step, parameters, optimizer state) and
`host` (JSON: the Grain iterator's position, the PRNG key, the skip counters, where the
reference model comes from, the config) under `<dir>/<step>/`, written asynchronously every
`every` steps, the newest `max_to_keep` kept. Orbax does not fall back from a damaged
checkpoint by itself: `restore_latest` walks the steps newest first, warns naming each one it
cannot read, and raises if none can — it never starts fresh over a folder that holds
checkpoints. A readable checkpoint of a different tree (another model) is an error naming the
difference, not damage. Only Orbax reads parameters (nothing is unpickled).
"""
import os

from absl import logging
import jax
import orbax.checkpoint as ocp

from unigrpo_jax import distributed


class CheckpointError(RuntimeError):
  """No checkpoint in a folder that holds some could be read, or a path holds the wrong tree."""


def abstract(tree):
  """ShapeDtypeStructs (with shardings) of a pytree: a restore target that allocates nothing."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _leaves(tree) -> dict:
  """{"a/b/0": (shape, dtype)} of a pytree, or of Orbax's metadata tree of a saved one."""
  def name(key):
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {"/".join(name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def tree_difference(expected, found, limit: int = 5) -> str:
  """What differs between two trees' array names and shapes ("" if nothing): the expected
  tree is `expected` (arrays or ShapeDtypeStructs), `found` a saved tree's metadata."""
  want, have = _leaves(expected), _leaves(found)
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  shapes = [f"{k}: expected {want[k][0]} {want[k][1]}, found {have[k][0]} {have[k][1]}"
            for k in sorted(set(want) & set(have)) if want[k][0] != have[k][0]]
  parts = [f"{what} ({len(names)}): {names[:limit]}" for what, names in
           (("missing", missing), ("unexpected", extra), ("different shapes", shapes)) if names]
  return "; ".join(parts)


class Checkpoints:
  """A stage's checkpoints in `directory`: save(step, state, host_state), restore_latest."""

  def __init__(self, directory: str, *, every: int, max_to_keep: int):
    if every < 1 or max_to_keep < 1:
      raise ValueError(f"checkpoint.every ({every}) and checkpoint.max_to_keep "
                       f"({max_to_keep}) must be >= 1")
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=every,
            enable_async_checkpointing=True),
        # Named handlers let a fresh manager read a step's metadata before any restore.
        item_handlers=dict(state=ocp.StandardCheckpointHandler(),
                           host=ocp.JsonCheckpointHandler()))

  def save(self, step: int, state, host_state: dict, *, force: bool = False) -> bool:
    """Starts writing (asynchronously) when `step` is on the cadence or `force`."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host_state)), force=force)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, target):
    """(step, state, host_state) of the newest readable checkpoint, or None if there is none.

    target: the state's abstract tree (`abstract(state)`), which fixes dtypes and shardings.
    Damaged checkpoints are skipped with a warning naming their step; one that reads but
    holds another tree raises CheckpointError naming the difference."""
    steps, causes = self.steps(), []
    for step in reversed(steps):
      try:
        found = self.manager.item_metadata(step)["state"].tree
      except Exception:  # unreadable metadata is damage: the restore below names it
        found = None
      if found is not None and (difference := tree_difference(target, found)):
        raise CheckpointError(f"checkpoint step {step} in {self.directory} holds a different "
                              f"train state than this config builds — {difference}")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()))
        cause = None
      except Exception as e:  # Orbax raises many kinds on damage; name the step, try older
        cause = f"step {step}: {type(e).__name__}: {str(e)[:200]}"
      # Every process falls back alike: a step is used only if all of them could read it.
      if distributed.agree_max(cause is not None):
        causes.append(cause or f"step {step}: damaged where another process reads it")
        logging.warning("checkpoint step %d in %s is damaged and cannot be read (%s); trying "
                        "an older one", step, self.directory, causes[-1])
        continue
      return step, restored["state"], restored["host"]
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} can be "
                            f"read ({'; '.join(causes)}); refusing to start fresh over them "
                            f"(move the folder away to start over)")
    return None

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def save_params(path: str, params):
  """Writes a parameters-only checkpoint (blocking): what the next stage starts from."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), params, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def load_params(path: str, target):
  """Reads a parameters-only checkpoint into `target`'s structure (abstract or concrete).
  A missing path, something that is not an Orbax checkpoint, or a different tree is a
  CheckpointError naming what was expected and what was found."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"parameters checkpoint {path} does not exist (expected an Orbax "
                          f"checkpoint folder, e.g. <workdir>/sft/params)")
  checkpointer = ocp.StandardCheckpointer()
  try:
    try:
      found = checkpointer.metadata(path).item_metadata.tree
    except Exception as e:  # not a checkpoint at all: say what is there
      raise CheckpointError(f"{path} is not a readable Orbax checkpoint (it holds "
                            f"{sorted(os.listdir(path))[:8]}; {type(e).__name__}: "
                            f"{str(e)[:200]})") from e
    if difference := tree_difference(target, found):
      raise CheckpointError(f"parameters checkpoint {path} does not hold the configured "
                            f"model's {len(jax.tree.leaves(target))} arrays — {difference}")
    return checkpointer.restore(path, abstract(target))
  finally:
    checkpointer.close()
