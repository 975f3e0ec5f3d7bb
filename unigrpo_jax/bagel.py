"""BAGEL-7B-MoT as a library: load a downloaded Bagel folder and run its pieces, as thin
wrappers over the one model (`model/`) and autoencoder (`model/autoencoder.py`).

  m = bagel.load("/path/BAGEL-7B-MoT")
  logits = bagel.text_logits(m, ids)                       # understanding, (B, T, V)
  v = bagel.velocity(m, context_ids, x_t, t)               # one generation step's velocity
  latents = bagel.generate(m, context_ids, noise, num_steps=49, shift=3.0)
  images = bagel.decode(m, latents)                        # (B, H, W, 3) in [−1, 1]
  tokens = bagel.vision_tokens(m, images)                  # a clean image, as context
  v = bagel.context_velocity(m, [("text", ids), ("image", images), ("text", ids2)], x_t, t)

Sequences follow Bagel's generation step: the context is one text split at RoPE positions
0…L−1, causal, through the understanding (text) weights and kept as a KV cache; the query is
`<start_of_image>`, the h×w latent tokens of x_t, `<end_of_image>`, all at RoPE position L,
attending to the whole cache and to each other — the markers through the understanding
weights, the latent tokens through the generation (image) weights, read out through the
generation expert's final norm and `llm2vae`. A context may also hold clean images
(`context_velocity`): each a VAE block and a ViT block, bidirectional, one RoPE id each.
Flow convention: x_t = (1 − t)·x₀ + t·ε, the velocity is ε − x₀, t = 1 is noise.
"""
import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from unigrpo_jax.convert import bagel as convert
from unigrpo_jax.convert import flux_ae, shards
from unigrpo_jax.model import (IMAGE, TEXT, ModelSpec, UnifiedTransformer, for_training,
                               init_params, run_blocks)
from unigrpo_jax.model import autoencoder, vision
from unigrpo_jax.model.autoencoder import AutoencoderSpec
from unigrpo_jax.model.vision import VisionSpec
from unigrpo_jax.sampling.forward import image_velocity, run_slots

class Bagel(NamedTuple):
  """A loaded Bagel: the unified model's spec and parameters, the autoencoder's, the ids of
  Bagel's special tokens (`bos`, `eos`, `start_of_image`, `end_of_image`), and the vision
  encoder's spec and parameters (None for a folder without `vit_config.json`)."""
  spec: ModelSpec
  params: dict
  ae_spec: AutoencoderSpec
  ae_params: dict
  token_ids: dict
  vit_spec: VisionSpec | None = None
  vit_params: dict | None = None


def load(path: str, *, token_ids: dict | None = None, dtype: str = "float32") -> Bagel:
  """Reads a Bagel folder (`llm_config.json`, `ema.safetensors`, `ae.safetensors`, the
  tokenizer files unless `token_ids` is given, and `vit_config.json` if there is a vision
  encoder to read); every size is read from the files.

  Args:
    path: the folder.
    token_ids: {"bos", "eos", "start_of_image", "end_of_image": id}, or None to read them
      from the tokenizer (`<|im_start|>`, `<|im_end|>`, `<|vision_start|>`, `<|vision_end|>`).
    dtype: the activation dtype; parameters are read into float32.
  Returns:
    The `Bagel`.
  """
  spec, ae_spec = convert.folder_spec(path, dtype=dtype)
  ids = convert.token_ids(path, token_ids)
  params = convert.load_into(init_params(spec, jax.random.key(0)), path, spec)
  _, ae_params = flux_ae.load(os.path.join(path, convert.AE), ae_spec)
  vit_spec = vit_params = None
  if os.path.isfile(os.path.join(path, convert.VIT_CONFIG)):
    shapes = shards.file_shapes(os.path.join(path, convert.EMA))
    vit_spec = convert.vision_spec(path, shapes, spec.width, dtype=dtype)
    vit_params = convert.load_vision(path, vit_spec)
  return Bagel(spec, params, ae_spec, ae_params, ids, vit_spec, vit_params)


def _text_split(model, stack, params, ids):
  """One causal text split from an empty cache (RoPE 0…T−1, understanding weights):
  (hidden states (B, T, width), its KV cache)."""
  b, t = ids.shape
  h = model.apply({"params": params}, ids, method=model.embed_tokens)
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  return run_blocks(model, stack, h, positions, mask)


@functools.partial(jax.jit, static_argnums=0)
def _text_logits(spec: ModelSpec, params, ids):
  model = UnifiedTransformer(spec)
  h, _ = _text_split(model, for_training(params, spec), params, ids)
  return model.apply({"params": params}, h, method=model.logits)


def text_logits(m: Bagel, ids):
  """(B, T) token ids, one causal text split from an empty cache (RoPE 0…T−1) → (B, T, V)
  float32 logits of the understanding path."""
  return _text_logits(m.spec, m.params, jnp.asarray(ids, jnp.int32))


