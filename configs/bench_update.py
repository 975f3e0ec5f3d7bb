r"""GRPO update benchmark (issue #3): the rollout benchmark's model, 4 prompts × G = 4.

Prompt 32, 64 new tokens; variant `text` (default): text-only GRPO (no image block, β = 0.04
k3 KL to the reference, as the Tunix peer); variant `joint`: UniGRPO (text + 10-step SDE image,
text and image policy losses, velocity MSE). One update per rollout batch. ~2 min each:

  python experiments/bench_update.py --config=configs/bench_update.py:text
  python experiments/bench_update.py --config=configs/bench_update.py:joint
"""
import ml_collections


def get_config(arg: str = "text"):
  arg = arg or "text"
  if arg not in ("text", "joint"):
    raise ValueError(f"unknown configs/bench_update.py variant {arg!r}; known: text, joint")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.prompts_per_batch = 4
  c.model = dict(vocab_size=1024, width=256, depth=4, num_heads=4, num_kv_heads=4, head_dim=64,
                 mlp_dim=1024, image_size=32, patch_size=4, image_channels=3,
                 rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=False, scan_layers=False, dtype="float32", param_dtype="float32")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  c.rollout = dict(prompt_len=32, max_text_tokens=64, rounds=1, num_steps=10, shift=3.0,
                   noise_level=0.7, sde_window=None, mode="sde", temperature=1.0, top_k=0,
                   draw_images=arg == "joint")
  c.rl = dict(group_size=4, num_updates=1, num_minibatches=1)
  c.loss = dict(text=True, image=arg == "joint", loss_type="grpo", clip_low=0.2, clip_high=0.2,
                beta=0.04 if arg == "text" else 0.0, kl="k3", clip_image=1e-4,
                velocity_weight=1.5e-5 if arg == "joint" else 0.0, latent_kl_weight=0.0)
  c.optim = dict(learning_rate=1e-5, schedule="constant", warmup_steps=0, total_steps=1000,
                 b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)
  c.bench = dict(steps=6, matmul_size=2048, fsdp_devices=8)
  return ml_collections.ConfigDict(c)
