"""The state every training stage updates, and how: `TrainState`, the optimizer built from an
`OptimizerSpec` (`config.sft_optim`, `config.rl_optim`), the optimizer step that is skipped
when anything is non-finite, and the state's shardings. The SFT and GRPO steps both build on
it; it knows nothing of either.
"""
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

SCHEDULES = ("constant", "cosine")
# What `OptimizerSpec.frozen` can name: the token embedding, every RMSNorm scale (block, q/k and
# final norms), the untied LM head, the image position table.
FROZEN_KINDS = ("embeddings", "norms", "head", "positions")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # optimizer steps taken
  params: dict
  opt_state: optax.OptState
  ema: dict | None = None  # the parameters' moving average (`ema.py`), None when off


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """One optimizer section of the config. schedule: "constant" (linear warm-up over
  `warmup_steps`, then `learning_rate`) or "cosine" (warm-up, then a cosine decay to 0 at
  `total_steps`); AdamW's b1, b2, eps, weight_decay; global-norm clipping at `grad_clip`;
  image_lr_scale: the image side's learning rate relative to the text side's (1 = one rate);
  frozen: kinds of parameters left as they are (`FROZEN_KINDS`; UniRL's UniGRPO on Bagel
  freezes embeddings, norms and head): no update, no weight decay, their moments at zero, and
  their gradients kept out of the clipping norm."""
  learning_rate: float
  schedule: str
  warmup_steps: int
  total_steps: int
  b1: float
  b2: float
  eps: float
  weight_decay: float
  grad_clip: float
  image_lr_scale: float = 1.0
  frozen: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "frozen", tuple(self.frozen))
    unknown = sorted(set(self.frozen) - set(FROZEN_KINDS))
    if unknown:
      raise ValueError(f"optim.frozen names {unknown}; known kinds: {FROZEN_KINDS}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optim.schedule {self.schedule!r} is not 'constant' or 'cosine'")
    if self.schedule == "cosine" and not 0 <= self.warmup_steps < self.total_steps:
      raise ValueError(f"optim.warmup_steps {self.warmup_steps} must be in "
                       f"[0, total_steps = {self.total_steps}) for the cosine schedule")
    if self.image_lr_scale <= 0:
      raise ValueError(f"optim.image_lr_scale must be positive, got {self.image_lr_scale}")


def image_parameters(params):
  """Pytree of bools: True for the image side of the model — the MoT image weight set and the
  patch embedding, time embedding, image norm and velocity head."""
  def is_image(path, _):
    names = [getattr(k, "key", None) for k in path]
    return names[0] in ("image_in", "image_norm", "image_out") or names[:2] == ["layers",
                                                                                "image"]
  return jax.tree_util.tree_map_with_path(is_image, params)


def frozen_parameters(params, kinds: tuple[str, ...]):
  """Pytree of bools: True for the parameters of the `FROZEN_KINDS` in `kinds`."""
  def is_frozen(path, _):
    names = [getattr(k, "key", None) for k in path]
    return (("embeddings" in kinds and names[0] == "embed")
            or ("head" in kinds and names[0] == "lm_head")
            or ("positions" in kinds and names[-1] == "pos_table")
            or ("norms" in kinds and names[-1] == "scale"
                and any(str(n).endswith("norm") for n in names[:-1])))
  return jax.tree_util.tree_map_with_path(is_frozen, params)


def make_optimizer(spec: OptimizerSpec) -> optax.GradientTransformation:
  """AdamW with global-norm clipping, the schedule of `spec`, and the image side's learning
  rate scaled by `spec.image_lr_scale` (`image_parameters`)."""
  if spec.schedule == "constant":
    lr = optax.join_schedules([optax.linear_schedule(0.0, spec.learning_rate,
                                                     spec.warmup_steps),
                               optax.constant_schedule(spec.learning_rate)],
                              [spec.warmup_steps]) if spec.warmup_steps else spec.learning_rate
  else:
    lr = optax.warmup_cosine_decay_schedule(0.0, spec.learning_rate, spec.warmup_steps,
                                            spec.total_steps)
  scale = spec.image_lr_scale
  # Frozen parameters: their gradients zeroed before the clip (out of its norm; their moments
  # stay zero) and their updates zeroed after AdamW (no weight decay either).
  freeze = ([optax.masked(optax.set_to_zero(),
                          lambda params: frozen_parameters(params, spec.frozen))]
            if spec.frozen else [])
  return optax.chain(
      *freeze,
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay),
      *([optax.masked(optax.scale(scale), image_parameters)] if scale != 1.0 else []),
      *freeze)


def init_train_state(params, optimizer, ema: bool = False) -> TrainState:
  """Step 0: `params`, the optimizer's fresh state, and (with `ema`) an average that starts
  as `params`."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    ema=jax.tree.map(jnp.copy, params) if ema else None)


def apply_if_finite(state: TrainState, grads, loss, optimizer) -> tuple[TrainState, dict]:
  """One optimizer step, or none: if the loss or any gradient is non-finite the state comes
  back unchanged (parameters, moments and step), so a NaN reward or an overflow costs one
  batch, not the run. Returns (state, metrics) with `grad_norm` and `skipped` (1.0 if
  skipped); the training loop counts the skips (`train/faults.py`)."""
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  stepped = state.replace(step=state.step + 1,
                          params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
  return state, {"grad_norm": grad_norm, "skipped": 1.0 - finite.astype(jnp.float32)}


def train_state_shardings(optimizer, params_shapes, param_shardings, mesh,
                          ema: bool = False) -> TrainState:
  """Shardings of a TrainState: optimizer moments (and the average, with `ema`) sharded like
  their parameters, counters replicated. params_shapes may be ShapeDtypeStructs (nothing is
  allocated)."""
  replicated = NamedSharding(mesh, P())
  opt_shapes = jax.eval_shape(optimizer.init, params_shapes)
  opt = optax.tree_map_params(optimizer, lambda _, sharding: sharding, opt_shapes,
                              param_shardings, transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt,
                    ema=param_shardings if ema else None)
