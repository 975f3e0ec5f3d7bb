r"""The tiny GRPO run the resume and fault tests drive in subprocesses: `configs/shapeworld.py:tiny`
with one block, GRPO only from fresh parameters, a continuous reward from
`tests/e2e/reward_plugins.py` (run with `PYTHONPATH=tests/e2e`), 24 steps, a checkpoint every 3; the
policy's moving average on and the reference refreshed every 3 steps (a velocity penalty strong
enough that the reference shows in every update), so the resume comparisons cover both. Variants:
`nan` (a reward that is NaN on steps 2 and 3), `always_nan` (NaN every step; 3 in a row stop the
run), `chunked` (the rollout in two parts, each scored after both are sampled), `overlapped` (each
part scored while the next samples: set `config.reward_servers` to serve the reward), `per_part`
(two parts, each part's gradient taken as its rewards come in, and a reward that is NaN on its
2nd and 3rd call: one part of steps 1 and 2) and `lora` (LoRA adapters over a bfloat16 base, 6
steps)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "configs"))
import shapeworld  # noqa: E402


def get_config(arg: str = ""):
  c = shapeworld.get_config("tiny")
  c.stages = ("grpo",)
  c.model.update(depth=1)  # one block: the run's faults, not the stack, are under test
  c.reward_modules = ("reward_plugins",)
  c.rl.update(steps=24, init_params="none")
  # Constant, from step 1: every update moves the policy (the resume comparison needs it).
  c.rl_optim.update(learning_rate=1e-3, schedule="constant", warmup_steps=0)
  c.eval.update(num_prompts=8, train_prompts=8, every=1000)
  c.checkpoint.update(every=3, max_to_keep=2)
  c.rewards = {"brightness": 1.0, "flaky": 1.0} if arg in ("nan", "per_part") else {
      "always_nan" if arg == "always_nan" else "brightness": 1.0}
  if not arg:
    c.ema.update(decay=0.9, every=2, start=3)
    c.rl.reference_refresh = 3
    c.loss.velocity_weight = 1e-3
  if arg:
    c.rl.steps = 8
    c.faults.max_skipped_in_a_row = 3
  if arg == "lora":  # adapters on the generation expert and the text queries, bfloat16 base,
    # the image output layer trained in full
    c.lora.update(enabled=True, rank=4, alpha=8.0, modules=("image/*", "text/q"),
                  base_dtype="bfloat16", unfrozen=("image_out/*",))
    c.rl.steps = 6
  if arg in ("chunked", "overlapped"):
    c.rl.update(rollout_chunks=2, overlap_rewards=arg == "overlapped")
    c.reward_client.update(timeout_s=10.0, retries=1, backoff_s=0.1)
  if arg == "per_part":
    c.rl.update(rollout_chunks=2, update_per_part=True)
  return c
