"""Benchmarks and the entry point keep running (tiny overrides; no timing is asserted)."""
import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ROOT
from unigrpo_jax.rl import losses
from unigrpo_jax.sampling import sde

pytestmark = pytest.mark.slow  # each test runs a script in a subprocess



def _run(args):
  out = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  return out.stdout


TINY = ["--config.model.width=32", "--config.model.depth=1", "--config.model.head_dim=8",
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
  """The joint step in bfloat16 matmuls, and sampled in 2 parts: scored after sampling, while
  sampling, and with the update part by part."""
  stdout = _run(["experiments/bench_update.py", "--config=configs/bench.py:update_overlap",
                 "--config.batch_size=4", "--config.rl.group_size=2", "--config.bench.chunks=2",
                 "--config.model.matmul_dtype=bfloat16"] + TINY)
  result = json.loads(stdout[stdout.index("{"):])
  for key in ("step_s", "compile_s", "tokens_per_s", "mfu", "matmul_peak_gflops_mixed",
              "mfu_mixed", "sequential_step_s", "overlap_step_s", "per_part_step_s",
              "per_part_speedup"):
    assert result[key] > 0, key
  assert result["chunks"] == 2 and result["variant"] == "joint"
  assert result["matmul_dtype"] == "bfloat16"
  # The 8-way FSDP mesh holds well under a quarter of the parameters and optimizer state.
  assert result["bytes_per_device"]["8"] < result["bytes_per_device"]["1"] / 4


def test_bench_detector_prints_its_json():
  # The script itself fails when threaded detection finds other objects than one at a time.
  stdout = _run(["experiments/bench_detector.py", "--batch=6", "--batches=2", "--threads=1,2"])
  result = json.loads(stdout[stdout.index("{"):])
  assert set(result["batch_ms"]) == {"1", "2"} and all(v > 0 for v in result["batch_ms"].values())
  assert result["objects_per_image"] > 0 and result["default_threads"] >= 1


def test_compile_profile_sums_a_sessions_compiles_per_test_and_function(tmp_path):
  """The plugin in a pytest of its own over two tests, one jitting a lambda and one `g` at two
  shapes: each compile is counted under its test and function; the summary folds the
  session's file."""
  (tmp_path / "test_two.py").write_text(
      "import jax, jax.numpy as jnp\n"
      "def test_f():\n  jax.jit(lambda x: x + 1)(jnp.ones(3))\n"
      "def test_g():\n"
      "  def g(x):\n    return jnp.sin(x)\n"
      "  jax.jit(g)(jnp.ones(3)); jax.jit(g)(jnp.ones(4))\n")
  folder = tmp_path / "profile"
  out = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-c", "/dev/null", f"--rootdir={tmp_path}",
       "-p", "no:cacheprovider", "-p", "compile_profile", str(tmp_path / "test_two.py")],
      cwd=tmp_path,
      env={**os.environ, "COMPILE_PROFILE_DIR": str(folder),
           "PYTHONPATH": os.path.join(ROOT, "experiments")},
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  result = json.loads(_run(["experiments/compile_profile.py", f"--dir={folder}", "--top=50"]))
  counts = {(event, fun): n for event, fun, _, n in result["functions"]}
  assert counts[("backend_compile_duration", "jit(g)")] == 2
  assert counts[("jaxpr_trace_duration", "g")] == 2
  assert counts[("backend_compile_duration", "jit(<lambda>)")] == 1
  tests = dict(result["tests"])
  assert set(tests) >= {"test_two.py::test_f", "test_two.py::test_g"}
  assert all(s > 0 for s in result["seconds"].values())
  assert sum(result["seconds"].values()) == pytest.approx(sum(tests.values()), abs=0.2)


def test_main_rollout_stage_writes_outputs(tmp_path):
  _run(["-m", "unigrpo_jax.main", "--config=configs/demo.py:tiny", f"--workdir={tmp_path}"])
  summary = json.loads((tmp_path / "results.json").read_text())["rollout"]
  assert summary["max_abs_log_ratio"] < 1e-5
  assert (tmp_path / "rollout.png").stat().st_size > 0


