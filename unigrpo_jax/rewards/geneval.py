"""Mini-GenEval rewards: the final image of each trajectory, detected and scored against its
prompt's clauses (`data/geneval.py`). `metadata[i]["prompt"]` is the prompt's JSON
(`Prompt.to_json()`), `metadata[i]["grid"]` (optional; default the world's) the cells per
side; images are (B, R, S, S, C) in [−1, 1]."""
import numpy as np

from unigrpo_jax.data import geneval
from unigrpo_jax.data.detector import Detection, detect, detect_all
from unigrpo_jax.data.prompts import Prompt
from unigrpo_jax.rewards.registry import register


def detections(image, meta: dict) -> list[Detection]:
  """The objects of one (S, S, C) image of the sample `meta` describes, detected as its
  prompt's world draws them."""
  return detect(image, world=Prompt.from_json(meta["prompt"]).domain, grid=meta.get("grid"))


def final_detections(images, metadata) -> list[list[Detection]]:
  """The objects of each row's final image (images (B, R, S, S, C)), detected as `detections`
  does, the batch at once (`detect_all`)."""
  images = np.asarray(images)
  return detect_all(images[:, -1],
                    worlds=[Prompt.from_json(meta["prompt"]).domain for meta in metadata],
                    grids=[meta.get("grid") for meta in metadata])


def _score(images, metadata, rule):
  return np.array([rule(found, Prompt.from_json(meta["prompt"]))
                   for found, meta in zip(final_detections(images, metadata), metadata)],
                  np.float32)


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
