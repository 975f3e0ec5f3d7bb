r"""Rollout benchmark: KV-cached text decoding and SDE image denoising, as one JSON object.

  python experiments/bench_rollout.py --config=configs/bench.py [--config.batch_size=32]
  python experiments/bench_rollout.py --config=configs/bagel.py:tiny

Measures, in one process on this machine: a jitted float32 matmul's throughput (the peak MFU is
relative to), the whole rollout's compile time and run time, and the prefill, decode and
denoising phases separately (each its own jitted function built from the rollout's own
`Phases`, so what is timed is the code the rollout runs), and for a latent model (a config
with an `autoencoder` section, e.g. Bagel's) the autoencoder's jitted decode of the batch's
latents. Times are medians over `bench.repeats` runs after a warm-up. A training config
(no `batch_size` or `bench` section) is benchmarked at its RL batch, groups as in training, 5
repeats, a 2048² matmul.
"""
import functools
import json
import os
import platform
import time

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from unigrpo_jax.model import ModelSpec, UnifiedTransformer, count_params, init_params
from unigrpo_jax.model import autoencoder
from unigrpo_jax.sampling import flops as sampling_flops
from unigrpo_jax.sampling.rollout import Phases, pad_prompts, rollout
from unigrpo_jax.sampling.spec import RolloutSpec
from unigrpo_jax.timing import matmul_peak_gflops, mixed_precision_figures, timed

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench.py", "Benchmark config.")


def main(argv):
  del argv
  cfg = _CONFIG.value
  bench = cfg.get("bench", dict(repeats=5, matmul_size=2048))
  reps = bench["repeats"]
  ms = ModelSpec(**cfg.model)
  spec = RolloutSpec.from_config(cfg.rollout, cfg.tokens)
  model = UnifiedTransformer(ms)
  params = init_params(ms, jax.random.key(cfg.seed))
  training = "batch_size" not in cfg
  group = cfg.rl.group_size if training else 1
  b = cfg.rl.prompts_per_batch * group if training else cfg.batch_size
  prompts = jax.random.randint(jax.random.key(1), (b, spec.prompt_len), 5, ms.vocab_size)
  mask = jnp.ones(prompts.shape, bool)
  key = jax.random.key(2)

  peak = matmul_peak_gflops(bench["matmul_size"], reps)

  t0 = time.perf_counter()
  compiled = jax.jit(functools.partial(rollout, model=model, spec=spec,
                                       group_size=group)).lower(
      params, prompts, mask, key).compile()
  compile_s = time.perf_counter() - t0
  rollout_s = timed(compiled, params, prompts, mask, key, repeats=reps)

  prompts, mask = pad_prompts(prompts, mask, spec)
  phases = lambda p, m: Phases(p, m, model=model, spec=spec)  # noqa: E731
  prefill = jax.jit(lambda p, m, toks: phases(p, m).prefill(toks))
  decode = jax.jit(lambda p, m, state, k: phases(p, m).decode(state, 0, k))
  def draw_image(p, m, state, k):
    ph = phases(p, m)
    noisy = ph.noisy_steps(state.valid.shape[0], 1, k, spec.window[0])
    return ph.draw(state, 0, k, k, noisy)
  draw = jax.jit(draw_image)
  state = prefill(params, mask, prompts)
  prefill_s = timed(prefill, params, mask, prompts, repeats=reps)
  decode_s = timed(decode, params, mask, state, key, repeats=reps)
  state, _ = decode(params, mask, state, key)
  image_s = timed(draw, params, mask, state, key, repeats=reps)
  gflops = lambda f, s: f / s / 1e9  # noqa: E731
  decoded = {}
  if "autoencoder" in cfg:
    ae_spec = autoencoder.AutoencoderSpec(**cfg.autoencoder)
    ae_params = autoencoder.init_autoencoder(ae_spec, jax.random.key(3))
    latents = draw(params, mask, state, key)[0]
    ae_s = timed(autoencoder.decode, ae_spec, ae_params, latents, repeats=reps)
    ae_flops = autoencoder.decode_flops(ae_spec, latents.shape)
    decoded = dict(ae_decode_s=ae_s, ae_images_per_s=b / ae_s,
                   ae_decode_gflops=gflops(ae_flops, ae_s), ae_decode_mfu=gflops(
                       ae_flops, ae_s) / peak, ae=dict(cfg.autoencoder))

  t, n, img = spec.max_text_tokens, spec.num_steps, ms.image_tokens
  decode_flops = sampling_flops.decode_flops(ms, spec, b)
  image_flops = sampling_flops.image_flops(ms, spec, b)
  total_flops = sampling_flops.rollout_flops(ms, spec, b, group)
  layout = spec.layout(ms)
  result = dict(
      decode_tokens_per_s=b * t / decode_s,
      decode_ms_per_step=1e3 * decode_s / t,
      image_steps_per_s=b * n / image_s,
      image_ms_per_step=1e3 * image_s / n,
      compile_s=compile_s,
      rollout_s=rollout_s,
      prefill_s=prefill_s,
      decode_s=decode_s,
      image_s=image_s,
      matmul_peak_gflops=peak,
      decode_gflops=gflops(decode_flops, decode_s),
      image_gflops=gflops(image_flops, image_s),
      rollout_gflops=gflops(total_flops, rollout_s),
      mfu=gflops(total_flops, rollout_s) / peak,
      decode_mfu=gflops(decode_flops, decode_s) / peak,
      image_mfu=gflops(image_flops, image_s) / peak,
      **decoded,
      **mixed_precision_figures(ms, gflops(total_flops, rollout_s), bench["matmul_size"],
                                reps),
      batch=b, prompt_len=spec.prompt_len, new_tokens=t, sde_steps=n, image_tokens=img,
      cache_len=layout.length,
      params=count_params(params),
      model=dict(cfg.model),
      jax=jax.__version__, cpu_count=os.cpu_count(), machine=platform.machine(),
  )
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
