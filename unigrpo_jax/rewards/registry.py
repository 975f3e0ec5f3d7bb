"""The reward registry and its one calling convention.

A reward is a pure function `fn(images, texts, metadata) -> scores`: `images` (B, R, S, S, C)
in [−1, 1], `texts` a list of B decoded strings (or token arrays), `metadata` a list of B
per-prompt dicts; it returns (B,) float scores (or (B, J) per step, for process rewards).
`score_batch` calls the configured rewards and stops the run with a message naming the reward
whenever one raises, returns the wrong shape, or (unless the caller skips such batches)
returns a non-finite value.
"""
import numpy as np

REWARDS = {}


def register(name: str):
  """Decorator: makes a reward function available to configs by `name`."""
  def wrap(fn):
    if name in REWARDS:
      raise ValueError(f"reward {name!r} is registered twice")
    REWARDS[name] = fn
    return fn
  return wrap


class RewardError(ValueError):
  """A reward function failed or returned something unusable; the message names it."""


def check_names(names, functions=None, *, field: str = "the reward weights"):
  """Raises RewardError unless every name is a registered reward (or one of `functions`);
  the message names `field` and lists the known ones. Call it at start-up, before anything
  compiles."""
  functions = REWARDS if functions is None else functions
  unknown = sorted(set(names) - set(functions))
  if unknown:
    raise RewardError(f"unknown rewards {unknown} in {field}; known: {sorted(functions)}")


def score_batch(weights: dict, images, texts, metadata, *, functions=None, per_step=False,
             allow_nonfinite=False):
  """Scores a batch with every reward named in `weights`.

  Returns (total, scores): total = Σ weight·score, (B,) (or (B, J) with per_step); scores maps
  each name to its float32 array. `functions` overrides the registry (for tests and notebooks).
  `allow_nonfinite` keeps NaN/inf scores instead of raising: the training loop skips that
  batch's update and counts it (evaluation keeps the default, strict).
  """
  functions = REWARDS if functions is None else functions
  check_names(weights, functions)
  batch = len(texts)
  scores, total = {}, 0.0
  for name in sorted(weights):
    try:
      value = np.asarray(functions[name](images, texts, metadata), np.float32)
    except Exception as e:  # the reward is user code: say which one failed, keep the cause
      raise RewardError(f"reward {name!r} raised {type(e).__name__}: {e}") from e
    if value.ndim != (2 if per_step else 1) or value.shape[0] != batch:
      want = "(batch, steps)" if per_step else "(batch,)"
      raise RewardError(f"reward {name!r} returned shape {value.shape}, expected {want} with "
                        f"batch = {batch}")
    if not allow_nonfinite and not np.all(np.isfinite(value)):
      bad = np.argwhere(~np.isfinite(value))[:5].tolist()
      raise RewardError(f"reward {name!r} returned non-finite values at {bad}")
    scores[name] = value
    total = total + weights[name] * value
  return total, scores
