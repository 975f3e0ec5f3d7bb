"""Bagel's vision encoder: SigLIP (NaViT positions) and the connector into the language model.

SigLIP as Bagel runs it: an image (B, H, W, C) in [−1, 1] is cut into p×p patches in raster
order (each patch's values in (row, column, channel) order), embedded by a linear layer, plus a
learned position embedding read at row·max_patches_per_side + col (so any h×w up to the
table's side); pre-norm encoder layers (LayerNorm → multi-head attention over the whole
image → residual; LayerNorm → fc1 → tanh-GELU → fc2 → residual); a final LayerNorm. The
connector maps the result to the language model's width (fc1 → tanh-GELU → fc2) and adds
Bagel's fixed sin-cos table (`vit_pos_embed`, same rows). The parameters are
{"siglip": …, "connector": …}; `convert/bagel.py` maps Bagel's names onto them.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from unigrpo_jax.model.image import patchify, sincos_2d, table_position_ids


@dataclasses.dataclass(frozen=True)
class VisionSpec:
  """SigLIP-so400m's sizes by default (as Bagel builds it: 26 of its 27 layers);
  `out_width` is the language model's width (the connector's output), 0 for none."""
  width: int = 1152
  depth: int = 26
  num_heads: int = 16
  mlp_dim: int = 4304
  patch_size: int = 14
  max_patches_per_side: int = 70
  channels: int = 3
  norm_eps: float = 1e-6
  out_width: int = 0
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("width", "depth", "num_heads", "mlp_dim", "patch_size",
                 "max_patches_per_side", "channels"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"vision.{name} must be a positive integer, got {value!r}")
    if self.width % self.num_heads:
      raise ValueError(f"vision.width ({self.width}) must be a multiple of vision.num_heads "
                       f"({self.num_heads})")

  @property
  def patch_dim(self) -> int:
    return self.patch_size * self.patch_size * self.channels


def _dense(features, spec, name):
  return nn.Dense(features, dtype=spec.dtype, name=name)


def _layer_norm(spec, name):
  return nn.LayerNorm(epsilon=spec.norm_eps, use_fast_variance=False, dtype=spec.dtype,
                      name=name)


class EncoderLayer(nn.Module):
  """One pre-norm SigLIP layer: full self-attention, then the tanh-GELU MLP."""
  spec: VisionSpec

  @nn.compact
  def __call__(self, x):
    s = self.spec
    b, n, _ = x.shape
    heads, head_dim = s.num_heads, s.width // s.num_heads
    y = _layer_norm(s, "layer_norm1")(x)
    q, k, v = (_dense(s.width, s, f"{p}_proj")(y).reshape(b, n, heads, head_dim)
               for p in "qkv")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * head_dim ** -0.5
    y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)
    x = x + nn.Dense(s.width, dtype=s.dtype, name="out_proj")(y.reshape(b, n, s.width))
    y = _layer_norm(s, "layer_norm2")(x)
    y = _dense(s.width, s, "fc2")(jax.nn.gelu(_dense(s.mlp_dim, s, "fc1")(y), approximate=True))
    return x + y


class Siglip(nn.Module):
  """SigLIP: (B, H, W, C) images in [−1, 1] → (B, (H/p)·(W/p), width) features."""
  spec: VisionSpec

  @nn.compact
  def __call__(self, images):
    s = self.spec
    rows, cols = images.shape[1] // s.patch_size, images.shape[2] // s.patch_size
    x = _dense(s.width, s, "patch_embedding")(
        patchify(images.astype(s.dtype), s.patch_size))
    table = self.param("position_embedding", nn.initializers.normal(0.02),
                       (s.max_patches_per_side ** 2, s.width))
    x = x + table[table_position_ids(rows, cols, s.max_patches_per_side)].astype(s.dtype)
    for i in range(s.depth):
      x = EncoderLayer(s, name=f"layers_{i}")(x)
    return _layer_norm(s, "post_layernorm")(x)


class Connector(nn.Module):
  """(B, rows·cols, width) features → (B, rows·cols, out_width) language-model tokens: fc1 →
  tanh-GELU → fc2, plus Bagel's fixed sin-cos table read at row·max + col."""
  spec: VisionSpec

  @nn.compact
  def __call__(self, features, rows: int, cols: int):
    s = self.spec
    x = _dense(s.out_width, s, "fc2")(jax.nn.gelu(_dense(s.out_width, s, "fc1")(features),
                                                  approximate=True))
    init = lambda key, shape, dtype=jnp.float32: jnp.asarray(  # noqa: E731
        sincos_2d(s.max_patches_per_side, s.out_width, columns_first=True), dtype)
    table = self.param("pos_table", init, (s.max_patches_per_side ** 2, s.out_width))
    return x + table[table_position_ids(rows, cols, s.max_patches_per_side)].astype(s.dtype)


@functools.partial(jax.jit, static_argnums=0)
def init_vision(spec: VisionSpec, key):
  """Fresh parameters: {"siglip": …, "connector": …} (the connector only if `out_width`)."""
  images = jnp.zeros((1, spec.patch_size, spec.patch_size, spec.channels), jnp.float32)
  k1, k2 = jax.random.split(key)
  params = {"siglip": Siglip(spec).init(k1, images)["params"]}
  if spec.out_width:
    feats = jnp.zeros((1, 1, spec.width), jnp.float32)
    params["connector"] = Connector(spec).init(k2, feats, 1, 1)["params"]
  return params


def _check(spec: VisionSpec, images):
  side = spec.patch_size * spec.max_patches_per_side
  if (images.ndim != 4 or images.shape[-1] != spec.channels
      or any(n % spec.patch_size or n > side for n in images.shape[1:3])):
    raise ValueError(f"images must be (B, H, W, {spec.channels}) with H and W multiples of "
                     f"{spec.patch_size} up to {side}, got shape {images.shape}")


def features(spec: VisionSpec, params, images):
  """Jitted SigLIP: (B, H, W, C) images → (B, (H/p)·(W/p), width)."""
  _check(spec, images)
  return _features(spec, params["siglip"], images)


def tokens(spec: VisionSpec, params, images):
  """Jitted SigLIP and connector: (B, H, W, C) images → (B, (H/p)·(W/p), out_width), what
  Bagel feeds the language model for a clean image."""
  _check(spec, images)
  return _tokens(spec, params, images)


@functools.partial(jax.jit, static_argnums=0)
def _features(spec, params, images):
  return Siglip(spec).apply({"params": params}, images)


@functools.partial(jax.jit, static_argnums=0)
def _tokens(spec, params, images):
  p = spec.patch_size
  feats = Siglip(spec).apply({"params": params["siglip"]}, images)
  return Connector(spec).apply({"params": params["connector"]}, feats,
                               images.shape[1] // p, images.shape[2] // p)
