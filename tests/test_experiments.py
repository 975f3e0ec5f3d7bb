"""Benchmarks and the entry point keep running (tiny overrides; no timing is asserted)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args):
  out = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  return out.stdout


TINY = ["--config.model.width=32", "--config.model.depth=2", "--config.model.head_dim=8",
        "--config.model.mlp_dim=64", "--config.model.vocab_size=64",
        "--config.model.image_size=8", "--config.rollout.prompt_len=4",
        "--config.rollout.max_text_tokens=4", "--config.rollout.num_steps=2",
        "--config.bench.repeats=1", "--config.bench.steps=1", "--config.bench.matmul_size=128"]


def test_bench_rollout_prints_its_json():
  stdout = _run(["experiments/bench_rollout.py", "--config=configs/bench.py",
                 "--config.batch_size=2"] + TINY)
  result = json.loads(stdout[stdout.index("{"):])
  for key in ("decode_tokens_per_s", "decode_ms_per_step", "image_steps_per_s", "compile_s",
              "matmul_peak_gflops", "mfu"):
    assert result[key] > 0, key


def test_bench_update_prints_its_json():
  stdout = _run(["experiments/bench_update.py", "--config=configs/bench.py:update_joint",
                 "--config.batch_size=4", "--config.rl.group_size=2"] + TINY)
  result = json.loads(stdout[stdout.index("{"):])
  for key in ("step_s", "compile_s", "tokens_per_s", "mfu"):
    assert result[key] > 0, key
  # The 8-way FSDP mesh holds well under a quarter of the parameters and optimizer state.
  assert result["bytes_per_device"]["8"] < result["bytes_per_device"]["1"] / 4


def test_main_rollout_stage_writes_outputs(tmp_path):
  _run(["-m", "unigrpo_jax.main", "--config=configs/demo.py:tiny", f"--workdir={tmp_path}"])
  summary = json.loads((tmp_path / "results.json").read_text())["rollout"]
  assert summary["max_abs_log_ratio"] < 1e-5
  assert (tmp_path / "rollout.png").stat().st_size > 0


def test_sft_warmup_experiment_runs(tmp_path):
  out = tmp_path / "sft"
  _run(["experiments/sft_warmup.py", "--config=configs/shapeworld.py:tiny",
        f"--config.data.data_dir={tmp_path / 'tfds'}", f"--out={out}"])
  result = json.loads(out.with_suffix(".json").read_text())
  text_ce = [r["sft/t2i/text_ce"] for r in result["curve"] if "sft/t2i/text_ce" in r]
  assert text_ce[-1] < text_ce[0]
  assert set(result["after"]["per_family"]) and (out.with_suffix(".png")).stat().st_size > 0
  assert "| **overall** |" in out.with_suffix(".md").read_text()


def test_pod_config_builds_abstractly_and_fits():
  stdout = _run(["experiments/pod_memory.py", "--config=configs/pod.py"])
  result = json.loads(stdout[stdout.index("{"):])
  assert result["parameters"] > 10e9 and result["mesh"] == {"data": 1, "fsdp": 64, "tensor": 4}
  memory = result["gib_per_device"]
  # f32 weights + two Adam moments of ~14 B parameters over 256 chips, plus bf16 reference.
  assert abs(memory["params"] - result["parameters"] * 4 / 256 / 2**30) < 0.01
  assert abs(memory["optimizer"] - 2 * memory["params"]) < 0.01
  assert memory["total"] < 16  # well inside a v5p chip's 95 GiB HBM


def test_ablation_script_writes_its_table(tmp_path):
  out = tmp_path / "ablations"
  _run(["experiments/ablations.py", "--config=configs/shapeworld.py:tiny",
        f"--config.data.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'runs'}",
        "--variants=joint,cfg,latent_kl", f"--out={out}"])
  result = json.loads(out.with_suffix(".json").read_text())
  assert set(result["rows"]) == {"joint/0", "cfg/0", "latent_kl/0"}
  rows = result["rows"]
  # Same SFT start, same deterministic evaluation (CFG evaluates with guidance: its own).
  assert rows["latent_kl/0"]["before"] == rows["joint/0"]["before"]
  for row in rows.values():
    assert row["step_s"] > 0 and "combined" in row["train_reward"]
  assert out.with_suffix(".md").read_text().count("\n") == 2 + 3
