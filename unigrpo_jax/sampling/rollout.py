"""The jitted rollout: R rounds of (text segment by KV-cached decoding, image by SDE/ODE steps).

One compiled function per shape. Each round:
  1. decodes `max_text_tokens` tokens with `lax.scan` (temperature, top-k); a row stops at
     `<img>` or EOS and its later slots are masked, not branched;
  2. draws an image with `lax.scan` over the flow steps — one conditional forward per step, no
     classifier-free guidance (unless `rollout.cfg_scale` ≠ 1, for the ablation: two) —
     recording every visited x_{t_j} and each step's log-prob;
  3. writes the clean image (t = 0) into the KV cache, then `</img>`, so the next round's text
     conditions on it.
A row that emits EOS ends its trajectory: its later rounds are fully masked. A row that runs out
of text slots without `<img>` still gets its image (the structural reward judges it). With
`rollout.draw_images` off, only the text segment runs (one round: plain LLM GRPO).
Rewards are computed outside, from the returned `Trajectory`.
"""
import dataclasses
import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from unigrpo_jax.model import TEXT, UnifiedTransformer, for_decoding
from unigrpo_jax.sampling import sde
from unigrpo_jax.sampling.forward import guided_velocity, image_context, run_slots
from unigrpo_jax.sampling.spec import RolloutSpec
from unigrpo_jax.sampling.text import sample_tokens


@flax.struct.dataclass
class Trajectory:
  """Everything a rollout produced, as a pytree (B rows, R rounds, T text slots, N steps).

  prompt_tokens, prompt_mask: (B, P) left-padded prompts;
  tokens, token_logp, token_mask: (B, R, T) sampled text, its log-probs, and which are real;
  latents: (B, R, N+1, S, S, C) every visited state x_{t_0}=noise … x_{t_N}=image;
  step_logp, step_mask: (B, R, N) SDE-step log-probs (0 on deterministic steps) and which
  steps are trained (in a drawn image); train_steps: (B, R, K) int32, the K =
  `spec.trained_steps` steps each row trains, ascending; step_mean: (B, R, K, S, S, C) the SDE
  mean μ_old at them (for RatioNorm); timesteps: (N+1,);
  images: (B, R, S, S, C);
  image_mask: (B, R) which images belong to a live trajectory; valid: (B, L) slot visibility.
  """
  prompt_tokens: jax.Array
  prompt_mask: jax.Array
  tokens: jax.Array
  token_logp: jax.Array
  token_mask: jax.Array
  latents: jax.Array
  step_logp: jax.Array
  step_mask: jax.Array
  train_steps: jax.Array
  step_mean: jax.Array
  timesteps: jax.Array
  images: jax.Array
  image_mask: jax.Array
  valid: jax.Array


def pad_prompts(prompt_tokens, prompt_mask, spec: RolloutSpec):
  """Left-pads prompts (B, P') to `rollout.prompt_len`; a longer prompt is an error."""
  b, p = prompt_tokens.shape
  if prompt_mask.shape != (b, p):
    raise ValueError(f"prompt_mask has shape {prompt_mask.shape}, prompt_tokens {(b, p)}")
  if p > spec.prompt_len:
    raise ValueError(f"prompt_tokens has {p} tokens but rollout.prompt_len is "
                     f"{spec.prompt_len}: raise rollout.prompt_len or shorten the prompts")
  extra = spec.prompt_len - p
  tokens = jnp.pad(prompt_tokens.astype(jnp.int32), ((0, 0), (extra, 0)),
                   constant_values=spec.pad_id)
  return tokens, jnp.pad(prompt_mask.astype(bool), ((0, 0), (extra, 0)))


class DecodeState(NamedTuple):
  """What the rollout carries from phase to phase (gemma's `SamplingState`, for one batch).

  cache: the KV cache, in the form of the decoding parameters (`StackParams.empty_cache`);
  valid: (B, L) slot visibility; logits: (B, V) next-token logits; ended: (B,) rows whose
  trajectory ended with EOS.
  """
  cache: tuple
  valid: jax.Array
  logits: jax.Array
  ended: jax.Array


class Segment(NamedTuple):
  """One round's decoded text, each (T, B): tokens, their log-probs, `live` (the slot was
  sampled: the row had not stopped) and `eos` (the row ended its trajectory there)."""
  tokens: jax.Array
  logp: jax.Array
  live: jax.Array
  eos: jax.Array


