"""unigrpo_jax: RL post-training (UniGRPO, Interleaved GRPO) of unified text+flow-image models."""
__version__ = "0.1.0"
