"""Sampling a batch in parts and scoring each part while the next one samples.

Part c is dispatched, read back (what the rewards read of it: this waits for it), and handed to
a worker thread to score while part c + 1 samples; the rewards of all but the last part run
while the device samples. One part is on the device at a time: a CPU back end runs programs
dispatched together at once, on shared cores, which would finish the parts late and together.
One worker scores the parts in order, so the rewards see the same calls in the same order as
when every part is scored after sampling. A `consume` callback (the update part by part) is
handed each part's scores in order as they come in, once every part is sampled: its device
work runs while the later parts are still being scored.
"""
import concurrent.futures
import time
from typing import Callable


def sample_and_score(dispatch: Callable, on_host: Callable, score: Callable, chunks: int,
                     overlap: bool, consume: Callable | None = None):
  """Samples `chunks` parts and scores them.

  Args:
    dispatch: c → part c's rollout (device arrays, dispatched asynchronously).
    on_host: (c, rollout) → what the rewards read of part c (waits for it).
    score: that → the part's scores.
    chunks: the number of parts.
    overlap: score part c while part c + 1 samples (else: score every part after the last
      one is sampled).
    consume: optional (c, rollout, host, scores) → None, called in part order with each
      part's scores as soon as they are in (and every part is sampled).
  Returns:
    (rollouts, hosts, scores, sampled_s): per part, in order; sampled_s the seconds until the
    last part was read back.
  """
  t0 = time.perf_counter()
  rollouts, hosts, pending = [], [], []
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    for c in range(chunks):
      rollouts.append(dispatch(c))
      hosts.append(on_host(c, rollouts[c]))
      if overlap:
        pending.append(pool.submit(score, hosts[-1]))
    sampled_s = time.perf_counter() - t0
    scores = []
    for c in range(chunks):
      scores.append(pending[c].result() if overlap else score(hosts[c]))
      if consume is not None:
        consume(c, rollouts[c], hosts[c], scores[c])
  return rollouts, hosts, scores, sampled_s
