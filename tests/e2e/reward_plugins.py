"""Rewards registered by import (`config.reward_modules = ("reward_plugins",)`), for the resume
and fault tests: a continuous score that differs between samples (so every update moves the
parameters), three that inject NaN, and two that fail (served-reward tests)."""
import jax
import numpy as np

from unigrpo_jax import rewards
from unigrpo_jax.rewards import geneval_official

_calls = {"flaky": 0}


@rewards.register("brightness")
def brightness(images, texts, metadata):
  """Mean pixel value of the first image, (B,)."""
  del texts, metadata
  return np.asarray(images)[:, 0].mean(axis=(1, 2, 3))


@rewards.register("flaky")
def flaky(images, texts, metadata):
  """Zero, but NaN on its 2nd and 3rd call (training steps 2 and 3 of a fresh run)."""
  _calls["flaky"] += 1
  value = np.nan if _calls["flaky"] in (2, 3) else 0.0
  return np.full((len(texts),), value, np.float32)


@rewards.register("always_nan")
def always_nan(images, texts, metadata):
  del images, metadata
  return np.full((len(texts),), np.nan, np.float32)


@rewards.register("flaky_on_last_process")
def flaky_on_last_process(images, texts, metadata):
  """Zero, but NaN in the last process (the only one of a one-process run) when the batch's
  last prompt — the same row however many processes share the batch — is a counting prompt:
  on the steps the data picks, whatever the number of processes. A multi-process run must
  skip those updates on every process, as one process does; a pure function of its inputs,
  so a resumed run that redoes a step redoes its NaN."""
  del images
  nan = (jax.process_index() == jax.process_count() - 1
         and metadata[-1]["prompt"]["family"] == "counting")
  return np.full((len(texts),), np.nan if nan else 0.0, np.float32)


@rewards.register("wrong_count")
def wrong_count(images, texts, metadata):
  """One score too few."""
  del images, metadata
  return np.zeros((len(texts) - 1,), np.float32)


@rewards.register("raises")
def raises(images, texts, metadata):
  raise RuntimeError("the scorer is broken")


# GenEval's rules over a stub detector: fixed boxes whatever the image (x0, y0, x1, y1, score),
# and a colour per box read from its score's last digit.
STUB_BOXES = {"dog": np.array([[10, 40, 30, 60, 0.95], [70, 40, 90, 60, 0.92],
                               [40, 5, 60, 25, 0.5]]),
              "cat": np.array([[40, 70, 60, 90, 0.35], [0, 0, 5, 5, 0.2]])}
STUB_COLORS = {0.95: "red", 0.92: "blue", 0.5: "red", 0.35: "white"}


def stub_detector(image):
  del image
  return STUB_BOXES


def stub_colors(image, boxes, classname):
  del image, classname
  return [STUB_COLORS[round(float(b[4]), 2)] for b in boxes]


rewards.register("geneval_stub")(geneval_official.make_reward(stub_detector, stub_colors))
