"""The same job on several real processes (JAX's multi-controller runtime on this machine's CPU,
Gloo collectives, `unigrpo_jax.launch_local`'s command lines): 2 processes × 2 devices train
exactly as 1 process × 4 devices, and a NaN reward on one process skips the update on all; a
SIGTERM to one process stops both at one step with a checkpoint; a process killed outright
makes the other exit within the heartbeat bound; after both, over a damaged newest
checkpoint, the run resumes to the one-process result, bit for bit. The two-process run is
that one run, stopped twice and resumed (`preempted`); each test reads what it checks.

The one-process run is a one-process distributed runtime (`launch_local --num_processes=1`): its
collectives are Gloo's, as in the two-process run, so the two agree bit for bit. XLA's
in-process all-reduce (a plain one-process run) sums in another order: the last bits of each
reduction differ, and Adam carries that into the parameters (docs/multihost.md).

Four devices in all: every device is a Gloo rank talking over local TCP, so eight would cost
the tests more than they add."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import ROOT, checkpoint_steps, truncate_files
from unigrpo_jax import launch_local, metric_writer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multihost")]

CONFIG = "tests/e2e/multihost_config.py"
DEVICES = 4


def env(devices):
  out = launch_local.environment(devices)
  out["PYTHONPATH"] = os.path.join(ROOT, "tests", "e2e")
  return out


def flags(workdir, data_dir):
  return [f"--config={CONFIG}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]


def start_two(workdir, data_dir):
  """The two processes `launch_local` would start, as Popen objects the test can signal."""
  cmds = launch_local.commands(flags(workdir, data_dir), 2, launch_local.free_port())
  return [subprocess.Popen(cmd, cwd=ROOT, env=env(DEVICES // 2), text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE) for cmd in cmds]


def finish(procs, timeout=900):
  """Waits for every process: [(returncode, stderr)]."""
  errors = [p.communicate(timeout=timeout)[1] for p in procs]
  return [(p.returncode, err) for p, err in zip(procs, errors)]


def launch(workdir, data_dir, processes=2):
  """The launcher itself, to the end: `processes` processes sharing `DEVICES` devices."""
  return subprocess.run([sys.executable, "-m", "unigrpo_jax.launch_local",
                         f"--num_processes={processes}",
                         f"--devices_per_process={DEVICES // processes}", "--",
                         *flags(workdir, data_dir)],
                        cwd=ROOT, env=env(DEVICES // processes), capture_output=True, text=True,
                        timeout=900, check=False)


def load_params(path):
  """A parameters (or train state) checkpoint written by any number of processes, read onto
  one device."""
  checkpointer = ocp.StandardCheckpointer()
  found = checkpointer.metadata(str(path)).item_metadata.tree
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), found)
  return jax.tree.map(np.asarray, checkpointer.restore(str(path), target))


def assert_same_params(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(load_params(a)),
                          jax.tree.leaves(load_params(b))):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def without_times(results):
  """results.json less what measures time."""
  if isinstance(results, dict):
    return {k: without_times(v) for k, v in results.items() if not k.endswith("_s")}
  return results


def logged(workdir, stage="grpo"):
  return [r for r in metric_writer.read(str(workdir / stage)) if "reward/combined" in r
          or "faults/skipped" in r]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def one(tmp_path_factory, data_dir):
  """The job as one process × 4 devices, never stopped."""
  workdir = tmp_path_factory.mktemp("one")
  out = launch(workdir, data_dir, processes=1)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def signal_at(procs, workdir, step, act):
  """Calls act(procs) once both processes' run has logged GRPO step `step`; returns when it
  did (None if the run ended first)."""
  deadline = time.time() + 600
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if (workdir / "grpo" / "metrics.jsonl").exists() and any(
        r["step"] >= step for r in logged(workdir)):
      act(procs)
      return time.time()
    time.sleep(0.05)
  return None


class Preempted(NamedTuple):
  """The job as two processes × 2 devices, stopped twice and resumed (`preempted`)."""
  workdir: pathlib.Path
  sigterm: list  # [(returncode, stderr)] of the processes stopped by SIGTERM
  stopped: int  # the last step they logged
  stop_checkpoints: list  # the checkpoint steps they left
  killed: list  # [(returncode, stderr)] of the resumed processes, process 1 killed
  killed_s: float | None  # seconds from the kill to the survivor's exit (None: no kill)
  kill_checkpoints: list  # the checkpoint steps they left (the newest then damaged)
  resumed: subprocess.CompletedProcess  # the launcher, run to the end over the damage


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, data_dir):
  """SIGTERM to process 1 after GRPO step 3; resumed, process 1 killed outright two steps
  later; the newest checkpoint damaged; resumed by the launcher to the end."""
  workdir = tmp_path_factory.mktemp("two")
  procs = start_two(workdir, data_dir)
  assert signal_at(procs, workdir, 3, lambda ps: ps[1].send_signal(signal.SIGTERM))
  sigterm = finish(procs)
  stopped, stop_checkpoints = max(r["step"] for r in logged(workdir)), checkpoint_steps(workdir)
  procs = start_two(workdir, data_dir)
  killed_at = signal_at(procs, workdir, stopped + 2, lambda ps: ps[1].kill())
  killed = finish(procs[:1])
  killed_s = None if killed_at is None else time.time() - killed_at
  killed += finish(procs[1:])
  kill_checkpoints = checkpoint_steps(workdir)
  # Damage the newest checkpoint's train state: both processes must fall back to the same
  # older one.
  truncate_files(workdir / "grpo" / "checkpoints" / str(kill_checkpoints[-1]) / "state")
  return Preempted(workdir, sigterm, stopped, stop_checkpoints, killed, killed_s,
                   kill_checkpoints, launch(workdir, data_dir))


def test_two_processes_train_exactly_as_one_and_skip_a_nan_on_one_alike(one, preempted):
  two, out = preempted.workdir, preempted.resumed
  assert out.returncode == 0, out.stderr[-3000:]
  # Every process logs through the launcher with its index; process 0 alone writes outputs.
  assert "[0] == stage sft" in out.stdout and "[1] == stage" not in out.stdout
  for stage in ("sft", "grpo"):
    assert_same_params(one / stage / "params", two / stage / "params")
  with open(one / "results.json") as f, open(two / "results.json") as g:
    assert without_times(json.load(f)) == without_times(json.load(g))
  # A reward NaN in process 1 only, on the steps its data picks: both processes skip those
  # updates, as the one process does (a step redone after a resume logs the same again).
  skipped = {}
  for workdir in (one, two):
    records = {r["step"]: r for r in logged(workdir)}
    skipped[workdir] = [records[s]["faults/skipped"] for s in range(1, 9)]
    assert records[8]["faults/skipped_total"] == sum(skipped[workdir])
    state = load_params(workdir / "grpo" / "checkpoints" / "8" / "state")
    assert int(state["step"]) == 8 - sum(skipped[workdir])  # a skipped update applies nothing
  assert skipped[one] == skipped[two] and 0 < sum(skipped[one]) < 8, skipped
  errors = "".join(err for _, err in preempted.sigterm + preempted.killed) + out.stderr
  assert "update skipped (non-finite rewards ['flaky_on_last_process'])" in errors
  # Every reward figure, per prompt family too: the families are gathered in the rows' order.
  def rewards_of(workdir):
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("reward/")}
            for r in logged(workdir) if "reward/combined" in r}
  assert rewards_of(one) == rewards_of(two)
  assert all(any(k.count("/") == 2 for k in r) for r in rewards_of(two).values())
  assert len(rewards_of(two)) == 8 - sum(skipped[two])
  # GRPO moved the parameters (the brightness reward), so the equality above covers it too.
  sft, grpo = load_params(two / "sft" / "params"), load_params(two / "grpo" / "params")
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(sft), jax.tree.leaves(grpo)))


def test_a_run_stopped_by_sigterm_then_killed_past_a_damaged_checkpoint_resumes_exactly(
    one, preempted):
  # SIGTERM to one process: both stop after the same step, with a checkpoint there.
  (code0, err0), (code1, err1) = preempted.sigterm
  assert code0 == code1 == 128 + signal.SIGTERM, (err0[-2000:], err1[-2000:])
  stopped = preempted.stopped
  assert stopped <= 5  # room for the kill below before step 8
  message = f"preempted by SIGTERM in stage grpo at step {stopped}/8: checkpoint saved in "
  assert message in err0 and message in err1
  assert preempted.stop_checkpoints[-1] == stopped
  # Resumed, then one process killed outright: the other exits within the heartbeat bound.
  assert preempted.killed_s is not None, "the run ended before it was killed"
  (code0, err0), _ = preempted.killed
  # heartbeat_timeout_s is 10 in this config: the survivor exits well within a minute.
  assert preempted.killed_s < 60 and code0 != 0
  assert "another task died" in err0, err0[-2000:]
  # Past the damaged newest checkpoint, both processes fall back to the same older one.
  saved, out = preempted.kill_checkpoints, preempted.resumed
  assert len(saved) >= 2, saved
  assert out.returncode == 0, out.stderr[-3000:]
  for index in (0, 1):
    assert any(line.startswith(f"[{index}] [process {index}]")
               and f"checkpoint step {saved[-1]} in" in line and "damaged" in line
               for line in out.stderr.splitlines()), out.stderr[-3000:]
  assert_same_params(preempted.workdir / "grpo" / "params", one / "grpo" / "params")
