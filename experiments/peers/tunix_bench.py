"""Peer benchmark: google-tunix sampler decode throughput (+ one GRPO learner
step) on CPU with a tiny random-weight Qwen3 from tunix's own model zoo.

Nothing is downloaded: weights come from tunix.models.dummy_model_creator,
the tokenizer is a trivial integer tokenizer defined here.

Run in a separate venv (never a project dependency), from the repository root:
  python3 -m venv .venv-tunix && .venv-tunix/bin/pip install google-tunix 'jax[cpu]'
  .venv-tunix/bin/python experiments/peers/tunix_bench.py [--no-grpo] \
      --out experiments/results/tunix_peer.json
Our side of the comparison is experiments/bench_update.py (docs/benchmarks.md).
"""
import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np

T0 = time.perf_counter()
import jax
import jax.numpy as jnp
from flax import nnx
import flax
import optax
import tunix
from tunix.generate import sampler as sampler_lib
from tunix.models import dummy_model_creator
from tunix.models.qwen3 import model as qwen3_lib

IMPORT_S = time.perf_counter() - T0

# ---------------------------------------------------------------- config ----
BATCH = 16
PROMPT_LEN = 32
GEN_LEN = 64
VOCAB = 1024
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NEVER_EOS = VOCAB + 7  # out-of-vocab id -> generation never stops early

MODEL_CFG = dict(
    num_layers=4,
    vocab_size=VOCAB,
    embed_dim=256,
    hidden_dim=1024,  # SwiGLU MLP intermediate size (gate/up/down)
    num_heads=4,
    head_dim=64,
    num_kv_heads=4,  # MHA (no GQA)
    rope_theta=1_000_000,
    norm_eps=1e-6,
    use_tied_embedding=True,  # lm_head = embedding^T, like Qwen3-0.6B
)


def make_config():
  return qwen3_lib.ModelConfig(**MODEL_CFG)  # dtype/param_dtype float32


def n_params(model):
  st = nnx.state(model, nnx.Param)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(st)))


class IntTokenizer:
  """Whitespace-separated integer ids <-> text. Satisfies tunix's
  TokenizerAdapter duck-typed interface (encode/decode/bos_id/eos_id/pad_id)."""

  def encode(self, text, **kw):
    return [int(t) for t in text.split()]

  def decode(self, ids, **kw):
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return BOS_ID

  def eos_id(self):
    return EOS_ID

  def pad_id(self):
    return PAD_ID


def make_prompts(rng, n, length):
  # tokenizer prepends BOS, so length-1 body tokens -> `length` tokens total.
  toks = rng.integers(3, VOCAB, size=(n, length - 1))
  return [" ".join(map(str, r)) for r in toks]


def block(x):
  return jax.block_until_ready(x)


