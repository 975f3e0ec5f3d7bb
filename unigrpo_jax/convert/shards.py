"""Safetensors checkpoints on disk: which tensor lives in which shard, read one shard at a time,
written back in shards with the Hugging Face index.

A checkpoint directory holds either one `model.safetensors` or several shards listed by
`model.safetensors.index.json` (`weight_map`: tensor name → file). Only headers are read to
list names and shapes, so checking a 7B checkpoint against a model costs milliseconds.
"""
import json
import os
import struct

import ml_dtypes
import numpy as np
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


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
           "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_header(file: str) -> dict[str, dict]:
  """{tensor name: {"dtype", "shape", "data_offsets"}} of one safetensors file (its JSON
  header: an 8-byte little-endian length, then the JSON)."""
  try:
    with open(file, "rb") as f:
      (size,) = struct.unpack("<Q", f.read(8))
      header = json.loads(f.read(size))
  except (OSError, struct.error, ValueError) as e:
    raise ValueError(f"{file!r} is not a safetensors file ({type(e).__name__}: {e})") from e
  header.pop("__metadata__", None)
  return header


def file_shapes(file: str) -> dict[str, tuple[int, ...]]:
  """{tensor name: shape} of one safetensors file, from its header alone."""
  return {name: tuple(info["shape"]) for name, info in read_header(file).items()}


def iter_file(file: str):
  """Yields (name, array) of one safetensors file in storage order, each a read-only view of
  the memory-mapped file (bfloat16 as `ml_dtypes.bfloat16`): nothing is read before it is
  used, and a tensor's pages can be dropped once it is placed."""
  header = read_header(file)
  with open(file, "rb") as f:
    (size,) = struct.unpack("<Q", f.read(8))
  data = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + size)
  for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{file!r}: tensor {name} has dtype {info['dtype']}, which is not "
                       f"supported")
    start, end = info["data_offsets"]
    yield name, data[start:end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def check_fit(want: dict, have: dict, what: str):
  """Raises `ValueError("<what> — missing: …; unexpected: …; differently shaped: …")` listing
  every name in one of {name: shape} `want` and `have` but not the other, and every shape that
  differs (twelve of each, then the count); returns if they agree."""
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shaped = sorted(f"{k} {tuple(have[k])} (expected {tuple(want[k])})"
                  for k in set(want) & set(have) if tuple(have[k]) != tuple(want[k]))
  if missing or unexpected or shaped:
    parts = [f"{label}: {', '.join(items[:12])}" + (f" … ({len(items)} in all)"
                                                     if len(items) > 12 else "")
             for label, items in (("missing", missing), ("unexpected", unexpected),
                                  ("differently shaped", shaped)) if items]
    raise ValueError(f"{what} — " + "; ".join(parts))


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """{tensor name: shape} over every shard, from the headers alone."""
  shapes = {}
  for file in shard_files(path):
    shapes.update(file_shapes(file))
  return shapes


def iter_tensors(path: str):
  """Yields (name, array) shard by shard (`iter_file`)."""
  for file in shard_files(path):
    yield from iter_file(file)


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
