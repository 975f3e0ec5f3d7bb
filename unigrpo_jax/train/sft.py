"""Warm-up SFT: next-token cross-entropy on text plus flow matching on images, one jitted step.

Three kinds of example, each in its own static layout (one compiled step per kind): text-to-
image with a plan, understanding (image → caption), and interleaved sequences (the scene built
up one object per round).

A supervised example is laid out exactly like a rollout trajectory (`SequenceLayout`), so the
same teacher-forced pass serves both: the clean sequence (prompt, target text, clean image)
goes through the model once (`scoring.encode`), text log-probs give the cross-entropy, and each
image's noised block x_t = (1−t)·x_0 + t·x_1 attends to that context to predict the velocity
target x_1 − x_0. t is logit-normal, then shifted like the sampling grid (SD3 / Bagel).
"""
import dataclasses
import functools
import json

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.data import prompts, shapeworld
from unigrpo_jax.data.pipeline import PROMPT, as_prompt, encode_prompt
from unigrpo_jax.model import UnifiedTransformer
from unigrpo_jax.optim import TrainState, apply_if_finite
from unigrpo_jax.sampling.forward import (hide_prompt, image_context, image_velocity,
                                          unconditional)
from unigrpo_jax.sampling.scoring import encode
from unigrpo_jax.sampling.spec import RolloutSpec


@flax.struct.dataclass
class SFTBatch:
  """prompt_tokens, prompt_mask: (B, P); tokens, token_mask: (B, R, T) target text and which
  tokens are trained; images: (B, R, S, S, C) clean targets in [−1, 1]; image_mask: (B, R)
  which images are trained (flow loss); valid: (B, L) slot visibility."""
  prompt_tokens: jax.Array
  prompt_mask: jax.Array
  tokens: jax.Array
  token_mask: jax.Array
  images: jax.Array
  image_mask: jax.Array
  valid: jax.Array


