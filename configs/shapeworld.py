r"""ShapeWorld: the built-in domain (mini-GenEval on grid-aligned coloured shapes), end to end.

Warm-up SFT on the hybrid mix (text-to-image with a plan, a little image → caption
understanding, a little interleaved data), then UniGRPO from the SFT checkpoint: plan text by
GRPO, image denoising by Flow-GRPO on an SDE window, no CFG, velocity-MSE to the SFT model. One
image token per 8×8 cell (16 tokens for the 32×32 canvas), a 2.1 M-parameter MoT model.
Launch:

  python -m unigrpo_jax.main --config=configs/shapeworld.py --workdir=workdir/shapeworld

What it gives, and how long it takes on each machine it was measured on: docs/results.md.
Variants: `tiny` (a test-sized model, a few steps of each stage, about a minute; scores stay
near 0), `sft` (the warm-up only, as experiments/sft_warmup.py runs it), `colab` (the default
model, short stages: the quickstart notebook's few minutes), `world2` (ShapeWorld version 2:
8 shapes, 8 colours, counts to five, 64×64 images, every held-out prompt sampled 4 times).
Overrides:
`--config.rl.group_size=16` etc.
"""
import ml_collections
from ml_collections import config_dict

VARIANTS = ("", "tiny", "sft", "colab", "world2")


