"""Images in and out of the transformer: patches, timestep and 2-D position embeddings, velocity head.

An image (pixels for ShapeWorld, VAE latents for real models) of shape (B, H, W, C) becomes
(H/p)·(W/p) tokens in raster order: each p×p patch is linearly embedded (its values in (row,
column, channel) order), plus an MLP embedding of the flow time t and a 2-D position
embedding — fixed sin-cos over a square grid, or Bagel's table of `max_grid`² rows read at
row·max_grid + col (any h×w up to max_grid a side). The head maps hidden states back to patch
values and is zero-initialised, so a fresh model predicts zero velocity (Bagel's choice).
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


def unpatchify(tokens, p: int, height: int, width: int, channels: int):
  """Inverse of `patchify`: (B, (H/p)·(W/p), p·p·C) → (B, H, W, C)."""
  b = tokens.shape[0]
  x = tokens.reshape(b, height // p, width // p, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, channels)


def timestep_embedding(t, dim: int, scale: float = 1000.0, max_period: float = 10_000.0):
  """[cos, sin] features of t·scale (DiT: scale 1000; Bagel: 1, t as is).
  t: (B,) float → (B, dim) float32."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * scale)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def table_position_ids(rows: int, cols: int, max_grid: int) -> np.ndarray:
  """(rows·cols,) int32 rows of the position table for a rows×cols grid, raster order."""
  if rows > max_grid or cols > max_grid:
    raise ValueError(f"an image of {rows}×{cols} patches does not fit the position table "
                     f"({max_grid} a side: model.max_latent_size)")
  return (np.arange(rows)[:, None] * max_grid + np.arange(cols)[None]).reshape(-1).astype(
      np.int32)


def sincos_2d(grid: int, dim: int, columns_first: bool = False) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding, (grid², dim) float32, row r·grid + c for cell
  (r, c): [sin, cos] of the row in the first dim/2 channels and of the column in the rest
  (`columns_first`: the other way round, as Bagel's `latent_pos_embed` and `vit_pos_embed`
  are), ω_i = 10⁴^(−i/(dim/4))."""
  quarter = dim // 4
  omega = 1.0 / 10_000 ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

  def encode(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  halves = [encode(cols), encode(rows)] if columns_first else [encode(rows), encode(cols)]
  emb = np.concatenate(halves, axis=1)
  return np.pad(emb, ((0, 0), (0, dim - emb.shape[1]))).astype(np.float32)


class ImageEmbed(nn.Module):
  """(B, H, W, C) image at flow time t (B,) → (B, (H/p)·(W/p), width) tokens.

  `time_scale` multiplies t in its features; `max_grid` 0 adds fixed sin-cos positions (square
  images), else a `pos_table` parameter of `max_grid`² rows (Bagel's `latent_pos_embed`)."""
  width: int
  patch_size: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  matmul_dtype: jnp.dtype
  time_scale: float = 1000.0
  max_grid: int = 0

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
    temb = timestep_embedding(t, 256, self.time_scale).astype(self.dtype)
    temb = self._dense(self.width, "time_in")(temb)
    temb = self._dense(self.width, "time_out")(nn.silu(temb))
    rows, cols = x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
    if self.max_grid:
      init = lambda key, shape, dtype: jnp.asarray(  # noqa: E731
          sincos_2d(self.max_grid, self.width, columns_first=True), dtype)
      table = self.param("pos_table", param_init(init, (None, "embed")),
                         (self.max_grid ** 2, self.width), self.param_dtype)
      pos = table[table_position_ids(rows, cols, self.max_grid)].astype(self.dtype)
    else:
      pos = jnp.asarray(sincos_2d(rows, self.width), self.dtype)
    return h + temb[:, None, :] + pos[None]


class VelocityHead(nn.Module):
  """(B, (H/p)·(W/p), width) hidden states → (B, H, W, C) velocity; zero-initialised."""
  patch_size: int
  channels: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  matmul_dtype: jnp.dtype

  @nn.compact
  def __call__(self, h, height: int, width: int):
    out = nn.Dense(self.patch_size * self.patch_size * self.channels, dtype=self.dtype,
                   param_dtype=self.param_dtype,
                   dot_general=dense_dot_general(self.matmul_dtype),
                   kernel_init=param_init(nn.initializers.zeros, ("embed", "patch")),
                   bias_init=param_init(nn.initializers.zeros, ("patch",)), name="proj")(h)
    return unpatchify(out, self.patch_size, height, width, self.channels)
