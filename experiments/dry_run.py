r"""Dry run of a pod-scale config: per-device memory, built abstractly — `jax.eval_shape`
parameters on an AbstractMesh of `config.pod.num_devices` chips, sharded by the same rules as
any run; nothing is allocated, so this runs on a laptop in seconds. Prints JSON: bytes (and
GiB) per device of parameters, optimizer state, the frozen reference and the rollout's KV
cache, and the parameter count both from the built tree and from `ModelSpec.param_count`'s
formula.

  python experiments/dry_run.py --config=configs/qwen2_5.py:7b
"""
import json

from absl import app
import jax
from jax.sharding import AbstractMesh
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import sharding
from unigrpo_jax.model import ModelSpec, count_params, init_params, param_logical_axes
from unigrpo_jax.optim import OptimizerSpec, make_optimizer, train_state_shardings
from unigrpo_jax.sampling import RolloutSpec

_CONFIG = config_flags.DEFINE_config_file("config", "configs/qwen2_5.py:7b", "Config.")
GIB = 2.0**30


def main(argv):
  del argv
  cfg = _CONFIG.value
  spec = ModelSpec(**cfg.model)
  devices = cfg.pod.num_devices
  mesh = AbstractMesh(sharding.mesh_shape(cfg.mesh, devices), sharding.MESH_AXES)
  shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  param_sh = sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
  params = sharding.with_shardings(shapes, param_sh)
  optimizer = make_optimizer(OptimizerSpec(**cfg.rl_optim))
  state_sh = train_state_shardings(optimizer, params, param_sh, mesh)
  opt_state = sharding.with_shardings(jax.eval_shape(optimizer.init, shapes),
                                       state_sh.opt_state)
  reference = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, spec.dtype,
                                                          sharding=p.sharding), params)
  rollout = RolloutSpec.from_config(cfg.rollout, cfg.tokens)
  rows = cfg.rl.prompts_per_batch * cfg.rl.group_size
  sharding.check_batch(mesh, rows, cfg.rl.group_size)
  # K and V of every layer over the whole sequence; rows split over the data axes, kv heads
  # over tensor (when they divide).
  length = rollout.layout(spec).length
  kv_shards = mesh.shape["tensor"] if spec.num_kv_heads % mesh.shape["tensor"] == 0 else 1
  kv_bytes = (2 * spec.depth * rows * length * spec.num_kv_heads * spec.head_dim
              * np.dtype(spec.dtype).itemsize / (mesh.shape["data"] * mesh.shape["fsdp"])
              / kv_shards)
  per_device = dict(params=sharding.bytes_per_device(params),
                    optimizer=sharding.bytes_per_device(opt_state),
                    reference=sharding.bytes_per_device(reference),
                    rollout_kv_cache=int(kv_bytes))
  per_device["total"] = sum(per_device.values())
  print(json.dumps(dict(
      devices=devices, mesh=dict(mesh.shape),
      parameters=count_params(shapes),
      parameters_by_formula=spec.param_count(),
      rollout_rows=rows, sequence_length=length, bytes_per_device=per_device,
      gib_per_device={k: round(v / GIB, 4) for k, v in per_device.items()},
      embedding_sharding=str(param_sh["embed"]["embedding"].spec)), indent=1))


if __name__ == "__main__":
  app.run(main)
