r"""Dry run of a pod-scale config: per-device memory, built abstractly — `jax.eval_shape`
parameters on an AbstractMesh of `config.pod.num_devices` chips, sharded by the same rules as
any run; nothing is allocated, so this runs on a laptop in seconds. Prints JSON: bytes (and
GiB) per device of parameters, optimizer state, the frozen reference and the rollout's KV
cache (and, for a latent model, the autoencoder, replicated), the parameter count both from the
built tree and from `ModelSpec.param_count`'s formula, and the FLOPs of one trajectory: the
prompt, every text slot, every flow step (`sampling/flops.py`) and, for a latent model, the
autoencoder's decode (XLA's cost analysis of the lowered decode).

  python experiments/dry_run.py --config=configs/qwen2_5.py:7b
  python experiments/dry_run.py --config=configs/bagel.py:7b      # also :7b_gpu

With `--compile` (and that many devices, e.g. fake CPU ones:
`XLA_FLAGS=--xla_force_host_platform_device_count=8`) the jitted rollout and update are also
lowered and compiled for the config's mesh on abstract inputs, and XLA's memory analysis of each
is added: per device, the temporaries (activations) besides its arguments and outputs. Minutes
of compile on a CPU; still nothing allocated. With `--num_processes=N` (the hosts of the slice),
per host as well: its devices' memory and the pixels of its rows that rewards read.
"""
import json

from absl import app, flags
import jax
from jax.sharding import AbstractMesh
from ml_collections import config_flags
import numpy as np

from unigrpo_jax import lora as lora_lib, memory, sharding
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.model import ModelSpec, count_params, init_params, param_logical_axes
from unigrpo_jax.model import autoencoder
from unigrpo_jax.model import UnifiedTransformer
from unigrpo_jax.optim import (OptimizerSpec, init_train_state, make_optimizer,
                               train_state_shardings)
from unigrpo_jax.rl import LossSpec, UpdateSpec, make_update
from unigrpo_jax.sampling import RolloutSpec, flops, make_rollout

_CONFIG = config_flags.DEFINE_config_file("config", "configs/qwen2_5.py:7b", "Config.")
_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Hosts the devices are spread over (one process each, e.g. a v5e-256 "
    "slice: 64 hosts × 4 chips): adds each host's share of device and host memory.",
    lower_bound=1)
_COMPILE = flags.DEFINE_bool("compile", False, "Also compile the rollout and the update on "
                             "this host's devices and report XLA's memory analysis.")
GIB = 2.0**30


def compiled_memory(cfg, spec: ModelSpec, rollout: RolloutSpec, optimizer,
                    lora: LoRASpec | None) -> dict:
  """XLA's per-device memory analysis of the rollout and the update, compiled for the config's
  mesh over this host's devices on abstract inputs (`memory.grpo_step_memory`)."""
  mesh = sharding.make_mesh(cfg.mesh)
  if mesh.size != cfg.pod.num_devices:
    raise SystemExit(f"--compile needs the config's {cfg.pod.num_devices} devices, this host "
                     f"has {mesh.size}: set XLA_FLAGS=--xla_force_host_platform_device_count="
                     f"{cfg.pod.num_devices}")
  model = UnifiedTransformer(spec)
  params, reference, trained = abstract_trees(spec, mesh, lora)
  state = jax.eval_shape(lambda p: init_train_state(p, optimizer), trained)
  state = sharding.with_shardings(state, train_state_shardings(
      optimizer, trained, jax.tree.map(lambda x: x.sharding, trained), mesh))
  update = make_update(model, rollout, LossSpec(**cfg.loss),
                       UpdateSpec(cfg.rl.num_updates, cfg.rl.num_minibatches, cfg.rl.group_size),
                       optimizer, lora=lora)
  return memory.grpo_step_memory(
      make_rollout(model, rollout, cfg.rl.group_size), update, rollout, trained, state,
      reference, lora, cfg.rl.prompts_per_batch * cfg.rl.group_size, mesh,
      gather=sharding.gathers_for_rollout(cfg))


def abstract_trees(spec: ModelSpec, mesh, lora: LoRASpec | None):
  """(params, reference, trained) as ShapeDtypeStructs with their shardings on `mesh`: the
  model's parameters; the frozen reference (the parameters in the model's dtype, or with LoRA
  the base in `lora.base_dtype`, which the adapters sit on: no second copy); what the
  optimizer trains (the parameters, or the adapters)."""
  shapes = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  param_sh = sharding.param_shardings(param_logical_axes(spec), mesh, shapes)
  params = sharding.with_shardings(shapes, param_sh)
  if lora is None:
    reference = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, spec.dtype,
                                                            sharding=p.sharding), params)
    return params, reference, params
  base = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, lora.base_dtype or p.dtype,
                                                     sharding=p.sharding), params)
  adapters = jax.eval_shape(lambda p: lora_lib.init_adapters(p, lora, jax.random.key(0)),
                            shapes)
  axes = lora_lib.adapter_logical_axes(param_logical_axes(spec), adapters)
  adapters = sharding.with_shardings(adapters, sharding.param_shardings(axes, mesh, adapters))
  return base, base, adapters


