"""The GRPO step's per-device memory as XLA compiles it: the rollout and the update lowered on
abstract inputs (ShapeDtypeStructs carrying their shardings; nothing is allocated), compiled,
and read with XLA's memory analysis — arguments (parameters, optimizer state, reference,
batch), outputs, temporaries (activations, the KV cache) and the peak they make together.
The dry run of pod configs and the options experiment read it.
"""
from typing import Callable

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from unigrpo_jax import sharding
from unigrpo_jax.lora import LoRASpec, policy
from unigrpo_jax.rl import RLBatch
from unigrpo_jax.sampling import RolloutSpec


def analysis(compiled) -> dict:
  """Bytes per device of a compiled function: temp, argument, output, alias (outputs that
  reuse a donated argument's buffer) and peak (XLA's peak of live buffers; where a backend
  does not report it, argument + output − alias + temp, which bounds it)."""
  m = compiled.memory_analysis()
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output",
                                                              "alias")}
  out["peak"] = int(getattr(m, "peak_memory_in_bytes", 0)) or (
      out["argument"] + out["output"] - out["alias"] + out["temp"])
  return out


def grpo_step_memory(sample: Callable, update: Callable, spec: RolloutSpec, trained, state,
                     reference, lora: LoRASpec | None, rows: int, mesh,
                     gather: bool = False) -> dict:
  """Compiles one GRPO step's rollout and update for `mesh` and returns
  {"rollout": analysis, "update": analysis}.

  Args:
    sample: the jitted rollout (`make_rollout`).
    update: the jitted update (`make_update`): fn(state, reference, RLBatch).
    spec: the rollout's spec (prompt length, rounds).
    trained: abstract tree of what the state trains (parameters, or LoRA adapters).
    state: abstract TrainState over `trained`.
    reference: abstract frozen reference (with LoRA, the base the adapters sit on).
    lora: the adapters' spec when `trained` is adapters over `reference`, else None.
    rows: the RL batch's rows (prompts × group), split over the mesh's data axes.
    gather: the rollout samples from the parameters gathered over fsdp
      (`config.gather_rollout_params`): its arguments are the gathered copies.
  """
  by_rows = NamedSharding(mesh, P(("data", "fsdp")))
  replicated = NamedSharding(mesh, P())

  def abstract(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=by_rows if shape and shape[0] == rows
                                else replicated)

  prompts = abstract((rows, spec.prompt_len), np.int32)
  mask = abstract((rows, spec.prompt_len), bool)
  key = jax.eval_shape(lambda: jax.random.key(0))
  start = abstract((), np.int32)
  rollout = jax.jit(lambda t, r, p, m, k, w: sample(policy(t, r, lora), p, m, k, w))
  def placed(tree):
    return sharding.with_shardings(tree, sharding.gathered_shardings(tree)) if gather else tree
  lowered = rollout.lower(placed(trained), placed(reference), prompts, mask, key, start)
  traj = jax.tree.map(lambda x: abstract(x.shape, x.dtype), lowered.out_info)
  advantages = abstract((rows, spec.rounds), np.float32)
  return dict(rollout=analysis(lowered.compile()),
              update=analysis(update.lower(state, reference, RLBatch(
                  traj=traj, advantages=advantages)).compile()))
