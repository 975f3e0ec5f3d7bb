"""The model's hyper-parameters as one frozen, hashable record, validated on creation.

`ModelSpec(**config.model)` is the only way configs reach the model, so every shape error is
caught here, before anything is traced, with the offending `model.<field>` named.
"""
import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Qwen2-shaped unified transformer with a flow-matching image head.

  Text part (as Qwen2): `vocab_size`, `width` (hidden size), `depth` (layers), `num_heads`,
  `num_kv_heads` (grouped-query attention), `head_dim`, `mlp_dim` (SwiGLU intermediate),
  `rope_theta`, `norm_eps`, `qkv_bias`, `tie_embeddings`; `qk_norm`: per-head RMSNorm of q
  and k before RoPE (Bagel, Qwen3).
  Image part: square `image_size`×`image_size`×`image_channels` inputs (pixels or latents) cut
  into `patch_size`² patches. `time_scale`: t's factor in the flow-time features (DiT 1000,
  Bagel 1). `max_latent_size`: 0 adds fixed sin-cos positions to image tokens; n > 0 a table
  of n² positions (Bagel's `latent_pos_embed`; images up to n patches a side, any aspect). `mot`: Bagel-style mixture of transformers (a second weight set
  per block for noised image tokens). `dtype` is the activation dtype, `param_dtype` the
  storage dtype of parameters. `matmul_dtype`: "" runs the weight matmuls in the activation
  dtype; a dtype ("bfloat16": mixed precision) casts their operands to it and accumulates in
  float32 (`model/matmul.py`). `scan_layers`: training passes run the blocks as one
  `lax.scan` (compile time independent of depth: deep models, pods) instead of a loop over
  per-layer weights (faster for shallow models on CPU). Parameters are stacked either way; the
  rollout always loops. `remat` (with `scan_layers`): a scanned pass keeps only each block's
  input for the backward pass and recomputes the rest (activation memory of one block instead
  of all: what lets a 7B-class update fit). `vocab_limit` (0: off): the text policy covers ids
  below it only — a checkpoint's head rows past its tokenizer are padding (Bagel's 152,064
  rows over Qwen2.5's 151,665 tokens; UniRL masks them out). `prediction`: what the image head outputs — "velocity" (Bagel,
  Flow-GRPO), or "x0", the clean image, turned into the velocity (x_t − x̂₀)/t (t floored at
  `x0_min_time`): small pixel-space models draw clean images far sooner this way, since the
  head need not carry per-pixel noise. Either way the model's interface is the velocity.
  """
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  image_size: int
  patch_size: int
  image_channels: int = 3
  rope_theta: float = 1_000_000.0
  norm_eps: float = 1e-6
  qkv_bias: bool = True
  tie_embeddings: bool = True
  qk_norm: bool = False
  mot: bool = False
  scan_layers: bool = False
  remat: bool = False
  vocab_limit: int = 0
  time_scale: float = 1000.0
  max_latent_size: int = 0
  prediction: str = "velocity"
  x0_min_time: float = 0.02
  dtype: str = "float32"
  param_dtype: str = "float32"
  matmul_dtype: str = ""

  def __post_init__(self):
    for name in ("vocab_size", "width", "depth", "num_heads", "num_kv_heads", "head_dim",
                 "mlp_dim", "image_size", "patch_size", "image_channels"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"model.num_heads ({self.num_heads}) must be a multiple of "
                       f"model.num_kv_heads ({self.num_kv_heads})")
    if self.image_size % self.patch_size:
      raise ValueError(f"model.image_size ({self.image_size}) is not divisible by "
                       f"model.patch_size ({self.patch_size})")
    if not isinstance(self.max_latent_size, int) or self.max_latent_size < 0:
      raise ValueError(f"model.max_latent_size must be an integer >= 0, got "
                       f"{self.max_latent_size!r}")
    if 0 < self.max_latent_size < self.grid:
      raise ValueError(f"model.max_latent_size ({self.max_latent_size}) is smaller than the "
                       f"image's {self.grid} patches a side (image_size / patch_size)")
    if not isinstance(self.vocab_limit, int) or not 0 <= self.vocab_limit <= self.vocab_size:
      raise ValueError(f"model.vocab_limit must be between 0 (off) and model.vocab_size "
                       f"({self.vocab_size}), got {self.vocab_limit!r}")
    if self.remat and not self.scan_layers:
      raise ValueError("model.remat recomputes the scanned blocks: it needs model.scan_layers")
    if self.prediction not in ("velocity", "x0"):
      raise ValueError(f"model.prediction must be 'velocity' or 'x0', got {self.prediction!r}")
    if not 0 < self.x0_min_time < 1:
      raise ValueError(f"model.x0_min_time must be in (0, 1), got {self.x0_min_time}")
    for name in ("dtype", "param_dtype", "matmul_dtype"):
      if name == "matmul_dtype" and not self.matmul_dtype:
        continue
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise ValueError(f"model.{name}: unknown dtype {getattr(self, name)!r}") from e

  @property
  def matmul_operand_dtype(self):
    """`matmul_dtype` as a dtype, or None (matmuls in the activation dtype)."""
    return jnp.dtype(self.matmul_dtype) if self.matmul_dtype else None

  @property
  def grid(self) -> int:
    """Patches per image side."""
    return self.image_size // self.patch_size

  @property
  def image_tokens(self) -> int:
    """Tokens per image block."""
    return self.grid * self.grid

  @property
  def patch_dim(self) -> int:
    """Values per patch (p·p·C)."""
    return self.patch_size * self.patch_size * self.image_channels

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.image_channels)

  @property
  def num_experts(self) -> int:
    return 2 if self.mot else 1

  def param_count(self) -> int:
    """Parameters by formula (W width, L depth, H/K heads/KV heads of size D, M MLP, V vocab,
    E experts, p²C patch values):

      V·W·(1 + untied)                               embedding (+ LM head)
      + E·L·(2W + W·D·(2H + 2K) + D·(H + 2K)·bias + 3·W·M)   blocks: 2 norms, q/k/v/o, SwiGLU
      + E·L·2D·qk_norm                               per-head q/k norms
      + E·W                                          final norm per expert
      + (p²C·W + W) + (256·W + W) + (W² + W)         patch and flow-time embeddings
      + (W·p²C + p²C)                                velocity head
      + n²·W                                         position table (max_latent_size n)
    """
    w, d, p = self.width, self.head_dim, self.patch_dim
    heads, kv = self.num_heads, self.num_kv_heads
    block = (2 * w + w * d * (2 * heads + 2 * kv) + d * (heads + 2 * kv) * self.qkv_bias
             + 3 * w * self.mlp_dim + 2 * d * self.qk_norm)
    return (self.vocab_size * w * (1 + (not self.tie_embeddings))
            + self.num_experts * (self.depth * block + w)
            + (p * w + w) + (256 * w + w) + (w * w + w) + (w * p + p)
            + self.max_latent_size ** 2 * w)
