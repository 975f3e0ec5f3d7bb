"""Analytic FLOP counts of model calls, for benchmarks' MFU (2 FLOPs per multiply-add).

Counts what is executed: attention over every key slot the call is given (masked slots are
computed, then masked), so these are achieved-work figures, not "useful" ones.
"""
from unigrpo_jax.model.spec import ModelSpec


def block_matmul_params(spec: ModelSpec) -> int:
  """Weights one token multiplies through in one block (one expert)."""
  attn = spec.width * spec.head_dim * (2 * spec.num_heads + 2 * spec.num_kv_heads)
  return attn + 3 * spec.width * spec.mlp_dim


def stack_flops(spec: ModelSpec, tokens: int, keys: int) -> int:
  """FLOPs of `tokens` query tokens through every block, each attending over `keys` slots."""
  per_token = 2 * block_matmul_params(spec) + 4 * spec.num_heads * spec.head_dim * keys
  return spec.depth * tokens * per_token


def text_head_flops(spec: ModelSpec, tokens: int) -> int:
  return 2 * tokens * spec.width * spec.vocab_size


def image_embed_flops(spec: ModelSpec, tokens: int) -> int:
  """Patch embedding (the time MLP runs once per image: negligible). Same count for the head."""
  return 2 * tokens * spec.width * spec.patch_dim
