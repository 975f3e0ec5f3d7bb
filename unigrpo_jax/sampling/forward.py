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
              route=TEXT, modality=None, pos=None):
  """Runs the block stack on inputs h (B, T, width) placed at slots [start, start + T).

  valid: (B, L) slot visibility (the inputs' own slots included); block_ids: (L,) int32;
  prompt_mask: (B, P) for positions; cache: read-only, in the form of `params`
  (`StackParams.empty_cache`), or None when the inputs are the whole sequence (start = 0,
  T = L). route / modality: as `UnifiedTransformer.__call__`; pos: (B, T) RoPE positions
  (default: the slot index minus the row's left padding). Returns (h, cache) with the inputs'
  keys/values.
  """
  slots = start + jnp.arange(h.shape[1])
  mask = attention_mask(slots, valid, block_ids)
  if cache is None:
    mask = jax.lax.dynamic_slice_in_dim(mask, start, h.shape[1], axis=2)
  pos = positions(slots, prompt_mask) if pos is None else pos
  return run_blocks(model, params, h, pos, mask, cache, start, modality=modality, route=route)


def image_velocity(model, params: StackParams, x, t, start, valid, block_ids, prompt_mask, cache,
                   markers: tuple[int, int] | None = None, position=None):
  """Velocity of the noised image x (B, H, W, C) at flow time t (scalar or (B,)), its block at
  `start`.

  The block sees the cached context before it and itself (bidirectionally); the cache with the
  block written in is dropped, so nothing else ever sees a noised image. With `markers`
  (start, end token ids: `RolloutSpec.image_block` "bagel") the block is Bagel's generation
  query: the start marker, the image's tokens and the end marker, all at one RoPE position —
  `position` (B,), by default the number of visible slots before the block (what it is when
  the context is text) — the markers through the text weights.
  Returns (B, H, W, C) float32.
  """
  b = x.shape[0]
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
  h = model.apply({"params": params.tree}, x, t, method=model.embed_image)
  route, modality, pos = IMAGE, None, None
  if markers is not None:
    ends = model.apply({"params": params.tree}, jnp.broadcast_to(jnp.asarray(markers), (b, 2)),
                       method=model.embed_tokens)
    h = jnp.concatenate([ends[:, :1], h, ends[:, 1:]], axis=1)
    modality = jnp.full(h.shape[:2], IMAGE).at[:, 0].set(TEXT).at[:, -1].set(TEXT)
    route = None
    if position is None:
      position = jnp.sum(valid & (jnp.arange(valid.shape[1]) < start)[None], axis=1,
                         dtype=jnp.int32)
    pos = jnp.broadcast_to(position[:, None], h.shape[:2])
  n = h.shape[1]
  block_valid = jax.lax.dynamic_update_slice(valid, jnp.ones((b, n), bool), (0, start))
  h, _ = run_slots(model, params, h, start, block_valid, block_ids, prompt_mask, cache,
                   route=route, modality=modality, pos=pos)
  if markers is not None:
    h = h[:, 1:-1]
  return model.apply({"params": params.tree}, h, x, t, method=model.velocity)


def image_context(valid, spec):
  """valid (B, L) as an image block of `spec` (a RolloutSpec) reads it: without the prompt's
  slots when `spec.image_reads_prompt` is off."""
  if spec.image_reads_prompt:
    return valid
  return hide_prompt(valid, spec.prompt_len)


def hide_prompt(valid, prompt_len: int):
  """valid (B, L) with the first `prompt_len` slots (the prompt's) hidden."""
  return valid & (jnp.arange(valid.shape[1]) >= prompt_len)[None]


def unconditional(valid, block_ids):
  """valid with every prompt and text slot hidden: only image blocks stay visible."""
  return valid & (block_ids >= 0)[None]


def guided_velocity(model, params: StackParams, x, t, start, valid, block_ids, prompt_mask, cache,
                    scale: float, markers: tuple[int, int] | None = None):
  """v_u + scale·(v_c − v_u); scale = 1 is the plain conditional velocity, one forward pass
  (UniGRPO's setting: no CFG). Shapes and `markers` as `image_velocity`."""
  v = image_velocity(model, params, x, t, start, valid, block_ids, prompt_mask, cache, markers)
  if scale == 1.0:
    return v
  v_u = image_velocity(model, params, x, t, start, unconditional(valid, block_ids), block_ids,
                       prompt_mask, cache)
  return v_u + scale * (v - v_u)
