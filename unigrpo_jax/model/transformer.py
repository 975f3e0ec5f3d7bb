"""The unified transformer: Qwen2 blocks over one text+image sequence, with optional MoT routing.

Pure functional Linen: `init_params(spec, key)` gives the parameter pytree and every call is
`model.apply({"params": params}, ..., method=...)`. The pieces a caller composes:

  * `embed_tokens(tokens)`, `embed_image(x, t)` — inputs to hidden states (B, T, width);
  * `__call__(h, positions, mask, cache, cache_index, ...)` — the block stack (scanned over
    layers), attending over a fixed-length KV cache; returns the new hidden states and the
    cache with the T inputs written in (the caller keeps it, or drops it for a noised image).
    Callers run it through `model/stack.py`, which also runs it as a loop over layers;
  * `logits(h)` (text expert's final norm + LM head) and `velocity(h, x, t)` (image expert's
    final norm + zero-initialised image head, read as a velocity or a clean image).

Mixture of transformers (Bagel): with `spec.mot`, each block holds a `text` and an `image`
weight set. Text and clean-image context tokens use `text`, noised image tokens use `image`,
attention is shared. `route=TEXT|IMAGE` picks one set statically (the rollout knows which
kind each call holds, so it pays for one set); `route=None` routes per token by `modality`.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from unigrpo_jax.model import attention
from unigrpo_jax.model.image import ImageEmbed, VelocityHead
from unigrpo_jax.model.layers import (DEFAULT_INIT, MLP, RMSNorm, Weights, fused_projection,
                                      param_init, project, rope)
from unigrpo_jax.model.matmul import dense_dot_general, matmul
from unigrpo_jax.model.spec import ModelSpec

TEXT, IMAGE = 0, 1  # modality ids; clean image context counts as TEXT (it uses the text expert)


def _dtypes(spec: ModelSpec):
  """Activation, parameter and matmul-operand dtypes (None: matmuls in the activation dtype)."""
  return jnp.dtype(spec.dtype), jnp.dtype(spec.param_dtype), spec.matmul_operand_dtype


class Expert(nn.Module):
  """One weight set of a block: norms, q/k/v/o projections (Qwen2: bias on q/k/v), SwiGLU."""
  spec: ModelSpec

  def setup(self):
    s = self.spec
    dtype, param_dtype, matmul_dtype = _dtypes(s)

    self.attn_norm = RMSNorm(s.norm_eps, dtype, param_dtype)
    self.q = Weights((s.width, s.num_heads, s.head_dim), ("embed", "heads", "head_dim"),
                     s.qkv_bias, param_dtype)
    self.k = Weights((s.width, s.num_kv_heads, s.head_dim), ("embed", "kv_heads", "head_dim"),
                     s.qkv_bias, param_dtype)
    self.v = Weights((s.width, s.num_kv_heads, s.head_dim), ("embed", "kv_heads", "head_dim"),
                     s.qkv_bias, param_dtype)
    self.o = Weights((s.num_heads, s.head_dim, s.width), ("heads", "head_dim", "embed"), False,
                     param_dtype, inputs=2)
    self.mlp_norm = RMSNorm(s.norm_eps, dtype, param_dtype)
    self.mlp = MLP(s.mlp_dim, dtype, param_dtype, matmul_dtype)
    if s.qk_norm:
      self.q_norm = RMSNorm(s.norm_eps, dtype, param_dtype, axis="head_dim")
      self.k_norm = RMSNorm(s.norm_eps, dtype, param_dtype, axis="head_dim")

  def qkv(self, h):
    """(B, T, width) → q (B, T, H, D), k and v (B, T, K, D), one matmul; with `qk_norm`, q
    and k are RMS-normalised per head (before RoPE, as Bagel and Qwen3 do)."""
    dtype, _, matmul_dtype = _dtypes(self.spec)
    q, k, v = fused_projection(self.attn_norm(h), [self.q(), self.k(), self.v()], dtype,
                               matmul_dtype)
    if self.spec.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    return q, k, v

  def out(self, a):
    """(B, T, H, D) attention output → (B, T, width)."""
    dtype, _, matmul_dtype = _dtypes(self.spec)
    return project(a, self.o(), dtype, matmul_dtype, contract=2)

  def ffn(self, h):
    return self.mlp(self.mlp_norm(h))


def _route(experts, route, modality, fn):
  """Applies `fn` with the expert chosen statically by `route`, or per token by `modality`."""
  if len(experts) == 1:
    return fn(experts[0])
  if route is not None:
    return fn(experts[route])
  is_image = modality == IMAGE

  def pick(text, image):
    return jnp.where(is_image.reshape(is_image.shape + (1,) * (text.ndim - 2)), image, text)

  return jax.tree.map(pick, fn(experts[TEXT]), fn(experts[IMAGE]))


class Block(nn.Module):
  """Pre-norm attention + SwiGLU block over a KV cache; `nn.scan`ned over layers."""
  spec: ModelSpec

  @nn.compact
  def __call__(self, h, kv, positions, mask, cache_index, modality, route):
    """h: (B, T, width); kv: this layer's cache, two (B, K, L, D), or None (then the T inputs
    are the whole sequence); mask: (B, T, L), or (B, T, T) without a cache.

    Returns (h, kv): the cache with the inputs' keys/values written at `cache_index`, or
    without a cache the inputs' own keys/values in cache layout (B, K, T, D).
    """
    s = self.spec
    experts = [Expert(s, name="text")] + ([Expert(s, name="image")] if s.mot else [])
    routed = lambda fn: _route(experts, route, modality, fn)  # noqa: E731
    q, k, v = routed(lambda e: e.qkv(h))
    q = rope(q, positions, s.rope_theta)
    k = rope(k, positions, s.rope_theta)
    if kv is None:
      kv = (jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2))
    else:
      kv = (attention.write(kv[0], k, cache_index), attention.write(kv[1], v, cache_index))
    a = attention.attend(q, kv[0], kv[1], mask)
    h = h + routed(lambda e: e.out(a))
    h = h + routed(lambda e: e.ffn(h))
    return h, kv


class UnifiedTransformer(nn.Module):
  """Text + flow-image transformer; see the module docstring for the call protocol."""
  spec: ModelSpec

  def setup(self):
    s = self.spec
    dtype, param_dtype, matmul_dtype = _dtypes(s)
    self.embed = nn.Embed(s.vocab_size, s.width, dtype=dtype, param_dtype=param_dtype,
                          embedding_init=param_init(DEFAULT_INIT, ("vocab", "embed")))
    self.image_in = ImageEmbed(s.width, s.patch_size, dtype, param_dtype, matmul_dtype,
                               s.time_scale, s.max_latent_size)
    self.image_out = VelocityHead(s.patch_size, s.image_channels, dtype, param_dtype,
                                  matmul_dtype)
    broadcast = (nn.broadcast,) * 5
    # The cache index and route are Python values the block branches on: static under remat.
    block = nn.remat(Block, prevent_cse=False, static_argnums=(5, 7)) if s.remat else Block
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0,) + broadcast, length=s.depth,
        metadata_params={nn.PARTITION_NAME: "layers"})(s)
    self.text_norm = RMSNorm(s.norm_eps, dtype, param_dtype)
    if s.mot:
      self.image_norm = RMSNorm(s.norm_eps, dtype, param_dtype)
    if not s.tie_embeddings:
      self.lm_head = nn.Dense(s.vocab_size, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                              dot_general=dense_dot_general(matmul_dtype),
                              kernel_init=param_init(DEFAULT_INIT, ("embed", "vocab")))

  def embed_tokens(self, tokens):
    """(B, T) int → (B, T, width)."""
    return self.embed(tokens)

  def embed_image(self, x, t):
    """(B, H, W, C) image at flow time t (B,) → (B, (H/p)·(W/p), width)."""
    return self.image_in(x, t)

  def __call__(self, h, positions, mask, cache=None, cache_index=0, modality=None, route=TEXT):
    """Runs the block stack.

    h: (B, T, width); positions: (B, T) int. Without a cache, the inputs are the whole
    sequence and mask is (B, T, T). With a cache (k, v), each (depth, B, K, L, D), the inputs
    sit at slots [cache_index, cache_index + T) and mask is (B, T, L) over all slots.
    `route`: TEXT, IMAGE, or None to route per token by `modality` (B, T).
    Returns (h, cache): the cache with the inputs written (the caller keeps it or drops it),
    or without a cache the inputs' keys/values as a (depth, B, K, T, D) cache.
    """
    return self.layers(h, cache, positions, mask, cache_index, modality, route)

  def logits(self, h):
    """(…, width) → (…, vocab) float32 text logits; with `spec.vocab_limit`, the rows from it
    on (a checkpoint's padding rows) at a finite −1e30: never drawn, probability 0."""
    h = self.text_norm(h)
    if not self.spec.tie_embeddings:
      logits = self.lm_head(h).astype(jnp.float32)
    else:
      dtype, _, matmul_dtype = _dtypes(self.spec)
      logits = matmul(h, self.embed.embedding.astype(dtype).T, matmul_dtype).astype(jnp.float32)
    if self.spec.vocab_limit:
      logits = jnp.where(jnp.arange(self.spec.vocab_size) < self.spec.vocab_limit, logits,
                         -1e30)
    return logits

  def velocity(self, h, x, t):
    """Hidden states (B, (H/p)·(W/p), width) of the image block for x_t (B, H, W, C) at flow
    time t (B,) → (B, H, W, C) float32 velocity (see `ModelSpec.prediction`)."""
    h = (self.image_norm if self.spec.mot else self.text_norm)(h)
    out = self.image_out(h, x.shape[1], x.shape[2]).astype(jnp.float32)
    if self.spec.prediction == "velocity":
      return out
    t = jnp.maximum(jnp.asarray(t, jnp.float32), self.spec.x0_min_time).reshape(-1, 1, 1, 1)
    return (x.astype(jnp.float32) - out) / t

  def init_all(self, tokens, image):
    """Touches every parameter once (text tokens followed by a noised image, routed per token)."""
    b, t = tokens.shape
    h_img = self.embed_image(image, jnp.ones((b,)))
    h = jnp.concatenate([self.embed_tokens(tokens), h_img], axis=1)
    n = h.shape[1]
    modality = jnp.concatenate([jnp.full((b, t), TEXT), jnp.full((b, n - t), IMAGE)], axis=1)
    mask = jnp.ones((b, n, n), bool)
    pos = jnp.broadcast_to(jnp.arange(n), (b, n))
    h, _ = self(h, pos, mask, modality=modality, route=None)
    return self.logits(h[:, :t]), self.velocity(h[:, t:], image, jnp.ones((b,)))


def _init_variables(spec: ModelSpec, key):
  model = UnifiedTransformer(spec)
  tokens = jnp.zeros((1, 2), jnp.int32)
  image = jnp.zeros((1,) + spec.image_shape, jnp.float32)
  return model.init(key, tokens, image, method=UnifiedTransformer.init_all)


@functools.partial(jax.jit, static_argnums=0)
def init_params(spec: ModelSpec, key):
  """Fresh parameters (plain arrays) for `spec`; jitted, since an eager `init` dispatches (and
  compiles) every initialiser op one by one."""
  return nn.meta.unbox(_init_variables(spec, key)["params"])


def count_params(params) -> int:
  """Values in a parameter tree (of arrays or of ShapeDtypeStructs)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def param_logical_axes(spec: ModelSpec):
  """Pytree of `PartitionSpec`s of logical axis names, matching `init_params` (no allocation)."""
  boxed = jax.eval_shape(lambda: _init_variables(spec, jax.random.key(0)))
  return nn.get_partition_spec(boxed)["params"]