# --------------------------------------------------------------- sampler ----
def bench_sampler(model, tokenizer, reps, temperature, top_p):
  cache_size = PROMPT_LEN + GEN_LEN
  cfg = model.config
  sampler = sampler_lib.Sampler(
      transformer=model,
      tokenizer=tokenizer,
      cache_config=sampler_lib.CacheConfig(
          cache_size=cache_size,
          num_layers=cfg.num_layers,
          num_kv_heads=cfg.num_kv_heads,
          head_dim=cfg.head_dim,
      ),
  )
  rng = np.random.default_rng(0)
  prompts = make_prompts(rng, BATCH, PROMPT_LEN)
  kw = dict(
      max_generation_steps=GEN_LEN,
      max_prompt_length=PROMPT_LEN,
      eos_tokens=[NEVER_EOS],
      temperature=temperature,
      top_p=top_p,
      return_logprobs=True,
  )
  # ---- end-to-end Sampler.__call__ (public API) ----
  t = time.perf_counter()
  out = sampler(prompts, seed=0, **kw)
  first_call = time.perf_counter() - t
  gen_lens = [len(x) for x in out.tokens]
  e2e = []
  for i in range(reps):
    t = time.perf_counter()
    out = sampler(prompts, seed=i + 1, **kw)
    e2e.append(time.perf_counter() - t)

  # ---- split: prefill vs decode while_loop (same internals __call__ uses) --
  tokens = [sampler.tokenize(p) for p in prompts]
  ids = np.array([
      np.pad(x, (PROMPT_LEN - len(x), 0), constant_values=PAD_ID)
      for x in tokens
  ])
  sampler.eos_ids = jnp.array([NEVER_EOS])

  def state(seed):
    return sampler.init_sample_state(
        jnp.array(ids),
        total_sampling_steps=PROMPT_LEN + GEN_LEN,
        include_logits=False,
        forbidden_token_ids=None,
        temperature=temperature,
        top_p=top_p,
        top_k=None,
        seed=jax.random.PRNGKey(seed),
        beam_size=None,
        include_logprobs=True,
    )

  # fresh jit wrappers -> measure compile separately via AOT lower/compile
  params = sampler._flattened_transformer_state
  prefill_jit = jax.jit(sampler._prefill_fn, static_argnames=("echo",))
  decode_jit = jax.jit(sampler._decode_fn)
  s0 = state(100)
  t = time.perf_counter()
  prefill_c = prefill_jit.lower(params, s0, None, echo=False).compile()
  prefill_compile = time.perf_counter() - t
  s1 = block(prefill_c(params, s0, None))
  step_after_prefill = int(s1.decoding_step)
  t = time.perf_counter()
  decode_c = decode_jit.lower(params, s1).compile()
  decode_compile = time.perf_counter() - t

  pre_t, dec_t = [], []
  for i in range(reps):
    s = block(state(200 + i))
    t = time.perf_counter()
    s = block(prefill_c(params, s, None))
    pre_t.append(time.perf_counter() - t)
    t = time.perf_counter()
    s = block(decode_c(params, s))
    dec_t.append(time.perf_counter() - t)
  # prefill samples generated token #1 (decoding_step 31->32); the while_loop
  # then runs (total_steps - 32) = 64 model calls (the last one's token falls
  # outside the 96-slot buffer, i.e. tunix does one redundant step).
  steps = int(s.decoding_step) - step_after_prefill
  med = lambda xs: float(np.median(xs))
  return dict(
      temperature=temperature,
      top_p=top_p,
      cache_size=cache_size,
      sampler_call_first_s=first_call,
      sampler_call_steady_s_median=med(e2e),
      sampler_call_steady_s_all=e2e,
      generated_lens=sorted(set(gen_lens)),
      sampler_call_tokens_per_s=BATCH * GEN_LEN / med(e2e),
      compile_estimate_s=first_call - med(e2e),
      aot_prefill_compile_s=prefill_compile,
      aot_decode_compile_s=decode_compile,
      prefill_s_median=med(pre_t),
      decode_loop_s_median=med(dec_t),
      decode_steps_in_loop=steps,
      decode_loop_tokens_per_s=BATCH * steps / med(dec_t),
      decode_ms_per_step=1e3 * med(dec_t) / steps,
      prefill_tokens_per_s=BATCH * PROMPT_LEN / med(pre_t),
  )


