r"""A reward server: any registered reward over HTTP (`rewards/protocol.py`), so that a big
PyTorch scorer runs on its own host or GPU, apart from the policy.

  python -m unigrpo_jax.rewards.serve --reward=NAME [--reward_modules=pkg.mod,...] \
      [--reward_models="{'pick': {'kind': 'pickscore', 'path': '/models/pickscore'}}"] \
      [--host=127.0.0.1] --port=P

`--reward_modules` are imported first (they register rewards with `@rewards.register`);
`--reward_models` builds model-based rewards (`rewards/models.py`) the same way a training
config does. The server checks every request before the reward sees it: a malformed, oversized
or wrong-typed payload gets a 4xx answer naming the field, and the server stays up. Scoring runs
`--concurrency` batches at a time (default 1: a model on one device scores one batch at a time).
`--delay_s` sleeps that long before each answer (benchmarks and tests of slow servers).
"""
import ast
import asyncio
import importlib
import threading
import time

from absl import app, flags, logging
import fastapi
import numpy as np
import uvicorn

from unigrpo_jax import rewards
from unigrpo_jax.rewards import protocol
from unigrpo_jax.rewards.registry import RewardError

_REWARD = flags.DEFINE_string("reward", None, "The registered reward to serve.")
_MODULES = flags.DEFINE_list("reward_modules", [], "Modules to import first (they register "
                             "rewards).")
_MODELS = flags.DEFINE_string("reward_models", "{}", "Model-based rewards to build, as "
                              "config.reward_models (a Python dict literal).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8711, "Port to listen on.")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 256 << 20, "Largest request body accepted.")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 1, "Batches scored at once.")
_DELAY = flags.DEFINE_float("delay_s", 0.0, "Seconds to wait before each answer.")


def error(status: int, message: str) -> fastapi.Response:
  return fastapi.responses.JSONResponse({"error": message}, status_code=status)


def make_app(name: str, fn, *, max_bytes: int = 256 << 20, concurrency: int = 1,
             delay_s: float = 0.0) -> fastapi.FastAPI:
  """The ASGI app serving reward `fn` under `name`.

  Args:
    name: the reward's name (answered by /health, named in errors).
    fn: fn(images, texts, metadata) -> (B,) or (B, J) scores.
    max_bytes: larger bodies are refused with 413 before they are read whole.
    concurrency: batches scored at once (in worker threads).
    delay_s: a fixed wait before each answer.
  """
  server = fastapi.FastAPI(title=f"unigrpo_jax reward {name}")
  slots = threading.BoundedSemaphore(concurrency)

  def score(body: bytes) -> fastapi.Response:
    try:
      images, texts, metadata = protocol.decode_request(body)
    except protocol.PayloadError as e:
      return error(400, str(e))
    with slots:
      try:
        value = np.asarray(fn(images, texts, metadata), np.float32)
      except Exception as e:  # the reward is user code: the answer names it and the cause
        logging.exception("reward %r failed", name)
        return error(500, f"reward {name!r} raised {type(e).__name__}: {e}")
    if delay_s:
      time.sleep(delay_s)
    return fastapi.Response(protocol.encode_scores(value), media_type=protocol.CONTENT_TYPE)

  @server.get("/health")
  def health():
    return {"reward": name, "protocol": protocol.PROTOCOL}

  @server.post("/score")
  async def score_request(request: fastapi.Request):
    declared = request.headers.get("content-length", "")
    too_big = declared and (not declared.isdigit() or int(declared) > max_bytes)
    # An oversized body is read to its end but not kept: the client gets the answer, not a
    # reset connection, and the server holds at most max_bytes.
    body, size = bytearray(), 0
    async for part in request.stream():
      size += len(part)
      if not too_big:
        body += part
        too_big = size > max_bytes
    if too_big:
      return error(413, f"the body ({declared or size} bytes) is over this server's "
                   f"{max_bytes}")
    kind = request.headers.get("content-type", "")
    if kind != protocol.CONTENT_TYPE:
      return error(415, f"content-type {kind!r}; send {protocol.CONTENT_TYPE}")
    return await asyncio.to_thread(score, bytes(body))

  return server


def reward_function(name: str, modules=(), models: dict | None = None):
  """The function registered as `name`, after importing `modules` and building `models`."""
  from unigrpo_jax.rewards import configured  # torch-backed rewards only when named
  for module in modules:
    importlib.import_module(module)
  functions = configured.model_rewards(models or {})
  functions = {**rewards.REWARDS, **functions}
  rewards.check_names([name], functions, field="--reward")
  return functions[name]


def main(argv):
  del argv
  try:
    fn = reward_function(_REWARD.value, _MODULES.value, ast.literal_eval(_MODELS.value))
  except (RewardError, ValueError, OSError, ImportError) as e:
    raise app.UsageError(str(e))
  logging.info("serving reward %r on %s:%d", _REWARD.value, _HOST.value, _PORT.value)
  uvicorn.run(make_app(_REWARD.value, fn, max_bytes=_MAX_BYTES.value,
                       concurrency=_CONCURRENCY.value, delay_s=_DELAY.value),
              host=_HOST.value, port=_PORT.value, log_level="warning")


if __name__ == "__main__":
  flags.mark_flag_as_required("reward")
  app.run(main)
