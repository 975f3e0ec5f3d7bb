"""Sharded = unsharded (rollout, GRPO update, LoRA update, SFT step) on a one-block model, and the
mesh / batch validation rules."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from helpers import env_with_devices, tiny_spec
from unigrpo_jax import sharding
from unigrpo_jax.model import init_params, param_logical_axes

HERE = os.path.dirname(os.path.abspath(__file__))


MESHES = [{"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": -1}]


@pytest.fixture(scope="module")
def sharded_results():
  """One subprocess: the single-device reference once, then each mesh of MESHES."""
  env = dict(env_with_devices(8), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(HERE, "sharded_check.py"),
                        json.dumps(MESHES)], capture_output=True, text=True, env=env,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  return [json.loads(line) for line in out.stdout.strip().splitlines()[-len(MESHES):]]


@pytest.mark.slow
@pytest.mark.xdist_group("sharded")
@pytest.mark.parametrize("index", range(len(MESHES)))
def test_sharded_rollout_and_update_equal_single_device(sharded_results, index):
  result = sharded_results[index]
  assert result["mesh"] == dict(zip(sharding.MESH_AXES,
                                    sharding.mesh_shape(MESHES[index], 8)))
  assert result["param_shards"] == 8  # the parameters really are spread over the mesh
  assert result["bytes_mesh"] < result["bytes_one"] / 2
  assert result["update_size"] > 1e-4  # the update moved the parameters
  assert result["trajectory"] < 1e-5
  # Sampled from the parameters gathered over fsdp (tensor splits kept): the same trajectory.
  assert result["gathered_trajectory"] < 1e-5
  assert "'fsdp'" in result["placed_sharding"]
  assert result["gathered_sharding"] == result["placed_sharding"].replace("'fsdp'", "None")
  # Adam divides each gradient by its running RMS, so float32 reduction-order differences
  # (a sum over 8 devices vs one) reach the parameters at ~0.1–0.3 % of the update (seen:
  # 1.2e-5 of 4e-3); a sharding bug (a reduction over the wrong devices) moves them by
  # O(update), and a wrongly scaled gradient shows in the metrics (its norm).
  assert result["params"] < 5e-3 * result["update_size"]
  assert result["metrics"] < 1e-5
  # The SFT step: same rules, same numbers, and the state stays in its shardings.
  assert result["sft_update_size"] > 1e-4
  assert result["sft_params"] < 1e-5 and result["sft_metrics"] < 1e-4
  assert result["sft_kept_sharding"]
  # LoRA adapters over the frozen base: the same rule, and the adapters spread over the mesh.
  assert result["lora_update_size"] > 1e-4
  assert result["lora_params"] < 5e-3 * result["lora_update_size"]
  assert result["lora_metrics"] < 1e-5
  assert result["lora_bytes_mesh"] < result["lora_bytes_one"] / 2


@pytest.mark.parametrize("config,devices,message", [
    ({"data": 4, "fsdp": 4}, 8, r"needs 16 devices but 8 are available"),
    ({"data": 3, "fsdp": -1}, 8, r"do not divide the 8 available devices"),
    ({"data": -1, "fsdp": -1}, 8, r"at most one axis may be -1"),
    ({"pipeline": 2}, 8, r"unknown axes \['pipeline'\]"),
    ({"tensor": 0}, 8, r"config\.mesh\.tensor must be positive"),
])
def test_mesh_that_does_not_fit_fails_clearly(config, devices, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(config, devices)


def test_mesh_shape_fills_the_rest():
  assert sharding.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
  assert sharding.mesh_shape({"fsdp": -1}, 8) == (1, 8, 1)


def test_gathering_over_fsdp_keeps_every_other_split():
  mesh = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
  P = jax.sharding.PartitionSpec
  for spec, gathered in [(P(None, "fsdp"), P(None, None)),
                         (P("fsdp", "tensor"), P(None, "tensor")),
                         (P(("data", "fsdp"), None), P("data", None)),
                         (P(("fsdp", "tensor")), P("tensor")), (P(), P())]:
    found = sharding.without_axis(jax.sharding.NamedSharding(mesh, spec), "fsdp")
    assert found.spec == gathered and found.mesh == mesh, (spec, found.spec)
  # Nothing to gather on a mesh whose fsdp axis is one device: the same arrays come back.
  params = {"w": jax.device_put(jnp.ones((4, 2)), jax.sharding.NamedSharding(
      sharding.make_mesh({"data": 1}), P("fsdp", None)))}
  assert sharding.gathered(params) is params
  unplaced = {"w": jnp.ones((4, 2))}  # on one device, not on a mesh
  assert sharding.gathered(unplaced) is unplaced


def test_batch_must_hold_whole_groups_and_split_over_data_axes():
  mesh = sharding.make_mesh({"data": 1})
  with pytest.raises(ValueError, match=r"batch_size 6 is not a multiple of rl\.group_size 4"):
    sharding.check_batch(mesh, 6, 4)
  sharding.check_batch(mesh, 8, 4)
  mesh8 = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
  with pytest.raises(ValueError, match=r"does not divide over the mesh's data axes"):
    sharding.check_batch(mesh8, 6, 2)


def test_parameter_that_does_not_divide_is_named():
  spec = tiny_spec(vocab_size=47)
  mesh = jax.sharding.AbstractMesh((1, 1, 2), sharding.MESH_AXES)
  shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  with pytest.raises(ValueError, match=r"\['embed'\]\['embedding'\] of shape \(47, 32\)"):
    sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