# ------------------------------------------------------------------ GRPO ----
def bench_grpo_step(model_factory, tokenizer, num_generations=4, steps=8):
  """One full tunix GRPOLearner step = rollout (vanilla sampler) + ref logps
  + rewards/advantages + loss/grad/optimizer update, toy reward."""
  from grain import python as grain
  from jax.interpreters import pxla
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner as grpo_lib
  from tunix.rl.rollout import base_rollout

  actor = model_factory(0)
  ref = model_factory(0)
  n_prompts = BATCH // num_generations  # 4 prompts x G=4 = 16 sequences
  rng = np.random.default_rng(1)
  prompts = make_prompts(rng, n_prompts * (steps + 1), PROMPT_LEN)

  class Src(grain.RandomAccessDataSource):

    def __getitem__(self, i):
      return prompts[i]

    def __len__(self):
      return len(prompts)

  ds = (
      grain.MapDataset.source(Src())
      .batch(n_prompts)
      .map(lambda x: {"prompts": x})
  )

  def toy_reward(prompts, completions, **kw):
    # fraction of even token ids in the completion
    out = []
    for c in completions:
      ids = [int(t) for t in c.split()] or [1]
      out.append(float(np.mean([i % 2 == 0 for i in ids])))
    return out

  mesh = pxla.thread_resources.env.physical_mesh  # empty mesh, as tunix tests

  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={
          rl_cluster_lib.Role.ACTOR: mesh,
          rl_cluster_lib.Role.REFERENCE: mesh,
          rl_cluster_lib.Role.ROLLOUT: mesh,
      },
      rollout_engine="vanilla",
      offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=optax.adamw(1e-5),
          eval_every_n_steps=10_000,
          max_steps=steps,
      ),
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=GEN_LEN,
          max_prompt_length=PROMPT_LEN,
          kv_cache_size=PROMPT_LEN + GEN_LEN,
          temperature=1.0,
          top_p=1.0,
          eos_tokens=[NEVER_EOS],
      ),
  )
  cluster = rl_cluster_lib.RLCluster(
      actor=actor, reference=ref, tokenizer=tokenizer,
      cluster_config=cluster_config)
  algo = grpo_lib.GRPOConfig(
      num_generations=num_generations, num_iterations=1, beta=0.04,
      epsilon=0.2)
  learner = grpo_lib.GRPOLearner(
      rl_cluster=cluster, reward_fns=toy_reward, algo_config=algo)

  # Timers: wrap each global step and its three phases. Each wrapper blocks
  # on its outputs so JAX async dispatch does not shift time between phases.
  timings = {"global_step": [], "rollout_generate": [], "ref_logps": [],
             "update_actor": []}

  def timed(name, fn, block_on=None):
    def w(*a, **k):
      t0 = time.perf_counter()
      r = fn(*a, **k)
      try:
        jax.block_until_ready(r if block_on is None else block_on())
      except Exception:  # pylint: disable=broad-except
        pass  # non-array outputs (rollout text/tokens) are already on host
      timings[name].append(time.perf_counter() - t0)
      return r
    return w

  cluster.generate = timed("rollout_generate", cluster.generate)
  cluster.get_ref_per_token_logps = timed(
      "ref_logps", cluster.get_ref_per_token_logps)
  cluster.update_actor = timed(
      "update_actor", cluster.update_actor,
      block_on=lambda: nnx.state(cluster.actor_trainer.model, nnx.Param))
  learner._run_global_step = timed(
      "global_step", learner._run_global_step,
      block_on=lambda: nnx.state(cluster.actor_trainer.model, nnx.Param))
  trainer = cluster.actor_trainer
  t = time.perf_counter()
  learner.train(ds)
  total = time.perf_counter() - t
  hist = {}
  try:
    ml = trainer.metrics_logger
    for name in ["loss", "kl"]:
      hist[name] = [float(v) for v in
                    ml.get_metric_history("actor", name, "train")]
  except Exception as e:  # pylint: disable=broad-except
    hist["error"] = repr(e)
  steady = {k: (float(np.median(v[1:])) if len(v) > 1 else None)
            for k, v in timings.items()}
  return dict(
      num_prompts_per_step=n_prompts,
      num_generations=num_generations,
      sequences_per_step=n_prompts * num_generations,
      beta=algo.beta, epsilon=algo.epsilon,
      loss_agg_mode=algo.loss_agg_mode, kl_loss_mode=algo.kl_loss_mode,
      optimizer="adamw(1e-5)",
      steps=steps,
      total_train_s=total,
      timings_s=timings,  # per call; call 0 includes jit compilation
      steady_median_s_excluding_first=steady,
      first_step_s=timings["global_step"][0],
      metrics=hist,
  )


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--no-grpo", action="store_true")
  ap.add_argument("--grpo-steps", type=int, default=8)
  ap.add_argument("--out", default="tunix_bench.json")
  args = ap.parse_args()

  cfg = make_config()

  def factory(seed):
    return dummy_model_creator.create_dummy_model(
        qwen3_lib.Qwen3, make_config(), random_seed=seed, scale=0.02)

  t = time.perf_counter()
  model = factory(0)
  build_s = time.perf_counter() - t
  tok = IntTokenizer()
  res = dict(
      versions=dict(
          python=platform.python_version(), tunix=tunix.__version__,
          jax=jax.__version__, jaxlib=jax.lib.__version__ if hasattr(
              jax.lib, "__version__") else None,
          flax=flax.__version__, optax=optax.__version__,
          numpy=np.__version__),
      devices=[str(d) for d in jax.devices()],
      cpu_count=os.cpu_count(),
      model_class="tunix.models.qwen3.model.Qwen3",
      model_config=MODEL_CFG | dict(
          dtype="float32", param_dtype="float32", qk_norm="RMSNorm per head",
          mlp="SwiGLU", init="dummy_model_creator: N(0,1)*0.02 all params"),
      n_params=n_params(model),
      batch=BATCH, prompt_len=PROMPT_LEN, gen_len=GEN_LEN,
      import_s=IMPORT_S, model_build_s=build_s,
  )
  print(json.dumps({k: v for k, v in res.items()}, indent=1), flush=True)
  res["sampler_greedy"] = bench_sampler(model, tok, args.reps, 0.0, None)
  print(json.dumps(res["sampler_greedy"], indent=1), flush=True)
  res["sampler_temp1"] = bench_sampler(model, tok, args.reps, 1.0, 1.0)
  print(json.dumps(res["sampler_temp1"], indent=1), flush=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  if not args.no_grpo:
    try:
      res["grpo"] = bench_grpo_step(factory, tok, steps=args.grpo_steps)
    except Exception as e:  # pylint: disable=broad-except
      import traceback
      res["grpo"] = dict(error=traceback.format_exc())
    print(json.dumps(res["grpo"], indent=1, default=str), flush=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
  main()