def host_memory(cfg, rollout: RolloutSpec, rows: int, device_total: int, devices: int,
                processes: int) -> dict:
  """Bytes one host holds: its devices' share (accelerator memory) and, in its own memory, the
  float32 pixels of its rows that rewards read (every round's image)."""
  if devices % processes:
    raise SystemExit(f"--num_processes={processes} does not divide the config's {devices} "
                     f"devices (config.pod.num_devices)")
  if rows % processes:
    raise SystemExit(f"--num_processes={processes} does not divide the RL batch of {rows} rows")
  pixels = (rows // processes) * rollout.rounds * cfg.data.size ** 2 * 3 * 4
  return dict(device_memory=device_total * (devices // processes), reward_pixels=pixels)


def main(argv):
  del argv
  cfg = _CONFIG.value
  spec = ModelSpec(**cfg.model)
  devices = cfg.pod.num_devices
  mesh = AbstractMesh(sharding.mesh_shape(cfg.mesh, devices), sharding.MESH_AXES)
  lora = lora_lib.configured(cfg.get("lora"))
  params, reference, trained = abstract_trees(spec, mesh, lora)
  optimizer = make_optimizer(OptimizerSpec(**cfg.rl_optim))
  state_sh = train_state_shardings(optimizer, trained,
                                   jax.tree.map(lambda x: x.sharding, trained), mesh)
  opt_state = sharding.with_shardings(jax.eval_shape(optimizer.init, trained),
                                       state_sh.opt_state)
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
  # With LoRA the reference is the frozen base itself: counted once, under params.
  per_device = dict(params=sharding.bytes_per_device(params),
                    **({} if lora is None else dict(adapters=sharding.bytes_per_device(trained))),
                    optimizer=sharding.bytes_per_device(opt_state),
                    reference=0 if lora else sharding.bytes_per_device(reference),
                    rollout_kv_cache=int(kv_bytes))
  if sharding.gathers_for_rollout(cfg):  # the rollout's copy, whole over fsdp
    policy = params if lora is None else (params, trained)
    per_device["rollout_params"] = sharding.bytes_per_device(
        sharding.with_shardings(policy, sharding.gathered_shardings(policy)))
  trajectory = dict(transformer=flops.rollout_flops(spec, rollout, 1))
  if "autoencoder" in cfg:
    ae_spec = autoencoder.AutoencoderSpec(**cfg.autoencoder)
    ae_shapes = jax.eval_shape(lambda: autoencoder.init_autoencoder(ae_spec,
                                                                    jax.random.key(0)))
    per_device["autoencoder"] = sharding.bytes_per_device(ae_shapes)
    trajectory["autoencoder_decode"] = autoencoder.decode_flops(ae_spec,
                                                                (1,) + spec.image_shape)
  trajectory["total"] = sum(trajectory.values())
  per_device["total"] = sum(per_device.values())
  per_host = host_memory(cfg, rollout, rows, per_device["total"], devices, _PROCESSES.value)
  compiled = compiled_memory(cfg, spec, rollout, optimizer, lora) if _COMPILE.value else None
  print(json.dumps(dict(
      devices=devices, mesh=dict(mesh.shape),
      parameters=count_params(params),
      **({} if lora is None else dict(adapter_parameters=count_params(trained))),
      parameters_by_formula=spec.param_count(),
      rollout_rows=rows, sequence_length=length, bytes_per_device=per_device,
      gib_per_device={k: round(v / GIB, 4) for k, v in per_device.items()},
      processes=_PROCESSES.value, devices_per_host=devices // _PROCESSES.value,
      bytes_per_host=per_host,
      gib_per_host={k: round(v / GIB, 4) for k, v in per_host.items()},
      trajectory_flops=trajectory,
      trajectory=dict(prompt_slots=rollout.prompt_len, text_slots=rollout.max_text_tokens,
                      flow_steps=rollout.num_steps, image_tokens=spec.image_tokens),
      embedding_sharding=str(params["embed"]["embedding"].sharding.spec),
      **({} if compiled is None else dict(compiled_bytes_per_device=compiled))), indent=1))


if __name__ == "__main__":
  app.run(main)
