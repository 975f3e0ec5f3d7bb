"""Sampling a batch in parts and scoring each part while the next one samples.

JAX dispatches a rollout and returns at once; reading a part's results back waits for that part
only. So part c is dispatched, part c − 1 is read back (its rollout done, part c computing) and
handed to a worker thread to score, and so on: the rewards of all but the last part run while
the device samples. One worker scores the parts in order, so the rewards see the same calls in
the same order as when every part is scored after sampling.
"""
import concurrent.futures
import time
from typing import Callable


def sample_and_score(dispatch: Callable, on_host: Callable, score: Callable, chunks: int,
                     overlap: bool):
  """Samples `chunks` parts and scores them.

  Args:
    dispatch: c → part c's rollout (device arrays, dispatched asynchronously).
    on_host: (c, rollout) → what the rewards read of part c (waits for it).
    score: that → the part's scores.
    chunks: the number of parts.
    overlap: score part c − 1 while part c samples (else: sample every part, then score).
  Returns:
    (rollouts, hosts, scores, sampled_s): per part, in order; sampled_s the seconds until the
    last part was read back.
  """
  t0 = time.perf_counter()
  if not overlap:
    rollouts = [dispatch(c) for c in range(chunks)]
    hosts = [on_host(c, r) for c, r in enumerate(rollouts)]
    sampled_s = time.perf_counter() - t0
    return rollouts, hosts, [score(h) for h in hosts], sampled_s
  rollouts, hosts, pending = [], [], []
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    for c in range(chunks + 1):
      if c < chunks:
        rollouts.append(dispatch(c))
      if c:
        hosts.append(on_host(c - 1, rollouts[c - 1]))
        pending.append(pool.submit(score, hosts[-1]))
    sampled_s = time.perf_counter() - t0
    return rollouts, hosts, [f.result() for f in pending], sampled_s
