"""Checkpoints: Orbax `CheckpointManager` for a stage's train state and data position, and
parameters-only checkpoints for handing a model from one stage to the next.

A stage checkpoint holds `state` (the TrainState: step, parameters, optimizer state) and
`data` (the Grain iterator's state, JSON) under `<dir>/<step>/`, written asynchronously every
`every` steps, the newest `max_to_keep` kept. Orbax does not fall back from a damaged
checkpoint by itself: `restore_latest` walks the steps newest first, warns naming each one it
cannot read, and raises if none can — it never starts fresh over a folder that holds
checkpoints. Only Orbax reads parameters (nothing is unpickled).
"""
import os

from absl import logging
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No checkpoint in a folder that holds some could be read, or a path holds the wrong tree."""


def abstract(tree):
  """ShapeDtypeStructs (with shardings) of a pytree: a restore target that allocates nothing."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
  """A stage's checkpoints in `directory`: save(step, state, data_state), restore_latest."""

  def __init__(self, directory: str, *, every: int, max_to_keep: int):
    if every < 1 or max_to_keep < 1:
      raise ValueError(f"checkpoint.every ({every}) and checkpoint.max_to_keep "
                       f"({max_to_keep}) must be >= 1")
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=every,
            enable_async_checkpointing=True))

  def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
    """Starts writing (asynchronously) when `step` is on the cadence or `force`."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, target):
    """(step, state, data_state) of the newest readable checkpoint, or None if there is none.

    target: the state's abstract tree (`abstract(state)`), which fixes dtypes and shardings.
    Damaged checkpoints are skipped with a warning naming their step."""
    steps = self.steps()
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      except Exception as e:  # Orbax raises many kinds on damage; name the step, try older
        logging.warning("checkpoint step %d in %s cannot be read (%s: %s); trying an older one",
                        step, self.directory, type(e).__name__, str(e)[:200])
        continue
      return step, restored["state"], restored["data"]
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} can be "
                            f"read; refusing to start fresh over them (move the folder away "
                            f"to start over)")
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
  A missing path or a different tree is a CheckpointError naming both."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"parameters checkpoint {path} does not exist")
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(path, abstract(target))
  except (ValueError, KeyError) as e:
    raise CheckpointError(f"parameters checkpoint {path} does not hold the expected tree "
                          f"({len(jax.tree.leaves(target))} arrays of the configured model): "
                          f"{str(e)[:500]}") from e
  finally:
    checkpointer.close()
