"""Teacher-forced scoring of a recorded trajectory: token log-probs, step log-probs, velocities.

This is the policy side of the GRPO ratio. The clean sequence (prompt, text, clean images,
`</img>`) goes through the model once; its keys/values are the shared context every noised image
block then attends to, so the context is computed once, not once per SDE step. With the
parameters that produced the rollout, every log-prob equals the recorded one (ratio = 1).

A GRPO group is G samples of one prompt. With `group_size` G the rows come in contiguous
groups that share their prompt slots, and the prompt is encoded once per group: its keys and
values are repeated to the group's rows, which then run only from the first slot after the
prompt (the gradient sums over the group through the repeat). Same results, 1/G of the prompt
work.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.model import SequenceLayout, StackParams, UnifiedTransformer, for_training
from unigrpo_jax.sampling import sde
from unigrpo_jax.sampling.forward import guided_velocity, image_context, run_slots
from unigrpo_jax.sampling.rollout import Trajectory
from unigrpo_jax.sampling.spec import RolloutSpec
from unigrpo_jax.sampling.text import token_entropy, token_log_probs


def sequence_tokens(traj, spec: RolloutSpec, layout: SequenceLayout):
  """(B, L) token ids of the whole sequence (pad on image slots, which hold embeddings)."""
  b = traj.tokens.shape[0]
  seq = jnp.full((b, layout.length), spec.pad_id, jnp.int32)
  seq = seq.at[:, :spec.prompt_len].set(traj.prompt_tokens)
  for r in range(spec.rounds):
    start = layout.text_start(r)
    seq = seq.at[:, start:start + spec.max_text_tokens].set(traj.tokens[:, r])
    if r < spec.rounds - 1:
      seq = seq.at[:, layout.image_end_slot(r)].set(spec.image_end_id)
  return seq


def _repeat_prefix(cache, group_size: int, length: int):
  """A prompt-only KV cache (…, B/G, K, P, D) leaves → each group's row repeated G times and
  the slot axis padded to the sequence length: (…, B, K, L, D)."""
  def grow(x):
    x = jnp.repeat(x, group_size, axis=x.ndim - 4)
    pad = [(0, 0)] * x.ndim
    pad[-2] = (0, length - x.shape[-2])
    return jnp.pad(x, pad)
  return jax.tree.map(grow, cache)


def _run_sequence(model, run_params: StackParams, h, seq, blocks, spec: RolloutSpec,
                  group_size: int):
  """The block stack over the whole clean sequence h (B, L, width): (hidden, context cache).
  With group_size > 1, the prompt slots run once per group (module docstring)."""
  if group_size == 1:
    return run_slots(model, run_params, h, 0, seq.valid, blocks, seq.prompt_mask)
  p = spec.prompt_len
  head = slice(None, None, group_size)
  hp, prefix = run_slots(model, run_params, h[head, :p], 0, seq.valid[head, :p], blocks[:p],
                         seq.prompt_mask[head])
  hs, cache = run_slots(model, run_params, h[:, p:], p, seq.valid, blocks, seq.prompt_mask,
                        _repeat_prefix(prefix, group_size, h.shape[1]))
  return jnp.concatenate([jnp.repeat(hp, group_size, axis=0), hs], axis=1), cache


def check_group_prompts(prompt_tokens, prompt_mask, group_size: int):
  """Host-side check of `group_size`'s contract: rows come in contiguous groups of G with one
  prompt each. Raises ValueError naming the first group that differs."""
  tokens, mask = np.asarray(prompt_tokens), np.asarray(prompt_mask)
  if tokens.shape[0] % group_size:
    raise ValueError(f"batch of {tokens.shape[0]} rows does not split into groups of "
                     f"{group_size}")
  for name, x in (("prompt_mask", mask), ("prompt_tokens", np.where(mask, tokens, -1))):
    groups = x.reshape((-1, group_size) + x.shape[1:])
    bad = np.flatnonzero((groups != groups[:, :1]).reshape(groups.shape[0], -1).any(axis=1))
    if bad.size:
      raise ValueError(f"rows of group {bad[0]} (rows {bad[0] * group_size}–"
                       f"{(bad[0] + 1) * group_size - 1}) have different {name}: a group's "
                       f"samples must share one prompt")


class Context(NamedTuple):
  """What noised image blocks attend to after `encode`: the KV cache of the whole clean
  sequence, and the parameters in the form that computed it (the cache's form)."""
  cache: tuple
  params: StackParams


class Encoded(NamedTuple):
  """A teacher-forced pass's results. token_logp, token_entropy: (B, R, T), 0 on masked
  tokens; greedy: (B, R, T) bool, the token is the argmax (a sequence whose every token is
  greedy is what greedy decoding writes); context: for the image blocks."""
  token_logp: jax.Array
  token_entropy: jax.Array
  greedy: jax.Array
  context: Context


def encode(params, seq, *, model: UnifiedTransformer, spec: RolloutSpec,
           group_size: int = 1) -> Encoded:
  """Teacher-forced pass over a sequence's clean slots (prompt, text, clean images, `</img>`).

  seq: anything with a Trajectory's prompt_tokens, prompt_mask, tokens, token_mask, images
  and valid (a Trajectory, or a supervised batch); with `group_size` G its rows come in
  contiguous groups of G sharing one prompt (module docstring).
  """
  ms = model.spec
  layout = spec.layout(ms)
  b = seq.tokens.shape[0]

  def apply(*args, method):
    return model.apply({"params": params}, *args, method=method)

  h = apply(sequence_tokens(seq, spec, layout), method=model.embed_tokens)
  clean = jnp.zeros((b,), jnp.float32)
  # Clean images are context for what follows them; a Bagel block has nothing after it.
  for r in range(spec.rounds if spec.draw_images and spec.markers is None else 0):
    start = layout.image_start(r)
    h = h.at[:, start:start + ms.image_tokens].set(
        apply(seq.images[:, r], clean, method=model.embed_image))
  run_params = for_training(params, ms)
  hidden, cache = _run_sequence(model, run_params, h, seq, jnp.asarray(layout.block_ids()),
                                spec, group_size)
  token_logp, entropy, greedy = [], [], []
  for r in range(spec.rounds):
    start = layout.text_start(r)
    logits = apply(hidden[:, start - 1:start - 1 + spec.max_text_tokens], method=model.logits)
    token_logp.append(token_log_probs(logits, seq.tokens[:, r], spec.temperature))
    entropy.append(token_entropy(logits, spec.temperature))
    greedy.append(jnp.argmax(logits, axis=-1) == seq.tokens[:, r])
  token_logp = jnp.where(seq.token_mask, jnp.stack(token_logp, axis=1), 0.0)
  entropy = jnp.where(seq.token_mask, jnp.stack(entropy, axis=1), 0.0)
  return Encoded(token_logp, entropy, jnp.stack(greedy, axis=1), Context(cache, run_params))


def score_trajectory(params, traj: Trajectory, *, model: UnifiedTransformer, spec: RolloutSpec,
                     group_size: int = 1):
  """Recomputes a trajectory's log-probs under `params` (`group_size`: see `encode`).

  Returns a dict: token_logp, token_entropy (B, R, T) (0 on masked tokens); step_logp
  (B, R, N) (0 on steps not trained); at each row's K trained steps (`traj.train_steps`):
  velocity and SDE mean (B, R, K, S, S, C), as the velocity-MSE and latent-KL regularisers
  need, and std (B, R, K).
  """
  ms = model.spec
  layout = spec.layout(ms)
  b = traj.tokens.shape[0]
  blocks = jnp.asarray(layout.block_ids())
  encoded = encode(params, traj, model=model, spec=spec, group_size=group_size)
  context = encoded.context
  image_valid = image_context(traj.valid, spec)

  times = traj.timesteps
  rows = jnp.arange(b)
  step_logp = jnp.zeros(traj.step_logp.shape, jnp.float32)
  per_round = []
  for r in range(spec.rounds):
    start = layout.image_start(r)
    latents = traj.latents[:, r]

    def one_step(j, start=start, latents=latents):  # j: (B,) each row's step
      x = latents[rows, j]
      v = guided_velocity(model, context.params, x, times[j], start, image_valid, blocks,
                          traj.prompt_mask, context.cache, spec.cfg_scale, spec.markers)
      _, logp, mean, std = sde.step(spec.sde_type, x, v, times[j], times[j + 1],
                                    spec.noise_level, prev_sample=latents[rows, j + 1],
                                    t_max=times[1])
      return logp, v, mean, jnp.broadcast_to(std, x.shape).reshape(b, -1)[:, 0]

    # (K, B), (K, B, S, S, C) ×2, (K, B)
    steps = traj.train_steps[:, r]  # (B, K)
    logp, v, mean, std = jax.lax.map(one_step, steps.T)
    step_logp = step_logp.at[rows[:, None], r, steps].set(logp.T)
    per_round.append((v, mean, std))
  stack = lambda i: jnp.stack([jnp.moveaxis(x[i], 0, 1) for x in per_round], axis=1)  # noqa: E731
  return dict(token_logp=encoded.token_logp, token_entropy=encoded.token_entropy,
              step_logp=step_logp,
              velocity=stack(0), mean=stack(1), std=stack(2))