@dataclasses.dataclass(frozen=True)
class SFTSpec:
  """`config.sft`: loss weights, the training-time distribution of t, the probability that
  an image's flow loss sees no prompt or text (condition dropout, for CFG), and the
  probability that it sees the text but not the prompt (prompt dropout: the plan names every
  object's colour, shape, size and cell, so an image that cannot read the prompt must follow
  the plan — the link text GRPO acts through)."""
  text_weight: float = 1.0
  image_weight: float = 1.0
  t_mean: float = 0.0
  t_std: float = 1.0
  shift: float = 3.0
  cfg_dropout: float = 0.0
  prompt_dropout: float = 0.0

  def __post_init__(self):
    for name in ("cfg_dropout", "prompt_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"sft.{name} must be in [0, 1), got {getattr(self, name)}")


def sample_times(key, shape, spec: SFTSpec):
  """Logit-normal t ∈ (0, 1), shifted by s·t / (1 + (s−1)·t)."""
  t = jax.nn.sigmoid(spec.t_mean + spec.t_std * jax.random.normal(key, shape))
  return spec.shift * t / (1.0 + (spec.shift - 1.0) * t)


def sft_loss(params, batch: SFTBatch, key, *, model: UnifiedTransformer, rollout: RolloutSpec,
             sft: SFTSpec):
  """Returns (loss, metrics): text cross-entropy per trained token, flow MSE per trained image;
  text_token_acc (trained tokens that are the argmax) and text_exact (rows whose whole target
  greedy decoding would write: for understanding batches, the captioning accuracy)."""
  layout = rollout.layout(model.spec)
  encoded = encode(params, batch, model=model, spec=rollout)
  token_logp, greedy = encoded.token_logp, encoded.greedy
  mask = batch.token_mask.astype(jnp.float32)
  tokens = jnp.maximum(jnp.sum(mask), 1.0)
  text_ce = -jnp.sum(token_logp * mask) / tokens
  # Greedy decoding writes a row's target exactly iff every trained token is the argmax.
  hit = greedy | ~batch.token_mask
  has_text = jnp.any(batch.token_mask, axis=(1, 2))
  text_exact = (jnp.sum(jnp.all(hit, axis=(1, 2)) & has_text)
                / jnp.maximum(jnp.sum(has_text), 1))
  b = batch.tokens.shape[0]
  block_ids = jnp.asarray(layout.block_ids())
  flow = []
  for r in range(rollout.rounds):
    t_key, noise_key, drop_key = jax.random.split(jax.random.fold_in(key, r), 3)
    x0 = batch.images[:, r].astype(jnp.float32)
    x1 = jax.random.normal(noise_key, x0.shape, jnp.float32)
    t = sample_times(t_key, (b,), sft)
    tt = t[:, None, None, None]
    # Condition dropout: these rows' images see no prompt or text (what CFG's v_u needs).
    drop = jax.random.bernoulli(drop_key, sft.cfg_dropout, (b,))
    # Prompt dropout: these rows' images see the text but not the prompt; the others see
    # what the sampler's images see.
    hide = jax.random.bernoulli(jax.random.fold_in(drop_key, 1), sft.prompt_dropout, (b,))
    valid = jnp.where(hide[:, None], hide_prompt(batch.valid, layout.prompt_len),
                      image_context(batch.valid, rollout))
    valid = jnp.where(drop[:, None], unconditional(batch.valid, block_ids), valid)
    v = image_velocity(model, encoded.context.params, (1.0 - tt) * x0 + tt * x1, t,
                       layout.image_start(r), valid, block_ids, batch.prompt_mask,
                       encoded.context.cache)
    flow.append(jnp.mean((v - (x1 - x0)) ** 2, axis=(1, 2, 3)))
  image_mask = batch.image_mask.astype(jnp.float32)
  flow_mse = jnp.sum(jnp.stack(flow, axis=1) * image_mask) / jnp.maximum(jnp.sum(image_mask), 1.0)
  loss = sft.text_weight * text_ce + sft.image_weight * flow_mse
  return loss, dict(loss=loss, text_ce=text_ce, flow_mse=flow_mse,
                    text_token_acc=jnp.sum(greedy * mask) / tokens, text_exact=text_exact)


def text_reliance(params, batch: SFTBatch, times, *, model: UnifiedTransformer,
                  rollout: RolloutSpec, place=lambda b: b) -> dict:
  """How much the denoiser reads the text, at each flow time t in `times`: the x0 error of
  every image denoised beside its own prompt and text, and beside the previous row's (the
  text rolled by one row; the same image, t and noise). x0 error = t² · velocity error
  (x0 = x_t − t·v).
  A denoiser that ignores the text scores both alike; one that reads a plan naming every
  object can make the first far smaller at high noise, where x_t no longer shows the layout —
  and high noise is where the sampler settles the layout. No condition dropout.

  batch: text-to-image examples (an SFTBatch of this process's rows, on the host), ≥ 2
  rows in all with different scenes; `place` makes it the batch the parameters run on (e.g.
  `sharding.shard_batch`: all processes' rows, on the mesh).
  Returns {f"{t:g}": dict(matched=float, mismatched=float)}."""
  texts = ("prompt_tokens", "prompt_mask", "tokens", "token_mask", "valid")

  @functools.partial(jax.jit, static_argnums=3)
  def x0_error(p, b, logit_t, other_text: bool):
    if other_text:  # rolled over the whole (global) batch: the same pairs on any mesh
      b = b.replace(**{f: jnp.roll(getattr(b, f), 1, axis=0) for f in texts})
    spec = SFTSpec(t_mean=logit_t, t_std=0.0, shift=1.0)
    _, metrics = sft_loss(p, b, jax.random.key(0), model=model, rollout=rollout, sft=spec)
    t = jax.nn.sigmoid(logit_t)
    return metrics["flow_mse"] * t * t

  placed, out = place(batch), {}
  for t in times:
    logit_t = jnp.float32(np.log(t / (1.0 - t)))
    out[f"{t:g}"] = dict(matched=float(x0_error(params, placed, logit_t, False)),
                         mismatched=float(x0_error(params, placed, logit_t, True)))
  return out


def sft_step(state: TrainState, batch: SFTBatch, key, *, model, rollout, sft, optimizer):
  (loss, metrics), grads = jax.value_and_grad(sft_loss, has_aux=True)(
      state.params, batch, jax.random.fold_in(key, state.step), model=model, rollout=rollout,
      sft=sft)
  state, step_metrics = apply_if_finite(state, grads, loss, optimizer)
  metrics.update(step_metrics)
  return state, metrics


def make_sft_step(model: UnifiedTransformer, rollout: RolloutSpec, sft: SFTSpec, optimizer, *,
                  state_shardings=None):
  """The compiled step: fn(state, batch, key) → (state, metrics); the step's PRNG key is
  `key` folded with the step count, so a resumed run draws the same noise.

  On a mesh, place the state (`optim.train_state_shardings`) and the batch
  (`sharding.shard_batch`) before calling; `state_shardings` pins the new state to the same
  layout so that step after step reuses one compiled program."""
  if rollout.markers is not None:
    raise ValueError("SFT in Bagel's image blocks (rollout.image_block 'bagel') is not "
                     "supported: warm up in the plain layout")
  # Pinned as the jit's output layout, not by a constraint inside: on a one-device mesh the
  # constraint hands back replicated arrays, and the evaluation's rollout would compile again
  # for GRPO's layout.
  return jax.jit(functools.partial(sft_step, model=model, rollout=rollout, sft=sft,
                                   optimizer=optimizer),
                 donate_argnums=(0,),
                 out_shardings=None if state_shardings is None else (state_shardings, None))


def _pad_text(ids, length: int, pad_id: int, what: str, field: str):
  if len(ids) > length:
    raise ValueError(f"{what} is {len(ids)} tokens, longer than {field} = {length}")
  return ids + [pad_id] * (length - len(ids)), np.arange(length) < len(ids)


def t2i_batch(examples, *, tokenizer, rollout: RolloutSpec, model_spec) -> SFTBatch:
  """Text-to-image examples (prompt → `<plan> plan </plan> <img>` → image) in the one-round
  layout. examples: dicts with prompt, plan (str) and image (S, S, 3) uint8."""
  if rollout.rounds != 1:
    raise ValueError(f"text-to-image SFT uses one round, got rollout.rounds = {rollout.rounds}")
  prompts, prompt_masks, tokens, token_masks, images = [], [], [], [], []
  for ex in examples:
    p, pm = encode_prompt(ex["prompt"], tokenizer, rollout.prompt_len)
    ids, mask = _pad_text(tokenizer(f"<plan> {ex['plan']} </plan> <img>")["input_ids"],
                          rollout.max_text_tokens, tokenizer.pad_token_id,
                          f"plan of {ex['prompt']!r}", "rollout.max_text_tokens")
    prompts.append(p)
    prompt_masks.append(pm)
    tokens.append(ids)
    token_masks.append(mask)
    images.append(np.asarray(ex["image"], np.float32) / 127.5 - 1.0)
  b = len(examples)
  prompt_mask = np.stack(prompt_masks)
  token_mask = np.stack(token_masks)[:, None]
  valid = np.concatenate([prompt_mask, token_mask[:, 0],
                          np.ones((b, model_spec.image_tokens), bool)], axis=1)
  return SFTBatch(prompt_tokens=np.stack(prompts), prompt_mask=prompt_mask,
                  tokens=np.asarray(tokens, np.int32)[:, None], token_mask=token_mask,
                  images=np.stack(images)[:, None], image_mask=np.ones((b, 1), bool),
                  valid=valid)


def understanding_batch(examples, *, tokenizer, rollout: RolloutSpec, model_spec) -> SFTBatch:
  """Understanding examples (image → caption) in the two-round layout:
  `[BOS] | <img> | image | </img> | caption [EOS] | (no image)`. Only the caption is trained;
  the image is clean context (no flow loss). examples: dicts with caption and image."""
  if rollout.rounds != 2:
    raise ValueError(f"understanding SFT uses two rounds, got rollout.rounds = "
                     f"{rollout.rounds}")
  layout = rollout.layout(model_spec)
  b, t, p = len(examples), rollout.max_text_tokens, rollout.prompt_len
  prompt = np.full((b, p), tokenizer.pad_token_id, np.int32)
  prompt[:, -1] = tokenizer.bos_token_id
  prompt_mask = np.arange(p)[None].repeat(b, 0) == p - 1
  opening, opening_mask = _pad_text([rollout.image_start_id], t, tokenizer.pad_token_id,
                                    "<img>", "rollout.max_text_tokens")
  tokens, token_masks, images = [], [], []
  for ex in examples:
    ids, mask = _pad_text(tokenizer(ex["caption"])["input_ids"] + [rollout.eos_id], t,
                          tokenizer.pad_token_id, f"caption {ex['caption']!r}",
                          "sft_data.caption_tokens")
    tokens.append([opening, ids])
    token_masks.append([np.zeros(t, bool), mask])  # "<img>" is input, not a target
    image = np.asarray(ex["image"], np.float32) / 127.5 - 1.0
    images.append([image, np.zeros_like(image)])
  token_masks = np.asarray(token_masks)
  valid = np.zeros((b, layout.length), bool)
  valid[:, :p] = prompt_mask
  valid[:, layout.text_start(0):layout.text_start(0) + t] = opening_mask
  start = layout.image_start(0)
  valid[:, start:start + model_spec.image_tokens] = True
  valid[:, layout.image_end_slot(0)] = True
  valid[:, layout.text_start(1):layout.text_start(1) + t] = token_masks[:, 1]
  return SFTBatch(prompt_tokens=prompt, prompt_mask=prompt_mask,
                  tokens=np.asarray(tokens, np.int32), token_mask=token_masks,
                  images=np.asarray(images, np.float32),
                  image_mask=np.zeros((b, 2), bool), valid=valid)


def interleaved_batch(examples, *, tokenizer, rollout: RolloutSpec, model_spec,
                      grid: int) -> SFTBatch:
  """Interleaved examples in the R-round layout: the prompt prefixed with
  `prompts.INTERLEAVED_MARKER`, then per object (`prompts.story_order`: raster, or a how-to's
  recipe) `<plan> object </plan> <img>` and the scene so far, each image the clean context of
  the next round. A scene of n < R objects ends with EOS as round n's only token (later rounds
  masked), as a rollout that stops. Every text is trained, every drawn image gets the flow
  loss. examples: dicts with prompt, metadata (the prompt's JSON) and plan (str)."""
  r_max, t, size = rollout.rounds, rollout.max_text_tokens, model_spec.image_size
  layout = rollout.layout(model_spec)
  b = len(examples)
  prompt_tokens = np.zeros((b, rollout.prompt_len), np.int32)
  prompt_mask = np.zeros((b, rollout.prompt_len), bool)
  tokens = np.full((b, r_max, t), tokenizer.pad_token_id, np.int32)
  token_mask = np.zeros((b, r_max, t), bool)
  images = np.zeros((b, r_max, size, size, model_spec.image_channels), np.float32)
  image_mask = np.zeros((b, r_max), bool)
  valid = np.zeros((b, layout.length), bool)
  for i, ex in enumerate(examples):
    prompt = prompts.Prompt.from_json(json.loads(ex["metadata"]))
    objects = prompts.parse_plan(ex["plan"], grid, prompt.domain)
    if objects is None:
      raise ValueError(f"plan {ex['plan']!r} of {ex['prompt']!r} does not parse")
    scene = shapeworld.Scene(tuple(objects), size, grid, prompt.domain)
    steps = prompts.interleaved_rounds(scene, prompt)
    if len(steps) > r_max:
      raise ValueError(f"{ex['prompt']!r} has {len(steps)} objects, more rounds than "
                       f"sft_data.interleaved_rounds = {r_max}")
    prompt_tokens[i], prompt_mask[i] = encode_prompt(
        as_prompt(ex["prompt"], f"{prompts.INTERLEAVED_MARKER} {PROMPT}"), tokenizer,
        rollout.prompt_len)
    valid[i, :rollout.prompt_len] = prompt_mask[i]
    for r in range(min(len(steps) + 1, r_max)):
      ids = (tokenizer(f"<plan> {steps[r][0]} </plan> <img>")["input_ids"] if r < len(steps)
             else [rollout.eos_id])
      tokens[i, r], token_mask[i, r] = _pad_text(ids, t, tokenizer.pad_token_id,
                                                 f"round {r} of {ex['prompt']!r}",
                                                 "sft_data.interleaved_tokens")
      valid[i, layout.text_start(r):layout.text_start(r) + t] = token_mask[i, r]
      if r < len(steps):
        images[i, r] = shapeworld.render(steps[r][1])
        image_mask[i, r] = True
        start = layout.image_start(r)
        valid[i, start:start + model_spec.image_tokens] = True
        if r < r_max - 1:
          valid[i, layout.image_end_slot(r)] = True
  return SFTBatch(prompt_tokens=prompt_tokens, prompt_mask=prompt_mask, tokens=tokens,
                  token_mask=token_mask, images=images, image_mask=image_mask, valid=valid)


def sft_encoders(specs: dict, *, tokenizer, model_spec, grid: int) -> dict:
  """kind → fn(examples) → SFTBatch, for `pipeline.sft_mix`."""
  builders = dict(t2i=t2i_batch, understanding=understanding_batch,
                  interleaved=functools.partial(interleaved_batch, grid=grid))
  return {kind: functools.partial(builders[kind], tokenizer=tokenizer, rollout=spec,
                                  model_spec=model_spec) for kind, spec in specs.items()}
