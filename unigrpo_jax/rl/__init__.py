"""RL: advantages, losses, the UniGRPO objective and the update step; knows nothing of rewards."""
from unigrpo_jax.rl.objective import LossSpec, RLBatch, unigrpo_objective
from unigrpo_jax.rl.update import UpdateSpec, grpo_update, make_update
