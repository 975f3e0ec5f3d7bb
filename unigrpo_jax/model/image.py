"""Images in and out of the transformer: patches, timestep and 2-D position embeddings, velocity head.

An image (pixels for ShapeWorld, VAE latents for real models) of shape (B, S, S, C) becomes
(S/p)² tokens: each p×p patch is linearly embedded, plus an MLP embedding of the flow time t and
a fixed 2-D sin-cos position embedding. The head maps hidden states back to patch values and is
zero-initialised, so a fresh model predicts zero velocity (Bagel's choice).
"""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.model.layers import DEFAULT_INIT, param_init
from unigrpo_jax.model.matmul import dense_dot_general


def patchify(x, p: int):
  """(B, S, S, C) → (B, (S/p)², p·p·C), patches in raster order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens, p: int, size: int, channels: int):
  """Inverse of `patchify`: (B, (S/p)², p·p·C) → (B, S, S, C)."""
  b = tokens.shape[0]
  g = size // p
  x = tokens.reshape(b, g, g, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, size, size, channels)


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
  """Sinusoidal features of t·1000 (DiT convention). t: (B,) float → (B, dim) float32."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * 1000.0)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def sincos_2d(grid: int, dim: int) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding, (grid², dim): half the channels encode the row."""
  quarter = dim // 4
  omega = 1.0 / 10_000 ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

  def encode(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  emb = np.concatenate([encode(rows), encode(cols)], axis=1)
  return np.pad(emb, ((0, 0), (0, dim - emb.shape[1]))).astype(np.float32)


class ImageEmbed(nn.Module):
  """(B, S, S, C) image at flow time t (B,) → (B, (S/p)², width) tokens."""
  width: int
  patch_size: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  matmul_dtype: jnp.dtype

  @nn.nowrap
  def _dense(self, features, name, in_axis=None):
    return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                    dot_general=dense_dot_general(self.matmul_dtype),
                    kernel_init=param_init(DEFAULT_INIT, (in_axis, "embed")),
                    bias_init=param_init(nn.initializers.zeros, ("embed",)), name=name)

  @nn.compact
  def __call__(self, x, t):
    tokens = patchify(x, self.patch_size).astype(self.dtype)
    h = self._dense(self.width, "patch", in_axis="patch")(tokens)
    temb = timestep_embedding(t, 256).astype(self.dtype)
    temb = self._dense(self.width, "time_in")(temb)
    temb = self._dense(self.width, "time_out")(nn.silu(temb))
    pos = jnp.asarray(sincos_2d(int(round(tokens.shape[1] ** 0.5)), self.width), self.dtype)
    return h + temb[:, None, :] + pos[None]


class VelocityHead(nn.Module):
  """(B, N, width) hidden states → (B, S, S, C) velocity; zero-initialised."""
  patch_size: int
  image_size: int
  channels: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  matmul_dtype: jnp.dtype

  @nn.compact
  def __call__(self, h):
    out = nn.Dense(self.patch_size * self.patch_size * self.channels, dtype=self.dtype,
                   param_dtype=self.param_dtype,
                   dot_general=dense_dot_general(self.matmul_dtype),
                   kernel_init=param_init(nn.initializers.zeros, ("embed", "patch")),
                   bias_init=param_init(nn.initializers.zeros, ("patch",)), name="proj")(h)
    return unpatchify(out, self.patch_size, self.image_size, self.channels)
