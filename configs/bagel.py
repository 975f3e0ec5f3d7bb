r"""UniGRPO on BAGEL-7B-MoT, as UniRL trains it (docs/bagel.md): think mode, then the image in the
FLUX autoencoder's latent space.

The model reads Bagel's chat splits (`prompt_template`: the think system prompt, the prompt,
then `<|im_start|>` opens the plan), writes its plan with the understanding weights until
`<|im_end|>`, then draws `<|vision_start|>` + latent tokens + `<|vision_end|>` by the SDE
sampler — no CFG, noise on 3 of the first 5 of 25 steps (`rollout.sde_steps`, drawn per group),
Euler steps elsewhere — and the autoencoder decodes the latents for the rewards. The update:
text GRPO (clip 0.01, no KL), the image ratio by GRPO-Guard's RatioNorm, velocity MSE (1.5e-5)
against the starting model, learning rates 1e-6 (understanding) and 3e-5 (generation side),
embeddings, norms, head and the latent position table (a fixed buffer in Bagel) frozen, two
updates a batch; at 7B, blocks recomputed in the backward pass (`model.remat`) and one row a
device a minibatch. ShapeWorld's mini-GenEval scores the
images (UniRL trains against PickScore).

  python -m unigrpo_jax.main --config=configs/bagel.py:7b --workdir=gs://… \
      --config.bagel.checkpoint=/path/BAGEL-7B-MoT

`bagel.checkpoint` is a downloaded Bagel folder (checked against `model` and `autoencoder`
before anything compiles; read tensor by tensor into the sharded parameters) and the tokenizer;
empty: fresh weights from the seed. What fits where:

  python experiments/dry_run.py --config=configs/bagel.py:7b

Variants: `7b` (a TPU v5p-64 slice: 32 chips, FSDP), `7b_gpu` (8 × 80 GB GPUs, FSDP), `tiny`
(a test-sized Bagel-format model and autoencoder with ShapeWorld's tokenizer and Bagel's
special tokens; a few steps on CPU; no system prompt, which that tokenizer cannot spell).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapeworld  # noqa: E402  (configs/shapeworld.py: the shared sections)

# Bagel's GEN_THINK_SYSTEM_PROMPT (inferencer.py), verbatim.
THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the "
    "image. \nThe planning process is enclosed within <think> </think> tags, i.e. <think> "
    "planning process here </think> image here")
# After BOS (`<|im_start|>`): the system split, the prompt split, and the plan's opening.
THINK_SPLITS = "<|im_end|><|im_start|>{prompt}<|im_end|><|im_start|>"
# Roles of Bagel's special tokens: the plan ends at `<|im_end|>` and the image follows.
BAGEL_TOKENS = dict(pad="<|endoftext|>", bos="<|im_start|>", eos="<|endoftext|>",
                    image_start="<|im_end|>", image_end="<|vision_end|>",
                    block_start="<|vision_start|>", block_end="<|vision_end|>")
# Qwen2.5's ids of those tokens (Bagel's tokenizer is Qwen2.5's).
QWEN_IDS = dict(pad_id=151_643, bos_id=151_644, eos_id=151_643, image_start_id=151_645,
                image_end_id=151_653, block_start_id=151_652, block_end_id=151_653)
# Bagel's language model: Qwen2.5-7B with q/k norms, untied head, mixture of transformers;
# 512² images → 64×64×16 latents → 32×32 = 1,024 tokens a block.
BAGEL_7B = dict(vocab_size=152_064, vocab_limit=151_665, width=3584, depth=28, num_heads=28,
                num_kv_heads=4, head_dim=128, mlp_dim=18_944, rope_theta=1_000_000.0,
                norm_eps=1e-6, qkv_bias=True, tie_embeddings=False, qk_norm=True, mot=True,
                image_size=64, patch_size=2, image_channels=16, max_latent_size=64, time_scale=1.0,
                prediction="velocity", scan_layers=True, remat=True, dtype="bfloat16",
                param_dtype="float32", matmul_dtype="bfloat16")
PODS = {"7b": (32, dict(data=1, fsdp=-1, tensor=1)), "7b_gpu": (8, dict(data=1, fsdp=-1,
                                                                         tensor=1))}
VARIANTS = ("tiny",) + tuple(PODS)


def get_config(arg: str = "7b"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown configs/bagel.py variant {arg!r}; known: {VARIANTS}")
  c = shapeworld.get_config()
  c.stages = ("grpo",)
  c.bagel = dict(checkpoint="")
  c.autoencoder = dict()  # FLUX's
  c.hf.update(tokens=BAGEL_TOKENS, added_tokens=())
  c.prompt_template = THINK_SYSTEM_PROMPT + THINK_SPLITS
  c.rollout.update(prompt_len=96, max_text_tokens=1024, num_steps=25, shift=3.0,
                   noise_level=0.8, sde_window=(0, 5), sde_steps=3, temperature=1.0,
                   top_k=1024, image_block="bagel")
  # "none": no parameters checkpoint; GRPO starts from (and is regularised towards) the model
  # as built: the Bagel folder's weights.
  c.rl.update(init_params="none", group_size=24, num_updates=2, families=())
  c.rewards = dict(geneval_strict=1.0, geneval_partial=0.5, object_precision=1.0)
  c.loss.update(text=True, image=True, loss_type="grpo", clip_low=0.01, clip_high=0.01,
                beta=0.0, clip_image=1e-4, velocity_weight=1.5e-5, latent_kl_weight=0.0,
                image_ratio="ratio_norm")
  c.rl_optim.update(learning_rate=1e-6, schedule="constant", warmup_steps=0,
                    image_lr_scale=30.0, frozen=("embeddings", "norms", "head", "positions"))
  if arg in PODS:
    num_devices, c.mesh = PODS[arg]
    # Sampling keeps the FSDP split: a whole float32 copy of a 7B model per chip is what FSDP avoids.
    c.gather_rollout_params = False
    c.pod = dict(num_devices=num_devices)
    c.model = BAGEL_7B
    c.tokens = QWEN_IDS
    c.data.update(size=512, num_train=2048)
    # 24 rows a prompt, 3 a device, updated one row a device at a time.
    c.rl.update(prompts_per_batch=num_devices // 8, num_minibatches=3)
    c.eval.update(batch_size=num_devices)
    return c
  # tiny: ShapeWorld's tokenizer with Bagel's tokens added (ids 55…59).
  c.prompt_template = "{prompt}" + THINK_SPLITS.split("{prompt}")[1]
  c.model = dict(BAGEL_7B, vocab_size=64, vocab_limit=60, width=32, depth=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, mlp_dim=64, rope_theta=10_000.0, image_size=8,
                 max_latent_size=4, image_channels=4, scan_layers=False, remat=False,
                 dtype="float32", matmul_dtype="")
  c.autoencoder = dict(channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                       z_channels=4)
  c.tokens = dict(pad_id=55, bos_id=56, eos_id=55, image_start_id=57, image_end_id=58,
                  block_start_id=59, block_end_id=58)
  c.data.update(num_train=256, num_heldout=32)
  c.rollout.update(prompt_len=16, max_text_tokens=8, num_steps=6, sde_window=(0, 3),
                   sde_steps=2, top_k=0)
  c.rl.update(steps=4, prompts_per_batch=2, group_size=4, log_every=2)
  c.eval.update(num_prompts=16, train_prompts=8, batch_size=8, every=2, grid_prompts=8)
  c.checkpoint.update(every=2)
  return c
