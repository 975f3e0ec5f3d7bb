r"""Rollout demo: a freshly initialised small unified model samples text+image trajectories.

It exercises the real path end to end — the jitted rollout (KV-cached text, SDE image steps,
clean image into the cache), teacher-forced rescoring (the on-policy ratio check) — and writes
a PNG grid and a JSON summary to the workdir. About 30 s on the 2-core CPU:

  python -m unigrpo_jax.main --config=configs/demo.py --workdir=workdir/demo

Expected: `max_abs_log_ratio` below 1e-5 in results.json; the images are noise-like (random
weights), the point is the plumbing. Variant `tiny` (a test-sized model): `configs/demo.py:tiny`.
"""
import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ("rollout",)
  c.batch_size = 8
  c.model = dict(vocab_size=512, width=128, depth=4, num_heads=4, num_kv_heads=2, head_dim=32,
                 mlp_dim=512, image_size=32, patch_size=4, image_channels=3,
                 rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=True, scan_layers=False, prediction="velocity", x0_min_time=0.02,
                 dtype="float32", param_dtype="float32", matmul_dtype="")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  c.rollout = dict(prompt_len=16, max_text_tokens=24, rounds=2, num_steps=10, shift=3.0,
                   noise_level=0.7, sde_window=None, mode="sde", temperature=1.0, top_k=0)
  if arg == "tiny":
    c.batch_size = 2
    c.model.update(vocab_size=64, width=32, depth=2, head_dim=8, mlp_dim=64, image_size=8)
    c.rollout.update(prompt_len=6, max_text_tokens=5, num_steps=3)
  elif arg:
    raise ValueError(f"unknown configs/demo.py variant {arg!r}; known: '', 'tiny'")
  return ml_collections.ConfigDict(c)
