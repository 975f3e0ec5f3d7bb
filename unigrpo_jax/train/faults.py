"""Numerical faults in a training loop: counting the updates skipped for a non-finite loss,
gradient or reward (the step itself leaves the state unchanged: `optim.apply_if_finite`),
and stopping the run when too many come in a row.

The counts are host state: they go into every checkpoint and come back on resume.
"""
import dataclasses

from absl import logging


class NonFiniteError(RuntimeError):
  """Too many updates in a row were skipped; the last good state has been checkpointed."""


@dataclasses.dataclass
class SkipCounter:
  """Skipped updates of a stage: `total` over the run, `in_a_row` now. `max_in_a_row` is
  `config.faults.max_skipped_in_a_row`."""
  max_in_a_row: int
  total: int = 0
  in_a_row: int = 0
  cause: str = ""

  def __post_init__(self):
    if self.max_in_a_row < 1:
      raise ValueError(f"config.faults.max_skipped_in_a_row must be >= 1, got "
                       f"{self.max_in_a_row}")

  def record(self, step: int, skipped: bool, cause: str = ""):
    """Counts one step's outcome; the loop stops once `in_a_row` reaches `max_in_a_row`."""
    if not skipped:
      self.in_a_row = 0
      return
    self.total += 1
    self.in_a_row += 1
    self.cause = cause or "a non-finite loss or gradient"
    logging.warning("step %d: update skipped (%s); %d skipped so far, %d in a row", step,
                    self.cause, self.total, self.in_a_row)

  def error(self, step: int, where: str) -> NonFiniteError:
    return NonFiniteError(
        f"stopped at step {step}: {self.in_a_row} updates in a row skipped "
        f"(config.faults.max_skipped_in_a_row = {self.max_in_a_row}), the last for "
        f"{self.cause}; the last good state is checkpointed in {where}")

  def state(self) -> dict:
    return dict(total=self.total, in_a_row=self.in_a_row)

  def restore(self, state: dict):
    self.total, self.in_a_row = int(state["total"]), int(state["in_a_row"])
