r"""The tiny main job the multi-process tests run as 1 process × 4 devices and as 2 processes × 2
(`configs/shapeworld.py:tiny`, shortened to one block and fewer steps): SFT then 8 GRPO steps, with
a continuous reward beside mini-GenEval so that every GRPO update moves the parameters, and one that
is NaN in the last process only, on the steps its data picks (rewards of
`tests/e2e/reward_plugins.py`: run with `PYTHONPATH=tests/e2e`); a checkpoint every 2 steps, the
policy's moving average saved and the reference refreshed every 3 steps, so that a run stopped and
resumed covers them."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "configs"))
import shapeworld  # noqa: E402


def get_config():
  c = shapeworld.get_config("tiny")
  c.model.update(depth=1)  # one block: the processes, not the stack, are under test
  c.sft_train.update(steps=6, log_every=2)
  c.sft_data.mix = dict(t2i=1.0, understanding=0.0, interleaved=0.0)  # one step to compile
  c.eval.update(num_prompts=8, train_prompts=8, every=1000, grid_prompts=4)
  c.distributed.heartbeat_timeout_s = 10
  c.reward_modules = ("reward_plugins",)
  c.rewards = {"geneval_strict": 1.0, "brightness": 1.0, "flaky_on_last_process": 1.0}
  c.rl.steps = 8
  # Constant, from step 1: every update moves the policy (the resume comparison needs it).
  c.rl_optim.update(learning_rate=1e-3, schedule="constant", warmup_steps=0)
  c.checkpoint.update(every=2, max_to_keep=2)
  c.ema.update(decay=0.9, every=1, start=2)
  c.rl.reference_refresh = 3
  c.loss.velocity_weight = 1e-3
  return c