@pytest.mark.xdist_group("tiny_main_job")  # the tiny SFT steps and data: made once for both
def test_sft_warmup_experiment_runs(tmp_path, tiny_main_job):
  main_workdir, main = tiny_main_job
  assert main.returncode == 0, main.stderr[-4000:]
  out = tmp_path / "sft"
  _run(["experiments/sft_warmup.py", "--config=configs/shapeworld.py:tiny",
        f"--config.data.data_dir={main_workdir / 'tfds'}", f"--out={out}"])
  result = json.loads(out.with_suffix(".json").read_text())
  text_ce = [r["sft/t2i/text_ce"] for r in result["curve"] if "sft/t2i/text_ce" in r]
  assert text_ce[-1] < text_ce[0]
  assert set(result["after"]["per_family"]) and (out.with_suffix(".png")).stat().st_size > 0
  assert "| **overall** |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("variant, devices, mesh, gather", [
    ("7b", 256, {"data": 1, "fsdp": 64, "tensor": 4}, False),
    ("0.5b", 8, {"data": 1, "fsdp": 8, "tensor": 1}, True)])
def test_dry_run_of_the_qwen2_5_configs(variant, devices, mesh, gather):
  """Built abstractly in seconds; the parameter count agrees with the closed formula and with
  Qwen2.5's published sizes; per-device bytes follow from it (with the 0.5b's rollout sampling
  from parameters gathered over fsdp: a whole copy of the model per chip)."""
  stdout = _run(["experiments/dry_run.py", f"--config=configs/qwen2_5.py:{variant}",
                 "--num_processes=4", f"--config.gather_rollout_params={gather}"])
  result = json.loads(stdout[stdout.index("{"):])
  assert result["devices"] == devices and result["mesh"] == mesh
  # Four hosts: each holds a quarter of the devices, and the pixels of its quarter of the rows.
  assert result["processes"] == 4 and result["devices_per_host"] == devices // 4
  assert result["bytes_per_host"]["device_memory"] == (
      result["bytes_per_device"]["total"] * devices // 4)
  assert result["bytes_per_host"]["reward_pixels"] == (
      result["rollout_rows"] // 4 * 3 * 4 * 32 ** 2)  # one 32-pixel RGB float32 image a row
  n = result["parameters"]
  assert n == result["parameters_by_formula"]
  # Qwen2.5 text backbone (7.62 B / 0.49 B, as published) + a second expert of its blocks
  # and final norm + the image layers: 2×2×16 patches in and out, the flow-time MLP.
  m = {"7b": dict(v=152_064, w=3584, l=28, h=28, k=4, f=18_944, untied=1),
       "0.5b": dict(v=151_936, w=896, l=24, h=14, k=2, f=4864, untied=0)}[variant]
  d = m["w"] // m["h"]
  block = 2 * m["w"] + m["w"] * d * 2 * (m["h"] + m["k"]) + d * (m["h"] + 2 * m["k"]) \
      + 3 * m["w"] * m["f"]
  backbone = m["v"] * m["w"] * (1 + m["untied"]) + m["l"] * block + m["w"]
  assert abs(backbone / {"7b": 7.62e9, "0.5b": 0.494e9}[variant] - 1) < 0.005
  w = m["w"]
  image_layers = (64 * w + w) + (256 * w + w) + (w * w + w) + (w * 64 + 64)
  assert n == backbone + m["l"] * block + w + image_layers
  per_device = result["bytes_per_device"]
  # float32 weights split over every chip but for a few replicated vectors; two Adam moments
  # (+ the step count) sharded like them; the bfloat16 reference half their size.
  assert 0 <= per_device["params"] - 4 * n / devices < 0.005 * 4 * n / devices
  assert 0 <= per_device["optimizer"] - 2 * per_device["params"] <= 8
  assert per_device["reference"] * 2 == per_device["params"]
  assert per_device.get("rollout_params") == (4 * n if gather else None)
  assert result["gib_per_device"]["total"] < 16  # well inside one chip's HBM


def test_dry_run_with_lora_holds_adapters_and_no_reference():
  """Bagel 7B with rank-64 adapters on the generation expert over a bfloat16 base: the base is
  the reference (no second copy), AdamW moments are the adapters', and the adapters are split
  over the devices like their kernels."""
  args = ["experiments/dry_run.py", "--config=configs/bagel.py:7b"]
  full = _run(args)
  full = json.loads(full[full.index("{"):])
  lora = _run(args + ["--config.lora.enabled=True", "--config.lora.base_dtype=bfloat16"])
  lora = json.loads(lora[lora.index("{"):])
  # Per layer, r·(in + out) for q, k, v, o, gate, up, down of one expert.
  w, heads, kv, d, f, layers, r = 3584, 28, 4, 128, 18944, 28, 64
  per_layer = (w + heads * d) * 2 + (w + kv * d) * 2 + 3 * (w + f)
  assert lora["adapter_parameters"] == layers * r * per_layer
  assert lora["parameters"] == full["parameters"]
  full_b, lora_b = full["bytes_per_device"], lora["bytes_per_device"]
  assert lora_b["reference"] == 0
  assert lora_b["params"] == full_b["reference"]  # the bfloat16 base, once
  assert 0 <= lora_b["optimizer"] - 2 * lora_b["adapters"] <= 8
  share = 4 * lora["adapter_parameters"] / lora["devices"]
  assert lora_b["adapters"] < 4 * share  # sharded, not replicated (that would be 32×)
  assert lora["gib_per_device"]["total"] < full["gib_per_device"]["total"] / 3


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory, tiny_main_job):
  """The root the options and the ablation sweeps share, and their flags but `--options`:
  one seed from the tiny main job's SFT checkpoint, as `ablations.py`'s "joint" reads the
  options' "default" (its run and its memory figures) from a shared root."""
  main_workdir, main = tiny_main_job
  assert main.returncode == 0, main.stderr[-4000:]
  root = tmp_path_factory.mktemp("sweep") / "runs"
  return root, ["--config=configs/shapeworld.py:tiny", f"--root={root}",
                f"--config.data.data_dir={main_workdir / 'tfds'}",
                f"--sft_params={main_workdir / 'sft' / 'params'}", "--seeds=0",
                "--samples_per_prompt=2", "--config.eval.sampled_plans=True"]


@pytest.mark.xdist_group("tiny_main_job")
def test_options_script_writes_its_table(tmp_path, sweep_root):
  """Two options from the tiny main job's SFT checkpoint, one seed: each a resumable run,
  the same deterministic evaluation before, and the compiled step's memory per option."""
  root, common = sweep_root
  out = tmp_path / "options"
  args = ["experiments/options.py", *common, "--options=default,lora", f"--out={out}"]
  _run(args)
  result = json.loads(out.with_suffix(".json").read_text())
  assert list(result["rows"]) == ["default", "lora"] and result["seeds"] == [0]
  rows = result["rows"]
  befores = {r["before"] for row in rows.values() for r in row["runs"]}
  assert len(befores) == 1  # one warm-up, one deterministic evaluation before
  for name, row in rows.items():
    assert [r["seed"] for r in row["runs"]] == [0]
    for r in row["runs"]:
      low, high = r["after_interval"]
      assert low <= r["after"] <= high and r["step_s"] > 0
      # Two samples a prompt: the diversity of cells and colours, as the run's results say.
      grpo = json.loads((root / f"{name}_seed0" / "results.json").read_text())["grpo"]
      assert r["diversity_after"] == grpo["after"]["diversity"]["overall"]
      assert set(r["diversity_after"]) == {"cells", "colors"}
    assert row["summary"]["colors_diversity_after"]["mean"] == row["runs"][0][
        "diversity_after"]["colors"]
    assert row["peak_bytes"]["rollout"] > 0 and row["peak_bytes"]["update"] > 0
  assert out.with_suffix(".md").read_text().count("| lora |") == 1
  # LoRA's rates are 10× the configured ones, the image side keeping its scale.
  optim = {name: json.loads((root / f"{name}_seed0" / "config.json").read_text())["rl_optim"]
           for name in rows}
  assert optim["lora"]["learning_rate"] == pytest.approx(10 * optim["default"]["learning_rate"])
  assert optim["lora"]["image_lr_scale"] == optim["default"]["image_lr_scale"]
  # A second call reads the finished runs back instead of running them again.
  finished = (root / "lora_seed0" / "results.json").stat().st_mtime_ns
  _run(args)
  assert (root / "lora_seed0" / "results.json").stat().st_mtime_ns == finished
  assert json.loads(out.with_suffix(".json").read_text())["rows"] == rows
  # `--extend` with one option keeps the other's row from the table, in the options' order...
  only_default = [a for a in args if not a.startswith("--options")] + ["--options=default"]
  _run(only_default + ["--extend"])
  assert json.loads(out.with_suffix(".json").read_text())["rows"] == rows
  assert out.with_suffix(".md").read_text().count("| lora |") == 1
  # ...and refuses a table from another warm-up, naming the field that differs.
  earlier = json.loads(out.with_suffix(".json").read_text())
  out.with_suffix(".json").write_text(json.dumps(earlier | {"warmup_before": -1.0}))
  refused = subprocess.run([sys.executable] + only_default + ["--extend"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, check=False)
  assert refused.returncode != 0 and "warmup_before=-1.0" in refused.stderr


@pytest.mark.xdist_group("tiny_main_job")
def test_ablation_script_writes_its_table(tmp_path, sweep_root):
  """Two of the method's variants through the options sweep, from the tiny main job's SFT
  checkpoint: each run's config holds its variant, both start from one evaluation, and the
  method as configured runs in the options' default folder (and is read, with its memory
  figures, where the options sweep ran it first)."""
  root, common = sweep_root
  out = tmp_path / "ablations"
  _run(["experiments/ablations.py", *common, "--options=joint,latent_kl", f"--out={out}"])
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert list(rows) == ["joint", "latent_kl"]
  memory = json.loads((root / "memory.json").read_text())
  assert rows["joint"]["peak_bytes"] == memory["default"] and "joint" not in memory
  config = {name: json.loads((root / folder / "config.json").read_text())
            for name, folder in (("joint", "default_seed0"), ("latent_kl", "latent_kl_seed0"))}
  beta = config["latent_kl"]["loss"]["latent_kl_weight"]
  assert rows["latent_kl"]["overrides"] == {"loss.velocity_weight": 0.0,
                                            "loss.latent_kl_weight": beta}
  assert config["latent_kl"]["loss"]["velocity_weight"] == 0.0
  # β penalises a velocity difference as the method's λ_v does, over the trained SDE steps.
  rollout, lam = config["joint"]["rollout"], config["joint"]["loss"]["velocity_weight"]
  times = sde.time_grid(rollout["num_steps"], rollout["shift"])
  x, v, dv = jnp.full((1, 4), 0.3), jnp.full((1, 4), 0.2), jnp.full((1, 4), 0.1)
  means, ref_means, stds = [], [], []
  for j in np.flatnonzero(sde.window_mask(rollout["num_steps"], rollout["sde_window"])):
    step = functools.partial(sde.sde_step, x, t=times[j], t_next=times[j + 1],
                             noise_level=rollout["noise_level"], key=jax.random.key(0),
                             t_max=times[1])
    _, _, mean, std = step(v=v + dv)
    means.append(mean)
    ref_means.append(step(v=v)[2])
    stds.append(jnp.reshape(std, (1, 1)))  # one σ_j for the row
  mask = jnp.ones((1, len(means)))
  kl, _ = losses.latent_kl(jnp.stack(means, 1), jnp.stack(ref_means, 1), jnp.stack(stds, 1), mask)
  mse, _ = losses.velocity_mse(jnp.broadcast_to(v + dv, (1, len(means), 4)),
                               jnp.broadcast_to(v, (1, len(means), 4)), mask)
  assert beta * float(kl) == pytest.approx(lam * float(mse), rel=1e-3)
  assert rows["joint"]["runs"][0]["before"] == rows["latent_kl"]["runs"][0]["before"]
  # "joint" has no overrides: its run is the options' "default" run, which a shared root reuses.
  assert (root / "default_seed0" / "results.json").exists() and not (root / "joint_seed0").exists()
  for name, row in rows.items():
    (r,) = row["runs"]
    low, high = r["gain_interval"]
    assert low <= r["gain"] <= high and r["step_s"] > 0
    # With sampled plans too: their gain and diversity after, as the run's results say.
    folder = "default_seed0" if name == "joint" else f"{name}_seed0"
    grpo = json.loads((root / folder / "results.json").read_text())["grpo"]
    assert r["sampled_plans_gain"] == row["summary"]["sampled_plans_gain"]["mean"] == grpo[
        "gain_sampled_plans"]
    assert r["sampled_plans_diversity_after"] == grpo["after_sampled_plans"]["diversity"][
        "overall"]
  assert out.with_suffix(".md").read_text().count("| latent_kl |") == 1


@pytest.mark.xdist_group("tiny_main_job")
def test_main_job_table_reads_the_finished_job(tmp_path, tiny_main_job):
  """The main result's JSON and markdown come from the job's results.json; a second run with
  the same seed is refused rather than averaged in."""
  main_workdir, main = tiny_main_job
  assert main.returncode == 0, main.stderr[-4000:]
  out = tmp_path / "main_job"
  args = ["experiments/main_job.py", f"--workdir={main_workdir}", f"--out={out}"]
  _run(args)
  result = json.loads(out.with_suffix(".json").read_text())
  grpo = json.loads((main_workdir / "results.json").read_text())["grpo"]
  assert result["geneval_gain"] == grpo["geneval_gain"]
  assert result["seeds"] == [0] and result["geneval_gain_per_seed"] == [grpo["geneval_gain"]]
  # The config that ran (the tiny variant), as the job recorded it.
  assert result["config"] == json.loads((main_workdir / "config.json").read_text())
  assert "sft_config" not in result
  assert "geneval_gain" in out.with_suffix(".md").read_text()
  assert result["after_other_seeds"] == {}
  # Another seed's run from the same SFT start: its held-out table after GRPO joins the output.
  other = tmp_path / "seed1"
  other.mkdir()
  (other / "results.json").write_text((main_workdir / "results.json").read_text())
  config = json.loads((main_workdir / "config.json").read_text())
  (other / "config.json").write_text(json.dumps({**config, "seed": 1}))
  _run(args + [f"--seed_workdirs={other}"])
  result = json.loads(out.with_suffix(".json").read_text())
  assert result["seeds"] == [0, 1]
  assert result["after_other_seeds"]["1"]["heldout"] == grpo["after"]
  assert "Held-out, after UniGRPO, seed 1" in out.with_suffix(".md").read_text()
  again = subprocess.run([sys.executable] + args + [f"--seed_workdirs={main_workdir}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert again.returncode != 0 and "repeat a seed: [0, 0]" in again.stderr


@pytest.mark.xdist_group("tiny_main_job")
def test_seed_sweep_reads_finished_runs_into_its_table(tmp_path, tiny_main_job):
  """The sweep reads a run that already finished instead of running it again: the tiny main
  job stands for warm-up 0 and its GRPO seed 0; the table and the bar come from its results, and
  its wall time counts once."""
  main_workdir, main = tiny_main_job
  assert main.returncode == 0, main.stderr[-4000:]
  root = tmp_path / "seeds"
  root.mkdir()
  (root / "sft0").symlink_to(main_workdir)
  (root / "sft0_grpo0").symlink_to(main_workdir)
  out = tmp_path / "sweep"
  _run(["experiments/seeds.py", "--config=configs/shapeworld.py:tiny", f"--root={root}",
        "--warmup_seeds=0", "--grpo_seeds=0", f"--out={out}", "--bar_mean=-1", "--bar_each=-1"])
  result = json.loads(out.with_suffix(".json").read_text())
  job = json.loads((main_workdir / "results.json").read_text())
  grpo = job["grpo"]
  (row,) = result["rows"]
  assert row["gain"] == grpo["geneval_gain"] == result["mean_gain"]
  assert row["gain_interval"] == grpo["gain_interval"] and result["meets_bar"]
  assert row["after_sft"] == grpo["before"]["overall"]["geneval_strict"]
  assert row["object_precision"] == [grpo[k]["overall"]["object_precision"]
                                     for k in ("before", "after")]
  assert row["sampled_plans_gain"] == grpo["gain_sampled_plans"]
  assert row["wall_min"] == pytest.approx(job["wall_s"] / 60)  # one job: counted once
  assert result["cpu"] and "| 0 | 0 |" in out.with_suffix(".md").read_text()


@pytest.mark.xdist_group("tiny_main_job")
def test_runs_table_reads_a_finished_run_its_warm_up_and_what_its_config_changes(
    tmp_path, tiny_main_job):
  """The tiny main job (its SFT and GRPO in one workdir) against its own config changes only
  the override it ran with, and against the default config every field the tiny variant
  sets."""
  main_workdir, main = tiny_main_job
  assert main.returncode == 0, main.stderr[-4000:]
  out = tmp_path / "table"
  _run(["experiments/runs_table.py", "--config=configs/shapeworld.py:tiny",
        f"--run=tiny={main_workdir}", f"--out={out}"])
  result = json.loads(out.with_suffix(".json").read_text())
  results = json.loads((main_workdir / "results.json").read_text())
  (run,) = result["runs"]
  assert run["label"] == "tiny" and run["changes"] == {"eval.sampled_plans": True}  # the job's
  assert run["gain"] == results["grpo"]["gain"]
  assert run["after"]["per_family"] == {
      f: v["geneval_strict"] for f, v in results["grpo"]["after"]["per_family"].items()}
  assert run["after"]["diversity"] == results["grpo"]["after"].get("diversity", {}).get(
      "overall", {})
  (warmup,) = result["warmups"].values()
  assert warmup["text_reliance"] == results["sft"]["heldout_text_reliance"]
  assert warmup["geneval_strict"] == results["sft"]["after"]["overall"]["geneval_strict"]
  assert "| tiny |" in out.with_suffix(".md").read_text()
  _run(["experiments/runs_table.py", "--config=configs/shapeworld.py",
        f"--run=tiny={main_workdir}", f"--out={out}"])
  changed = json.loads(out.with_suffix(".json").read_text())["runs"][0]["changes"]
  assert changed["model.width"] == 32 and changed["rl.steps"] == 4
  # Two warm-ups in folders of one name are told apart by their parents; one reached through
  # a link is the warm-up it links to, listed once.
  for parent in ("a", "b"):
    shutil.copytree(main_workdir, tmp_path / parent / "job", symlinks=True)
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "job").symlink_to(tmp_path / "a" / "job")
  _run(["experiments/runs_table.py", "--config=configs/shapeworld.py:tiny",
        f"--run=a={tmp_path / 'a' / 'job'}", f"--run=b={tmp_path / 'b' / 'job'}",
        f"--run=c={tmp_path / 'c' / 'job'}", f"--out={out}"])
  result = json.loads(out.with_suffix(".json").read_text())
  assert sorted(result["warmups"]) == ["a/job", "b/job"]
  assert [r["warmup_name"] for r in result["runs"]] == ["a/job", "b/job", "a/job"]
  # With sampled plans: the run's recorded evaluations, and the same computed from its
  # parameters for a run whose results lack them.
  recorded = json.loads((main_workdir / "results.json").read_text())["grpo"]
  stripped = json.loads((tmp_path / "b" / "job" / "results.json").read_text())
  for key in ("before_sampled_plans", "after_sampled_plans", "gain_sampled_plans",
              "gain_sampled_plans_interval"):
    del stripped["grpo"][key]
  (tmp_path / "b" / "job" / "results.json").write_text(json.dumps(stripped))
  _run(["experiments/runs_table.py", "--config=configs/shapeworld.py:tiny", "--sampled_plans",
        f"--run=a={tmp_path / 'a' / 'job'}", f"--run=b={tmp_path / 'b' / 'job'}",
        f"--out={out}"])
  a, b = (r["sampled_plans"] for r in json.loads(out.with_suffix(".json").read_text())["runs"])
  assert a["gain"] == recorded["gain_sampled_plans"]
  assert a["after"]["geneval_strict"] == recorded["after_sampled_plans"]["overall"][
      "geneval_strict"]
  assert b == a
  assert "## With sampled plans" in out.with_suffix(".md").read_text()