class Context(NamedTuple):
  """A prefilled context: the KV cache, with room for the query block after it; which slots
  hold something (B, L); the slots' image-block ids (L,); the RoPE id the query takes (B,)."""
  cache: tuple
  valid: jax.Array
  block_ids: jax.Array
  rope: jax.Array


def _split_len(spec: ModelSpec, kind: str, x) -> int:
  """Slots of one split: a text split's tokens; an image block's tokens and its two markers."""
  if kind == "vae":
    return _block_len(spec, x)
  return x.shape[1] + 2 * (kind == "vit")


def _prefill(model, stack, params, kinds, inputs, ids, block: int) -> Context:
  """Runs the splits into a fresh cache as Bagel's inferencer does. kinds[i] is "text"
  (inputs[i]: (B, n) ids; causal; RoPE rope…rope+n−1, then rope += n), "vae" ((B, 2h, 2w, C)
  clean latents: `<start_of_image>`, the latent tokens at t = 0 through the generation weights,
  `<end_of_image>`) or "vit" ((B, N, width) vision tokens, all through the understanding
  weights); an image block is bidirectional, all at one RoPE id, then rope += 1. Leaves
  `block` slots for the query."""
  b = inputs[0].shape[0]
  lengths = [_split_len(model.spec, k, x) for k, x in zip(kinds, inputs)]
  total = sum(lengths) + block
  block_ids, n_blocks = [], 0
  for kind, n in zip(kinds, lengths):
    block_ids += [-1] * n if kind == "text" else [n_blocks] * n
    n_blocks += kind != "text"
  block_ids = jnp.asarray(block_ids + [n_blocks] * block, jnp.int32)
  apply = lambda *a, method: model.apply({"params": params}, *a, method=method)  # noqa: E731
  markers = apply(jnp.broadcast_to(jnp.asarray([ids["start_of_image"], ids["end_of_image"]]),
                                   (b, 2)), method=model.embed_tokens)
  cache = stack.empty_cache(model.spec, b, total)
  valid = jnp.zeros((b, total), bool)
  rope, start = jnp.zeros((b,), jnp.int32), 0
  for kind, x, n in zip(kinds, inputs, lengths):
    route, modality = TEXT, None
    if kind == "text":
      h = apply(x, method=model.embed_tokens)
      pos = rope[:, None] + jnp.arange(n, dtype=jnp.int32)[None]
    else:
      if kind == "vae":
        x = apply(x, jnp.zeros((b,), jnp.float32), method=model.embed_image)
        route = None
        modality = jnp.full((b, n), IMAGE).at[:, 0].set(TEXT).at[:, -1].set(TEXT)
      h = jnp.concatenate([markers[:, :1], x.astype(markers.dtype), markers[:, 1:]], axis=1)
      pos = jnp.broadcast_to(rope[:, None], (b, n))
    valid = valid.at[:, start:start + n].set(True)
    _, cache = run_slots(model, stack, h, start, valid, block_ids, None, cache, route=route,
                         modality=modality, pos=pos)
    rope = rope + (n if kind == "text" else 1)
    start += n
  return Context(cache, valid, block_ids, rope)


def _query_velocity(model, stack, context: Context, x_t, t, ids):
  """Bagel's generation step (`forward.image_velocity` with the image markers, at the
  context's RoPE id) after the context made by `_prefill`."""
  start = context.valid.shape[1] - _block_len(model.spec, x_t)
  return image_velocity(model, stack, x_t, t, start, context.valid, context.block_ids, None,
                        context.cache, (ids["start_of_image"], ids["end_of_image"]),
                        position=context.rope)


