"""Reward servers (`python -m unigrpo_jax.rewards.serve`, real subprocesses on this machine) and
their client: a served reward scores exactly as the in-process one; bad payloads get a 4xx
answer naming the field and the server stays up; a killed, slow or failing server scores NaN
after the retries; a server answering the wrong count is an error naming the reward."""
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import ROOT
from unigrpo_jax import rewards
from unigrpo_jax.launch_local import free_port
from unigrpo_jax.rewards import client, configured, protocol
from unigrpo_jax.rewards.registry import RewardError

pytestmark = pytest.mark.xdist_group("serving")
PLUGINS = os.path.join(ROOT, "tests", "e2e")
sys.path.insert(0, PLUGINS)
import reward_plugins  # noqa: E402,F401  (registers brightness, wrong_count, raises)


@contextlib.contextmanager
def server(reward: str, *flags):
  """A reward server subprocess, up and answering /health: yields its URL and process."""
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "unigrpo_jax.rewards.serve", f"--reward={reward}",
       "--reward_modules=reward_plugins", f"--port={port}", *flags],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=PLUGINS), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 120
    while True:
      try:
        assert client.health(url, 1.0) == {"reward": reward, "protocol": protocol.PROTOCOL}
        break
      except client.Unreachable:
        if proc.poll() is not None or time.time() > deadline:
          raise AssertionError(f"the server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    yield url, proc
  finally:
    proc.kill()
    proc.wait()


def batch(rows=7, seed=0):
  """A batch in the reward convention, with mini-GenEval metadata."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (rows, 1, 32, 32, 3)).astype(np.float32)
  prompt = {"text": "a photo of a red circle", "family": "single_object",
            "include": [{"shape": "circle", "count": 1, "color": None, "position": None}],
            "exclude": [], "world": 1}
  metadata = [{"prompt": prompt, "family": "single_object", "grid": 4}] * rows
  return images, [f"plan {i}" for i in range(rows)], metadata


def post(url, body, content_type=protocol.CONTENT_TYPE):
  """(status, JSON error message or scores) of a raw request."""
  request = urllib.request.Request(f"{url}/score", data=body, method="POST",
                                   headers={"Content-Type": content_type})
  try:
    with urllib.request.urlopen(request, timeout=30) as answer:
      return answer.status, protocol.decode_scores(answer.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())["error"]


def npz(**fields):
  buffer = io.BytesIO()
  np.savez(buffer, **fields)
  return buffer.getvalue()


FAST = client.ClientSpec(timeout_s=5.0, retries=1, backoff_s=0.05)


@pytest.fixture(scope="module")
def brightness_server():
  with server("brightness", "--max_bytes=2000000") as (url, proc):
    yield url, proc


def test_served_reward_scores_exactly_as_in_process(brightness_server):
  url, _ = brightness_server
  images, texts, metadata = batch()
  # Uneven requests of 3 rows, two at a time: the rows come back in order, every bit kept.
  served = client.ServedReward("brightness", url, client.ClientSpec(batch_size=3,
                                                                     max_concurrency=2))
  want = rewards.REWARDS["brightness"](images, texts, metadata)
  np.testing.assert_array_equal(served(images, texts, metadata), want)
  total, scores = rewards.score_batch({"brightness": 2.0}, images, texts, metadata,
                                      functions={"brightness": served})
  np.testing.assert_array_equal(scores["brightness"], want)
  np.testing.assert_array_equal(total, 2.0 * want)


def test_a_served_rule_based_reward_reads_the_metadata():
  images, texts, metadata = batch(5, seed=1)
  images[:2] = -1.0  # blank canvases: no circle, score 0
  with server("geneval_strict") as (url, _):
    got = client.ServedReward("geneval_strict", url)(images, texts, metadata)
  np.testing.assert_array_equal(got, rewards.REWARDS["geneval_strict"](images, texts, metadata))


def test_bad_payloads_get_a_4xx_naming_the_field_and_the_server_stays_up(brightness_server):
  url, proc = brightness_server
  images, texts, metadata = batch(3)
  good = dict(protocol=np.int64(1), images=images, texts=np.asarray(texts),
              metadata=np.str_(json.dumps(metadata)))
  cases = [
      (b"not a zip at all", 400, "not an .npz archive"),
      (npz(**{k: v for k, v in good.items() if k != "texts"}), 400, "missing fields ['texts']"),
      (npz(**good, extra=np.zeros(1)), 400, "unknown fields ['extra']"),
      (npz(**{**good, "protocol": np.int64(2)}), 400, "protocol"),
      (npz(**{**good, "images": images.astype(np.int64)}), 400, "images: dtype int64"),
      (npz(**{**good, "images": images[0]}), 400, "images: shape"),
      (npz(**{**good, "texts": np.asarray(texts[:2])}), 400, "texts:"),
      (npz(**{**good, "texts": np.arange(3)}), 400, "texts:"),
      (npz(**{**good, "metadata": np.str_("{not json")}), 400, "metadata: not one JSON"),
      (npz(**{**good, "metadata": np.str_(json.dumps(metadata[:1]))}), 400,
       "metadata: expected a JSON list of 3"),
      # An object array needs pickle, which the server never unpickles.
      (npz(**{**good, "texts": np.asarray(texts, dtype=object)}), 400, "not an .npz archive"),
      (npz(**{**good, "images": np.zeros((80, 1, 64, 64, 3), np.float32)}), 413, "over"),
  ]
  for body, status, words in cases:
    code, message = post(url, body)
    assert code == status and words in message, (words, code, message)
  code, message = post(url, npz(**good), content_type="application/json")
  assert code == 415 and protocol.CONTENT_TYPE in message
  assert proc.poll() is None
  code, scores = post(url, protocol.encode_request(images, texts, metadata))
  assert code == 200 and scores.shape == (3,)


def test_a_killed_server_scores_nan_and_a_restarted_one_scores_again(caplog):
  images, texts, metadata = batch(4)
  want = rewards.REWARDS["brightness"](images, texts, metadata)
  with server("brightness") as (url, proc):
    served = client.ServedReward("brightness", url, FAST)
    np.testing.assert_array_equal(served(images, texts, metadata), want)
    proc.kill()
    proc.wait()
    t0 = time.time()
    got = served(images, texts, metadata)
    assert np.isnan(got).all() and got.shape == (4,) and time.time() - t0 < 10
    assert f"the server at {url} did not answer 4 samples after 2 tries" in caplog.text
    # A process reward's NaN rows keep its per-round shape.
    steps = client.ServedReward("brightness", url, FAST, per_step=True)
    assert steps(images, texts, metadata).shape == (4, 1)
  with server("brightness") as (url, _):  # back, on another port: the config names it
    np.testing.assert_array_equal(
        client.ServedReward("brightness", url, FAST)(images, texts, metadata), want)


def test_a_slow_server_times_out_to_nan_and_a_failing_reward_to_nan(caplog):
  images, texts, metadata = batch(2)
  with server("brightness", "--delay_s=3") as (url, _):
    slow = client.ServedReward("brightness", url, client.ClientSpec(timeout_s=0.5, retries=1,
                                                                    backoff_s=0.0))
    assert np.isnan(slow(images, texts, metadata)).all()
    assert "TimeoutError" in caplog.text or "timed out" in caplog.text
  with server("raises") as (url, _):
    got = client.ServedReward("raises", url, FAST)(images, texts, metadata)
    assert np.isnan(got).all()
    assert "500 reward 'raises' raised RuntimeError: the scorer is broken" in caplog.text


def test_a_server_answering_the_wrong_count_is_an_error_naming_the_reward():
  images, texts, metadata = batch(3)
  with server("wrong_count") as (url, _):
    served = client.ServedReward("wrong_count", url, FAST)
    with pytest.raises(RewardError, match=f"reward 'wrong_count': the server at {url} answered "
                       "2 scores for 3 samples"):
      rewards.score_batch({"wrong_count": 1.0}, images, texts, metadata,
                          functions={"wrong_count": served})


def test_config_sections_of_served_rewards_are_checked(brightness_server):
  url, _ = brightness_server
  with pytest.raises(ValueError, match="config.reward_servers.brightness must be an http"):
    configured.server_urls({"brightness": "127.0.0.1:8711"})
  with pytest.raises(ValueError, match="config.reward_client.retries must be an integer"):
    client.ClientSpec(retries=-1)
  with pytest.raises(ValueError, match="config.reward_client.timeout_s must be a positive"):
    client.ClientSpec(timeout_s=0)
  config = dict(reward_servers={"geneval_strict": url}, reward_client={}, process_rewards={})
  with pytest.raises(ValueError, match=f"the server at {url} serves reward 'brightness'"):
    configured.functions(config, {"geneval_strict"})
  served = configured.functions(dict(config, reward_servers={"brightness": url}),
                                {"brightness", "geneval_strict"})
  assert isinstance(served["brightness"], client.ServedReward)
  assert served["geneval_strict"] is rewards.REWARDS["geneval_strict"]
  with pytest.raises(protocol.PayloadError, match="texts: a served reward reads decoded"):
    protocol.encode_request(np.zeros((1, 1, 2, 2, 3)), [np.arange(3)], [{}])
