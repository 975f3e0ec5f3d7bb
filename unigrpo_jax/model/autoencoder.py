"""The FLUX autoencoder (Bagel's VAE): images ↔ 16-channel latents at 1/8 resolution, in Flax.

Architecture of Black Forest Labs' FLUX AE, every size from `AutoencoderSpec` so tiny variants
exist: a conv-in, `len(channel_multipliers)` levels of `num_res_blocks` residual blocks
(GroupNorm → swish → 3×3 conv, twice; a 1×1 shortcut when the width changes) with a stride-2
downsampling between levels (padded by one pixel on the bottom and right only), a middle of
block – single-head self-attention – block, then GroupNorm → swish → conv-out to the posterior's
mean and log-variance. The decoder mirrors it with `num_res_blocks + 1` blocks a level and
nearest ×2 upsampling. Arrays are NHWC; pixels are in [−1, 1].

Latents are *scaled*, as Bagel feeds them to its transformer: encode returns
`scale_factor · (z − shift_factor)` and decode undoes it first. `encode` gives the posterior
mean (the deterministic choice UniRL made for training); pass a key to draw a sample instead.

The parameter tree mirrors BFL's tensor names with indices joined to their list
(`encoder/down_0/block_1/conv1/kernel` ↔ `encoder.down.0.block.1.conv1.weight`), so the
import (`convert/flux_ae.py`) is a name rule, not a table.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec:
  """Sizes of the autoencoder; the defaults are FLUX's (84 M parameters, 8× downsampling).

  `channels` × `channel_multipliers[i]` is level i's width; `num_res_blocks` blocks a level in
  the encoder (one more in the decoder); `z_channels` latent channels; GroupNorm with
  `num_groups` groups and `norm_eps`; `scale_factor` / `shift_factor` map the raw latent to the
  transformer's scale. `dtype`: the activation dtype (parameters stay float32)."""
  in_channels: int = 3
  out_channels: int = 3
  channels: int = 128
  channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  z_channels: int = 16
  num_groups: int = 32
  norm_eps: float = 1e-6
  scale_factor: float = 0.3611
  shift_factor: float = 0.1159
  dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
    for name in ("in_channels", "out_channels", "channels", "num_res_blocks", "z_channels",
                 "num_groups"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"autoencoder.{name} must be a positive integer, got {value!r}")
    if not self.channel_multipliers or any(
        not isinstance(m, int) or m <= 0 for m in self.channel_multipliers):
      raise ValueError(f"autoencoder.channel_multipliers must be positive integers, got "
                       f"{self.channel_multipliers!r}")
    for width in self.widths:
      if width % self.num_groups:
        raise ValueError(f"autoencoder.num_groups ({self.num_groups}) must divide every "
                         f"level's width; {width} (channels × multiplier) is not a multiple")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"autoencoder.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")

  @property
  def widths(self) -> tuple[int, ...]:
    """Channels at each level, finest first."""
    return tuple(self.channels * m for m in self.channel_multipliers)

  @property
  def downsample(self) -> int:
    """Pixels per latent along each side."""
    return 2 ** (len(self.channel_multipliers) - 1)


def swish(x):
  return x * jax.nn.sigmoid(x)


def _conv(features: int, kernel: int, spec: AutoencoderSpec, name: str, stride: int = 1,
          padding="SAME"):
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=padding,
                 dtype=spec.dtype, name=name)


def _norm(spec, name):
  return nn.GroupNorm(num_groups=spec.num_groups, epsilon=spec.norm_eps,
                      use_fast_variance=False, dtype=spec.dtype, name=name)


class ResnetBlock(nn.Module):
  """x + conv(swish(norm(conv(swish(norm(x)))))), with a 1×1 shortcut if the width changes."""
  spec: AutoencoderSpec
  features: int

  @nn.compact
  def __call__(self, x):
    h = _conv(self.features, 3, self.spec, "conv1")(swish(_norm(self.spec, "norm1")(x)))
    h = _conv(self.features, 3, self.spec, "conv2")(swish(_norm(self.spec, "norm2")(h)))
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.spec, "nin_shortcut")(x)
    return x + h


