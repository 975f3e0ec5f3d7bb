"""RL: advantages, losses, the UniGRPO objective and the update step; knows nothing of rewards."""
from unigrpo_jax.rl.objective import LossSpec, RLBatch, unigrpo_objective
from unigrpo_jax.rl.update import (TrainState, UpdateSpec, apply_if_finite, grpo_update,
                                   init_train_state, make_optimizer, make_update,
                                   train_state_shardings)
