"""The tiny Bagel run the end-to-end tests drive: `configs/bagel.py:tiny` with one block (the run,
not the stack, is under test) plus a continuous reward from `tests/e2e/reward_plugins.py` (run with
`PYTHONPATH=tests/e2e`). Random weights draw no shape the detector accepts, so mini-GenEval alone
would score every sample 0 and no update would move the parameters."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "configs"))
import bagel  # noqa: E402


def get_config(arg: str = "tiny"):
  c = bagel.get_config(arg)
  c.model.update(depth=1)
  c.reward_modules = ("reward_plugins",)
  c.rewards = dict(c.rewards, brightness=1.0)
  return c
