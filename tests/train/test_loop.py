"""The end of a training step (`train/loop.finish_step`): checkpoints on the cadence, and a stop
on a signal always leaves a checkpoint of the step it names — whenever the signal lands."""
import signal

import jax.numpy as jnp
import pytest

from unigrpo_jax.checkpoint import Checkpoints
from unigrpo_jax.train import loop
from unigrpo_jax.train.faults import SkipCounter
from unigrpo_jax.train.preemption import Guard, Preempted


class SignalOnSecondRead(Guard):
  """A guard whose signal lands just after the loop first looks at it: the first read of
  `signum` sees none, every later read sees SIGTERM."""

  def __init__(self):
    super().__init__()
    self._reads = 0

  @property
  def signum(self):
    self._reads += 1
    return None if self._reads == 1 else signal.SIGTERM

  @signum.setter
  def signum(self, value):
    del value


def finish(step, checkpoints, guard, total=10):
  loop.finish_step(step, total, stage="grpo", state={"w": jnp.full((3,), float(step))},
                   host={"step": step}, checkpoints=checkpoints, guard=guard,
                   skips=SkipCounter(max_in_a_row=3))


def test_a_signal_landing_mid_step_stops_at_a_step_that_is_saved(tmp_path):
  checkpoints = Checkpoints(str(tmp_path), every=3, max_to_keep=2)
  finish(1, checkpoints, Guard())  # the first step is always saved
  guard = SignalOnSecondRead()
  finish(2, checkpoints, guard)  # off the cadence, no signal seen yet: goes on, saves nothing
  checkpoints.wait()
  assert checkpoints.steps() == [1]
  with pytest.raises(Preempted, match=r"at step 4/10: checkpoint saved in .*/4;"):
    finish(4, checkpoints, guard)  # the signal is seen: step 4 is saved though off the cadence
  assert Checkpoints(str(tmp_path), every=3, max_to_keep=2).steps() == [1, 4]


def test_steps_on_the_cadence_and_the_last_are_saved(tmp_path):
  checkpoints = Checkpoints(str(tmp_path), every=3, max_to_keep=5)
  for step in range(1, 11):
    finish(step, checkpoints, Guard())
  checkpoints.close()
  assert checkpoints.steps() == [1, 3, 6, 9, 10]
