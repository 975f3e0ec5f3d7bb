"""Safetensors checkpoints on disk: which tensor lives in which shard, read one shard at a time,
written back in shards with the Hugging Face index.

A checkpoint directory holds either one `model.safetensors` or several shards listed by
`model.safetensors.index.json` (`weight_map`: tensor name → file). Only headers are read to
list names and shapes, so checking a 7B checkpoint against a model costs milliseconds.
"""
import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def shard_files(path: str) -> list[str]:
  """The safetensors files of checkpoint directory `path`, in index order."""
  index = os.path.join(path, INDEX)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return [os.path.join(path, name) for name in dict.fromkeys(weight_map.values())]
  single = os.path.join(path, SINGLE)
  if os.path.isfile(single):
    return [single]
  raise FileNotFoundError(f"{path!r} holds no {SINGLE} or {INDEX}: not a Hugging Face "
                          f"safetensors checkpoint")


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """{tensor name: shape} over every shard, from the headers alone."""
  shapes = {}
  for file in shard_files(path):
    with safe_open(file, framework="numpy") as f:
      for name in f.keys():
        shapes[name] = tuple(f.get_slice(name).get_shape())
  return shapes


def iter_tensors(path: str):
  """Yields (name, numpy array) shard by shard: one shard open, one tensor in memory."""
  for file in shard_files(path):
    with safe_open(file, framework="numpy") as f:
      for name in f.keys():
        yield name, f.get_tensor(name)


def write(path: str, tensors, max_shard_bytes: int = 5 * 2**30):
  """Writes (name, array) pairs as safetensors shards of at most `max_shard_bytes` (one file
  `model.safetensors` when they fit, else numbered shards plus the index)."""
  os.makedirs(path, exist_ok=True)
  shards, current, size = [], {}, 0
  for name, array in tensors:
    array = np.ascontiguousarray(array)
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = array
    size += array.nbytes
  shards.append(current)
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, SINGLE), metadata={"format": "pt"})
    return
  weight_map, total = {}, 0
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in shard})
    total += sum(a.nbytes for a in shard.values())
  with open(os.path.join(path, INDEX), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
