"""Checkpoints: fall back past damaged steps with a warning naming them, never start fresh over
unreadable ones, and name what differs when a checkpoint holds another tree."""
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import ROOT, truncate_files
from unigrpo_jax.checkpoint import (CheckpointError, Checkpoints, abstract, load_params,
                                    save_params)
from unigrpo_jax.optim import init_train_state


def state(value: float, width: int = 3):
  params = {"dense": {"kernel": jnp.full((2, width), value)}, "bias": jnp.full((width,), value)}
  return init_train_state(params, optax.adam(1e-3))


@pytest.fixture
def saved(tmp_path):
  """Checkpoints of steps 1, 2, 3 (state value = step, host state names the step)."""
  ckpt = Checkpoints(str(tmp_path / "ckpt"), every=1, max_to_keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, state(float(step)), {"data": {"position": step}})
  ckpt.close()
  return tmp_path / "ckpt"


def restore(directory, width=3):
  ckpt = Checkpoints(str(directory), every=1, max_to_keep=3)
  try:
    return ckpt.restore_latest(abstract(state(0.0, width)))
  finally:
    ckpt.close()


DAMAGE = {
    "truncated array files": lambda step: truncate_files(step / "state", keep_part=3),
    "deleted train state": lambda step: shutil.rmtree(step / "state"),
    "deleted host state": lambda step: shutil.rmtree(step / "host"),
    "corrupt host JSON": lambda step: [p.write_text("{not json") for p in
                                       (step / "host").iterdir() if p.is_file()],
    "emptied step folder": lambda step: [shutil.rmtree(p) if p.is_dir() else p.unlink()
                                         for p in list(step.iterdir())],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_falls_back_to_the_previous_with_a_warning(saved, damage, caplog):
  DAMAGE[damage](saved / "3")
  with caplog.at_level(logging.WARNING):
    step, restored, host = restore(saved)
  assert step == 2 and host == {"data": {"position": 2}}
  np.testing.assert_array_equal(restored.params["bias"], np.full((3,), 2.0))
  assert any("checkpoint step 3 in" in r.getMessage() and "damaged" in r.getMessage()
             for r in caplog.records)


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(saved):
  for step in ("1", "2", "3"):
    truncate_files(saved / step / "state", keep_part=3)
  with pytest.raises(CheckpointError, match=r"none of the checkpoints \[1, 2, 3\] .* can be "
                                            r"read .*refusing to start fresh"):
    restore(saved)


def test_empty_folder_restores_nothing(tmp_path):
  assert restore(tmp_path / "none") is None


def test_checkpoint_of_another_model_names_the_difference(saved):
  with pytest.raises(CheckpointError, match=r"step 3 .* holds a different train state .*"
                                            r"params/bias: expected \(4,\) float32, found "
                                            r"\(3,\) float32"):
    restore(saved, width=4)


def test_host_state_round_trips_as_json(tmp_path):
  ckpt = Checkpoints(str(tmp_path), every=5, max_to_keep=1)
  host = {"data": {"next_index": 7}, "key": [0, 42], "skips": {"total": 1, "in_a_row": 0},
          "config": {"seed": 0, "stages": ["grpo"]}}
  assert ckpt.save(5, state(1.0), {"data": {}})
  assert not ckpt.save(7, state(1.0), host)  # off the cadence
  assert ckpt.save(7, state(1.0), host, force=True)
  ckpt.close()
  step, _, restored = restore(tmp_path)
  assert step == 7 and restored == json.loads(json.dumps(host))


def test_params_checkpoint_round_trips(tmp_path):
  params = state(1.5).params
  save_params(str(tmp_path / "params"), params)
  loaded = load_params(str(tmp_path / "params"), params)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_missing_params_checkpoint_is_named(tmp_path):
  with pytest.raises(CheckpointError, match=r"parameters checkpoint .*/nowhere does not exist "
                                            r"\(expected an Orbax checkpoint folder"):
    load_params(str(tmp_path / "nowhere"), state(0.0).params)


def test_params_checkpoint_of_another_tree_names_missing_and_different_arrays(tmp_path):
  save_params(str(tmp_path / "params"), {"dense": {"kernel": jnp.zeros((2, 4))}})
  with pytest.raises(CheckpointError) as error:
    load_params(str(tmp_path / "params"), state(0.0).params)
  message = str(error.value)
  assert "does not hold the configured model's 2 arrays" in message
  assert "missing (1): ['bias']" in message
  assert "dense/kernel: expected (2, 3) float32, found (2, 4) float32" in message


def test_folder_that_is_not_a_checkpoint_says_what_it_holds(tmp_path):
  (tmp_path / "params").mkdir()
  (tmp_path / "params" / "weights.pkl").write_bytes(b"\x80\x04not a checkpoint")
  with pytest.raises(CheckpointError, match=r"is not a readable Orbax checkpoint \(it holds "
                                            r"\['weights.pkl'\]"):
    load_params(str(tmp_path / "params"), state(0.0).params)


def test_nothing_in_the_package_unpickles():
  """Parameters come from Orbax (tensorstore) and the tokenizer from JSON: no code path may
  unpickle (pickle, np.load with allow_pickle, torch.load, joblib)."""
  package = os.path.join(ROOT, "unigrpo_jax")
  banned = ("import pickle", "import cloudpickle", "import dill", "allow_pickle=True",
            "torch.load(", "joblib")
  for root, _, files in os.walk(package):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(root, name)) as f:
          source = f.read()
        assert not [b for b in banned if b in source], os.path.join(root, name)
