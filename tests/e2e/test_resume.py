"""A real training subprocess (`main`, the tiny GRPO run of tests/e2e/fault_config.py) stopped by
kill -9 or SIGTERM, resumed over a damaged checkpoint, fed NaN rewards: nothing lost, and a
resumed run equals one that never stopped, bit for bit — its moving average and its refreshed
reference too. The two stops (SIGTERM, then kill -9 past a damaged checkpoint) are one run's:
each test reads its stop, and both the run's end."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import ROOT, checkpoint_steps, truncate_files
from unigrpo_jax import metric_writer

# Real training subprocesses; the module's runs share one data folder and one reference run.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]

STEPS = 24


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def command(workdir, data_dir, variant=""):
  return [sys.executable, "-m", "unigrpo_jax.main",
          f"--config=tests/e2e/fault_config.py{':' + variant if variant else ''}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]


def env():
  return dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests", "e2e"))


def run(workdir, data_dir, variant=""):
  return subprocess.run(command(workdir, data_dir, variant), cwd=ROOT, env=env(),
                        capture_output=True, text=True, timeout=600, check=False)


def start_and_signal(workdir, data_dir, signum, at_step):
  """Starts the run, sends `signum` once it has logged step `at_step`; returns the process."""
  proc = subprocess.Popen(command(workdir, data_dir), cwd=ROOT, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  log = workdir / "grpo" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if log.exists() and logged_steps(workdir) and max(logged_steps(workdir)) >= at_step:
      proc.send_signal(signum)
      break
    time.sleep(0.01)
  out, err = proc.communicate(timeout=300)
  proc.stdout_text, proc.stderr_text = out, err
  return proc


def logged_steps(workdir):
  return [r["step"] for r in metric_writer.read(str(workdir / "grpo"))
          if "reward/brightness" in r]


def rewards_by_step(workdir):
  """{step: reward}; a step logged twice (redone after a resume) must have logged the same."""
  out = {}
  for r in metric_writer.read(str(workdir / "grpo")):
    if "reward/brightness" in r:
      assert out.setdefault(r["step"], r["reward/brightness"]) == r["reward/brightness"], r
  return out


def saved_state(workdir, step):
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(workdir / "grpo" / "checkpoints" / str(step) / "state")
  finally:
    checkpointer.close()


def assert_same_state(a, b):
  flat_a, flat_b = _flatten(a), _flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for name in flat_a:
    np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=name)


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}
  if isinstance(tree, (list, tuple)):
    return {k: v for i, sub in enumerate(tree) for k, v in _flatten(sub, f"{prefix}/{i}").items()}
  return {prefix: np.asarray(tree)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  out = run(workdir, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def test_uninterrupted_run_updates_every_step(uninterrupted):
  """The comparison below means something: every step has non-zero advantages and applies
  its update."""
  assert sorted(rewards_by_step(uninterrupted)) == list(range(1, STEPS + 1))
  records = [r for r in metric_writer.read(str(uninterrupted / "grpo"))
             if "advantage/abs_mean" in r]
  assert len(records) == STEPS and all(r["advantage/abs_mean"] > 0 for r in records)
  assert all(r["advantage/abs_mean"] > 0.1 for r in records[2:])  # once the images differ
  assert int(saved_state(uninterrupted, STEPS)["step"]) == STEPS


def test_moving_average_is_what_the_run_saves_and_the_reference_is_refreshed(uninterrupted):
  """The saved parameters are the moving average (not the policy); the reference at the end
  is the policy of step 21, written where the last checkpoint's host state says."""
  final = saved_state(uninterrupted, STEPS)
  checkpointer = ocp.StandardCheckpointer()
  try:
    saved = checkpointer.restore(uninterrupted / "grpo" / "params")
    snapshot = checkpointer.restore(uninterrupted / "grpo" / "references" / "21")
  finally:
    checkpointer.close()
  assert_same_state(saved, final["ema"])
  policy, average = _flatten(final["params"]), _flatten(final["ema"])
  assert any(not np.array_equal(policy[k], average[k]) for k in policy)
  with open(uninterrupted / "grpo" / "checkpoints" / str(STEPS) / "host" / "metadata") as f:
    assert json.load(f)["reference"] == str(uninterrupted / "grpo" / "references" / "21")
  assert_same_state(snapshot, saved_state(uninterrupted, 21)["params"])
  # The kept checkpoints (21 and 24) both need the snapshot of step 21; the older ones went.
  assert sorted(int(p.name) for p in (uninterrupted / "grpo" / "references").iterdir()) == [21]


