"""Qwen2 building blocks: RMSNorm, rotary position embedding, SwiGLU MLP, and partitioned inits.

Every parameter is created through `param_init`, which attaches logical axis names
(`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `vocab`, `patch`) so `sharding.py` can place it
by rules without knowing the model.
"""
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.model.matmul import matmul

# Qwen2 initialises linear and embedding weights from N(0, 0.02²).
DEFAULT_INIT = nn.initializers.normal(stddev=0.02)


def param_init(init, axes: tuple[str | None, ...]):
  """Wraps an initializer so the parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, axes)


class RMSNorm(nn.Module):
  """x · rsqrt(mean(x²) + eps) · w over the last axis, computed in float32 as Qwen2 does.
  `axis`: the logical name of that axis ("embed"; "head_dim" for per-head q/k norms)."""
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axis: str = "embed"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", param_init(nn.initializers.ones, (self.axis,)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale.astype(jnp.float32) * x32).astype(self.dtype)


def rope(x, positions, theta: float):
  """Rotary embedding in Qwen2's (rotate-half) layout.

  x: (B, T, N, D); positions: (B, T) int. Returns x rotated, same dtype.
  """
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, D/2)
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x32 = x.astype(jnp.float32)
  half = d // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


class Projection(NamedTuple):
  """A projection's parameters: kernel (*in, *out), bias (*out) or None, and its LoRA adapter
  (A (*in, r), B (r, *out), B already scaled by α/r; `lora.py`) or None."""
  kernel: jax.Array
  bias: jax.Array | None
  adapter: tuple | None


class Weights(nn.Module):
  """A projection's parameters (kernel, bias if asked, and a LoRA adapter if the parameter tree
  holds one beside the kernel), returned rather than applied.

  Projections that read the same input (q/k/v; gate/up) are concatenated and applied as one
  matmul: one large matmul beats several small ones, above all when decoding one token, while
  the parameters keep Qwen2's separate names and shapes.
  """
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  use_bias: bool
  param_dtype: jnp.dtype
  inputs: int = 1  # the kernel's leading axes that the input contracts with

  @nn.compact
  def __call__(self) -> Projection:
    kernel = self.param("kernel", param_init(DEFAULT_INIT, self.axes), self.shape,
                        self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param("bias", param_init(nn.initializers.zeros, self.axes[self.inputs:]),
                        self.shape[self.inputs:], self.param_dtype)
    adapter = None
    if self.has_variable("params", "lora_a"):
      adapter = (self.get_variable("params", "lora_a"), self.get_variable("params", "lora_b"))
    return Projection(kernel, bias, adapter)


def _operand(kernel, dtype, matmul_dtype):
  """A kernel as a matmul reads it: in the activation dtype, unless it is already in the
  matmul dtype (`cast_kernels`), where it stays — no round trip per call."""
  return kernel if kernel.dtype == matmul_dtype else kernel.astype(dtype)


def low_rank(x, adapter, contract: int = 1):
  """(x·A)·B of an adapter (A (*in, r), B (r, *out)) for x (…, *in), in float32, returned in
  x's dtype: the adapter's addition to the projection."""
  a, b = adapter
  u = jnp.tensordot(x.astype(jnp.float32), a.astype(jnp.float32), contract)
  return jnp.tensordot(u, b.astype(jnp.float32), 1).astype(x.dtype)


def project(x, p: Projection, dtype, matmul_dtype, contract: int = 1):
  """One projection without bias: x (…, *in) → (…, *out), contracting the kernel's first
  `contract` axes, its adapter's product added."""
  y = matmul(x, _operand(p.kernel, dtype, matmul_dtype), matmul_dtype, contract)
  return y if p.adapter is None else y + low_rank(x, p.adapter, contract)


def fused_projection(x, weights, dtype, matmul_dtype):
  """Applies several projections of x (…, width) as one matmul; returns their outputs.

  weights: list of `Projection`s (kernel (width, *out_i)), with equal trailing dims past the
  first output axis (q/k/v: (heads_i, head_dim); gate/up: (mlp,)). The matmul reads its
  operands in `matmul_dtype` (`model/matmul.py`); adapters add their low-rank products.
  """
  kernel = jnp.concatenate([_operand(p.kernel, dtype, matmul_dtype) for p in weights], axis=1)
  y = matmul(x, kernel, matmul_dtype)
  if weights[0].bias is not None:
    y = y + jnp.concatenate([p.bias.astype(dtype) for p in weights], axis=0)
  splits = np.cumsum([p.kernel.shape[1] for p in weights])[:-1]
  outs = jnp.split(y, splits, axis=x.ndim - 1)
  return [out if p.adapter is None else out + low_rank(x, p.adapter)
          for out, p in zip(outs, weights)]


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) · up(x)), no biases (Qwen2); gate and up as one matmul."""
  mlp_dim: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  matmul_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    weights = [Weights((width, self.mlp_dim), ("embed", "mlp"), False, self.param_dtype,
                       name=name)() for name in ("gate", "up")]
    gate, up = fused_projection(x, weights, self.dtype, self.matmul_dtype)
    down = Weights((self.mlp_dim, width), ("mlp", "embed"), False, self.param_dtype,
                   name="down")()
    return project(nn.silu(gate) * up, down, self.dtype, self.matmul_dtype)
