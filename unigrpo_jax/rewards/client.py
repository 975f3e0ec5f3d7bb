"""A reward served over HTTP (`rewards/serve.py`), called like any other reward.

`ServedReward(name, url, spec)(images, texts, metadata)` splits the batch into requests of
`spec.batch_size` rows, sends up to `spec.max_concurrency` at once, and gives each a timeout and
`spec.retries` retries with exponential back-off (connection refused, a timeout, a 5xx answer).
A request that still fails scores its rows NaN — the training loop skips such a batch's update
and counts it, as it does for any non-finite reward — with a warning that names the server and
the cause. A 4xx answer (the request itself is wrong) or an answer of the wrong length is a
RewardError at once: retrying cannot fix it.
"""
import concurrent.futures
import dataclasses
import json
import time
import urllib.error
import urllib.request

from absl import logging
import numpy as np

from unigrpo_jax.rewards import protocol
from unigrpo_jax.rewards.registry import RewardError


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """`config.reward_client`: how served rewards are called.

  timeout_s: seconds one request may take; retries: further tries of a failed request;
  backoff_s: the wait before the first retry, doubled for each next one; batch_size: rows per
  request (0: the whole batch in one); max_concurrency: requests in flight at once.
  """
  timeout_s: float = 60.0
  retries: int = 3
  backoff_s: float = 0.5
  batch_size: int = 0
  max_concurrency: int = 4

  def __post_init__(self):
    for name, zero_ok in (("timeout_s", False), ("backoff_s", True)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
          value == 0 and not zero_ok):
        raise ValueError(f"config.reward_client.{name} must be a positive number, got "
                         f"{value!r}")
    for name, low in (("retries", 0), ("batch_size", 0), ("max_concurrency", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"config.reward_client.{name} must be an integer ≥ {low}, got "
                         f"{value!r}")


class Unreachable(Exception):
  """A request failed in a way another try may fix (no answer, a timeout, a 5xx)."""


def _post(url: str, body: bytes, timeout_s: float) -> np.ndarray:
  request = urllib.request.Request(f"{url}/score", data=body, method="POST",
                                   headers={"Content-Type": protocol.CONTENT_TYPE})
  try:
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
      return protocol.decode_scores(answer.read())
  except urllib.error.HTTPError as e:
    try:
      message = json.loads(e.read()).get("error", "")
    except ValueError:
      message = ""
    if 400 <= e.code < 500:
      raise RewardError(f"the server at {url} refused the request ({e.code}: {message})") from e
    raise Unreachable(f"{e.code} {message}") from e
  except OSError as e:  # URLError, a timeout, a refused or reset connection
    raise Unreachable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e


def health(url: str, timeout_s: float = 5.0) -> dict:
  """The server's `/health` answer ({"reward", "protocol"}); raises Unreachable."""
  try:
    with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as answer:
      return json.loads(answer.read())
  except (OSError, ValueError) as e:
    raise Unreachable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e


@dataclasses.dataclass(frozen=True)
class ServedReward:
  """The reward `name` as served at `url`: fn(images, texts, metadata) → float32 scores, (B,)
  or, for a process reward (`per_step`), (B, J) with J = the images' rounds."""
  name: str
  url: str
  spec: ClientSpec = ClientSpec()
  per_step: bool = False

  def request(self, images, texts, metadata) -> np.ndarray:
    """One request, retried; NaN rows when the server stays unreachable."""
    body = protocol.encode_request(images, texts, metadata)
    wait, cause = self.spec.backoff_s, ""
    for attempt in range(self.spec.retries + 1):
      if attempt:
        time.sleep(wait)
        wait *= 2
      try:
        scores = _post(self.url, body, self.spec.timeout_s)
      except Unreachable as e:
        cause = str(e)
        continue
      if scores.ndim < 1 or scores.shape[0] != len(texts):
        raise RewardError(f"reward {self.name!r}: the server at {self.url} answered "
                          f"{scores.shape[0] if scores.ndim else 'a scalar'} scores for "
                          f"{len(texts)} samples")
      return scores
    logging.warning("reward %r: the server at %s did not answer %d samples after %d tries "
                    "(%s): scored NaN", self.name, self.url, len(texts), self.spec.retries + 1,
                    cause)
    shape = (len(texts),) + (np.shape(images)[1:2] if self.per_step else ())
    return np.full(shape, np.nan, np.float32)

  def __call__(self, images, texts, metadata) -> np.ndarray:
    rows = len(texts)
    size = self.spec.batch_size or rows
    parts = [slice(s, min(s + size, rows)) for s in range(0, rows, size)]
    with concurrent.futures.ThreadPoolExecutor(min(len(parts), self.spec.max_concurrency)) as pool:
      answers = list(pool.map(lambda s: self.request(images[s], texts[s], metadata[s]), parts))
    return np.concatenate(answers, axis=0)