class AttnBlock(nn.Module):
  """x + proj(softmax(q kᵀ / √C) v) over all H·W positions, one head, 1×1-conv projections."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = _norm(self.spec, "norm")(x)
    q, k, v = (_conv(c, 1, self.spec, n)(y).reshape(b, h * w, c) for n in "qkv")
    logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(c))
    y = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)
    return x + _conv(c, 1, self.spec, "proj_out")(y.reshape(b, h, w, c))


class Downsample(nn.Module):
  """Pads one pixel at the bottom and right, then a stride-2 3×3 conv (BFL's asymmetric pad)."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return _conv(x.shape[-1], 3, self.spec, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
  """Nearest-neighbour ×2, then a 3×3 conv."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(x.shape[-1], 3, self.spec, "conv")(x)


class Level(nn.Module):
  """One resolution: `blocks` residual blocks to `features`, then a resampling if any."""
  spec: AutoencoderSpec
  features: int
  blocks: int
  resample: str = ""  # "downsample", "upsample" or ""

  @nn.compact
  def __call__(self, x):
    for i in range(self.blocks):
      x = ResnetBlock(self.spec, self.features, name=f"block_{i}")(x)
    if self.resample == "downsample":
      x = Downsample(self.spec, name="downsample")(x)
    elif self.resample == "upsample":
      x = Upsample(self.spec, name="upsample")(x)
    return x


class Middle(nn.Module):
  """Block, attention, block at the coarsest resolution."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = ResnetBlock(self.spec, c, name="block_1")(x)
    x = AttnBlock(self.spec, name="attn_1")(x)
    return ResnetBlock(self.spec, c, name="block_2")(x)


class Encoder(nn.Module):
  """(B, H, W, in_channels) pixels → (B, H/f, W/f, 2·z_channels): the posterior's mean and
  log-variance, unscaled."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, x):
    spec = self.spec
    x = _conv(spec.channels, 3, spec, "conv_in")(x.astype(spec.dtype))
    last = len(spec.widths) - 1
    for i, width in enumerate(spec.widths):
      x = Level(spec, width, spec.num_res_blocks, "downsample" if i < last else "",
                name=f"down_{i}")(x)
    x = Middle(spec, name="mid")(x)
    x = swish(_norm(spec, "norm_out")(x))
    return _conv(2 * spec.z_channels, 3, spec, "conv_out")(x)


class Decoder(nn.Module):
  """(B, h, w, z_channels) unscaled latents → (B, h·f, w·f, out_channels) pixels."""
  spec: AutoencoderSpec

  @nn.compact
  def __call__(self, z):
    spec = self.spec
    x = _conv(spec.widths[-1], 3, spec, "conv_in")(z.astype(spec.dtype))
    x = Middle(spec, name="mid")(x)
    # BFL numbers the decoder's levels as the encoder's (up_0 is the finest) and runs them
    # coarsest first.
    for i in reversed(range(len(spec.widths))):
      x = Level(spec, spec.widths[i], spec.num_res_blocks + 1, "upsample" if i else "",
                name=f"up_{i}")(x)
    x = swish(_norm(spec, "norm_out")(x))
    return _conv(spec.out_channels, 3, spec, "conv_out")(x)


class Autoencoder(nn.Module):
  """The FLUX AE: `encode` pixels to scaled latents, `decode` them back."""
  spec: AutoencoderSpec

  def setup(self):
    self.encoder = Encoder(self.spec)
    self.decoder = Decoder(self.spec)

  def encode(self, images, key=None):
    """(B, H, W, C) images in [−1, 1] → (B, H/f, W/f, z) scaled latents: the posterior mean,
    or with `key` a sample of the posterior."""
    mean, logvar = jnp.split(self.encoder(images).astype(jnp.float32), 2, axis=-1)
    z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(
        key, mean.shape, jnp.float32)
    return self.spec.scale_factor * (z - self.spec.shift_factor)

  def decode(self, latents):
    """(B, h, w, z) scaled latents → (B, h·f, w·f, C) images (float32, not clipped)."""
    z = latents.astype(jnp.float32) / self.spec.scale_factor + self.spec.shift_factor
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, images):
    return self.decode(self.encode(images))


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_autoencoder(spec: AutoencoderSpec, key, image_size: int = 0):
  """Fresh parameters of the autoencoder for `spec` (the tree is independent of image size;
  `image_size` only sizes the trace, default the smallest that goes through every level)."""
  size = image_size or spec.downsample
  images = jnp.zeros((1, size, size, spec.in_channels), jnp.float32)
  return Autoencoder(spec).init(key, images)["params"]


def encode(spec: AutoencoderSpec, params, images, key=None):
  """(B, H, W, C) images in [−1, 1] → (B, H/f, W/f, z) scaled latents (posterior mean, or a
  sample with `key`), jitted. H and W must be multiples of `spec.downsample`. The batch keeps
  the sharding it arrives with."""
  if images.ndim != 4 or images.shape[-1] != spec.in_channels or any(
      n % spec.downsample for n in images.shape[1:3]):
    raise ValueError(f"images must be (B, H, W, {spec.in_channels}) with H and W multiples of "
                     f"{spec.downsample}, got shape {images.shape}")
  return _encode(spec, params, images, key)


def decode(spec: AutoencoderSpec, params, latents):
  """(B, h, w, z) scaled latents → (B, h·f, w·f, C) images, jitted."""
  if latents.ndim != 4 or latents.shape[-1] != spec.z_channels:
    raise ValueError(f"latents must be (B, h, w, {spec.z_channels}), got shape {latents.shape}")
  return _decode(spec, params, latents)


def decode_flops(spec: AutoencoderSpec, latent_shape: tuple[int, ...]) -> int:
  """FLOPs of decoding latents of shape (B, h, w, z): XLA's cost analysis of the lowered
  decode on abstract inputs (nothing allocated or compiled)."""
  params = jax.eval_shape(lambda: init_autoencoder(spec, jax.random.key(0)))
  latents = jax.ShapeDtypeStruct(tuple(latent_shape), jnp.float32)
  return int(_decode.lower(spec, params, latents).cost_analysis()["flops"])


@functools.partial(jax.jit, static_argnums=0)
def _encode(spec: AutoencoderSpec, params, images, key):
  return Autoencoder(spec).apply({"params": params}, images, key, method=Autoencoder.encode)


@functools.partial(jax.jit, static_argnums=0)
def _decode(spec: AutoencoderSpec, params, latents):
  return Autoencoder(spec).apply({"params": params}, latents, method=Autoencoder.decode)
