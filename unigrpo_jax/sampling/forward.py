"""Model calls placed at layout slots: the one place that turns slots into masks and positions.

`guided_velocity` is the image velocity with optional classifier-free guidance: the
unconditional branch sees no prompt or text slot (only image blocks), which is what SFT's
condition dropout trains (`sft.cfg_dropout`).

Rollout, teacher-forced scoring and training all go through these two functions, so the
attention each token sees is built the same way everywhere (which is what makes recomputed
log-probs equal the rollout's).
"""
import jax
import jax.numpy as jnp

from unigrpo_jax.model import IMAGE, TEXT, StackParams, run_blocks
from unigrpo_jax.model.masks import attention_mask, positions


def run_slots(model, params: StackParams, h, start, valid, block_ids, prompt_mask, cache=None,
              route=TEXT):
  """Runs the block stack on inputs h (B, T, width) placed at slots [start, start + T).

  valid: (B, L) slot visibility (the inputs' own slots included); block_ids: (L,) int32;
  prompt_mask: (B, P) for positions; cache: read-only, in the form of `params`
  (`StackParams.empty_cache`), or None when the inputs are the whole sequence (start = 0,
  T = L). Returns (h, cache) with the inputs' keys/values.
  """
  slots = start + jnp.arange(h.shape[1])
  mask = attention_mask(slots, valid, block_ids)
  if cache is None:
    mask = jax.lax.dynamic_slice_in_dim(mask, start, h.shape[1], axis=2)
  return run_blocks(model, params, h, positions(slots, prompt_mask), mask, cache, start,
                    route=route)


def image_velocity(model, params: StackParams, x, t, start, valid, block_ids, prompt_mask, cache):
  """Velocity of the noised image x (B, S, S, C) at flow time t (scalar or (B,)), its block at
  `start`.

  The block sees the cached context before it and itself (bidirectionally); the cache with the
  block written in is dropped, so nothing else ever sees a noised image. Returns (B, S, S, C) float32.
  """
  b = x.shape[0]
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
  h = model.apply({"params": params.tree}, x, t, method=model.embed_image)
  n = h.shape[1]
  block_valid = jax.lax.dynamic_update_slice(valid, jnp.ones((b, n), bool), (0, start))
  h, _ = run_slots(model, params, h, start, block_valid, block_ids, prompt_mask, cache,
                   route=IMAGE)
  return model.apply({"params": params.tree}, h, x, t, method=model.velocity)


def unconditional(valid, block_ids):
  """valid with every prompt and text slot hidden: only image blocks stay visible."""
  return valid & (block_ids >= 0)[None]


def guided_velocity(model, params: StackParams, x, t, start, valid, block_ids, prompt_mask, cache,
                    scale: float):
  """v_u + scale·(v_c − v_u); scale = 1 is the plain conditional velocity, one forward pass
  (UniGRPO's setting: no CFG). Shapes as `image_velocity`."""
  v = image_velocity(model, params, x, t, start, valid, block_ids, prompt_mask, cache)
  if scale == 1.0:
    return v
  v_u = image_velocity(model, params, x, t, start, unconditional(valid, block_ids), block_ids,
                       prompt_mask, cache)
  return v_u + scale * (v - v_u)