def get_config(arg: str = ""):
  if arg not in VARIANTS:
    raise ValueError(f"unknown configs/shapeworld.py variant {arg!r}; known: {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ("sft", "grpo")
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  # Rollouts sample from the parameters gathered over fsdp once per rollout, not split at every
  # decode step (`sharding.gathered`): a copy of this small model per device.
  c.gather_rollout_params = True
  # world: the ShapeWorld version (data/shapeworld.py); `world2` moves to version 2.
  # plan_order: the order a plan lists its objects in ("raster" or "prompt": the prompt's);
  # plan_words: an object's words, "color_shape" ("blue heart") or "shape_color".
  c.data = dict(data_dir="workdir/tfds", num_train=4096, num_heldout=256, seed=0,
                heldout_fraction=0.2, world=1, size=32, grid=4, large_prob=0.0,
                plan_order="raster", plan_words="color_shape",
                families=("single_object", "two_object", "counting", "colors", "position",
                          "color_attr"),
                read_threads=1, read_ahead=2)
  # matmul_dtype "bfloat16": bf16 operands, float32 accumulation (model/matmul.py; faster
  # steps on CPUs with bfloat16 units); "": float32 matmuls.
  c.model = dict(vocab_size=64, width=128, depth=4, num_heads=4, num_kv_heads=2, head_dim=32,
                 mlp_dim=512, image_size=32, patch_size=8, image_channels=3,
                 rope_theta=10_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                 mot=True, scan_layers=False, prediction="x0", x0_min_time=0.02,
                 dtype="float32", param_dtype="float32", matmul_dtype="bfloat16")
  c.tokens = dict(pad_id=0, bos_id=1, eos_id=2, image_start_id=3, image_end_id=4)
  # The sampler's variants (docs/design.md §2): the SDE step ("sde" or "cps"), one initial
  # noise per group, a fraction of the noisy steps trained, a window sliding every k steps;
  # image_reads_prompt False: images read the plan, not the prompt.
  c.rollout = dict(prompt_len=12, max_text_tokens=28, rounds=1, num_steps=20, shift=3.0,
                   sde_type="sde", noise_level=0.7, group_noise=False, sde_window=(0, 6),
                   timestep_fraction=1.0, slide_every=0, slide_stride=1, slide_roll_back=False,
                   mode="sde", temperature=1.0, top_k=0, cfg_scale=1.0, image_reads_prompt=True)

  # Warm-up SFT. x0 prediction weights the velocity loss by 1/t²: train on unshifted t.
  # Condition dropout 0.1 trains the unconditional velocity that the CFG ablation uses; prompt
  # dropout hides the prompt (not the plan) from that share of images.
  c.sft = dict(text_weight=1.0, image_weight=1.0, t_mean=0.0, t_std=1.0, shift=1.0,
               cfg_dropout=0.1, prompt_dropout=0.0)
  c.sft_data = dict(mix=dict(t2i=1.0, understanding=0.1, interleaved=0.1), caption_tokens=32,
                    interleaved_rounds=4, interleaved_tokens=12, batch_size=32)
  # 3600 steps: at 1200 the images still ignore the plan, at 3600 they start to follow it and
  # GRPO has a plan to teach them (docs/results.md). The schedules span their stage:
  # overriding `steps` moves `total_steps` with it.
  sft_steps = config_dict.FieldReference(3600)
  c.sft_train = dict(steps=sft_steps, log_every=50, eval_before=False)
  c.sft_optim = dict(learning_rate=1e-3, schedule="cosine", warmup_steps=100, total_steps=sft_steps,
                     b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0)

  # UniGRPO.
  rl_steps = config_dict.FieldReference(1200)
  # families: the prompt families GRPO trains on (() = all of the task's); evaluation always
  # scores all six. The warm-up already solves single_object and colors on the training
  # prompts: their GenEval rewards hardly vary within a group, so the batch goes to the four
  # it does not (docs/results.md). rollout_chunks, overlap_rewards, update_per_part: sampling in
  # parts, scoring each while the next samples, and the update part by part (docs/rewards.md).
  c.rl = dict(task="t2i", steps=rl_steps, prompts_per_batch=4, group_size=8, num_updates=1,
              num_minibatches=1, log_every=10, init_params="",
              families=("two_object", "counting", "position", "color_attr"),
              rollout_chunks=1, overlap_rewards=True, update_per_part=False,
              reference_refresh=0)
  # A moving average of the policy for evaluation and the saved parameters (decay 0: off).
  c.ema = dict(decay=0.0, every=1, start=0)
  # LoRA: train adapters on these projections ("<expert>/<projection>" patterns) over the
  # frozen starting parameters, which are then also the reference (docs/design.md §4), and
  # the `unfrozen` parameters ("image_out/*": path patterns) in full beside them.
  c.lora = dict(enabled=False, rank=64, alpha=64.0, modules=("image/*",), dropout=0.0,
                base_dtype="", unfrozen=())
  # The image must follow the plan (visual_text_alignment) and the plan must answer the prompt
  # (text_relevance, structure); mini-GenEval scores the image. Image-only rewards let the
  # plans drift (structure fell to 0 in 200 steps at one learning rate of 1e-4). GenEval's
  # rules let extra objects pass; without object_precision the images fill up with shapes.
  c.rewards = dict(geneval_strict=1.0, geneval_partial=0.5, object_precision=1.0,
                   visual_text_alignment=1.0, text_relevance=1.0, structure=0.5)
  # Per-round rewards ((B, R) scores) for process-level advantages (advantages.kind "process"
  # or "both"; configs/interleaved.py); the outcome advantages use `rewards`.
  c.process_rewards = {}
  c.advantages = dict(kind="outcome", scale="group", eps=1e-4, clip=5.0, normalize_each=False)
  c.loss = dict(text=True, image=True, loss_type="grpo", clip_low=0.2, clip_high=0.28,
                beta=0.0, kl="k3", entropy_weight=0.0, clip_image=1e-4,
                velocity_weight=1.5e-5, latent_kl_weight=0.0)
  # Per expert: the text side slowly (plans stay well formed), the image side 10× faster. A
  # constant rate peaks and then collapses (counting, color_attr); cosine to 0 holds the gain.
  c.rl_optim = dict(learning_rate=1e-5, schedule="cosine", warmup_steps=30, total_steps=rl_steps,
                    b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
                    image_lr_scale=10.0)

  # num_prompts held-out examples (48 distinct prompts); train_prompts training examples
  # scored the same way before and after GRPO; sampled_plans: the held-out ones also drawn with
  # plans sampled as in training, for the policy's own diversity.
  c.eval = dict(num_prompts=256, train_prompts=256, batch_size=64, every=300, grid_prompts=16,
                samples_per_prompt=1, sampled_plans=False)
  c.checkpoint = dict(every=100, max_to_keep=2)
  # An update with a non-finite loss, gradient or reward is skipped; this many in a row stop.
  c.faults = dict(max_skipped_in_a_row=5)
  # One process (num_processes=1); 0 = detect the processes (Cloud TPU, SLURM); N ≥ 2 = N
  # processes meeting at coordinator_address (`python -m unigrpo_jax.launch_local` fills these).
  c.distributed = dict(coordinator_address="", num_processes=1, process_id=0,
                       heartbeat_timeout_s=100, initialization_timeout_s=300)
  # "" = the shipped ShapeWorld tokenizer; modules imported at start-up to register rewards.
  c.tokenizer_path = ""
  c.reward_modules = ()
  # Rewards beyond the registered functions (docs/rewards.md): model-based ones loaded from
  # local folders (name → dict(kind=..., path=...)), and served ones (name → server URL), with
  # how the served ones are called.
  c.reward_models = {}
  c.reward_servers = {}
  c.reward_client = dict(timeout_s=60.0, retries=3, backoff_s=0.5, batch_size=0,
                         max_concurrency=4)
  # A pretrained Hugging Face Qwen2 checkpoint directory to start from ("" = fresh weights):
  # text weights imported into both experts (Bagel), image layers fresh; its tokenizer is used
  # (unless tokenizer_path is set), with the tokens of each role added where missing.
  c.hf = dict(checkpoint="", tokens=dict(pad="[PAD]", bos="[BOS]", eos="[EOS]",
                                         image_start="<img>", image_end="</img>"),
              added_tokens=("<plan>", "</plan>"))

  if arg == "world2":
    # 8 shapes, 8 colours, counts to five on 16-pixel cells (one image token a cell); every
    # held-out prompt listed once: the first 168 cover each family's (single_object: every
    # shape), each drawn 4 times.
    # Plans stay raster-ordered and colour-first: shape-first plans bind two colours right but
    # gained less under GRPO, plans in the prompt's order lose the images' cells
    # (docs/results.md).
    c.data.update(world=2, size=64, num_heldout=168)
    c.model.update(vocab_size=72, image_size=64, patch_size=16)
    c.rollout.update(max_text_tokens=36)
    c.sft_data.update(caption_tokens=40, interleaved_rounds=5)
    # Evaluated before and after GRPO only: a mid-run evaluation costs wall time the job lacks.
    # The greedy plan fixes a prompt's colours and cells, so its samples vary only where the
    # images stray from it: the sampled plans measure the policy's diversity.
    c.eval.update(num_prompts=168, train_prompts=168, samples_per_prompt=4, every=1600,
                  sampled_plans=True)
    # Warm-up times shifted like the sampling grid and centred higher: on unshifted times the
    # images hardly read their plan at high noise, where the sampler settles the layout
    # (`heldout_text_reliance`; docs/results.md). Half the images see the plan but not the
    # prompt, so the images learn to follow the plan, which is what GRPO's text side changes.
    # Colours and counts are not solved after the warm-up: GRPO trains every family.
    c.sft.update(shift=3.0, t_mean=0.5, prompt_dropout=0.5)
    # Text-to-image examples only, 2500 steps: the understanding and interleaved steps cost
    # ~38 % of a hybrid warm-up's time, which goes to GRPO instead (docs/results.md).
    c.sft_data.mix.update(understanding=0.0, interleaved=0.0)
    sft_steps.set(2500)
    # 10 flow steps, SDE on the first 3: half the step time, spent on 2× the GRPO steps.
    c.rollout.update(num_steps=10, sde_window=(0, 3))
    rl_steps.set(1600)
    c.rl.update(families=())
    # The text side 3× faster, the image side at 2e-4: the plan tokens' keys and values, which
    # the image reads, train at the text rate; at 1e-4 the images of a weak warm-up hardly
    # learn to follow the plan (docs/results.md).
    c.rl_optim.update(learning_rate=3e-5, image_lr_scale=2e-4 / 3e-5)
    # A velocity MSE that holds: at the method's 1.5e-5 it is ~10⁴ times weaker than the image
    # policy term here, and the images fill with speckle over 1600 steps (docs/results.md).
    c.loss.update(velocity_weight=1e-3)
    # Extra objects weigh half what GenEval's rules do: held-out counting ends higher (5 of 6
    # seed pairs) and so does the gain (6 of 6), and the images do not crowd (docs/results.md).
    c.rewards.update(object_precision=0.5)
  if arg == "sft":
    c.stages = ("sft",)
    c.sft_train.eval_before = True
  if arg == "colab":
    c.data.update(num_train=1024, num_heldout=64)
    c.sft_train.update(steps=400)
    c.sft_optim.update(warmup_steps=40)
    c.rl.update(steps=40, log_every=5)
    c.rl_optim.update(warmup_steps=4)
    c.eval.update(num_prompts=64, train_prompts=64, every=20)
    c.checkpoint.update(every=50)
  if arg == "tiny":
    c.data.update(num_train=256, num_heldout=32)
    c.model.update(width=32, depth=2, head_dim=8, mlp_dim=64)
    c.rollout.update(num_steps=6, sde_window=(0, 3))
    c.sft_data.update(batch_size=8)
    c.sft_train.update(steps=12, log_every=4)
    c.sft_optim.update(warmup_steps=2)
    c.rl.update(steps=4, prompts_per_batch=2, group_size=4, log_every=2)
    c.rl_optim.update(warmup_steps=1)
    c.eval.update(num_prompts=16, train_prompts=8, batch_size=8, every=2, grid_prompts=8)
    c.checkpoint.update(every=2)
  return ml_collections.ConfigDict(c)
