r"""Real backbones: Qwen2.5-0.5B and Qwen2.5-7B with the flow head and Bagel's mixture of
transformers (a second weight set per block for noised image tokens, initialised as a copy of
the text weights), images as 32×32×16 VAE-style latents in 2×2 patches, on TPU pod slices.

Everything else — data, SFT, UniGRPO, rewards, evaluation — is configs/shapeworld.py's: one code
path from the 2-core CPU to the pod. Start from the downloaded Hugging Face checkpoint (its
weights and tokenizer; `<plan>`/`</plan>` are added, image blocks use Qwen's vision tokens):

  python -m unigrpo_jax.main --config=configs/qwen2_5.py:7b --workdir=gs://… \
      --config.hf.checkpoint=/path/to/Qwen2.5-7B

What fits where, before asking for a pod (`jax.eval_shape` on an abstract mesh of the
variant's `pod.num_devices` chips; nothing allocated; seconds on a laptop):

  python experiments/dry_run.py --config=configs/qwen2_5.py:7b

Variants: `0.5b` (v5e-8: 8 chips, FSDP), `7b` (v5p-256: fsdp 64 × tensor 4).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapeworld  # noqa: E402  (configs/shapeworld.py: the shared sections)

# Qwen2.5's config.json, text part (https://huggingface.co/Qwen/Qwen2.5-0.5B, …-7B).
BACKBONES = {
    "0.5b": dict(vocab_size=151_936, width=896, depth=24, num_heads=14, num_kv_heads=2,
                 head_dim=64, mlp_dim=4864, tie_embeddings=True),
    "7b": dict(vocab_size=152_064, width=3584, depth=28, num_heads=28, num_kv_heads=4,
               head_dim=128, mlp_dim=18_944, tie_embeddings=False),
}
PODS = {"0.5b": (8, dict(data=1, fsdp=-1, tensor=1)),
        "7b": (256, dict(data=1, fsdp=-1, tensor=4))}


def get_config(arg: str = "7b"):
  if arg not in BACKBONES:
    raise ValueError(f"unknown configs/qwen2_5.py variant {arg!r}; known: {list(BACKBONES)}")
  c = shapeworld.get_config()
  num_devices, c.mesh = PODS[arg]
  # Sampling keeps the FSDP split: a whole float32 copy of a 7B model per chip is what FSDP avoids.
  c.gather_rollout_params = False
  c.pod = dict(num_devices=num_devices)
  c.model.update(BACKBONES[arg])
  c.model.update(image_size=32, patch_size=2, image_channels=16, rope_theta=1_000_000.0,
                 norm_eps=1e-6, qkv_bias=True, mot=True, scan_layers=True,
                 prediction="velocity", dtype="bfloat16", param_dtype="float32",
                 matmul_dtype="bfloat16")
  # Qwen2.5's own special tokens; the plan markers are added (ids after its 151 665 tokens).
  c.hf.update(tokens=dict(pad="<|endoftext|>", bos="<|im_start|>", eos="<|im_end|>",
                          image_start="<|vision_start|>", image_end="<|vision_end|>"))
  c.tokens = dict(pad_id=151_643, bos_id=151_644, eos_id=151_645, image_start_id=151_652,
                  image_end_id=151_653)
  c.rollout.update(prompt_len=128, max_text_tokens=256, num_steps=10, sde_window=(0, 4))
  c.sft_data.update(batch_size=num_devices)
  c.rl.update(prompts_per_batch=num_devices // 8, group_size=8)  # one row per chip
  c.eval.update(batch_size=num_devices)
  return c
