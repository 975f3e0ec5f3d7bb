"""Grouped-query attention over a fixed-length KV cache.

Every forward call (a prompt prefill, one decode token, a noised image block, a whole
teacher-forced sequence) writes its T keys/values into the layer's cache at a slot offset and
attends over the whole cache under a boolean mask, so one code path serves decoding, image
denoising and training, and all shapes stay static. The cache layout is (B, K, L, D): heads
before slots, what the score and value contractions read without a transpose. Writing before
reading is also what lets XLA update a decode loop's cache in place.
"""
import jax
import jax.numpy as jnp


def write(cache, new, index):
  """Writes new keys or values (B, T, K, D) into a cache (B, K, L, D) at slots [index, index+T)."""
  return jax.lax.dynamic_update_slice(cache, jnp.swapaxes(new, 1, 2).astype(cache.dtype),
                                      (0, 0, index, 0))


def attend(q, k, v, mask):
  """Masked softmax attention with grouped KV heads.

  q: (B, T, H, D); k, v: (B, K, L, D) with H a multiple of K; mask: (B, T, L) bool.
  Scores and softmax in float32. A query whose whole row is masked (a padding slot) gets a
  uniform average instead of NaN; its output is never used.
  Returns (B, T, H, D) in q's dtype.
  """
  b, t, h, d = q.shape
  kv_heads = k.shape[1]
  q = q.reshape(b, t, kv_heads, h // kv_heads, d) * jnp.asarray(d ** -0.5, q.dtype)
  scores = jnp.einsum("btkgd,bkld->bkgtl", q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bkgtl,bkld->btkgd", probs, v).reshape(b, t, h, d)
