"""Where training numbers go: TensorBoard scalars (`event_file`) and a JSON-lines log, one
record per logged step, under a stage's folder; and the whole JSON files a run writes (results,
the config it ran with). The JSON lines are what scripts and tests read back; TensorBoard is
for people. With several processes only process 0 writes."""
import json
import os

import numpy as np

from unigrpo_jax import distributed
from unigrpo_jax.event_file import EventFile


class MetricWriter:
  """write(step, {name: scalar}) → `<logdir>/events.*` and `<logdir>/metrics.jsonl`; with
  several processes, process 0 writes and the others' writers do nothing."""

  def __init__(self, logdir: str):
    self.active = distributed.is_primary()
    if self.active:
      os.makedirs(logdir, exist_ok=True)
      self.summary = EventFile(logdir)
      path = os.path.join(logdir, "metrics.jsonl")
      _drop_torn_line(path)
      self.lines = open(path, "a")

  def write(self, step: int, scalars: dict):
    if not self.active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self.summary.write(int(step), scalars)
    self.lines.write(json.dumps(dict(step=int(step), **scalars)) + "\n")
    self.lines.flush()

  def close(self):
    if self.active:
      self.summary.close()
      self.lines.close()


def write_json(path: str, value):
  """Writes `value` as indented JSON to `path` (making its folder) in one step — a reader never
  sees half a file; with several processes, process 0 writes."""
  if not distributed.is_primary():
    return
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def read(logdir: str) -> list[dict]:
  """The records `MetricWriter` wrote to `logdir`, in order. A last line without its newline
  is a record still being written (or cut by a killed writer) and is left out."""
  with open(os.path.join(logdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]


def _drop_torn_line(path: str) -> None:
  """Cuts `path` back to its last newline: a writer killed mid-record leaves part of a line,
  which the resumed run's first record would otherwise be appended to."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)
