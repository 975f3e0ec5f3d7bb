"""A tiny GRPO run (`main`, tests/e2e/fault_config.py) whose reward is served by a local server
process: with the rollout in two parts, each scored while the next samples, it trains exactly
as the in-process reward scored after sampling; a server killed mid-run turns its batches into
skipped, counted updates until the run stops with a checkpoint, and the same command resumes
once a server is back."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT
from test_multihost import assert_same_params
from unigrpo_jax import metric_writer
from unigrpo_jax.launch_local import free_port
from unigrpo_jax.rewards import client

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("served")]
PLUGINS = os.path.join(ROOT, "tests", "e2e")


def start_server():
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "unigrpo_jax.rewards.serve", "--reward=brightness",
       "--reward_modules=reward_plugins", f"--port={port}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=PLUGINS), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
  while True:
    try:
      client.health(url, 1.0)
      return url, proc
    except client.Unreachable:
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
      time.sleep(0.2)


def command(workdir, data_dir, variant, url=None):
  cmd = [sys.executable, "-m", "unigrpo_jax.main", f"--config=tests/e2e/fault_config.py:{variant}",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
  if url:
    cmd.append(f"--config.reward_servers={json.dumps({'brightness': url})}")
  return cmd


def run(*args, **kwargs):
  return subprocess.run(command(*args, **kwargs), cwd=ROOT, capture_output=True, text=True,
                        timeout=600, check=False, env=dict(os.environ, PYTHONPATH=PLUGINS))


def records(workdir):
  return [r for r in metric_writer.read(str(workdir / "grpo")) if "faults/skipped" in r]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def test_served_overlapped_run_equals_the_in_process_run_scored_after_sampling(
    tmp_path, data_dir):
  out = run(tmp_path / "in_process", data_dir, "chunked")
  assert out.returncode == 0, out.stderr[-3000:]
  url, server = start_server()
  try:
    out = run(tmp_path / "served", data_dir, "overlapped", url=url)
  finally:
    server.kill()
  assert out.returncode == 0, out.stderr[-3000:]
  keys = ("step", "reward/brightness", "reward/combined", "advantage/abs_mean")
  mine, theirs = records(tmp_path / "served"), records(tmp_path / "in_process")
  assert [[r[k] for k in keys] for r in mine] == [[r[k] for k in keys] for r in theirs]
  assert len(mine) == 8 and not any(r["faults/skipped"] for r in mine)
  assert_same_params(tmp_path / "served" / "grpo" / "params",
                     tmp_path / "in_process" / "grpo" / "params")


def test_update_per_part_overlapped_equals_scored_after_sampling_and_a_nan_part_skips(
    tmp_path, data_dir):
  """Each part's gradient taken as its rewards come in (`rl.update_per_part`): with the parts
  scored while the next samples, the same run as scoring after sampling; a part whose reward is
  NaN skips its step's update, although the other part's gradient was already taken."""
  outs = [subprocess.run(command(tmp_path / name, data_dir, "per_part")
                         + [f"--config.rl.overlap_rewards={name == 'overlapped'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                         env=dict(os.environ, PYTHONPATH=PLUGINS))
          for name in ("overlapped", "after")]
  for out in outs:
    assert out.returncode == 0, out.stderr[-3000:]
  keys = ("step", "reward/brightness", "reward/combined", "faults/skipped")
  mine, theirs = records(tmp_path / "overlapped"), records(tmp_path / "after")
  assert [[r.get(k) for k in keys] for r in mine] == [[r.get(k) for k in keys] for r in theirs]
  assert [r["step"] for r in mine if r["faults/skipped"]] == [1, 2]
  assert all("update/grad_norm" in r for r in mine if r["step"] in (4, 6, 8))
  assert_same_params(tmp_path / "overlapped" / "grpo" / "params",
                     tmp_path / "after" / "grpo" / "params")


def test_a_killed_server_skips_and_counts_then_the_run_resumes_with_a_new_one(
    tmp_path, data_dir):
  url, server = start_server()
  proc = subprocess.Popen(command(tmp_path, data_dir, "overlapped", url=url), cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=PLUGINS), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (tmp_path / "grpo" / "metrics.jsonl").exists() and any(
        r["step"] >= 2 for r in records(tmp_path)):
      server.kill()
      break
    time.sleep(0.02)
  killed_after = max(r["step"] for r in records(tmp_path))
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 1, err[-3000:]
  stopped = max(r["step"] for r in records(tmp_path))
  assert (f"stopped at step {stopped}: 3 updates in a row skipped "
          "(config.faults.max_skipped_in_a_row = 3), the last for non-finite rewards "
          "['brightness']") in err
  assert f"reward 'brightness': the server at {url} did not answer" in err
  skipped = {r["step"]: r["faults/skipped"] for r in records(tmp_path)}
  assert [skipped[s] for s in range(stopped - 2, stopped + 1)] == [1, 1, 1]
  assert stopped <= killed_after + 4
  url, server = start_server()  # a new server, on another port
  try:
    out = run(tmp_path, data_dir, "overlapped", url=url)
  finally:
    server.send_signal(signal.SIGTERM)
  assert out.returncode == 0, out.stderr[-3000:]
  after = [r for r in records(tmp_path) if r["step"] > stopped]
  assert [r["step"] for r in after] == list(range(stopped + 1, 9))
  assert all(np.isfinite(r["reward/brightness"]) and not r["faults/skipped"] for r in after)
  assert after[-1]["faults/skipped_total"] == 3
