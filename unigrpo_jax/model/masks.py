"""Attention masks of the unified model (Bagel / Transfusion rules) and RoPE positions.

Rules, for a query slot q and a key slot k:
  * k must hold something (`kv_valid`: padding and masked text slots hold nothing);
  * causal across the sequence (k ≤ q) ...
  * ... except inside an image block, which is bidirectional (same block id ≥ 0);
  * a *noised* image block is never written to the cache, so nothing else can see it — the
    masks need no extra rule for that, only callers that keep noised keys out of the cache.
"""
import jax.numpy as jnp


def attention_mask(query_slots, kv_valid, block_ids):
  """Boolean attention mask.

  query_slots: (T,) int slot index of each query (may be traced);
  kv_valid: (B, L) bool, which cache slots hold a visible token;
  block_ids: (L,) int32 image-block id per slot, −1 outside images.
  Returns (B, T, L) bool.
  """
  keys = jnp.arange(block_ids.shape[0])
  causal = keys[None, :] <= query_slots[:, None]
  q_block = jnp.asarray(block_ids)[query_slots]
  same_block = (q_block[:, None] >= 0) & (jnp.asarray(block_ids)[None, :] == q_block[:, None])
  return kv_valid[:, None, :] & (causal | same_block)[None]


def positions(query_slots, prompt_mask):
  """RoPE positions: the slot index minus the row's left padding.

  query_slots: (T,) int; prompt_mask: (B, P) bool. Returns (B, T) int32.
  """
  pad = prompt_mask.shape[1] - jnp.sum(prompt_mask, axis=1, dtype=jnp.int32)
  return (query_slots[None, :] - pad[:, None]).astype(jnp.int32)
