r"""Detector benchmark: the host time the rule-based rewards spend per GRPO batch, as one JSON
object.

  python experiments/bench_detector.py --out=experiments/results/bench_detector.json

A batch is `--batch` ShapeWorld version 2 scenes of one to five objects, rendered and degraded
as a generator draws them (blur, pixel noise, darkening: `shapeworld.degrade`). Each batch is
detected with an empty cache (`detector.detect_all`, as the rewards call it) once per thread
count in `--threads`; `batch_ms` is the median over `--batches` batches. The detections are
checked equal to one-at-a-time detection.
"""
import json
import os
import statistics
import time

from absl import app, flags
import numpy as np

from unigrpo_jax import timing
from unigrpo_jax.data import detector, shapeworld

_BATCH = flags.DEFINE_integer("batch", 32, "Images per batch (world2: 4 prompts × 8).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches timed per thread count.")
_THREADS = flags.DEFINE_list("threads", ["1", "2", "3", "4"], "Thread counts to time.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the scenes and their degradation.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


def _batch(rng, world, size: int) -> list[np.ndarray]:
  return [shapeworld.degrade(shapeworld.render(shapeworld.sample_scene(
      rng, num_objects=int(rng.integers(1, 6)), large_prob=0.3, world=world)), rng,
      blur=float(rng.uniform(0.0, 1.0)), noise=float(rng.uniform(0.0, 0.1)),
      dark=float(rng.uniform(0.7, 1.0))) for _ in range(size)]


def main(argv):
  del argv
  world = shapeworld.WORLDS[2]
  rng = np.random.default_rng(_SEED.value)
  batches = [_batch(rng, world, _BATCH.value) for _ in range(_BATCHES.value)]
  worlds, grids = [world] * _BATCH.value, [None] * _BATCH.value
  detector.detect_all(batches[0][:2], worlds=worlds[:2], grids=grids[:2])  # templates built
  one_at_a_time = [[detector._detect(np.asarray(image, np.float32), world,
                                     world.size // world.grid, 0.75, 0.75) for image in batch]
                   for batch in batches]
  default_threads, figures = detector.THREADS, {}
  try:
    for threads in map(int, _THREADS.value):
      detector.THREADS = threads
      times = []
      for batch, expected in zip(batches, one_at_a_time):
        detector._cache.clear()
        t0 = time.perf_counter()
        found = detector.detect_all(batch, worlds=worlds, grids=grids)
        times.append(time.perf_counter() - t0)
        if found != expected:
          raise AssertionError(f"{threads} threads detect other objects than one at a time")
      figures[str(threads)] = 1000 * statistics.median(times)
  finally:
    detector.THREADS = default_threads
  single = figures.get("1")
  result = dict(
      cpu=timing.cpu_model(), cores=os.cpu_count(), batch=_BATCH.value,
      batches=_BATCHES.value, seed=_SEED.value, default_threads=default_threads,
      batch_ms=figures,
      speedup={k: single / v for k, v in figures.items()} if single else None,
      objects_per_image=float(np.mean([len(f) for batch in one_at_a_time for f in batch])))
  print(json.dumps(result, indent=1))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