def _block_len(spec: ModelSpec, x) -> int:
  """Slots of the query block for latents x: the markers and one token a patch."""
  return 2 + (x.shape[1] // spec.patch_size) * (x.shape[2] // spec.patch_size)


def _check_latents(spec: ModelSpec, x):
  p, side = spec.patch_size, spec.max_latent_size * spec.patch_size
  if (x.ndim != 4 or x.shape[-1] != spec.image_channels or x.shape[1] % p or x.shape[2] % p
      or x.shape[1] > side or x.shape[2] > side):
    raise ValueError(f"latents must be (B, H, W, {spec.image_channels}) with H and W even and "
                     f"at most {side}, got shape {x.shape}")


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _velocity(spec: ModelSpec, kinds, params, inputs, x_t, t, ids):
  model = UnifiedTransformer(spec)
  stack = for_training(params, spec)
  ids = dict(ids)
  context = _prefill(model, stack, params, kinds, inputs, ids, _block_len(spec, x_t))
  return _query_velocity(model, stack, context, x_t, t, ids)


def velocity(m: Bagel, context_ids, x_t, t):
  """One generation step's velocity.

  Args:
    m: the model.
    context_ids: (B, L) one text split (RoPE 0…L−1) in the cache.
    x_t: (B, 2h, 2w, C) NHWC scaled latents at time t (h, w ≤ max_latent_size, may differ).
    t: (B,) flow time.
  Returns:
    (B, 2h, 2w, C) float32 velocity.
  """
  return context_velocity(m, [("text", context_ids)], x_t, t)


def context_splits(m: Bagel, splits) -> tuple[tuple[str, ...], tuple]:
  """Bagel's splits → what `_prefill` runs: ("text", ids (B, n)) as it is; ("image", images
  (B, H, W, 3) in [−1, 1][, vit_images]) as its VAE block (the posterior-mean latents) and,
  when the model has a vision encoder, its ViT block (of `vit_images`, default the same
  images; sides multiples of the ViT patch)."""
  kinds, inputs = [], []
  for split in splits:
    kind, value = split[0], split[1]
    if kind == "text":
      kinds.append("text")
      inputs.append(jnp.asarray(value, jnp.int32))
    elif kind == "image":
      kinds.append("vae")
      inputs.append(encode(m, jnp.asarray(value, jnp.float32)))
      if m.vit_spec is not None:
        kinds.append("vit")
        inputs.append(vision_tokens(m, jnp.asarray(split[2] if len(split) > 2 else value,
                                                   jnp.float32)))
    else:
      raise ValueError(f"a split is ('text', ids) or ('image', images[, vit_images]), got "
                       f"kind {kind!r}")
  return tuple(kinds), tuple(inputs)


def context_velocity(m: Bagel, splits, x_t, t):
  """One generation step's velocity after a context of text and clean images, as Bagel's
  inferencer builds it (`context_splits`): text splits causal with consecutive RoPE ids; each
  image a VAE block (its latents at t = 0 through the generation weights) then a ViT block
  (through the understanding weights), each bidirectional at one RoPE id that then advances
  by one; the query block at the RoPE id reached. Shapes as `velocity`."""
  _check_latents(m.spec, x_t)
  kinds, inputs = context_splits(m, splits)
  return _velocity(m.spec, kinds, m.params, inputs, x_t, jnp.asarray(t, jnp.float32),
                   tuple(sorted(m.token_ids.items())))


def schedule(num_steps: int, shift: float):
  """Bagel's time grid: linspace(1, 0, num_steps + 1), shifted t ← s·t / (1 + (s − 1)·t)."""
  t = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
  return shift * t / (1.0 + (shift - 1.0) * t)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _generate(spec: ModelSpec, params, context_ids, noise, num_steps, shift, ids):
  model = UnifiedTransformer(spec)
  stack = for_training(params, spec)
  ids = dict(ids)
  context = _prefill(model, stack, params, ("text",), (context_ids,), ids,
                     _block_len(spec, noise))
  grid = schedule(num_steps, shift)
  b = noise.shape[0]

  def step(x, i):
    v = _query_velocity(model, stack, context, x, jnp.full((b,), grid[i]), ids)
    return x - v * (grid[i] - grid[i + 1]), None

  x, _ = jax.lax.scan(step, noise.astype(jnp.float32), jnp.arange(num_steps))
  return x


def generate(m: Bagel, context_ids, noise, num_steps: int, shift: float):
  """Bagel's Euler sampler without CFG: from `noise` (B, 2h, 2w, C) at t = 1, `num_steps`
  steps over `schedule(num_steps, shift)` (Bagel's `num_timesteps` − 1 steps), the context's
  cache computed once. Returns (B, 2h, 2w, C) scaled latents."""
  _check_latents(m.spec, noise)
  return _generate(m.spec, m.params, jnp.asarray(context_ids, jnp.int32), noise, num_steps,
                   float(shift), tuple(sorted(m.token_ids.items())))


def encode(m: Bagel, images, key=None):
  """(B, H, W, 3) images in [−1, 1] → (B, H/8, W/8, C) scaled latents (posterior mean, or a
  sample with `key`)."""
  return autoencoder.encode(m.ae_spec, m.ae_params, images, key)


def decode(m: Bagel, latents):
  """(B, h, w, C) scaled latents → (B, 8h, 8w, 3) images (scale and shift undone first)."""
  return autoencoder.decode(m.ae_spec, m.ae_params, latents)


def vision_tokens(m: Bagel, images):
  """(B, H, W, 3) images in [−1, 1] (sides multiples of the ViT patch) → (B, N, width): the
  SigLIP features through the connector plus `vit_pos_embed`, as Bagel feeds a clean image to
  the language model."""
  if m.vit_spec is None:
    raise ValueError("this Bagel has no vision encoder (its folder has no vit_config.json)")
  return vision.tokens(m.vit_spec, m.vit_params, images)
