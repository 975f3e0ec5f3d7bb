"""The multi-process runtime as one process sees it (the identity of its one-process meaning),
its config checks, and the local launcher's command lines and exit status. Several real
processes: tests/e2e/test_multihost.py."""
import signal
import sys

import jax
import numpy as np
import pytest

from unigrpo_jax import distributed, launch_local, sharding


@pytest.mark.parametrize("fields, message", [
    (dict(num_processes=-1), r"config\.distributed\.num_processes must be >= 0"),
    (dict(num_processes=2), r"config\.distributed\.coordinator_address must be host:port"),
    (dict(num_processes=2, coordinator_address="127.0.0.1:1234", process_id=2),
     r"config\.distributed\.process_id must be in \[0, 2\)"),
    (dict(heartbeat_timeout_s=0), r"config\.distributed\.heartbeat_timeout_s must be >= 1"),
])
def test_bad_distributed_config_names_its_field(fields, message):
  with pytest.raises(ValueError, match=message):
    distributed.DistributedSpec(**fields)


def test_one_process_holds_every_row_and_gathers_are_identities():
  mesh = sharding.make_mesh({"data": -1})
  assert sharding.local_rows(mesh, 8 * mesh.size) == slice(0, 8 * mesh.size)
  rows = np.arange(12.0).reshape(6, 2)
  assert distributed.gather_rows({"a": rows})["a"] is rows
  assert distributed.gather_objects([["x", 1]]) == [[["x", 1]]]
  assert distributed.agree_max(3) == 3 and distributed.is_primary()
  placed = sharding.shard_batch((rows, np.arange(3.0)), mesh, 6)
  np.testing.assert_array_equal(sharding.host_rows(placed[0]), rows)
  assert placed[1].sharding.is_fully_replicated
  distributed.initialize(distributed.DistributedSpec())  # one process: nothing to join
  assert jax.process_count() == 1


def test_launcher_commands_and_worst_exit_status():
  cmds = launch_local.commands(["--config=c.py", "--workdir=w"], 2, 4321)
  assert [c[:4] for c in cmds] == [[sys.executable, "-u", "-m", "unigrpo_jax.main"]] * 2
  assert cmds[1][4:] == ["--config=c.py", "--workdir=w",
                         "--config.distributed.coordinator_address=127.0.0.1:4321",
                         "--config.distributed.num_processes=2",
                         "--config.distributed.process_id=1"]
  env = launch_local.environment(4)
  assert "--xla_force_host_platform_device_count=4" in env["XLA_FLAGS"].split()
  assert env["JAX_PLATFORMS"] == "cpu"
  assert launch_local.exit_status([0, 0]) == 0
  assert launch_local.exit_status([0, 143, 1]) == 143
  assert launch_local.exit_status([-signal.SIGKILL, 0]) == 128 + signal.SIGKILL
