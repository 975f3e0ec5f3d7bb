r"""Benchmark model and rollout (issue #2): the size Tunix's peer benchmark uses.

4 layers, width 256, 4 heads × 64 (4 KV heads), SwiGLU 1024, vocab 1024, float32; batch 16,
prompt 32, 64 new tokens at temperature 1; a 32×32×3 image in 4×4 patches (64 tokens), 10 SDE
steps. Launch (≈1 min on the 2-core CPU):

  python experiments/bench_rollout.py --config=configs/bench.py
"""
import ml_collections


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 16
  c.model = dict(vocab_size=1024, width=256, depth=4, num_heads=4, num_kv_heads=4, head_dim=64,
                 mlp_dim=1024, image_size=32, patch_size=4, image_channels=3,
                 rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=False, scan_layers=False, dtype="float32", param_dtype="float32")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  # Rows that stop early are masked, not skipped: every row costs all 64 decode steps, as in
  # the peer's benchmark (which never stops).
  c.rollout = dict(prompt_len=32, max_text_tokens=64, rounds=1, num_steps=10, shift=3.0,
                   noise_level=0.7, sde_window=None, mode="sde", temperature=1.0, top_k=0)
  c.bench = dict(repeats=5, matmul_size=2048)
  return ml_collections.ConfigDict(c)
