r"""ShapeWorld: the built-in domain (mini-GenEval on grid-aligned coloured shapes).

Today this config drives the warm-up SFT experiment (issue #4); the full UniGRPO job (#5) will
extend it. One image token per 8×8 cell (16 tokens for the 32×32 canvas), a 2.1 M-parameter
MoT model. Launch (≈5 min on the 2-core CPU; variant `tiny`, ≈30 s):

  python experiments/sft_warmup.py --config=configs/shapeworld.py

Expected today: both SFT losses fall, plans become well formed and relevant (structure 1.0,
text relevance ~0.9), images are still too noisy for the detector (README, "warm-up SFT").
"""
import ml_collections


def get_config(arg: str = ""):
  if arg not in ("", "tiny"):
    raise ValueError(f"unknown configs/shapeworld.py variant {arg!r}; known: '', 'tiny'")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(data_dir="workdir/tfds", num_train=4096, num_heldout=256, seed=0,
                heldout_fraction=0.2, size=32, grid=4, large_prob=0.0)
  c.model = dict(vocab_size=48, width=128, depth=4, num_heads=4, num_kv_heads=2, head_dim=32,
                 mlp_dim=512, image_size=32, patch_size=8, image_channels=3,
                 rope_theta=10_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=True, scan_layers=False, prediction="x0", x0_min_time=0.02,
                 dtype="float32", param_dtype="float32")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  c.rollout = dict(prompt_len=12, max_text_tokens=28, rounds=1, num_steps=20, shift=3.0,
                   noise_level=0.7, sde_window=None, mode="sde", temperature=1.0, top_k=0)
  # x0 prediction weights the velocity loss by 1/t²: train on unshifted t (shift 1).
  c.sft = dict(text_weight=1.0, image_weight=1.0, t_mean=0.0, t_std=1.0, shift=1.0)
  c.sft_train = dict(steps=1200, batch_size=32, log_every=100)
  c.optim = dict(learning_rate=1e-3, schedule="cosine", warmup_steps=100, total_steps=1200,
                 b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)
  c.eval = dict(num_prompts=256, batch_size=64)
  if arg == "tiny":
    c.data.update(num_train=256, num_heldout=32)
    c.model.update(width=32, depth=2, head_dim=8, mlp_dim=64)
    c.sft_train.update(steps=40, batch_size=8, log_every=10)
    c.optim.update(total_steps=40, warmup_steps=5)
    c.eval.update(num_prompts=16, batch_size=8)
  return ml_collections.ConfigDict(c)