class Preempted(NamedTuple):
  """One run stopped twice, then finished (`preempted`): what each stop left behind."""
  workdir: pathlib.Path
  sigterm: subprocess.Popen  # the first process, stopped by SIGTERM after step 5
  stopped_at: int  # its last logged step
  stop_checkpoints: list  # the checkpoint steps it left
  trained_before_stop: float  # the training time its checkpoint recorded
  kill_9: subprocess.Popen  # the second process (resumed), killed by SIGKILL after step 10
  killed_at: int
  kill_checkpoints: list  # the checkpoint steps it left (the newest then damaged)
  resumed: subprocess.CompletedProcess  # the third, run to the end


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, data_dir):
  """The run stopped by SIGTERM, resumed and stopped by kill -9, its newest checkpoint
  damaged, and resumed to the end: one sequence serves both stops' tests."""
  workdir = tmp_path_factory.mktemp("preempted")
  sigterm = start_and_signal(workdir, data_dir, signal.SIGTERM, at_step=5)
  stopped_at, stop_checkpoints = max(logged_steps(workdir)), checkpoint_steps(workdir)
  with open(workdir / "grpo" / "checkpoints" / str(stopped_at) / "host" / "metadata") as f:
    trained_before_stop = json.load(f)["train_s"]
  kill_9 = start_and_signal(workdir, data_dir, signal.SIGKILL, at_step=10)
  killed_at, kill_checkpoints = max(logged_steps(workdir)), checkpoint_steps(workdir)
  # Damage the newest checkpoint's train state.
  truncate_files(workdir / "grpo" / "checkpoints" / str(kill_checkpoints[-1]) / "state")
  return Preempted(workdir, sigterm, stopped_at, stop_checkpoints, trained_before_stop, kill_9,
                   killed_at, kill_checkpoints, run(workdir, data_dir))


def test_sigterm_stops_after_the_step_in_flight_with_a_checkpoint_there(preempted,
                                                                      uninterrupted):
  proc, stopped_at = preempted.sigterm, preempted.stopped_at
  assert proc.returncode == 128 + signal.SIGTERM, proc.stderr_text[-3000:]
  assert stopped_at < 10  # before the kill below
  assert preempted.stop_checkpoints[-1] == stopped_at, (
      preempted.stop_checkpoints, proc.stderr_text[-3000:])
  checkpoints = preempted.workdir / "grpo" / "checkpoints"
  assert (f"preempted by SIGTERM in stage grpo at step {stopped_at}/{STEPS}: checkpoint saved in "
          f"{checkpoints}/{stopped_at}") in proc.stderr_text
  assert "Traceback" not in proc.stderr_text
  assert preempted.trained_before_stop > 0
  # Resumed from there (and past the kill below), it ends in the uninterrupted run's state.
  out = preempted.resumed
  assert out.returncode == 0, out.stderr[-3000:]
  assert_same_state(saved_state(preempted.workdir, STEPS), saved_state(uninterrupted, STEPS))
  assert rewards_by_step(preempted.workdir) == rewards_by_step(uninterrupted)
  # The stage's training time counts every process.
  with open(preempted.workdir / "grpo" / "results.json") as f:
    assert json.load(f)["train_s"] > preempted.trained_before_stop


def test_kill_9_then_damaged_latest_checkpoint_resumes_to_the_uninterrupted_result(
    preempted, uninterrupted):
  assert preempted.kill_9.returncode == -signal.SIGKILL
  assert preempted.killed_at < STEPS, "the run finished before it was killed"
  saved = preempted.kill_checkpoints
  # max_to_keep is 2, but Orbax removes the oldest step only after the newest is committed:
  # a kill -9 between the two leaves three. Either way there is one to fall back to.
  assert len(saved) in (2, 3) and saved[-1] <= preempted.killed_at
  out = preempted.resumed
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"checkpoint step {saved[-1]} in" in out.stderr and "damaged" in out.stderr
  assert_same_state(saved_state(preempted.workdir, STEPS), saved_state(uninterrupted, STEPS))
  assert rewards_by_step(preempted.workdir) == rewards_by_step(uninterrupted)


def test_nan_reward_skips_those_updates_counts_them_and_goes_on(tmp_path, data_dir):
  out = run(tmp_path, data_dir, "nan")
  assert out.returncode == 0, out.stderr[-3000:]
  records = {r["step"]: r for r in metric_writer.read(str(tmp_path / "grpo"))
             if "faults/skipped" in r}
  assert [records[s]["faults/skipped"] for s in range(1, 9)] == [0, 1, 1, 0, 0, 0, 0, 0]
  assert records[8]["faults/skipped_total"] == 2
  assert "update skipped (non-finite rewards ['flaky'])" in out.stderr
  assert int(saved_state(tmp_path, 8)["step"]) == 6  # 8 steps, 2 updates skipped


def test_nan_every_step_stops_the_run_with_the_last_good_state_saved(tmp_path, data_dir):
  out = run(tmp_path, data_dir, "always_nan")
  assert out.returncode == 1
  assert ("stopped at step 3: 3 updates in a row skipped (config.faults.max_skipped_in_a_row "
          "= 3), the last for non-finite rewards ['always_nan']") in out.stderr
  assert checkpoint_steps(tmp_path)[-1] == 3
  assert int(saved_state(tmp_path, 3)["step"]) == 0  # nothing applied: the initial state
