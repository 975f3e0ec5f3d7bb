r"""Benchmarks: the model and batch Tunix's peer benchmark uses.

4 layers, width 256, 4 heads × 64 (4 KV heads), SwiGLU 1024, vocab 1024, float32; prompt 32,
64 new tokens at temperature 1; a 32×32×3 image in 4×4 patches (64 tokens), 10 SDE steps.

Variants and launch commands (each ~1–2 min on the 2-core CPU):
  ""             rollout, batch 16:
                   python experiments/bench_rollout.py --config=configs/bench.py
  "update_text"  text-only GRPO step, 4 prompts × G = 4, no image block, β = 0.04 k3 KL (as
                 the Tunix peer):
                   python experiments/bench_update.py --config=configs/bench.py:update_text
  "update_joint" UniGRPO step, 4 prompts × G = 4: text + SDE image, text and image policy
                 losses and the velocity MSE:
                   python experiments/bench_update.py --config=configs/bench.py:update_joint
  "update_overlap" a UniGRPO step where sampling dominates, as in image RL at scale (40 flow
                 steps, the update on 2 SDE steps of them), 8 prompts × G = 4 sampled in 4
                 parts, with a reward that sleeps as long as the rollout took: the step with
                 each part scored while the next samples, and with scoring after sampling:
                   python experiments/bench_update.py --config=configs/bench.py:update_overlap
Any of them with `--config.model.matmul_dtype=bfloat16`: weight matmuls on bfloat16 operands
with float32 accumulation (docs/benchmarks.md; parameters and optimizer stay float32).
"""
import ml_collections

VARIANTS = ("", "update_text", "update_joint", "update_overlap")


def get_config(arg: str = ""):
  if arg not in VARIANTS:
    raise ValueError(f"unknown configs/bench.py variant {arg!r}; known: {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 16
  c.model = dict(vocab_size=1024, width=256, depth=4, num_heads=4, num_kv_heads=4, head_dim=64,
                 mlp_dim=1024, image_size=32, patch_size=4, image_channels=3,
                 rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=False, scan_layers=False, prediction="velocity", x0_min_time=0.02,
                 dtype="float32", param_dtype="float32", matmul_dtype="")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  # Rows that stop early are masked, not skipped: every row costs all 64 decode steps, as in
  # the peer's benchmark (which never stops).
  c.rollout = dict(prompt_len=32, max_text_tokens=64, rounds=1, num_steps=10, shift=3.0,
                   noise_level=0.7, sde_window=None, sde_steps=0, mode="sde", temperature=1.0,
                   top_k=0,
                   draw_images=arg != "update_text")
  c.bench = dict(repeats=5, steps=6, matmul_size=2048, fsdp_devices=8)
  if arg == "update_overlap":
    c.batch_size = 32
    c.rollout.update(num_steps=40, sde_window=(0, 2))
    c.bench.update(chunks=4, steps=4)
  if arg.startswith("update"):
    joint = arg in ("update_joint", "update_overlap")
    c.rl = dict(group_size=4, num_updates=1, num_minibatches=1)
    c.loss = dict(text=True, image=joint, loss_type="grpo", clip_low=0.2, clip_high=0.2,
                  beta=0.0 if joint else 0.04, kl="k3", entropy_weight=0.0, clip_image=1e-4,
                  velocity_weight=1.5e-5 if joint else 0.0, latent_kl_weight=0.0)
    c.optim = dict(learning_rate=1e-5, schedule="constant", warmup_steps=0, total_steps=1000,
                   b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)
  return ml_collections.ConfigDict(c)
