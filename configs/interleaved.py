r"""Interleaved GRPO on ShapeWorld: stories that build the prompt's scene in K steps (K = 2–4,
the objects it asks for; a how-to prompt's figure part by part, in its recipe's order), each
step `<plan> object </plan> <img>` + the image of the scene so far, then EOS. Warm-up SFT
(2400 steps) on a hybrid mix weighted to interleaved sequences (plus a little text-to-image and
understanding data), then GRPO over the whole trajectory with hybrid rewards (structure,
textual relevance, visual–text alignment, final-scene mini-GenEval) and process-level rewards
turned into step-wise advantages. Launch:

  python -m unigrpo_jax.main --config=configs/interleaved.py --workdir=workdir/interleaved

Everything not set here is configs/shapeworld.py's. Variants: `tiny` (a test-sized model, a
few steps of each stage), `outcome` / `process` (advantages from outcome rewards only / from
process rewards only; the default uses both), `dense` (alignment trained on partial credit),
combinable as `tiny,process`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapeworld  # noqa: E402  (configs/shapeworld.py: the shared sections)

VARIANTS = ("tiny", "outcome", "process", "dense")


def get_config(arg: str = ""):
  parts = [p for p in arg.split(",") if p]
  unknown = [p for p in parts if p not in VARIANTS]
  if unknown:
    raise ValueError(f"unknown configs/interleaved.py variants {unknown}; known: {VARIANTS}")
  c = shapeworld.get_config("tiny" if "tiny" in parts else "")
  c.rl.task = "interleaved"
  c.rl.families = ()  # every story family, the how-to figures included
  # What the recorded interleaved results ran with (docs/results.md): float32 matmuls and a
  # constant GRPO learning rate.
  c.model.matmul_dtype = ""
  c.rl_optim.update(schedule="constant", warmup_steps=0)
  # The how-to figures ("how to draw a red house") join GenEval's families in the data.
  c.data.families = c.data.families + ("howto",)
  c.sft_data.mix = dict(t2i=0.3, understanding=0.1, interleaved=1.0)
  if "tiny" not in parts:
    # Four images a trajectory: 10 sampler steps (3 of them SDE, trained) keep a step near the
    # text-to-image job's cost.
    c.rollout.update(num_steps=10, sde_window=(0, 3))
    # A 1200-step warm-up drew images that ignore the plan (alignment 0.02); 2400 steps: 0.20.
    c.sft_train.steps = 2400  # sft_optim.total_steps follows
  # `dense`: alignment trains on the partial match (colour, shape and cell each earn a share)
  # instead of the strict F1 that the evaluation reports.
  alignment = "interleaved_alignment_partial" if "dense" in parts else "interleaved_alignment"
  c.rewards = {"interleaved_structure": 0.5, "interleaved_relevance": 1.0, alignment: 1.0,
               "interleaved_geneval": 1.0}
  c.process_rewards = {"interleaved_structure_steps": 0.5, "interleaved_relevance_steps": 1.0,
                       f"{alignment}_steps": 1.0}
  c.advantages.kind = "both"
  for kind in ("outcome", "process"):
    if kind in parts:
      c.advantages.kind = kind
  return c
