"""UniGRPO on a Bagel-format checkpoint, end to end: `configs/bagel.py:tiny` (one block, a
continuous reward added: `bagel_config.py`) run by `main` from a tiny random Bagel folder (written
in Bagel's names by `convert.bagel.export_folder`, with its tokenizer), think mode then latent
image, decoded by the autoencoder for the rewards —
checkpoints, TensorBoard, sample grids and results written; stopped after step 2 and resumed, it
ends where a run that never stopped ends, bit for bit; a converted folder serves as the
download does; a folder that does not fit is named by the start-up checks."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

import bagel_config  # tests/e2e/bagel_config.py: the run's config
from helpers import ROOT
from unigrpo_jax import checkpoint, metric_writer, validation
from unigrpo_jax.convert import bagel as convert
from unigrpo_jax.data import tokenizer as tokenizer_lib
from unigrpo_jax.model import ModelSpec, init_params
from unigrpo_jax.model.autoencoder import AutoencoderSpec, init_autoencoder

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bagel_run")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """A random Bagel folder for the tiny config (the velocity head scaled up so the images, and
  so the rewards, differ within a group), its tokenizer included."""
  config = bagel_config.get_config("tiny")
  spec = ModelSpec(**config.model)
  params = init_params(spec, jax.random.key(5))
  head = params["image_out"]["proj"]["kernel"]
  params["image_out"]["proj"]["kernel"] = 0.3 * jax.random.normal(jax.random.key(6), head.shape)
  ae_spec = AutoencoderSpec(**config.autoencoder)
  path = tmp_path_factory.mktemp("bagel_tiny")
  convert.export_folder(str(path), spec, params, ae_spec,
                        init_autoencoder(ae_spec, jax.random.key(7)),
                        tokenizer_lib.for_config(config))
  return path, params


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def main(workdir, data_dir, folder, *overrides):
  return subprocess.run(
      [sys.executable, "-m", "unigrpo_jax.main", "--config=tests/e2e/bagel_config.py",
       f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
       f"--config.bagel.checkpoint={folder}", *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests", "e2e")))


def rewards(workdir):
  return {r["step"]: r["reward/combined"] for r in metric_writer.read(str(workdir / "grpo"))
          if "reward/combined" in r}


def test_tiny_bagel_unigrpo_runs_resumes_exactly_and_keeps_frozen_weights(folder, data_dir,
                                                                          tmp_path):
  path, start = folder
  stopped, whole = tmp_path / "stopped", tmp_path / "whole"
  first = main(stopped, data_dir, path, "--config.rl.steps=2")
  assert first.returncode == 0, first.stderr[-3000:]
  resumed = main(stopped, data_dir, path)  # the config's 4 steps, from the step-2 checkpoint
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  straight = main(whole, data_dir, path)
  assert straight.returncode == 0, straight.stderr[-3000:]

  grpo = stopped / "grpo"
  for name in ("eval_before.json", "results.json", "samples_2.png", "checkpoints/4"):
    assert (grpo / name).exists(), name
  assert list(grpo.glob("events.out.tfevents.*"))
  results = json.loads((stopped / "results.json").read_text())["grpo"]
  assert set(results["after"]["overall"]) >= {"geneval_strict", "geneval_partial"}
  # The rewards vary within the batch (the advantages are not all zero) and a resumed run
  # samples and updates exactly what the uninterrupted one does.
  by_step = rewards(whole)
  assert sorted(by_step) == [1, 2, 3, 4]
  assert rewards(stopped) == by_step
  log = [r for r in metric_writer.read(str(whole / "grpo")) if "update/grad_norm" in r]
  assert log and all(r["update/grad_norm"] > 0 for r in log)
  a = traverse_util.flatten_dict(checkpoint.load_params(str(grpo / "params"), start))
  b = traverse_util.flatten_dict(checkpoint.load_params(str(whole / "grpo" / "params"), start))
  for key in b:
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=str(key))
  # Started from the folder: its frozen embedding, untouched by 4 updates; trained weights moved.
  ref = traverse_util.flatten_dict(start)
  np.testing.assert_array_equal(np.asarray(b[("embed", "embedding")]),
                                np.asarray(ref[("embed", "embedding")]))
  moved = [k for k in ref if k[0] == "layers" and not np.array_equal(np.asarray(b[k]),
                                                                     np.asarray(ref[k]))]
  assert moved


def test_a_converted_folder_serves_a_run_as_the_download_does(folder, tmp_path):
  """`config.bagel.checkpoint` may name the converter's output: it passes the same checks and
  gives the same parameters, autoencoder and tokenizer."""
  path, _ = folder
  out = tmp_path / "converted"
  convert.convert_folder(str(path), str(out))
  config = bagel_config.get_config("tiny")
  spec, ae_spec = ModelSpec(**config.model), AutoencoderSpec(**config.autoencoder)
  fresh = lambda: init_params(spec, jax.random.key(0))  # noqa: E731
  for name, loaded in (("model", lambda p: convert.load_into(fresh(), p, spec)),
                       ("autoencoder", lambda p: convert.load_autoencoder(p, ae_spec))):
    a, b = (traverse_util.flatten_dict(loaded(str(p))) for p in (path, out))
    assert a.keys() == b.keys(), name
    for key in a:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=str(key))
  for checkpoint_path in (path, out):
    config.bagel.checkpoint = str(checkpoint_path)
    validation.validate(config, 1)
    assert tokenizer_lib.for_config(config)("a red circle<|im_end|>")["input_ids"][-1] == 57
  # What `main` checks before anything compiles: a config or folder that does not fit.
  config.model.max_latent_size = 8
  with pytest.raises(ValueError, match=r"config\.bagel\.checkpoint: .*converted Bagel "
                                       r"checkpoint .* model\.max_latent_size is 8 but the "
                                       r"checkpoint has 4"):
    validation.validate(config, 1)
  config = bagel_config.get_config("tiny")
  config.bagel.checkpoint, config.model.mlp_dim = str(path), 48
  with pytest.raises(ValueError, match=r"config\.bagel\.checkpoint: .*model\.mlp_dim is 48 but "
                                       r"the checkpoint has 64"):
    validation.validate(config, 1)
  config.bagel.checkpoint, config.model.mlp_dim = str(tmp_path), 64
  with pytest.raises(ValueError, match="has no llm_config.json: not a Bagel checkpoint folder"):
    validation.validate(config, 1)
