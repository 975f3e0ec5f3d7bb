"""FLOP counts of a rollout and of a teacher-forced scoring pass, for benchmarks' MFU.

Built from `model.flops` and the static layout, so they follow exactly what the code runs:
decoding attends over its segment's prefix window, image blocks and full passes over the whole
cache (masked slots included).
"""

from unigrpo_jax.model import flops
from unigrpo_jax.model.spec import ModelSpec
from unigrpo_jax.sampling.spec import RolloutSpec


def decode_flops(model: ModelSpec, spec: RolloutSpec, batch: int, r: int = 0) -> int:
  """Round r's text segment: T one-token steps over the prefix window, with the LM head."""
  window = spec.layout(model).text_start(r) + spec.max_text_tokens
  return spec.max_text_tokens * (flops.stack_flops(model, batch, window)
                                 + flops.text_head_flops(model, batch))


def image_flops(model: ModelSpec, spec: RolloutSpec, batch: int) -> int:
  """One image's N denoising steps (patch embedding, stack over the block — with Bagel's
  markers — and velocity head)."""
  layout = spec.layout(model)
  return spec.num_steps * (flops.stack_flops(model, batch * layout.image_tokens, layout.length)
                           + 2 * flops.image_embed_flops(model, batch * model.image_tokens))


def rollout_flops(model: ModelSpec, spec: RolloutSpec, batch: int, group_size: int = 1) -> int:
  """The whole rollout; the prompt prefilled once per group of `group_size` rows."""
  layout = spec.layout(model)
  length, tokens = layout.length, batch * model.image_tokens
  prompts = batch // group_size
  total = (flops.stack_flops(model, prompts * spec.prompt_len, length)
           + flops.text_head_flops(model, prompts))
  for r in range(spec.rounds):
    total += decode_flops(model, spec, batch, r)
    if spec.draw_images:
      total += image_flops(model, spec, batch)
    if spec.draw_images and spec.markers is None:  # the clean image written as context
      total += flops.stack_flops(model, tokens, length) + flops.image_embed_flops(model, tokens)
    if r < spec.rounds - 1:
      total += flops.stack_flops(model, batch, length) + flops.text_head_flops(model, batch)
  return total


def score_flops(model: ModelSpec, spec: RolloutSpec, batch: int, group_size: int = 1) -> int:
  """One `score_trajectory` forward: the clean sequence once (the prompt once per group of
  `group_size` rows), then every trained SDE step."""
  layout = spec.layout(model)
  length, tokens = layout.length, batch * layout.image_tokens
  p = spec.prompt_len if group_size > 1 else 0
  total = (flops.stack_flops(model, batch // group_size * p, p)
           + flops.stack_flops(model, batch * (length - p), length)
           + flops.text_head_flops(model, batch * spec.rounds * spec.max_text_tokens)
           + spec.rounds * flops.image_embed_flops(model, tokens))
  return total + spec.rounds * spec.trained_steps * (flops.stack_flops(model, tokens, length)
                                          + 2 * flops.image_embed_flops(model, tokens))
