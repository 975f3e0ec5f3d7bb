"""Mini-GenEval rewards: the final image of each trajectory, detected and scored against its
prompt's clauses (`data/geneval.py`). `metadata[i]["prompt"]` is the prompt's JSON
(`Prompt.to_json()`), `metadata[i]["grid"]` (optional; default the world's) the cells per
side; images are (B, R, S, S, C) in [−1, 1]."""
import numpy as np

from unigrpo_jax.data import geneval
from unigrpo_jax.data.detector import Detection, detect
from unigrpo_jax.data.prompts import Prompt
from unigrpo_jax.rewards.registry import register


def detections(image, meta: dict) -> list[Detection]:
  """The objects of one (S, S, C) image of the sample `meta` describes, detected as its
  prompt's world draws them."""
  return detect(image, world=Prompt.from_json(meta["prompt"]).domain, grid=meta.get("grid"))


def _score(images, metadata, rule):
  images = np.asarray(images)
  return np.array([rule(detections(images[i, -1], metadata[i]),
                        Prompt.from_json(metadata[i]["prompt"]))
                   for i in range(images.shape[0])], np.float32)


@register("geneval_strict")
def geneval_strict(images, texts, metadata):
  """1 when the final image passes GenEval's rules for its prompt, else 0."""
  del texts
  return _score(images, metadata, geneval.strict)


@register("geneval_partial")
def geneval_partial(images, texts, metadata):
  """Per-clause partial credit (Flow-GRPO's training reward), in [0, 1]."""
  del texts
  return _score(images, metadata, geneval.partial)


@register("object_precision")
def object_precision(images, texts, metadata):
  """Share of the final image's objects that the prompt asks for (`geneval.precision`): 1 for
  a scene with nothing extra. GenEval's rules let extra objects pass; this reward does not."""
  del texts
  return _score(images, metadata, geneval.precision)
