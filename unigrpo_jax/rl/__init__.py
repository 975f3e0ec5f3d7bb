"""RL: advantages, losses, the UniGRPO objective and the update step; knows nothing of rewards."""
from unigrpo_jax.rl.objective import LossSpec, RLBatch, unigrpo_objective
from unigrpo_jax.rl.update import (GradientSum, UpdateSpec, grpo_update, make_accumulate,
                                   make_apply, make_update)
