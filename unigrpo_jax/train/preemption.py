"""Preemption: SIGTERM (what a TPU VM or a scheduler sends before taking the machine) and
SIGINT turn into a request that the training loop honours between steps — it finishes the step
in flight, writes a checkpoint at that step and raises `Preempted`, which `main` reports with
where it saved. A second signal while one is pending gets the default behaviour (Ctrl-C twice
stops at once).
"""
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """A stage stopped on a signal after checkpointing; `exit_code` is 128 + the signal number,
  the shell's convention for "stopped by a signal", so `main && next` does not go on."""

  def __init__(self, signum: int, stage: str, step: int, total: int, directory: str):
    self.exit_code = 128 + signum
    super().__init__(f"preempted by {signal.Signals(signum).name} in stage {stage} at step "
                     f"{step}/{total}: checkpoint saved in {directory}/{step}; run the same "
                     f"command again to resume")


class Guard:
  """`with Guard() as guard:` catches SIGTERM/SIGINT; `guard.signum` is the first one caught
  (None if none). Outside the main thread (where handlers cannot be set) it never fires."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
