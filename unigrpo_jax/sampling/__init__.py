"""Sampling: flow math (sde.py), the jitted text+image rollout, and teacher-forced scoring."""
from unigrpo_jax.sampling.rollout import Trajectory, make_rollout, rollout
from unigrpo_jax.sampling.scoring import score_trajectory
from unigrpo_jax.sampling.spec import RolloutSpec
