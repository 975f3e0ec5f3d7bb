"""The reward-server wire format: one request scores one batch with one reward.

A request is `POST /score` with an `.npz` body (`application/x-npz`, read without pickle):
  protocol  () int: `PROTOCOL`; a server answers another version with 400;
  images    (B, R, H, W, C) float16/float32/uint8: the reward convention's pixels;
  texts     (B,) unicode: the decoded texts;
  metadata  () unicode: JSON of the B per-prompt dicts.
The answer is an `.npz` with `scores`, (B,) or (B, J) float32 — raw bytes, so NaN and every bit
survive — or, for an error, JSON `{"error": message}` with a 4xx (the request is wrong) or 5xx
(the reward failed) status. `GET /health` answers JSON `{"reward": name, "protocol": N}`.
"""
import io
import json

import numpy as np

PROTOCOL = 1
CONTENT_TYPE = "application/x-npz"
IMAGE_DTYPES = ("float16", "float32", "uint8")
FIELDS = ("protocol", "images", "texts", "metadata")


class PayloadError(ValueError):
  """A request or answer does not follow the protocol; the message says which field."""


def encode_request(images, texts, metadata) -> bytes:
  """One batch as a request body. images: (B, R, H, W, C); texts: B strings; metadata: B
  JSON-serialisable dicts."""
  images = np.asarray(images)
  if images.dtype.name not in IMAGE_DTYPES:
    images = images.astype(np.float32)
  if not all(isinstance(t, str) for t in texts):
    raise PayloadError("texts: a served reward reads decoded strings, got "
                       f"{sorted({type(t).__name__ for t in texts})}")
  buffer = io.BytesIO()
  np.savez(buffer, protocol=np.int64(PROTOCOL), images=images,
           texts=np.asarray(list(texts), dtype=np.str_).reshape(len(texts)),
           metadata=np.str_(json.dumps(list(metadata))))
  return buffer.getvalue()


def decode_request(body: bytes) -> tuple[np.ndarray, list[str], list]:
  """A request body → (images, texts, metadata), each checked; raises PayloadError naming the
  field that is missing, mistyped or inconsistent."""
  try:
    archive = np.load(io.BytesIO(body), allow_pickle=False)
    fields = {name: archive[name] for name in archive.files}
  except Exception as e:  # a truncated zip, a pickled array, not a zip at all
    raise PayloadError(f"the body is not an .npz archive of plain arrays ({e})") from e
  missing = [f for f in FIELDS if f not in fields]
  if missing:
    raise PayloadError(f"missing fields {missing}; a request holds {list(FIELDS)}")
  extra = sorted(set(fields) - set(FIELDS))
  if extra:
    raise PayloadError(f"unknown fields {extra}; a request holds {list(FIELDS)}")
  version = fields["protocol"]
  if version.shape != () or version.dtype.kind not in "iu" or int(version) != PROTOCOL:
    raise PayloadError(f"protocol: this server speaks version {PROTOCOL}, the request "
                       f"{version.tolist()!r}")
  images, texts = fields["images"], fields["texts"]
  if images.dtype.name not in IMAGE_DTYPES:
    raise PayloadError(f"images: dtype {images.dtype} is not one of {list(IMAGE_DTYPES)}")
  if images.ndim != 5:
    raise PayloadError(f"images: shape {images.shape} is not (batch, rounds, height, width, "
                       "channels)")
  if texts.dtype.kind != "U" or texts.shape != (images.shape[0],):
    raise PayloadError(f"texts: {texts.dtype} {texts.shape}, expected {images.shape[0]} "
                       "strings (one per image row)")
  metadata = fields["metadata"]
  try:
    if metadata.dtype.kind != "U" or metadata.shape != ():
      raise ValueError(f"a {metadata.dtype} array of shape {metadata.shape}")
    metadata = json.loads(str(metadata))
  except ValueError as e:
    raise PayloadError(f"metadata: not one JSON string ({e})") from e
  if not isinstance(metadata, list) or len(metadata) != images.shape[0]:
    raise PayloadError(f"metadata: expected a JSON list of {images.shape[0]} entries")
  return images, texts.tolist(), metadata


def encode_scores(scores) -> bytes:
  """An answer body: `scores` as float32."""
  buffer = io.BytesIO()
  np.savez(buffer, scores=np.asarray(scores, np.float32))
  return buffer.getvalue()


def decode_scores(body: bytes) -> np.ndarray:
  """An answer body → its float32 scores; PayloadError when it is not one."""
  try:
    scores = np.load(io.BytesIO(body), allow_pickle=False)["scores"]
  except Exception as e:
    raise PayloadError(f"the answer is not an .npz with `scores` ({e})") from e
  if scores.dtype != np.float32:
    raise PayloadError(f"scores: dtype {scores.dtype}, expected float32")
  return scores
