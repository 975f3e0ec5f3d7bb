r"""Pod scale: a 7B-class MoT backbone (Qwen2.5-7B shapes, Bagel-style second weight set for
image tokens: ~14 B parameters) on a 256-chip TPU mesh (fsdp 64 × tensor 4), bfloat16
activations, float32 master weights, images as 32×32×16 VAE-style latents in 2×2 patches.

Everything else — data, SFT, UniGRPO, rewards, evaluation — is configs/shapeworld.py's: one
code path from the 2-core CPU to the pod. On this machine it can only be built abstractly
(`jax.eval_shape`, an AbstractMesh of the pod's shape; nothing is allocated):

  python experiments/pod_memory.py --config=configs/pod.py

prints per-device bytes of parameters, optimizer state, the frozen reference and the rollout's
KV cache (≈1 s). On a v5p-256 pod slice: `python -m unigrpo_jax.main --config=configs/pod.py
--workdir=gs://…` (needs #8's Hugging Face import for real weights and tokenizer).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapeworld  # noqa: E402  (configs/shapeworld.py: the shared sections)


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"configs/pod.py has no variants, got {arg!r}")
  c = shapeworld.get_config()
  c.pod = dict(num_devices=256)
  c.mesh = dict(data=1, fsdp=-1, tensor=4)
  c.model.update(vocab_size=152_064, width=3584, depth=28, num_heads=28, num_kv_heads=4,
                 head_dim=128, mlp_dim=18_944, image_size=32, patch_size=2, image_channels=16,
                 rope_theta=1_000_000.0, qkv_bias=True, tie_embeddings=False, mot=True,
                 scan_layers=True, prediction="velocity", dtype="bfloat16",
                 param_dtype="float32")
  c.rollout.update(prompt_len=128, max_text_tokens=256, num_steps=10, sde_window=(0, 4))
  c.sft_data.update(batch_size=256)
  c.rl.update(prompts_per_batch=32, group_size=8)  # 256 rows: one per chip
  c.eval.update(batch_size=256)
  return c
