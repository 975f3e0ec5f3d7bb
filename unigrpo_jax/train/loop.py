"""What every training loop does around its steps: where it starts (the newest readable
checkpoint, or a fresh start), the host state a checkpoint carries beside the train state, the
stage's training time summed over resumes, and the end of a step — checkpoint on the cadence,
and stop cleanly (after a checkpoint at that step) on a signal or after too many skipped
updates.
"""
import dataclasses
import time

import jax
import numpy as np

from unigrpo_jax import distributed
from unigrpo_jax.checkpoint import Checkpoints
from unigrpo_jax.train.faults import SkipCounter
from unigrpo_jax.train.preemption import Guard, Preempted


@dataclasses.dataclass
class Start:
  """Where a stage's loop begins. step: the first step to run; state: the restored train state
  (None on a fresh start: the stage makes its own); key: the loop's PRNG key; skips: the skip
  counter; host: the restored host state (None on a fresh start)."""
  step: int
  state: object
  key: jax.Array
  skips: SkipCounter
  host: dict | None

  @property
  def resumed(self) -> bool:
    return self.host is not None


def start(checkpoints: Checkpoints, abstract_state, data, *, max_skipped_in_a_row: int,
          fresh_key) -> Start:
  """Resumes from the newest readable checkpoint in `checkpoints` (restoring the data
  iterator's position, the skip counts and the key), or starts fresh at step 0 with
  `fresh_key`. abstract_state: the TrainState's ShapeDtypeStructs with shardings."""
  restored = checkpoints.restore_latest(abstract_state)
  skips = SkipCounter(max_skipped_in_a_row)
  if restored is None:
    return Start(0, None, fresh_key, skips, None)
  step, state, host = restored
  data.set_state(host["data"])
  skips.restore(host["skips"])
  return Start(step, state, restore_key(host), skips, host)


def host_state(config, *, data: dict, key, skips: SkipCounter, clock: "TrainClock",
               **extra) -> dict:
  """JSON of what is not on the device: the data position, the loop's PRNG key, the skip
  counters, the training seconds so far, the config that wrote it, and any `extra` (e.g. where
  the reference comes from)."""
  return dict(data=data, key=np.asarray(jax.random.key_data(key)).tolist(),
              skips=skips.state(), train_s=clock.seconds(), config=config.to_dict(), **extra)


class TrainClock:
  """Seconds a stage has spent in its loop, over every process that ran it: a resumed run
  starts from the `train_s` its checkpoint's host state carries (0 for a fresh run)."""

  def __init__(self, host: dict | None = None):
    self._before = float((host or {}).get("train_s", 0.0))
    self._start = time.time()

  def seconds(self) -> float:
    return self._before + time.time() - self._start


def restore_key(host: dict):
  """The PRNG key a checkpoint's host state carries."""
  return jax.random.wrap_key_data(np.asarray(host["key"], np.uint32))


def finish_step(step: int, total: int, *, stage: str, state, host: dict,
                checkpoints: Checkpoints, guard: Guard, skips: SkipCounter):
  """Saves step `step` when it is on the cadence — always at the last step, on a signal, or
  when the skips run out — then raises `Preempted` or `NonFiniteError` if the loop must stop."""
  out_of_skips = skips.in_a_row >= skips.max_in_a_row
  # Read once (a signal may arrive at any line, and the step it stops at must be saved), and
  # agreed by every process: a signal to any one stops them all after this step.
  signum = distributed.agree_max(guard.signum or 0) or None
  stop = signum is not None or out_of_skips
  saved = checkpoints.save(step, state, host, force=stop or step == total)
  if stop:
    checkpoints.close()
    if not saved or step not in checkpoints.steps():
      raise RuntimeError(f"stopping at step {step}, but no checkpoint of it is in "
                         f"{checkpoints.directory}")
  if signum is not None:
    raise Preempted(signum, stage, step, total, checkpoints.directory)
  if out_of_skips:
    raise skips.error(step, f"{checkpoints.directory}/{step}")
