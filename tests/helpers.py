"""Shared tiny configurations: every test model is a few thousand parameters, compiled once.
(Imported by name from the tests; the `tiny` fixture is registered in conftest.py.)"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from unigrpo_jax.model import ModelSpec, UnifiedTransformer, init_params
from unigrpo_jax.model.transformer import TEXT
from unigrpo_jax.sampling import RolloutSpec, score_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
TOKENS = dict(pad_id=0, eos_id=1, image_start_id=2, image_end_id=3)


def env_with_devices(n: int) -> dict:
  """This process's environment, with `n` fake CPU devices for a subprocess (the XLA flags
  already set, e.g. by the root conftest.py, are kept)."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
  return dict(os.environ, XLA_FLAGS=flags.strip())


def tiny_spec(**overrides) -> ModelSpec:
  kw = dict(vocab_size=64, width=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8,
            mlp_dim=64, image_size=8, patch_size=4, image_channels=3, mot=True,
            tie_embeddings=False)
  kw.update(overrides)
  return ModelSpec(**kw)


def tiny_rollout(**overrides) -> RolloutSpec:
  kw = dict(prompt_len=6, max_text_tokens=5, rounds=2, num_steps=4, noise_level=0.8,
            sde_window=(0, 3), **TOKENS)
  kw.update(overrides)
  return RolloutSpec(**kw)


def scorer(model, spec: RolloutSpec, group_size: int = 1):
  """`score_trajectory(params, traj)` for `model` and `spec`, jitted: run eagerly, scoring
  dispatches (and compiles) each of its ops on its own."""
  return jax.jit(functools.partial(score_trajectory, model=model, spec=spec,
                                   group_size=group_size))


def lively_params(spec: ModelSpec, seed: int = 0):
  """Fresh params with a non-zero velocity head (a fresh head is zero: images would be noise)."""
  params = init_params(spec, jax.random.key(seed))
  kernel = params["image_out"]["proj"]["kernel"]
  params["image_out"]["proj"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(seed + 1),
                                                                  kernel.shape)
  return params


@functools.partial(jax.jit, static_argnums=0)
def _text_logits(spec, params, tokens):
  model = UnifiedTransformer(spec)
  b, t = tokens.shape
  h = model.apply({"params": params}, tokens, method=model.embed_tokens)
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  h, _ = model.apply({"params": params}, h, pos, mask, route=TEXT)
  return model.apply({"params": params}, h, method=model.logits)


def text_logits(spec, params, tokens):
  """Our full-sequence text logits (B, T, V): causal mask, positions 0…T−1, text route."""
  return np.asarray(_text_logits(spec, params, tokens))


def checkpoint_steps(workdir, stage: str = "grpo") -> list[int]:
  """The steps of a run's kept checkpoints of `stage`, ascending."""
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, stage, "checkpoints"))
                if name.isdigit())


def truncate_files(folder, keep_part: int = 0) -> None:
  """Damages a checkpoint: every file under `folder` cut to 1/`keep_part` of its length
  (0: emptied)."""
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // keep_part if keep_part else 0)
