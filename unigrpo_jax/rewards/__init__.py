"""Rewards: pure functions registered by name (one family per module) and their checked,
weighted evaluation. They know nothing of the model."""
from unigrpo_jax.rewards import geneval, interleaved, text  # noqa: F401  (register them)
from unigrpo_jax.rewards.registry import REWARDS, check_names, register, score_batch