class Phases:
  """The rollout's phases over one batch, built inside a traced function (not a pytree).

  `rollout` chains them through a `DecodeState`; benchmarks jit them one by one.
  """

  def __init__(self, params, prompt_mask, *, model: UnifiedTransformer, spec: RolloutSpec):
    self.model, self.spec = model, spec
    self.params = for_decoding(params, model.spec)
    self.prompt_mask = prompt_mask
    self.layout = spec.layout(model.spec)
    self.blocks = jnp.asarray(self.layout.block_ids())
    self.times = sde.time_grid(spec.num_steps, spec.shift)

  def _apply(self, *args, method):
    return self.model.apply({"params": self.params.tree}, *args, method=method)

  def _write(self, h, start, valid, cache, route=TEXT, prompt_mask=None):
    """Runs h at `start` and writes it into the cache, which may be a prefix window of slots
    (as long as `valid`). `prompt_mask` defaults to the batch's (another for a row subset)."""
    prompt_mask = self.prompt_mask if prompt_mask is None else prompt_mask
    return run_slots(self.model, self.params, h, start, valid, self.blocks[:valid.shape[1]],
                     prompt_mask, cache, route)

  def _feed(self, tokens, start, valid, cache, prompt_mask=None):
    """Writes tokens (B, T) at `start`; returns (logits after the last one, cache)."""
    h, cache = self._write(self._apply(tokens, method=self.model.embed_tokens), start, valid,
                           cache, prompt_mask=prompt_mask)
    return self._apply(h[:, -1], method=self.model.logits), cache

  def prefill(self, prompt_tokens, group_size: int = 1) -> DecodeState:
    """Writes the (left-padded) prompts into a fresh cache; returns the decoding state.

    With `group_size` G the rows come in contiguous groups of G sharing one prompt: each
    group's prompt runs once and its cache and next-token logits are repeated to its rows.
    """
    b, g = prompt_tokens.shape[0], group_size
    valid = jnp.zeros((b, self.layout.length), bool)
    valid = valid.at[:, :self.spec.prompt_len].set(self.prompt_mask)
    cache = self.params.empty_cache(self.model.spec, b // g, self.layout.length)
    logits, cache = self._feed(prompt_tokens[::g], 0, valid[::g], cache,
                               prompt_mask=self.prompt_mask[::g])
    if g > 1:
      logits, cache = jax.tree.map(lambda x: jnp.repeat(x, g, axis=0), (logits, cache))
    return DecodeState(cache, valid, logits, jnp.zeros((b,), bool))

  def decode(self, state: DecodeState, r: int, key) -> tuple[DecodeState, Segment]:
    """Decodes round r's text segment: a row stops after `<img>` or EOS; EOS also ends its
    trajectory. Returns the new state and the segment."""
    spec = self.spec
    start = self.layout.text_start(r)

    def step(carry, k):
      cache, valid, logits, done = carry
      token, logp = sample_tokens(jax.random.fold_in(key, k), logits, spec.temperature,
                                  spec.top_k)
      live = ~done
      token = jnp.where(live, token, spec.pad_id)
      logp = jnp.where(live, logp, 0.0)
      eos = live & (token == spec.eos_id)
      done = done | eos | (live & (token == spec.image_start_id))
      valid = jax.lax.dynamic_update_slice(valid, live[:, None], (0, start + k))
      logits, cache = self._feed(token[:, None], start + k, valid, cache)
      return (cache, valid, logits, done), Segment(token, logp, live, eos)

    # Text attends only to the slots before its segment ends: decode over that prefix window of
    # the cache (copied out and back once per round) instead of the whole trajectory's length.
    end = start + spec.max_text_tokens
    window = jax.tree.map(lambda c: c[:, :, :end], state.cache)
    (window, valid_window, logits, _), segment = jax.lax.scan(
        step, (window, state.valid[:, :end], state.logits, state.ended),
        jnp.arange(spec.max_text_tokens))
    cache = jax.tree.map(lambda c, w: c.at[:, :, :end].set(w), state.cache, window)
    valid = state.valid.at[:, :end].set(valid_window)
    ended = state.ended | jnp.any(segment.eos, axis=0)
    return DecodeState(cache, valid, logits, ended), segment

  def noisy_steps(self, b: int, group_size: int, key, start) -> jax.Array:
    """(B, N) bool: the steps each row samples with noise — the window [start, start + size)
    (`start` may be traced: a sliding window), or with `rollout.sde_steps` = k, k of them
    drawn with `key` for each group of `group_size` contiguous rows, shared by the group's
    rows; none in ODE or text-only mode."""
    spec, n = self.spec, self.spec.num_steps
    size = spec.window[1]
    if spec.mode == "ode" or not spec.draw_images:
      return jnp.zeros((b, n), bool)
    steps = jnp.arange(n)
    if not spec.sde_steps:
      return jnp.broadcast_to((steps >= start) & (steps < start + size), (b, n))
    draws = jax.random.uniform(key, (b // group_size, size))
    chosen = jnp.argsort(jnp.argsort(draws, axis=1), axis=1) < spec.sde_steps
    rows = jax.lax.dynamic_update_slice(jnp.zeros((b // group_size, n), bool), chosen,
                                        (0, start))
    return jnp.repeat(rows, group_size, axis=0)

  def trained_steps(self, noisy, key) -> jax.Array:
    """(B, K) int32, ascending: the K = `rollout.trained_steps` of each row's noisy steps
    (B, N) it trains — all of them, or with `rollout.timestep_fraction` < 1 a subset drawn
    per row with `key`."""
    k = self.spec.trained_steps
    if not k:
      return jnp.zeros((noisy.shape[0], 0), jnp.int32)
    draws = (jax.random.uniform(key, noisy.shape) if self.spec.timestep_fraction < 1
             else jnp.zeros(noisy.shape))
    first = jnp.argsort(jnp.where(noisy, draws, 2.0), axis=1, stable=True)[:, :k]
    return jnp.sort(first, axis=1).astype(jnp.int32)

  def draw(self, state: DecodeState, r: int, noise_key, sde_key, noisy, group_size: int = 1):
    """Draws round r's image from noise, one conditional forward per step (no CFG; two with
    `rollout.cfg_scale` ≠ 1). `noisy` (B, N) bool (`noisy_steps`): which steps of each row
    are stochastic. With `rollout.group_noise`, each group of `group_size` contiguous rows
    starts from one noise.

    Returns (image (B, S, S, C), visited x_{t_0..t_{N−1}} (N, B, S, S, C), log-probs (N, B),
    SDE means (N, B, S, S, C)).
    """
    cache, valid = state.cache, image_context(state.valid, self.spec)
    start = self.layout.image_start(r)
    times = self.times

    def step(x, xs):
      t, t_next, level, j = xs
      v = guided_velocity(self.model, self.params, x, t, start, valid, self.blocks,
                          self.prompt_mask, cache, self.spec.cfg_scale, self.spec.markers)
      x_next, logp, mean, _ = sde.step(self.spec.sde_type, x, v, t, t_next, level,
                                       key=jax.random.fold_in(sde_key, j), t_max=times[1])
      return x_next, (x, logp, mean)

    b = valid.shape[0]
    levels = jnp.where(noisy.T, jnp.float32(self.spec.noise_level), 0.0)
    g = group_size if self.spec.group_noise else 1
    noise = jax.random.normal(noise_key, (b // g,) + self.model.spec.image_shape, jnp.float32)
    noise = jnp.repeat(noise, g, axis=0) if g > 1 else noise
    image, (visited, logp, mean) = jax.lax.scan(
        step, noise, (times[:-1], times[1:], levels, jnp.arange(self.spec.num_steps)))
    return image, visited, logp, mean

  def close(self, state: DecodeState, r: int, image) -> DecodeState:
    """Writes round r's clean image (t = 0) into the cache, then `</img>` unless r is last.
    A Bagel block ends the trajectory: nothing follows it, so nothing is written."""
    if self.spec.markers is not None:
      return state
    cache, valid, logits, ended = state
    b = valid.shape[0]
    drawn = ~ended
    start = self.layout.image_start(r)
    valid = valid.at[:, start:start + self.model.spec.image_tokens].set(drawn[:, None])
    clean = self._apply(image, jnp.zeros((b,), jnp.float32), method=self.model.embed_image)
    _, cache = self._write(clean, start, valid, cache)
    if r < self.spec.rounds - 1:
      slot = self.layout.image_end_slot(r)
      valid = valid.at[:, slot].set(drawn)
      closing = jnp.full((b, 1), self.spec.image_end_id, jnp.int32)
      logits, cache = self._feed(closing, slot, valid, cache)
    return DecodeState(cache, valid, logits, ended)


def rollout(params, prompt_tokens, prompt_mask, key, window_start=None, *,
            model: UnifiedTransformer, spec: RolloutSpec, group_size: int = 1) -> Trajectory:
  """Samples one trajectory per prompt row. prompt_tokens/mask: (B, P' ≤ prompt_len); with
  `group_size` G, contiguous groups of G rows share one prompt (prefilled once per group).
  window_start: () int, the SDE window's first step (`spec.window_start` of the GRPO step, for
  a sliding window); None: `rollout.sde_window`'s."""
  spec.check_model(model.spec)
  prompt_tokens, prompt_mask = pad_prompts(prompt_tokens, prompt_mask, spec)
  phases = Phases(params, prompt_mask, model=model, spec=spec)
  window_start = spec.window[0] if window_start is None else window_start
  state = phases.prefill(prompt_tokens, group_size)
  rounds = []
  for r in range(spec.rounds):
    text_key, noise_key, sde_key = jax.random.split(jax.random.fold_in(key, r), 3)
    state, segment = phases.decode(state, r, text_key)
    drawn = ~state.ended
    b = drawn.shape[0]
    # Drawn apart from the SDE's own keys (those fold in step indices below num_steps).
    noisy = phases.noisy_steps(b, group_size, jax.random.fold_in(sde_key, spec.num_steps),
                               window_start)
    trained = phases.trained_steps(noisy, jax.random.fold_in(sde_key, spec.num_steps + 1))
    if spec.draw_images:
      image, visited, step_logp, mean = phases.draw(state, r, noise_key, sde_key, noisy,
                                                    group_size)
      state = phases.close(state, r, image)
    else:  # text-only: image fields keep their shapes, hold zeros, and are masked out
      drawn = jnp.zeros_like(drawn)
      image = jnp.zeros((b,) + model.spec.image_shape, jnp.float32)
      visited = jnp.zeros((spec.num_steps,) + image.shape, jnp.float32)
      step_logp = jnp.zeros((spec.num_steps, b), jnp.float32)
      mean = visited
    latents = jnp.concatenate([visited, image[None]], axis=0)  # (N+1, B, S, S, C)
    rows = jnp.arange(b)[:, None]
    step_mask = jnp.zeros((b, spec.num_steps), bool).at[rows, trained].set(True)
    rounds.append(dict(
        tokens=segment.tokens.T, token_logp=segment.logp.T, token_mask=segment.live.T,
        latents=jnp.moveaxis(latents, 0, 1), step_logp=step_logp.T,
        step_mask=drawn[:, None] & step_mask, train_steps=trained, images=image,
        image_mask=drawn, step_mean=jnp.moveaxis(mean, 0, 1)[rows, trained]))
  stacked = {k: jnp.stack([rd[k] for rd in rounds], axis=1) for k in rounds[0]}
  return Trajectory(prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
                    timesteps=phases.times, valid=state.valid, **stacked)


def concat_trajectories(trajs, order=None) -> Trajectory:
  """Trajectories of consecutive chunks of one batch's rows as one trajectory: every per-row
  field concatenated (then its rows taken in `order`, indices into the concatenation, when
  given); the shared time grid is the first chunk's."""
  def cat(*xs):
    x = jnp.concatenate(xs, axis=0)
    return x if order is None else x[order]
  rows = {f.name: cat(*(getattr(t, f.name) for t in trajs))
          for f in dataclasses.fields(Trajectory) if f.name != "timesteps"}
  return trajs[0].replace(**rows)


def make_rollout(model: UnifiedTransformer, spec: RolloutSpec, group_size: int = 1):
  """The compiled rollout: fn(params, prompt_tokens, prompt_mask, key[, window_start]) →
  Trajectory (rows in contiguous groups of `group_size` sharing one prompt; see `rollout`)."""
  return jax.jit(functools.partial(rollout, model=model, spec=spec, group_size=group_size))
