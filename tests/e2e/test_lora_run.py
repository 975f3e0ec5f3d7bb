"""A tiny GRPO run with LoRA (`main`, tests/e2e/fault_config.py:lora): its checkpoints hold the
adapters and the unfrozen layer alone, the saved parameters are the base with the adapters merged
in, and a run stopped half-way resumes to the uninterrupted run's adapters, bit for bit."""
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import fault_config
from helpers import ROOT, lively_params
from test_resume import assert_same_state, command, env, saved_state
from unigrpo_jax import lora
from unigrpo_jax.checkpoint import save_params
from unigrpo_jax.lora import LoRASpec
from unigrpo_jax.model import ModelSpec

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lora_run")]


def run(workdir, data_dir, *extra):
  out = subprocess.run(command(workdir, data_dir, "lora") + list(extra), cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]


def restore(path):
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(path)
  finally:
    checkpointer.close()


def test_lora_run_checkpoints_adapters_saves_merged_weights_and_resumes_exactly(
    tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  whole, halves = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("halves")
  # A base whose velocity head is not zero (a fresh one is: then no image adapter could learn).
  config = fault_config.get_config("lora")
  start = tmp_path_factory.mktemp("base") / "params"
  save_params(str(start), lively_params(ModelSpec(**config.model), config.seed))
  init = f"--config.rl.init_params={start}"
  run(whole, data_dir, init)
  run(halves, data_dir, init, "--config.rl.steps=3")
  run(halves, data_dir, init)
  final = saved_state(whole, 6)
  assert_same_state(saved_state(halves, 6), final)
  # The trained state is the adapters (moved off zero) and the unfrozen image output layer
  # (in float32, moved off the base).
  paths = ["/".join(str(k.key) for k in path)
           for path, _ in jax.tree_util.tree_leaves_with_path(final["params"])]
  assert {p for p in paths if p.split("/")[-1] not in ("lora_a", "lora_b")} == {
      "image_out/proj/kernel", "image_out/proj/bias"}
  start_params = restore(start)
  trained_out = np.asarray(final["params"]["image_out"]["proj"]["kernel"])
  assert trained_out.dtype == np.float32
  assert np.any(trained_out != np.asarray(start_params["image_out"]["proj"]["kernel"]))
  for expert, name in (("image", "q"), ("image", "o"), ("text", "q")):
    assert np.any(np.asarray(final["params"]["layers"][expert][name]["lora_b"])), (expert, name)
  # The saved parameters: the run's base (in bfloat16) with the adapters merged in; kernels
  # without adapters are the base itself.
  base = lora.cast_base(restore(start), "bfloat16")
  saved = restore(whole / "grpo" / "params")
  want = lora.merge(base, final["params"], LoRASpec(**config.lora))
  assert jax.tree.structure(saved) == jax.tree.structure(want)
  np.testing.assert_array_equal(np.asarray(saved["image_out"]["proj"]["kernel"], np.float32),
                                np.asarray(trained_out.astype(jnp.bfloat16), np.float32))
  np.testing.assert_array_equal(np.asarray(saved["layers"]["text"]["k"]["kernel"]),
                                np.asarray(base["layers"]["text"]["k"]["kernel"]))
  for expert, name in (("image", "q"), ("image", "o"), ("text", "q")):
    got = np.asarray(saved["layers"][expert][name]["kernel"], np.float32)
    np.testing.assert_allclose(got, np.asarray(want["layers"][expert][name]["kernel"],
                                               np.float32), rtol=1e-2, atol=1e-4)
    assert np.any(got != np.asarray(base["layers"][expert][name]["kernel"], np.float32))
